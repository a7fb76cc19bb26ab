"""Hostile flood: 25,000 datagrams/s at UDP 694 from a third host, hbd beside Heartbeat.

Two nodes (keepalive 100 ms, deadtime 500 ms, `bcast eth0`, n1 holding
10.77.0.240, auto_failback off), a client and an attacker on one bridge.  The
attacker sends, cycling, each kind of junk it can make: replays of the
cluster's own traffic captured just before (signed with the cluster's key),
messages signed with a wrong key or an unknown key index (forged MACs),
garbage and truncated netstrings, classic frames without a MAC, and
oversized datagrams (33 KB, one in fifty).  Each phase gets a fresh cluster:

* `own`: from the attacker's own address;
* `spoof`: with n1's address as source, so it reaches n2 (the node a false
  "n1 is dead" would make take the address), past any filter on sources.

Measured per phase: the rate achieved (several sender processes), each
node's CPU (every thread of its process tree, per second of wall time), the
samples (every 0.2 s) where the address was not on n1 alone, and the lines
that mean the cluster changed its mind.  Heartbeat 3.0.6 runs the same
phases in the same run when installed.

    .venv/bin/python -m benchmarks.flood [--seconds 60] [--rate 25000]

Needs root (network namespaces).  Results go to benchmarks/results/flood.json.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import median, runtime_seconds, save, table, tree
from tests.hbdproc import ha_cf
from tests.infra.hbpeer import HeartbeatPeer, find_heartbeat
from tests.infra.netns import Lab
from tests.test_hostile import (
    DISTURBED,
    SENDER,
    SNIFFER,
    VIP,
    flood_packets,
    pack,
    start_cluster,
    unpack,
)
from tests.vipclient import start_responders, wait_answer

NODES = ("n1", "n2", "client", "attacker")
HB_DISTURBED = re.compile(r"is dead|Link \S+ dead|[Tt]aking over resource|"
                          r"Resources being acquired|mach_down takeover|standby")
PER_SENDER = 9000  # datagrams/s one Python sender process keeps up with here


class TreeCpu:
    """CPU of each root's process tree, summed per process over the processes seen at
    any sample (Heartbeat's children come and go: a before/after sum of the tree
    would lose the runtime of those that exited and count newcomers whole)."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.base: dict[tuple[int, int], float] = {}
        self.last: dict[tuple[int, int], float] = {}
        self.sample(first=True)

    def sample(self, first: bool = False) -> None:
        for n, root in enumerate(self.roots):
            for pid in tree(root):
                runtime = runtime_seconds([pid])
                self.base.setdefault((n, pid), runtime if first else 0.0)
                self.last[(n, pid)] = max(runtime, self.last.get((n, pid), 0.0))

    def seconds(self) -> list[float]:
        return [sum(t - self.base[key] for key, t in self.last.items() if key[0] == n)
                for n in range(len(self.roots))]


@dataclass
class Running:
    name: str
    pids: Callable[[], list[int]]  # n1's and n2's root pids
    disturbed: Callable[[], int]  # lines meaning a change of mind, so far
    stop: Callable[[], None]


def start_hbd(lab: Lab, workdir: Path) -> Running:
    cluster = start_cluster(lab, workdir)
    nodes = (cluster.n1, cluster.n2)
    marks = cluster.marks()

    def disturbed() -> int:
        return sum(len(DISTURBED.findall(n.log()[m:])) for n, m in zip(nodes, marks,
                                                                        strict=True))
    return Running("hbd", lambda: [cluster.n1.pid, cluster.n2.pid], disturbed, cluster.stop)


def start_heartbeat(lab: Lab, workdir: Path) -> Running:
    start_responders(lab)
    conf = ha_cf("bcast eth0", deadtime="500ms", initdead="2",
                 extra="crm no\nauto_failback off\nlogfile /var/log/ha-log\n")
    peers = [HeartbeatPeer(lab, n, ha_cf=conf,
                           haresources=f"n1 IPaddr2::{VIP}/24/eth0\n").start()
             for n in ("n1", "n2")]
    peers[0].wait_status("n2", "active", timeout=30)
    wait_answer(lab, VIP, "n1", timeout=30)
    time.sleep(2.0)
    marks = [len(p.log()) for p in peers]

    def disturbed() -> int:
        return sum(len(HB_DISTURBED.findall(p.log()[m:])) for p, m in zip(peers, marks,
                                                                          strict=True))

    def stop() -> None:
        for peer in peers:
            peer.kill()
    return Running("heartbeat 3.0.6", lambda: [p.master_pid for p in peers], disturbed, stop)


