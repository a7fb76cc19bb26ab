"""Client outage when the active node is lost and must be fenced: hbd beside Heartbeat 3.0.6.

Two nodes and a client in network namespaces, as in benchmarks/failover.py,
keepalive 100 ms / deadtime 300 ms, and on both implementations the same ha.cf
line `stonith_host * external/hbdtest-PID n1,n2 LABDIR PASSWORD`: the test
power switch of tests/fencedev.py (cluster-glue's external/ plugin interface;
Heartbeat runs it through libstonith, hbd through the `stonith` command).

The event is a hard loss of n1: its cable is pulled and its daemon killed at
the same moment (a crashed node).  n2 declares it dead, resets it through the
device, and only then takes the VIP.  The outage is the longest gap between
the client's replies (probe every 5 ms).  hbd runs with `fence_race_delay 0`
(Heartbeat has no race delay; with hbd's default 3 s the passive node waits
that long first: see docs/operations.md).  The device's own time is measured
beside them: the median of `stonith -S` runs of the same plugin.

With `--race N` it also cuts n1 from n2 N times (the client still reaches
both: a partition, where both nodes fence) with hbd's `fence_race_delay 1`
and counts the rounds where exactly one node survives and it is n1, the one
that held the group.

    .venv/bin/python -m benchmarks.fencing [--runs 5] [--impls hbd,heartbeat] [--race 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from benchmarks.common import installed_impls, median, save, table
from benchmarks.failover import Case, Hbd, Heartbeat, outage, probe_around, vips
from tests.fencedev import FenceDevice
from tests.hbdproc import HbdNode, ha_cf
from tests.infra import commands
from tests.infra.hbpeer import HeartbeatPeer
from tests.infra.netns import Lab, wait_for
from tests.vipclient import start_responders, wait_answer

CASE = Case("fenced-hard-100ms", "hard", "100ms", "300ms", "0.1", window=5.0)


class HbdFenced(Hbd):
    name = "hbd"
    device: FenceDevice

    def start(self) -> None:
        group = " ".join(f"{v}/24/eth0" for v in vips(self.case))
        conf = ha_cf("bcast eth0", keepalive=self.case.keepalive, deadtime=self.case.deadtime,
                     warntime=self.case.keepalive, initdead="1",
                     extra="auto_failback off\n" + self.device.line("*"))
        self.nodes = []
        for name in ("n1", "n2"):
            node = HbdNode(self.lab, name, conf, f"n1 {group}\n")
            (node.config_dir / "hbd.conf").write_text("fence_race_delay 0\n")
            self.nodes.append(node.start())
            self.device.record(name, node.pid)
        self.nodes[0].wait_log(r"group \S+ start done", 30)
        self.nodes[1].wait_log(r"STONITH device status: OK", 30)

    def crash(self) -> None:
        self.nodes[0].kill()


class HeartbeatFenced(Heartbeat):
    name = "heartbeat 3.0.6"
    device: FenceDevice

    def start(self) -> None:
        group = " ".join(f"IPaddr2::{v}/24/eth0" for v in vips(self.case))
        conf = ha_cf("bcast eth0", keepalive=self.case.keepalive, deadtime=self.case.deadtime,
                     warntime=self.case.keepalive, initdead="1",
                     extra="auto_failback off\ncrm no\nlogfile /var/log/ha-log\n"
                     + self.device.line("*"))
        self.peers = [HeartbeatPeer(self.lab, n, ha_cf=conf, haresources=f"n1 {group}\n")
                      .start() for n in ("n1", "n2")]
        for name, peer in zip(("n1", "n2"), self.peers, strict=True):
            self.device.record(name, peer.master_pid)
        last = vips(self.case)[-1]
        wait_for(lambda: self.lab.has_address("n1", last), 90, "heartbeat to start the VIPs")
        time.sleep(6.0)  # Heartbeat advertises deadtime + 2 s for its first 5 s

    def crash(self) -> None:
        self.peers[0].kill()


def one_run(lab: Lab, subject: HbdFenced | HeartbeatFenced, device: FenceDevice
            ) -> dict[str, Any]:
    target = vips(CASE)[-1]
    for node in ("n1", "n2"):
        device.power_on(node)
        lab.run(node, ["ip", "addr", "del", f"{target}/24", "dev", "eth0"], check=False)
    (device.dir / "fence.log").unlink(missing_ok=True)
    lab.flush_arp("client")
    subject.start()
    try:
        wait_answer(lab, target, "n1", timeout=20)
        def event() -> None:
            lab.cut("n1")
            subject.crash()

        replies, event_at = probe_around(lab, target, CASE.window, event)
    finally:
        subject.kill()
        lab.restore("n1")
    result = outage(replies, event_at, event_at + CASE.window - 1.0)
    result["fenced"] = device.resets()
    return result


def race(lab: Lab, device: FenceDevice, rounds: int) -> dict[str, Any]:
    """Both nodes fence after a partition; how often does n1 (the holder) survive alone?"""
    target = vips(CASE)[-1]
    conf = ha_cf("bcast eth0", keepalive=CASE.keepalive, deadtime=CASE.deadtime,
                 warntime=CASE.keepalive, initdead="1",
                 extra="auto_failback off\n" + device.line("*"))
    outcomes = []
    for n in range(rounds):
        for node in ("n1", "n2"):
            device.power_on(node)
            lab.run(node, ["ip", "addr", "del", f"{target}/24", "dev", "eth0"], check=False)
        (device.dir / "fence.log").unlink(missing_ok=True)
        nodes = []
        for name in ("n1", "n2"):
            node = HbdNode(lab, name, conf, f"n1 {target}/24/eth0\n")
            (node.config_dir / "hbd.conf").write_text("fence_race_delay 1\n")
            nodes.append(node.start())
            device.record(name, node.pid)
        try:
            nodes[0].wait_log(r"Status update for node n2: status active", 30)
            wait_answer(lab, target, "n1", timeout=20)
            lab.partition("n1", "n2")
            time.sleep(3.0)  # deadtime, the delay, the device: all over by then
            alive = [name for name, node in zip(("n1", "n2"), nodes, strict=True)
                     if node.running()]
            holders = [name for name in ("n1", "n2") if lab.has_address(name, target)]
            ok = alive == ["n1"] and holders == ["n1"]
            outcomes.append(ok)
            print(f"race round {n + 1}: alive {alive}, VIP on {holders}, fenced "
                  f"{device.resets()}: {'ok' if ok else 'WRONG'}", flush=True)
        finally:
            for node in nodes:
                node.kill()
            lab.heal("n1", "n2")
    return {"rounds": rounds, "holder_survived_alone": sum(outcomes)}


def device_time(device: FenceDevice, runs: int = 10) -> float:
    """Median milliseconds of one run of the plugin through cluster-glue (`stonith -S`)."""
    params = device.dir / "bench-params"
    params.write_text(device.params() + "\n")
    params.chmod(0o600)
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        commands.run(["stonith", "-s", "-t", device.type, "-F", str(params), "-S"],
                       check=True, timeout=30)
        times.append((time.monotonic() - t0) * 1000)
    return median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--impls", default="hbd,heartbeat")
    parser.add_argument("--race", type=int, default=0, help="fence race rounds (hbd)")
    args = parser.parse_args()
    impls = installed_impls(args.impls)
    lab = Lab(("n1", "n2", "client"))
    device = FenceDevice(lab).install()
    results: dict[str, Any] = {}
    races: dict[str, Any] = {}
    try:
        device.start_switch()
        start_responders(lab)
        dev_ms = device_time(device)
        print(f"device ({device.type} via stonith -S): median {dev_ms:.1f} ms", flush=True)
        for impl in impls:
            runs = []
            for n in range(args.runs):
                subject = (HbdFenced if impl == "hbd" else HeartbeatFenced)(lab, CASE)
                subject.device = device
                run = one_run(lab, subject, device)
                print(f"{impl:16} run {n + 1}: outage {run['outage_ms']} ms (served by "
                      f"{run['served_after']}, fenced {run['fenced']})", flush=True)
                runs.append(run)
            outages = [r["outage_ms"] for r in runs]
            results[impl] = {"median_ms": median(outages), "runs_ms": outages,
                             "unrecovered_runs": sum(not r["recovered"] for r in runs),
                             "fenced_runs": sum(r["fenced"] == ["n1"] for r in runs)}
        if args.race:
            races = race(lab, device, args.race)
    finally:
        device.remove()
        lab.teardown()
    rows = [["implementation", "median outage", "runs (ms)", "fenced n1"]]
    for impl, r in results.items():
        rows.append([impl, f"{r['median_ms']:.0f} ms", " ".join(f"{x:.0f}" for x in
                                                                r["runs_ms"]),
                     f"{r['fenced_runs']}/{len(r['runs_ms'])}"])
    print(f"\nhard loss of the active node, fenced (keepalive 100 ms / deadtime 300 ms; "
          f"device {dev_ms:.0f} ms)")
    print(table(rows))
    if races:
        print(f"fence race: the holder survived alone in {races['holder_survived_alone']} "
              f"of {races['rounds']} rounds")
    path = save("fencing", {"runs": args.runs, "device_ms": dev_ms, "results": results,
                            "target_ms": 300 + dev_ms + 50, "race": races})
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
