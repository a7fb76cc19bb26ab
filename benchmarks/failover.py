"""Failover outage seen by a client: hbd beside Heartbeat 3.0.6 and keepalived.

Two nodes and a client in network namespaces on one bridge.  Each node runs
a UDP responder that answers with its name; the client sends a probe to the
VIP every 5 ms and records every reply.  Then n1 (holding the VIP) either
loses its link (the switch port goes down: hard loss) or is stopped
gracefully (SIGTERM, as `systemctl stop` does).  The outage is the longest
gap between consecutive replies around the event.  Five runs per case;
medians are reported.

Cases (timers: hbd/Heartbeat keepalive/deadtime; keepalived VRRPv3 advert):
  hard-100ms     hard loss, 100 ms / 300 ms (keepalived advert 0.1 s)
  hard-50ms      hard loss, tight timers: 50 ms / 150 ms (keepalived advert 0.05 s)
  graceful-100ms graceful stop, 100 ms / 300 ms
  hard64-100ms   hard loss, a group of 64 IPs, 100 ms / 300 ms
  hard-1s        hard loss, 1 s / 3 s (keepalived advert 1 s)
  graceful-1s    graceful stop, 1 s / 3 s

    .venv/bin/python -m benchmarks.failover [--runs 5] [--cases hard-100ms,...]
        [--impls hbd,heartbeat,keepalived] [--plot docs/failover.png]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, installed_impls, median, save, table
from tests.hbdproc import HbdNode, ha_cf
from tests.infra.hbpeer import HeartbeatPeer
from tests.infra.kapeer import KeepalivedPeer, render_keepalived_conf
from tests.infra.netns import Lab, wait_for
from tests.vipclient import PORT, start_responders, wait_answer

PROBE_INTERVAL = 0.005
BASE = 100  # VIPs are 10.77.0.100 ...

CLIENT = r"""
import json, socket, sys, time
vip, port, seconds, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
replies = []
end = time.monotonic() + seconds
nxt = time.monotonic()
print("ready", flush=True)
while time.monotonic() < end:
    now = time.monotonic()
    if now >= nxt:
        try:
            s.sendto(b"%.6f" % now, (vip, port))
        except OSError:
            pass
        nxt += interval
    try:
        while True:
            data, _ = s.recvfrom(256)
            replies.append((time.monotonic(), data.split()[0].decode()))
    except BlockingIOError:
        pass
    time.sleep(0.0005)
