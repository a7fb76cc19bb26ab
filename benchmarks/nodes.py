"""Five nodes, the node holding the groups cut off: hbd on Corosync beside Pacemaker 2.1.

The same lab layout for both, one implementation at a time in the same run:
five nodes and a client in network namespaces on one bridge, Debian's
corosync on every node from hbd's own export (hbd.export, the corosync.conf
`hbctl export pacemaker` writes) with the same totem settings, and four VIP
groups homed on every node.  n1's four groups each have their own next node
(`group_order`: n2, n3, n4, n5), so after n1's loss four survivors each
start one.

  hbd         hbd's Corosync stack (cluster_stack corosync) on every node
  pacemaker   Debian's Pacemaker 2.1 on every node, its CIB the one hbd's
              export produces from the same ha.cf/haresources (IPaddr2
              primitives, location and order constraints, stonith off as the
              Heartbeat cluster had no fencing)

Every node's corosync and cluster manager run in a private mount namespace
(the node's "holder", tests/infra/corosync.py) with its own /etc/corosync,
/var/lib/corosync, /run, /dev/shm and /var/log, plus for Pacemaker a private
/var/lib/pacemaker (cib, pengine, blackbox, cores).  Every process is a lab
process, stopped by its pid; the mounts go with the holders.

The client sends a probe to each of n1's four VIPs every 5 ms from 1 s before
the loss; each node's responder answers with its name.  The loss: n1's cable
is cut, then its cluster manager and corosync are SIGKILLed (a power loss).
Reported per run: each VIP's outage (longest gap between its replies), the
worst of the four (all of n1's service back) and the first.  After each run
n1 comes back and takes its groups back before the next.

    .venv/bin/python -m benchmarks.nodes [--runs 5] [--impls hbd,pacemaker]
        [--token 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, median, save, table
from benchmarks.corosync import NODES, PER_NODE, VICTIM, configuration, vip
from benchmarks.failover import outage
from hbd.core.assemble import ConfigTexts, check
from hbd.export import export
from tests.hbdproc import AUTHKEYS
from tests.infra.corosync import CorosyncCluster, CorosyncHbd, CorosyncNode, corosync_unavailable
from tests.infra.netns import Lab, LabError, children_of, wait_for
from tests.vipclient import PORT, start_responders

PROBE_INTERVAL = 0.005
WINDOW = 30.0  # seconds the client probes; the loss comes 1 s in
PACEMAKER_DIRS = ("cib", "pengine", "blackbox", "cores")

CLIENT = r"""
import json, socket, sys, time
targets = sys.argv[1].split(",")
port, seconds, interval = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
replies = []
end = time.monotonic() + seconds
nxt = time.monotonic()
print("ready", flush=True)
while time.monotonic() < end:
    now = time.monotonic()
    if now >= nxt:
        for v in targets:
            try:
                s.sendto(b"%s %.6f" % (v.encode(), now), (v, port))
            except OSError:
                pass
        nxt += interval
    try:
        while True:
            data, _ = s.recvfrom(256)
            words = data.split()
            replies.append((time.monotonic(), words[1].decode(), words[0].decode()))
    except BlockingIOError:
        pass
    time.sleep(0.0005)
json.dump(replies, sys.stdout)
"""


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children_of(p)
    return out


class Cluster:
    """Five nodes' corosync and one cluster manager on each; `victim_down` is a power loss."""

    name = ""

    def __init__(self, lab: Lab, hacf: str, haresources: str, token_ms: int) -> None:
        self.lab, self.hacf, self.haresources = lab, hacf, haresources
        self.corosync = CorosyncCluster(lab, NODES, hacf=hacf, haresources=haresources,
                                        token_ms=token_ms, token_coefficient_ms=0)

    def start(self) -> None:
        raise NotImplementedError

    def victim_down(self) -> None:
        raise NotImplementedError

    def victim_up(self) -> None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {}


class HbdCluster(Cluster):
    name = "hbd"

    def start(self) -> None:
        self.corosync.start()
        self.hbd = {n: CorosyncHbd(self.corosync.nodes[n], self.hacf, self.haresources)
                    for n in NODES}
        for node in self.hbd.values():
            node.start()

    def victim_down(self) -> None:
        self.hbd[VICTIM].kill()
        self.corosync.nodes[VICTIM].stop(signal.SIGKILL)

    def victim_up(self) -> None:
        self.corosync.nodes[VICTIM].start()
        self.hbd[VICTIM].start()


