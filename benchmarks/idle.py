"""Idle cost of a two-node cluster: CPU seconds per minute and memory per node.

hbd, Heartbeat 3.0.6 and keepalived run side by side (each in its own lab of
network namespaces, so they cannot hear each other), each with two
heartbeat paths at a 100 ms interval:

* hbd / Heartbeat: `keepalive 100ms`, `deadtime 500ms`, `bcast eth0` + `bcast eth1`,
  n1 holding a VIP (`n1 10.77.0.240/24/eth0`);
* keepalived: VRRPv3 with `advert_int 0.1`, one instance per interface.

After a warm-up the CPU time of the whole process tree of each node
(children included; every thread's exact scheduler runtime, as floor.py
measures it) is sampled over the measuring window and scaled to one minute;
RSS (and PSS, which splits shared pages fairly) is read at the end.  The
bare-asyncio floor (benchmarks/floor.py's two sides) runs through the same
window twice over: in a lab of its own, sending to the peer over both
networks (the veth and bridge path hbd's two links take, whose kernel work is
charged to the sender), and on loopback as floor.py alone measures it.
Targets for hbd (issue 20): CPU at most 1.3 x the floor's (the lab floor),
RSS within 6 MB of the floor process's.

    .venv/bin/python -m benchmarks.idle [--seconds 60]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks import floor
from benchmarks.common import median, pss_bytes, rss_bytes, runtime_seconds, save, table, tree
from tests.hbdproc import HbdNode, ha_cf
from tests.infra.hbpeer import HeartbeatPeer, find_heartbeat
from tests.infra.kapeer import KeepalivedPeer, find_keepalived, render_keepalived_conf
from tests.infra.netns import Lab

NETWORKS = ("10.77.0.0/24", "10.78.0.0/24")
MEDIA = "bcast eth0\nbcast eth1"


@dataclass
class Subject:
    name: str
    lab: Lab
    pids: Callable[[], list[int]]  # root pid of each node's process tree
    stop: Callable[[], None]


def start_hbd() -> Subject:
    lab = Lab(("n1", "n2"), networks=NETWORKS)
    nodes = [HbdNode(lab, n, ha_cf(MEDIA, deadtime="500ms", initdead="1"),
                     "n1 10.77.0.240/24/eth0\n").start() for n in ("n1", "n2")]
    nodes[0].wait_log("Status update for node n2: status active", 20)
    nodes[0].wait_log(r"group \S+ start done", 20)

    def stop() -> None:
        for node in nodes:
            node.stop()
    return Subject("hbd", lab, lambda: [n.pid for n in nodes], stop)


def start_heartbeat() -> Subject:
    lab = Lab(("n1", "n2"), networks=NETWORKS)
    conf = ha_cf(MEDIA, deadtime="500ms", initdead="2",
                 extra="crm no\nauto_failback on\nlogfile /var/log/ha-log\n")
    peers = [HeartbeatPeer(lab, n, ha_cf=conf, haresources="n1 IPaddr2::10.77.0.240/24/eth0\n")
             .start() for n in ("n1", "n2")]
    peers[0].wait_status("n2", "active", timeout=30)

    def stop() -> None:
        for peer in peers:
            peer.kill()
    return Subject("heartbeat 3.0.6", lab, lambda: [p.master_pid for p in peers], stop)


def start_keepalived() -> Subject:
    lab = Lab(("n1", "n2"), networks=NETWORKS)
    peers = []
    for n, prio in (("n1", 150), ("n2", 100)):
        conf = render_keepalived_conf(priority=prio, vips=("10.77.0.250/24",),
                                      interface="eth0", instance="VI_1", vrid=51)
        second = render_keepalived_conf(priority=prio, vips=("10.78.0.250/24",),
                                        interface="eth1", instance="VI_2", vrid=52)
        conf += second[second.index("vrrp_instance"):]
        peers.append(KeepalivedPeer(lab, n, conf).start())
    peers[0].wait_state("MASTER", timeout=20)

    def stop() -> None:
        for peer in peers:
            peer.kill()
    return Subject("keepalived", lab, lambda: [p.pid for p in peers], stop)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measuring window")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--only-hbd", action="store_true", help="no Heartbeat, no keepalived")
    args = parser.parse_args()

    starters: list[Callable[[], Subject]] = [start_hbd]
    if args.only_hbd:
        pass
    elif find_heartbeat():
        starters.append(start_heartbeat)
    else:
        print("heartbeat not installed: skipped", file=sys.stderr)
    if args.only_hbd:
        pass
    elif find_keepalived():
        starters.append(start_keepalived)
    else:
        print("keepalived not installed: skipped", file=sys.stderr)

    subjects: list[Subject] = []
    floor_lab = Lab(("n1", "n2"), networks=NETWORKS)
    try:
        for start in starters:
            subjects.append(start())
        time.sleep(args.warmup)
        sides = floor.start(args.seconds)
        lab_sides = floor.start(args.seconds, port=694, lab=floor_lab)
        time.sleep(1.0)  # the floor's sides measure from 1 s after their start
        before = {s.name: [runtime_seconds(tree(p)) for p in s.pids()] for s in subjects}
        t0 = time.monotonic()
        time.sleep(args.seconds)
        elapsed = time.monotonic() - t0
        results = {}
        for s in subjects:
            roots = s.pids()
            after = [runtime_seconds(tree(p)) for p in roots]
            per_min = [(a - b) * 60.0 / elapsed for a, b in zip(after, before[s.name],
                                                                  strict=True)]
            rss = [rss_bytes(tree(p)) / 1e6 for p in roots]
            pss = [pss_bytes(tree(p)) / 1e6 for p in roots]
            results[s.name] = {"cpu_s_per_min": per_min, "rss_mb": rss, "pss_mb": pss,
                               "processes": [len(tree(p)) for p in roots]}
        bare, bare_lab = floor.finish(sides, args.seconds), floor.finish(lab_sides, args.seconds)
        if bare is None or bare_lab is None:
            print("the floor's sides failed", file=sys.stderr)
            return 1
        results["bare asyncio floor"] = {"cpu_s_per_min": bare_lab[0], "rss_mb": bare_lab[1],
                                         "pss_mb": [], "processes": [1, 1]}
        results["bare asyncio floor, loopback"] = {
            "cpu_s_per_min": bare[0], "rss_mb": bare[1], "pss_mb": [], "processes": [1, 1]}
    finally:
        floor_lab.teardown()
        for s in subjects:
            try:
                s.stop()
            finally:
                s.lab.teardown()

    rows = [["implementation", "CPU-s/min (n1, n2)", "RSS MB (n1, n2)", "PSS MB (n1, n2)",
             "processes"]]
    for name, r in results.items():
        rows.append([name, ", ".join(f"{v:.3f}" for v in r["cpu_s_per_min"]),
                     ", ".join(f"{v:.1f}" for v in r["rss_mb"]),
                     ", ".join(f"{v:.1f}" for v in r["pss_mb"]),
                     ", ".join(str(v) for v in r["processes"])])
    print(f"idle two-node cluster, 100 ms heartbeats on two links, {args.seconds:.0f} s window")
    print(table(rows))
    hbd, bare_floor = results["hbd"], results["bare asyncio floor"]
    ratio = median(hbd["cpu_s_per_min"]) / median(bare_floor["cpu_s_per_min"])
    extra_rss = median(hbd["rss_mb"]) - median(bare_floor["rss_mb"])
    loopback = median(hbd["cpu_s_per_min"]) / median(
        results["bare asyncio floor, loopback"]["cpu_s_per_min"])
    print(f"hbd / floor CPU: x {ratio:.2f} (target <= 1.3; x {loopback:.2f} against the "
          f"loopback floor); RSS above the floor's: {extra_rss:.1f} MB (target <= 6)")
    path = save("idle", {"seconds": args.seconds, "results": results,
                         "hbd_to_floor_cpu": round(ratio, 3),
                         "hbd_to_loopback_floor_cpu": round(loopback, 3),
                         "hbd_rss_above_floor_mb": round(extra_rss, 1),
                         "targets": {"hbd_to_floor_cpu": 1.3, "hbd_rss_above_floor_mb": 6}})
    print(f"saved {path}")
    ok = ratio <= 1.3 and extra_rss <= 6
    print("hbd targets:", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