json.dump(replies, sys.stdout)
"""


@dataclass(frozen=True)
class Case:
    name: str
    event: str  # "hard" or "graceful"
    keepalive: str
    deadtime: str
    advert: str  # keepalived advert_int
    vips: int = 1
    window: float = 4.0  # seconds the client probes; the event comes 1 s in


CASES = {c.name: c for c in (
    Case("hard-100ms", "hard", "100ms", "300ms", "0.1"),
    Case("hard-50ms", "hard", "50ms", "150ms", "0.05"),
    Case("graceful-100ms", "graceful", "100ms", "300ms", "0.1"),
    # Heartbeat starts 64 IPaddr2 agents one after another: give it time to finish
    Case("hard64-100ms", "hard", "100ms", "300ms", "0.1", vips=64, window=40.0),
    Case("hard-1s", "hard", "1", "3", "1", window=10.0),
    Case("graceful-1s", "graceful", "1", "3", "1", window=10.0),
)}


def vips(case: Case) -> list[str]:
    return [f"10.77.0.{BASE + i}" for i in range(case.vips)]


class Subject:
    """One implementation's two nodes, started fresh for each run."""

    name = ""

    def __init__(self, lab: Lab, case: Case) -> None:
        self.lab, self.case = lab, case

    def start(self) -> None:
        raise NotImplementedError

    def stop_gracefully(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError


class Hbd(Subject):
    name = "hbd"

    def start(self) -> None:
        group = " ".join(f"{v}/24/eth0" for v in vips(self.case))
        conf = ha_cf("bcast eth0", keepalive=self.case.keepalive, deadtime=self.case.deadtime,
                     warntime=self.case.keepalive, initdead="1" if "ms" in
                     self.case.keepalive else "3", extra="auto_failback off\n")
        self.nodes = [HbdNode(self.lab, n, conf, f"n1 {group}\n").start() for n in ("n1", "n2")]
        self.nodes[0].wait_log(r"group \S+ start done", 30)

    def stop_gracefully(self) -> None:
        self.nodes[0].stop()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


class Heartbeat(Subject):
    name = "heartbeat 3.0.6"

    def start(self) -> None:
        group = " ".join(f"IPaddr2::{v}/24/eth0" for v in vips(self.case))
        conf = ha_cf("bcast eth0", keepalive=self.case.keepalive, deadtime=self.case.deadtime,
                     warntime=self.case.keepalive,
                     initdead="1" if "ms" in self.case.keepalive else "3",
                     extra="auto_failback off\ncrm no\nlogfile /var/log/ha-log\n")
        self.peers = [HeartbeatPeer(self.lab, n, ha_cf=conf, haresources=f"n1 {group}\n")
                      .start(daemon=True) for n in ("n1", "n2")]
        last = vips(self.case)[-1]
        wait_for(lambda: self.lab.has_address("n1", last), 90, "heartbeat to start the VIPs")
        time.sleep(6.0)  # Heartbeat advertises deadtime + 2 s for its first 5 s

    def stop_gracefully(self) -> None:
        self.peers[0].stop()

    def kill(self) -> None:
        for peer in self.peers:
            peer.kill()


class Keepalived(Subject):
    name = "keepalived"

    def start(self) -> None:
        self.peers = []
        for node, priority in (("n1", 150), ("n2", 100)):
            conf = render_keepalived_conf(priority=priority, advert_int=self.case.advert,
                                          vips=[f"{v}/24" for v in vips(self.case)],
                                          interface="eth0", vrid=61)
            self.peers.append(KeepalivedPeer(self.lab, node, conf).start())
        self.peers[0].wait_state("MASTER", timeout=30)
        last = vips(self.case)[-1]
        wait_for(lambda: self.lab.has_address("n1", last), 30, "keepalived VIPs")

    def stop_gracefully(self) -> None:
        self.peers[0].stop()

    def kill(self) -> None:
        for peer in self.peers:
            peer.kill()


IMPLS: dict[str, Callable[[Lab, Case], Subject]] = {
    "hbd": Hbd, "heartbeat": Heartbeat, "keepalived": Keepalived}


def one_run(lab: Lab, subject: Subject, case: Case) -> dict[str, Any]:
    target = vips(case)[-1]  # the last address of the group: the worst case
    for node in ("n1", "n2"):
        for v in vips(case):
            lab.run(node, ["ip", "addr", "del", f"{v}/24", "dev", "eth0"], check=False)
    lab.flush_arp("client")
    try:
        subject.start()
        wait_answer(lab, target, "n1", timeout=20)
        def event() -> None:
            if case.event == "hard":
                lab.cut("n1")
            else:
                subject.stop_gracefully()

        replies, event_at = probe_around(lab, target, case.window, event)
    finally:
        subject.kill()
        lab.restore("n1")
    return {**outage(replies, event_at, event_at + case.window - 1.0),
            "timeline": [(round((t - event_at) * 1000, 1), n) for t, n in replies]}


def probe_around(lab: Lab, target: str, window: float,
                 event: Callable[[], None]) -> tuple[list[tuple[float, str]], float]:
    """Probe `target` from the client for `window` s, set off `event` 1 s in; return every
    (time, answering node) and the event's time."""
    client = lab.popen("client", [sys.executable, "-c", CLIENT, target, str(PORT),
                                  str(window), str(PROBE_INTERVAL)], stdout=-1, stderr=-3)
    assert client.stdout is not None
    client.stdout.readline()  # "ready"
    time.sleep(1.0)
    event_at = time.monotonic()
    event()
    out, _ = client.communicate(timeout=window + 30)
    return [(t, n) for t, n in json.loads(out)], event_at


def outage(replies: list[tuple[float, str]], event_at: float, end: float) -> dict[str, Any]:
    """The longest gap between replies around the event.

    When nobody answers again before the client stops, the outage lasted at
    least until then: it is reported from the last reply to the window's end,
    with recovered false, never as the small gap before the event.
    """
    before = [t for t, _ in replies if t <= event_at]
    last_before = before[-1] if before else event_at
    if not any(t > event_at for t, _ in replies):
        return {"outage_ms": round((end - last_before) * 1000, 1), "recovered": False,
                "gap_started_ms": round((last_before - event_at) * 1000, 1),
                "served_after": "-"}
    gap, gap_start = 0.0, event_at
    for (t1, _), (t2, _) in itertools.pairwise(replies):
        if t2 - t1 > gap and t2 > event_at - 0.5:
            gap, gap_start = t2 - t1, t1
    after = [n for t, n in replies if t > event_at + gap]
    return {"outage_ms": round(gap * 1000, 1), "recovered": True,
            "gap_started_ms": round((gap_start - event_at) * 1000, 1),
            "served_after": after[-1] if after else "-"}


def cell(result: dict[str, Any]) -> str:
    text = f"{result['median_ms']:.0f} ms"
    if result["unrecovered_runs"]:
        text = f"≥ {text} ({result['unrecovered_runs']} runs never served again)"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--impls", default="hbd,heartbeat,keepalived")
    parser.add_argument("--plot", default=None, help="write a PNG timeline of hard-100ms")
    args = parser.parse_args()
    impls = installed_impls(args.impls)
    results: dict[str, dict[str, Any]] = {}
    lab = Lab(("n1", "n2", "client"))
    try:
        start_responders(lab)
        for case_name in args.cases.split(","):
            case = CASES[case_name]
            for impl in impls:
                runs = []
                failed_starts = 0
                for n in range(args.runs + 3):  # up to 3 runs that did not start are redone
                    if len(runs) == args.runs:
                        break
                    try:
                        run = one_run(lab, IMPLS[impl](lab, case), case)
                    except TimeoutError as err:  # never settled before the event: not a run
                        failed_starts += 1
                        print(f"{case.name:15} {impl:16} did not start: {err}", flush=True)
                        continue
                    more = "" if run["recovered"] else "at least "
                    print(f"{case.name:15} {impl:16} run {n + 1}: outage {more}"
                          f"{run['outage_ms']} ms (served by {run['served_after']})",
                          flush=True)
                    runs.append(run)
                outages = [r["outage_ms"] for r in runs]
                middle = sorted(runs, key=lambda r: r["outage_ms"])[len(runs) // 2]
                results.setdefault(case.name, {})[impl] = {
                    "median_ms": median(outages), "runs_ms": outages,
                    "failed_starts": failed_starts,
                    "unrecovered_runs": sum(not r["recovered"] for r in runs),
                    "timeline": middle["timeline"]}
    finally:
        lab.teardown()
    rows = [["case", *impls]]
    for case_name, by_impl in results.items():
        rows.append([case_name, *(cell(by_impl[i]) if i in by_impl else "-" for i in impls)])
    print("\nmedian client outage (longest gap between replies, probe every 5 ms)")
    print(table(rows))
    summary = {c: {i: {k: v for k, v in r.items() if k != "timeline"} for i, r in by.items()}
               for c, by in results.items()}
    # a run of some cases keeps the others' last results (each case says when it ran)
    measured = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for by in summary.values():
        for entry in by.values():
            entry["measured_at"] = measured
    timelines_path = RESULTS / "failover-timelines.json"
    old = _load(RESULTS / "failover.json").get("results", {})
    old_timelines = _load(timelines_path)
    path = save("failover", {"runs": args.runs, "results": {**old, **summary}})
    timelines_path.write_text(json.dumps({**old_timelines, **{
        c: {i: r["timeline"] for i, r in by.items()} for c, by in results.items()}}))
    print(f"saved {path}")
    if args.plot and "hard-100ms" in results:
        from benchmarks.plot import timeline_png
        Path(args.plot).write_bytes(timeline_png(
            {i: r["timeline"] for i, r in results["hard-100ms"].items()},
            title="client replies around n1's link cut (keepalive 100 ms / deadtime 300 ms)"))
        print(f"plot written to {args.plot}")
    return 0


def _load(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


if __name__ == "__main__":
    sys.exit(main())
