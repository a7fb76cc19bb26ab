"""IPv6 media and ping nodes on real daemons: ucast6, mcast6, ping6.

The lab's nodes have IPv6 (fd77::N, plus fixed link-local fe80::77:N, all
without DAD so they are usable at once) and no IPv4 heartbeat link at all:
every heartbeat travels over IPv6.  The VIP is still IPv4; a client
namespace checks who answers on it.  The mixed cluster runs hbd beside a
real Heartbeat 3.0.6 node over `ucast6` only, in both placements, and fails
over both ways.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.hbdproc import HbdNode, ha_cf
from tests.infra.fixtures import HbPeerFactory, LabFactory
from tests.infra.hbpeer import render_ha_cf
from tests.infra.netns import Lab, wait_for
from tests.vipclient import owner_by_arp, start_responders, wait_answer

pytestmark = [pytest.mark.netns]

VIP = "10.77.0.240"
HARESOURCES = f"n1 {VIP}/24/eth0\n"
AUTHKEYS = "auth 1\n1 sha1 ipv6-media\n"
NUMBER = {"n1": 1, "n2": 2, "client": 3}


def v6(node: str) -> str:
    return f"fd77::{NUMBER[node]}"


def link_local(node: str) -> str:
    return f"fe80::77:{NUMBER[node]}"


def other(node: str) -> str:
    return "n2" if node == "n1" else "n1"


@pytest.fixture(scope="module")
def lab(module_make_lab: LabFactory) -> Lab:
    lab = module_make_lab(("n1", "n2", "client"), ipv6=True)
    for node in NUMBER:
        lab.run(node, ["ip", "-6", "addr", "add", f"{v6(node)}/64", "dev", "eth0", "nodad"])
        lab.run(node, ["ip", "-6", "addr", "add", f"{link_local(node)}/64", "dev", "eth0",
                       "nodad"])
    start_responders(lab)
    return lab


@pytest.fixture
def cluster(lab: Lab) -> Iterator[list[HbdNode]]:
    made: list[HbdNode] = []
    yield made
    for node in made:
        node.kill()
    lab.restore("n1")
    for node in ("n1", "n2"):
        lab.run(node, ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)
        lab.run(node, ["nft", "delete", "table", "inet", "hbdt"], check=False)


def start_pair(lab: Lab, cluster: list[HbdNode], media: dict[str, str],
               extra: str = "") -> tuple[HbdNode, HbdNode]:
    for name in ("n1", "n2"):
        hacf = ha_cf(media[name], extra=f"auto_failback off\n{extra}")
        cluster.append(HbdNode(lab, name, hacf, HARESOURCES, AUTHKEYS).start())
    n1, n2 = cluster
    n1.wait_log(r"Status update for node n2: status active")
    n2.wait_log(r"Status update for node n1: status active")
    return n1, n2


# one shared ha.cf naming both nodes (each skips its own address, as with ucast)
SHARED_UCAST6 = f"ucast6 eth0 {v6('n1')}\nucast6 eth0 {v6('n2')}"


@pytest.mark.parametrize("media", [
    {"n1": SHARED_UCAST6, "n2": SHARED_UCAST6},
    {"n1": f"ucast6 eth0 {link_local('n2')}", "n2": f"ucast6 eth0 {link_local('n1')}%eth0"},
    {"n1": "mcast6 eth0 ff12::694:1 694 1 0", "n2": "mcast6 eth0 ff12::694:1 694 1 0"},
], ids=["ucast6-shared-hacf", "ucast6-link-local", "mcast6"])
def test_ipv6_only_cluster_fails_over(lab: Lab, cluster: list[HbdNode],
                                      media: dict[str, str]) -> None:
    n1, n2 = start_pair(lab, cluster, media)
    wait_answer(lab, VIP, "n1")
    kind = media["n1"].split()[0]
    assert re.search(rf"link {kind} eth0 udp/694 open", n1.log()), n1.log()[-2000:]
    lab.cut("n1")
    wait_answer(lab, VIP, "n2", timeout=5)
    n2.wait_log(r"node n1: is dead")
    assert owner_by_arp(lab, VIP) == "n2"


def test_ping6_node_loss_moves_service_to_better_connected_node(
        lab: Lab, cluster: list[HbdNode]) -> None:
    pings = f"{v6('client')} {link_local('client')}%eth0"
    n1, _ = start_pair(lab, cluster, {"n1": SHARED_UCAST6, "n2": SHARED_UCAST6},
                       extra=f"ping6 {pings}\ndeadping 500ms\n")
    wait_answer(lab, VIP, "n1")
    for address in pings.split():
        n1.wait_log(rf"Status update for node {re.escape(address)}: status ping", 5)
    time.sleep(1.0)
    mark = n1.mark()
    # n1 no longer reaches the ping6 nodes; its heartbeats (ucast6, UDP) still pass
    lab.run("n1", ["nft", "add table inet hbdt; add chain inet hbdt out "
                          "{ type filter hook output priority 0; }; "
                          "add rule inet hbdt out icmpv6 type echo-request drop"])
    n1.wait_log(r"ping nodes: we reach 0 of 2, n2 reaches 2", 10, since=mark)
    wait_answer(lab, VIP, "n2", timeout=5)
    assert owner_by_arp(lab, VIP) == "n2"


PLACEMENTS = ["hbd-primary", "heartbeat-primary"]


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_mixed_cluster_over_ucast6_only_fails_over_both_ways(
        lab: Lab, cluster: list[HbdNode], hb_peer_factory: HbPeerFactory,
        placement: str) -> None:
    hbd_name, hb_name = ("n1", "n2") if placement == "hbd-primary" else ("n2", "n1")
    hb_conf = render_ha_cf(["n1", "n2"], media=[f"ucast6 eth0 {v6(hbd_name)}"],
                           deadtime="1", warntime="500ms", initdead="3")
    heartbeat = hb_peer_factory(lab, hb_name, hb_conf, HARESOURCES, AUTHKEYS, daemon=True)
    hbd = HbdNode(lab, hbd_name,
                  ha_cf(f"ucast6 eth0 {v6(hb_name)}", deadtime="1", warntime="500ms",
                        initdead="3", extra="auto_failback on\ncrm no\n"),
                  HARESOURCES, AUTHKEYS).start()
    cluster.append(hbd)
    heartbeat.wait_status(hbd_name, "active", timeout=30)
    hbd.wait_log(rf"Status update for node {hb_name}: status active", 30)
    assert heartbeat.link_status(hbd_name, "eth0") == "up"
    wait_answer(lab, VIP, "n1", timeout=30)
    # the primary n1 dies (power loss, then a reboot clears its VIP): n2 takes over ...
    primary_is_hbd = hbd_name == "n1"
    if primary_is_hbd:
        hbd.kill()
    else:
        heartbeat.kill()
    lab.run("n1", ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)
    wait_answer(lab, VIP, "n2", timeout=10)
    assert owner_by_arp(lab, VIP) == "n2"
    # ... and n1 comes back: auto_failback on moves the VIP home, over ucast6 alone
    if primary_is_hbd:
        hbd.start()
    else:
        heartbeat.start(daemon=True)
    wait_for(lambda: lab.has_address("n1", VIP) and not lab.has_address("n2", VIP), 40,
             "VIP back on n1 only")
    wait_answer(lab, VIP, "n1", timeout=10)
    assert owner_by_arp(lab, VIP) == "n1"
    heartbeat.wait_status(hbd_name, "active", timeout=10)