def junk(lab: Lab, workdir: Path) -> list[bytes]:
    """Everything the attacker sends: captured replays, forgeries, garbage, oversized."""
    capture = workdir / "capture.bin"
    sniffer = lab.popen("attacker", [sys.executable, "-c", SNIFFER, str(capture), "2"])
    sniffer.wait(15)
    replays = unpack(capture.read_bytes()) if capture.exists() else []
    forged = flood_packets()
    out: list[bytes] = []
    for i, packet in enumerate(forged):
        out.append(packet)
        if replays and i % 2 == 0:
            out.append(replays[i % len(replays)])
        if i % 50 == 0:
            out.append(b"###\n" + os.urandom(33 * 1024))
    return out


def flood(lab: Lab, running: Running, workdir: Path, packets: list[bytes], *,
          rate: int, seconds: float, spoof: str | None) -> dict[str, Any]:
    path = workdir / "flood.bin"
    path.write_bytes(pack(packets))
    senders = max(1, math.ceil(rate / PER_SENDER))
    outs = [workdir / f"sender{i}.out" for i in range(senders)]
    argv_tail = [str(rate / senders), str(seconds)] + ([lab.ip(spoof)] if spoof else [])
    cpu = TreeCpu(running.pids())
    disturbed_before = running.disturbed()
    started = time.monotonic()
    procs = [lab.popen("attacker", [sys.executable, "-c", SENDER, str(path),
                                    str(_broadcast(lab)), *argv_tail],
                       stdout=open(out, "wb"))  # noqa: SIM115
             for out in outs]
    samples = bad = 0
    while any(p.poll() is None for p in procs):
        on_n1, on_n2 = lab.has_address("n1", VIP), lab.has_address("n2", VIP)
        samples += 1
        bad += int(not on_n1 or on_n2)
        cpu.sample()
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    cpu.sample()
    for proc in procs:
        lab.stop(proc)
    sent = errors = 0
    for out in outs:
        fields = out.read_text().split()
        sent, errors = sent + int(fields[0]), errors + int(fields[1])
    time.sleep(1.0)
    return {"senders": senders, "sent": sent, "send_errors": errors,
            "achieved_rate": round(sent / elapsed), "seconds": round(elapsed, 1),
            "cpu_per_second": [round(s / elapsed, 3) for s in cpu.seconds()],
            "vip_samples": samples, "vip_not_on_n1_alone": bad,
            "disturbed_lines": running.disturbed() - disturbed_before}


def _broadcast(lab: Lab) -> str:
    import ipaddress
    return str(ipaddress.IPv4Interface(lab.iface("attacker").cidr).network.broadcast_address)


def phase(start: Callable[[Lab, Path], Running], spoof: str | None, args: argparse.Namespace,
          ) -> dict[str, Any]:
    lab = Lab(NODES, networks=("10.77.0.0/24",))
    try:
        with tempfile.TemporaryDirectory(prefix="hbd-flood-") as scratch:
            workdir = Path(scratch)
            running = start(lab, workdir)
            try:
                packets = junk(lab, workdir)
                return {"implementation": running.name, "source": spoof or "own",
                        **flood(lab, running, workdir, packets, rate=args.rate,
                                seconds=args.seconds, spoof=spoof)}
            finally:
                running.stop()
    finally:
        lab.teardown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=25_000)
    parser.add_argument("--only-hbd", action="store_true")
    args = parser.parse_args(argv)
    starters: list[Callable[[Lab, Path], Running]] = [start_hbd]
    if not args.only_hbd and find_heartbeat():
        starters.append(start_heartbeat)
    results = []
    for start in starters:
        for spoof in (None, "n1"):
            result = phase(start, spoof, args)
            print(result, flush=True)
            results.append(result)
    rows = [["implementation", "source", "rate/s", "CPU n1, n2 (of a core)",
             "VIP not on n1 alone", "change-of-mind lines"]]
    for r in results:
        rows.append([r["implementation"], r["source"], str(r["achieved_rate"]),
                     ", ".join(f"{c:.2f}" for c in r["cpu_per_second"]),
                     f"{r['vip_not_on_n1_alone']} of {r['vip_samples']}",
                     str(r["disturbed_lines"])])
    print(f"{args.seconds:.0f} s flood at {args.rate}/s, keepalive 100 ms, deadtime 500 ms")
    print(table(rows))
    path = save("flood", {"rate": args.rate, "seconds": args.seconds, "phases": results,
                          "load_average": os.getloadavg()})
    print(f"saved {path}")
    hbd = [r for r in results if r["implementation"] == "hbd"]
    ok = all(r["vip_not_on_n1_alone"] == 0 and r["disturbed_lines"] == 0 for r in hbd)
    print("hbd: zero false failovers" if ok else "hbd: DISTURBED",
          f"(median CPU {median([c for r in hbd for c in r['cpu_per_second']]):.2f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