class PacemakerCluster(Cluster):
    name = "pacemaker"

    def __init__(self, lab: Lab, hacf: str, haresources: str, token_ms: int) -> None:
        super().__init__(lab, hacf, haresources, token_ms)
        config, problems = check(ConfigTexts("ha.cf", hacf, "haresources", haresources,
                                             "authkeys", AUTHKEYS, 0o100600), node_name="n1")
        if config is None:
            raise LabError(f"bad configuration: {[str(p) for p in problems]}")
        self.cib = export(config).cib
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for node in self.corosync.nodes.values():
            self._prepare(node)

    def _prepare(self, node: CorosyncNode) -> None:
        """Pacemaker's directories private to the holder; corosync lets hacluster in."""
        root = f"/proc/{node.holder_pid}/root"
        node.run(["mount", "-t", "tmpfs", "tmpfs", "/var/lib/pacemaker"], check=True)
        for sub in PACEMAKER_DIRS:
            path = f"{root}/var/lib/pacemaker/{sub}"
            os.mkdir(path, 0o750)
            shutil.chown(path, "hacluster", "haclient")
        shutil.chown(f"{root}/var/lib/pacemaker", "hacluster", "haclient")
        with open(f"{root}/etc/corosync/corosync.conf", "a") as conf:
            conf.write("\nuidgid {\n    uid: hacluster\n    gid: haclient\n}\n")
        log = node.dir / "pacemaker.log"
        log.touch()
        shutil.chown(log, "hacluster", "haclient")
        # a higher epoch than the running cluster's own, or cibadmin --replace refuses it
        (node.dir / "cib.xml").write_text(self.cib.replace('epoch="1"', 'epoch="1000"', 1))

    def _start_node(self, name: str) -> None:
        node = self.corosync.nodes[name]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C",
               "PCMK_logfile": str(node.dir / "pacemaker.log"), "PCMK_logfacility": "none",
               "PCMK_debug": "no"}
        with open(node.dir / "pacemakerd.out", "ab") as out:
            self.procs[name] = self.lab.popen(name, node.enter(["pacemakerd"]), stdout=out,
                                              env=env)

    def start(self) -> None:
        self.corosync.start()
        for name in NODES:
            self._start_node(name)
        first = self.corosync.nodes[NODES[0]]

        def online() -> bool:
            out = first.run(["crm_mon", "-1", "-r"]).stdout
            m = re.search(r"Online: \[ ([^\]]*) \]", out)
            return bool(m) and len(m.group(1).split()) == len(NODES) and "Current DC: " \
                in out and "NONE" not in out.split("Current DC: ")[1].split("\n")[0]

        wait_for(online, 120, "Pacemaker: every node online with a DC", interval=0.5)
        first.run(["cibadmin", "--replace", "--xml-file", str(first.dir / "cib.xml")],
                  check=True, timeout=60)

    def dc(self) -> str:
        out = self.corosync.nodes["n2"].run(["crm_mon", "-1"]).stdout
        m = re.search(r"Current DC: (\S+)", out)
        return m.group(1) if m else "?"

    def victim_down(self) -> None:
        proc = self.procs.pop(VICTIM)
        for pid in reversed(descendants(proc.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.lab.stop(proc, timeout=5, sig=signal.SIGKILL)
        self.corosync.nodes[VICTIM].stop(signal.SIGKILL)
        # a power loss keeps the disk (/var/lib/pacemaker), not libqb's shared memory
        self.corosync.nodes[VICTIM].run(["sh", "-c", "rm -f /dev/shm/qb-*"])

    def victim_up(self) -> None:
        self.corosync.nodes[VICTIM].start()
        self._start_node(VICTIM)

    def stop(self) -> None:
        for name, proc in list(self.procs.items()):
            for pid in reversed(descendants(proc.pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.lab.stop(proc, timeout=5, sig=signal.SIGKILL)
            del self.procs[name]


IMPLS = {"hbd": HbdCluster, "pacemaker": PacemakerCluster}


def home(lab: Lab) -> bool:
    """Every VIP on its home node and on no other."""
    held = {n: {a.split("/")[0] for a in lab.addresses(n)} for n in NODES}
    return all({n for n in NODES if vip(i, k) in held[n]} == {node}
               for i, node in enumerate(NODES, start=1) for k in range(PER_NODE))


def one_run(lab: Lab, cluster: Cluster, expected: dict[str, str]) -> dict[str, Any]:
    targets = list(expected)
    client = lab.popen("client", [sys.executable, "-c", CLIENT, ",".join(targets), str(PORT),
                                  str(WINDOW), str(PROBE_INTERVAL)], stdout=-1, stderr=-3)
    assert client.stdout is not None
    client.stdout.readline()  # "ready"
    time.sleep(1.0)
    dc = cluster.dc() if isinstance(cluster, PacemakerCluster) else "-"
    lost_at = time.monotonic()
    lab.cut(VICTIM)
    cluster.victim_down()
    out, _ = client.communicate(timeout=WINDOW + 30)
    by_vip: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for t, v, node in json.loads(out):
        by_vip[v].append((t, node))
    end = lost_at + WINDOW - 1.0
    per_vip = {v: outage(by_vip[v], lost_at, end) for v in targets}
    wrong = {v: r["served_after"] for v, r in per_vip.items()
             if r["recovered"] and r["served_after"] != expected[v]}
    outages = [r["outage_ms"] for r in per_vip.values()]
    worst = max(per_vip, key=lambda v: per_vip[v]["outage_ms"])
    result = {"timeline": [(round((t - lost_at) * 1000, 1), n) for t, n in by_vip[worst]],
              "worst_vip": worst, "all_ms": max(outages), "first_ms": min(outages),
              "unrecovered": sum(not r["recovered"] for r in per_vip.values()),
              "served_elsewhere": wrong, "dc_before": dc,
              "per_vip_ms": {v: r["outage_ms"] for v, r in per_vip.items()}}
    for k in range(PER_NODE):
        lab.run(VICTIM, ["ip", "addr", "del", f"{vip(1, k)}/24", "dev", "eth0"], check=False)
    lab.restore(VICTIM)
    cluster.victim_up()
    wait_for(lambda: home(lab), 120, "every group back on its home node", interval=0.2)
    time.sleep(2.0)
    return result


def bench(impl: str, runs: int, token_ms: int) -> dict[str, Any]:
    hacf, haresources, expected = configuration()
    lab = Lab((*NODES, "client"))
    cluster: Cluster | None = None
    try:
        start_responders(lab, NODES)
        cluster = IMPLS[impl](lab, hacf, haresources, token_ms)
        cluster.start()
        wait_for(lambda: home(lab), 180, "every group on its home node", interval=0.2)
        time.sleep(2.0)
        results = []
        for n in range(runs):
            r = one_run(lab, cluster, expected)
            more = f" ({r['unrecovered']} VIPs never served again)" if r["unrecovered"] else ""
            print(f"{impl:10} run {n + 1}: all of n1's VIPs served again after {r['all_ms']} ms"
                  f", the first after {r['first_ms']} ms{more}"
                  f"{'' if r['dc_before'] == '-' else ', DC was ' + r['dc_before']}", flush=True)
            results.append(r)
        middle = sorted(results, key=lambda r: r["all_ms"])[len(results) // 2]
        for r in results:
            timeline = r.pop("timeline")
            if r is middle:
                middle_timeline = timeline
        return {"all_median_ms": median([r["all_ms"] for r in results]),
                "all_range_ms": [min(r["all_ms"] for r in results),
                                 max(r["all_ms"] for r in results)],
                "timeline": middle_timeline,
                "first_median_ms": median([r["first_ms"] for r in results]),
                "unrecovered_runs": sum(bool(r["unrecovered"]) for r in results),
                "runs": results}
    finally:
        if isinstance(cluster, PacemakerCluster):
            cluster.stop()
        lab.teardown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--impls", default="hbd,pacemaker")
    parser.add_argument("--token", type=int, default=1000,
                        help="corosync totem token in ms (token_coefficient 0), for both")
    parser.add_argument("--plot", default=None,
                        help="write a PNG timeline of the median run's slowest VIP")
    args = parser.parse_args()
    reason = corosync_unavailable()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    impls = [i for i in args.impls.split(",") if i]
    if "pacemaker" in impls and shutil.which("pacemakerd") is None:
        print("pacemaker not installed: skipped", file=sys.stderr)
        impls.remove("pacemaker")
    results = {impl: bench(impl, args.runs, args.token) for impl in impls}
    rows = [["impl", "all of n1's groups served again", "first group served again",
             "runs never served"]]
    for impl, r in results.items():
        low, high = r["all_range_ms"]
        rows.append([impl, f"{r['all_median_ms']:.0f} ms ({low:.0f}-{high:.0f})",
                     f"{r['first_median_ms']:.0f} ms",
                     str(r["unrecovered_runs"])])
    print(f"\nfive nodes, n1 and its {PER_NODE} groups lost (cable cut + kill), corosync token "
          f"{args.token} ms; median client outage of {args.runs} runs (probe every 5 ms)")
    print(table(rows))
    timelines = {impl: r.pop("timeline") for impl, r in results.items()}
    path = save("nodes", {"runs": args.runs, "token_ms": args.token, "nodes": len(NODES),
                          "groups_per_node": PER_NODE, "results": results})
    (RESULTS / "nodes-timelines.json").write_text(json.dumps(timelines))
    print(f"saved {path}")
    if args.plot:
        from benchmarks.plot import timeline_png
        longest = max(r["all_range_ms"][1] for r in results.values())
        Path(args.plot).write_bytes(timeline_png(
            timelines, window=(-200.0, longest + 800.0), event="n1 lost",
            title=f"five nodes: replies of n1's slowest group around n1's loss (corosync "
                  f"token {args.token} ms)"))
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
