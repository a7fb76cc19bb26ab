"""Carrier loss on the VIP's interface -> the client served by the peer: hbd beside keepalived.

Two nodes and a client in network namespaces on two bridges.  The VIP lives
on eth0 (network 0, the client's); the cluster's own traffic also runs over
eth1, which stays up, so the nodes keep hearing each other: only link
tracking can move the address.  The client probes the VIP every 5 ms; 1 s
after it starts (plus a random part of a second), the switch's end of n1's
eth0 cable is set down, so n1's eth0 loses carrier.  The outage is the
longest gap between replies.

* hbd: haresources `n1 VIP/24/eth0`, `bcast eth0 eth1`, keepalive 100 ms /
  deadtime 300 ms, auto_failback off; link tracking as shipped (the VIP's
  interface is tracked without any hbd.conf line).
* keepalived: a VRRP instance whose adverts go over eth1 (advert_int 0.1),
  the VIP `dev eth0`, and `track_interface { eth0 }`: n1 goes to FAULT and
  n2 takes the VIP.

    .venv/bin/python -m benchmarks.carrier [--runs 9] [--impls hbd,keepalived]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

from benchmarks.common import installed_impls, median, save, table
from benchmarks.failover import outage, probe_around
from tests.hbdproc import HbdNode, ha_cf
from tests.infra.kapeer import KeepalivedPeer, render_keepalived_conf
from tests.infra.netns import Lab, wait_for
from tests.vipclient import PORT, RESPONDER, wait_answer

VIP = "10.77.0.100"
GROUP = f"{VIP}/24/eth0"
WINDOW = 4.0  # seconds the client probes; the carrier goes 1-2 s in


def cable(lab: Lab, node: str, up: bool) -> None:
    """The switch's end of node's eth0: down means no carrier on the node's eth0."""
    if up:
        lab.restore(node)
    else:
        lab.cut(node)


class HbdCluster:
    name = "hbd"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.nodes: list[HbdNode] = []

    def start(self) -> None:
        conf = ha_cf("bcast eth0 eth1", keepalive="100ms", deadtime="300ms",
                     warntime="200ms", extra="auto_failback off\n")
        for name in ("n1", "n2"):
            self.nodes.append(HbdNode(self.lab, name, conf, f"n1 {GROUP}\n").start())
        self.nodes[0].wait_log(r"group \S+ start done", 30)
        self.nodes[0].wait_log(r"Status update for node n2: status active", 30)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


class KeepalivedCluster:
    name = "keepalived"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.peers: list[KeepalivedPeer] = []

    def start(self) -> None:
        for node, priority in (("n1", 150), ("n2", 100)):
            conf = render_keepalived_conf(priority=priority, advert_int="0.1",
                                          vips=[f"{VIP}/24"], interface="eth1", vrid=63,
                                          extra=["track_interface {", "    eth0", "}"])
            conf = conf.replace(f"{VIP}/24 dev eth1", f"{VIP}/24 dev eth0")
            self.peers.append(KeepalivedPeer(self.lab, node, conf).start())
        self.peers[0].wait_state("MASTER", timeout=30)
        wait_for(lambda: self.lab.has_address("n1", VIP), 30, "keepalived VIP")

    def stop(self) -> None:
        for peer in self.peers:
            peer.kill()


IMPLS = {"hbd": HbdCluster, "keepalived": KeepalivedCluster}


def one_run(lab: Lab, subject: HbdCluster | KeepalivedCluster,
            rng: random.Random) -> dict[str, Any]:
    for node in ("n1", "n2"):
        lab.run(node, ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)
        cable(lab, node, up=True)
    lab.flush_arp("client")
    subject.start()
    try:
        wait_answer(lab, VIP, "n1", timeout=20)
        time.sleep(rng.uniform(0.0, 1.0))
        replies, event_at = probe_around(lab, VIP, WINDOW, lambda: cable(lab, "n1", up=False))
    finally:
        subject.stop()
        cable(lab, "n1", up=True)
    return outage(replies, event_at, event_at + WINDOW - 1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--impls", default="hbd,keepalived")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    impls = installed_impls(args.impls)
    rng = random.Random(args.seed)
    results: dict[str, dict[str, Any]] = {}
    lab = Lab(("n1", "n2", "client"), networks=["10.77.0.0/24", "10.78.0.0/24"])
    responders = [lab.popen(n, [sys.executable, "-c", RESPONDER, n, str(PORT)])
                  for n in ("n1", "n2")]
    try:
        for n in range(args.runs):
            for impl in impls:  # interleaved: both see the same machine load
                run = one_run(lab, IMPLS[impl](lab), rng)
                more = "" if run["recovered"] else "at least "
                print(f"{impl:12} run {n + 1}: outage {more}{run['outage_ms']} ms "
                      f"(served by {run['served_after']})", flush=True)
                results.setdefault(impl, {"runs_ms": [], "unrecovered_runs": 0})
                results[impl]["runs_ms"].append(run["outage_ms"])
                results[impl]["unrecovered_runs"] += not run["recovered"]
    finally:
        for proc in responders:
            lab.stop(proc)
        lab.teardown()
    for entry in results.values():
        entry["median_ms"] = median(entry["runs_ms"])
    rows = [["", *impls], ["median outage", *(f"{results[i]['median_ms']:.0f} ms"
                                              for i in impls)],
            ["runs (ms)", *(" ".join(f"{v:.0f}" for v in results[i]["runs_ms"])
                            for i in impls)]]
    print("\ncarrier loss on the VIP's interface -> served by the peer (second link up)")
    print(table(rows))
    path = save("carrier", {"runs": args.runs, "results": results})
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
