"""Link tracking with real daemons in network namespaces, checked from a client.

Topology: n1, n2 and client on one bridge, and a null-modem cable (a pty pair
relayed by the test) between n1 and n2.  The VIP lives on eth0; hbd sends
heartbeats on eth0 and on the serial line, so when eth0 loses carrier the nodes
still hear each other over the cable: nobody is declared dead, the group moves
because of link tracking alone.  Carrier loss on a veth: the switch's end of the
cable is set down.

In order, on one cluster (auto_failback on): carrier loss on n1's eth0 moves the
group to n2 at once (the client is answered by n2, its ARP entry is n2's MAC)
while serial heartbeats continue; carrier back brings it home after the settle
time; with n2's eth0 down, n2 refuses the group and it stays on n1; a reload
adding `track_interface` for an interface that does not exist moves the group,
and one removing it brings it back; an address removed by someone else moves
the group.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from tests.hbdproc import HbdNode, ha_cf
from tests.infra.fixtures import LabFactory
from tests.infra.netns import Lab, wait_for
from tests.infra.serialpair import PtyCable
from tests.vipclient import owner_by_arp, start_responders, wait_answer, who_answers

pytestmark = [pytest.mark.netns]

VIP = "10.77.0.241"
GROUP = f"{VIP}/24/eth0"


def switch_port(lab: Lab, node: str, up: bool) -> None:
    """The far end of node's eth0 cable: down means no carrier on eth0."""
    if up:
        lab.restore(node)
    else:
        lab.cut(node)  # the switch-side veth goes down: NO-CARRIER on the node's eth0


@pytest.fixture(scope="module")
def cluster(module_make_lab: LabFactory) -> Iterator[tuple[Lab, dict[str, HbdNode]]]:
    lab = module_make_lab(("n1", "n2", "client"), networks=1)
    nodes: dict[str, HbdNode] = {}
    responders = start_responders(lab)
    cable = PtyCable()
    try:
        ttys = dict(zip(("n1", "n2"), cable.start(), strict=True))
        for name in ("n1", "n2"):
            hacf = ha_cf(f"bcast eth0\nbaud 115200\nserial {ttys[name]}",
                         extra="auto_failback on\n")
            nodes[name] = HbdNode(lab, name, hacf, f"n1 {GROUP}\n").start()
        nodes["n1"].wait_log(r"Status update for node n2: status active")
        wait_answer(lab, VIP, "n1", timeout=15)
        yield lab, nodes
    finally:
        for node in nodes.values():
            node.stop()
        cable.close()
        for proc in responders:
            lab.stop(proc)


def test_carrier_loss_moves_the_group_while_serial_heartbeats_continue(
        cluster: tuple[Lab, dict[str, HbdNode]]) -> None:
    lab, nodes = cluster
    n1, n2 = nodes["n1"], nodes["n2"]
    m1, m2 = n1.mark(), n2.mark()
    lost = time.monotonic()
    switch_port(lab, "n1", up=False)
    try:
        n1.wait_log(r"tracked interface eth0: up -> no-carrier", since=m1, timeout=5)
        took = wait_answer(lab, VIP, "n2", timeout=5)
        assert time.monotonic() - lost < 3.0, f"served by n2 only after {took:.2f} s"
        assert owner_by_arp(lab, VIP) == "n2"
        n1.wait_log(r"group .*: handing it to the peer, unfit here \(.*eth0 lost carrier",
                    since=m1, timeout=1)
        time.sleep(1.0)  # well beyond the 500 ms deadtime: still nobody dead
        assert "is dead" not in n2.log()[m2:] and "is dead" not in n1.log()[m1:]
        assert "Link n1:eth0 dead" in n2.log()[m2:]  # eth0's heartbeats stopped...
        assert "Link n1:/" not in n2.log()[m2:]  # ... the serial line's did not
        assert not lab.has_address("n1", VIP)
    finally:
        switch_port(lab, "n1", up=True)
    # carrier back: after the settle time auto_failback brings the group home
    n1.wait_log(r"tracked interface eth0: no-carrier -> up", since=m1, timeout=5)
    n1.wait_log(r"may run on this node again \(link:eth0 cleared\)", since=m1, timeout=5)
    wait_answer(lab, VIP, "n1", timeout=10)


def test_the_peer_with_its_interface_down_refuses(
        cluster: tuple[Lab, dict[str, HbdNode]]) -> None:
    lab, nodes = cluster
    n1, n2 = nodes["n1"], nodes["n2"]
    wait_answer(lab, VIP, "n1", timeout=10)
    m1, m2 = n1.mark(), n2.mark()
    switch_port(lab, "n2", up=False)
    try:
        n2.wait_log(r"tracked interface eth0: up -> no-carrier", since=m2, timeout=5)
        switch_port(lab, "n1", up=False)
        n1.wait_log(r"n2 refuses to take \[.*\]", since=m1, timeout=5)
        time.sleep(0.5)
        # nobody can do better: the group keeps running on n1, n2 never started it
        assert lab.has_address("n1", VIP) and not lab.has_address("n2", VIP)
        assert "taking over group" not in n2.log()[m2:]
    finally:
        switch_port(lab, "n1", up=True)
        switch_port(lab, "n2", up=True)
    n1.wait_log(r"tracked interface eth0: no-carrier -> up", since=m1, timeout=5)
    n2.wait_log(r"tracked interface eth0: no-carrier -> up", since=m2, timeout=5)
    wait_answer(lab, VIP, "n1", timeout=10)


def test_a_reload_tracking_a_missing_interface_moves_the_group_and_back(
        cluster: tuple[Lab, dict[str, HbdNode]]) -> None:
    lab, nodes = cluster
    n1 = nodes["n1"]
    wait_answer(lab, VIP, "n1", timeout=10)
    time.sleep(1.5)  # the previous test's links settled
    m1 = n1.mark()
    conf = n1.config_dir / "hbd.conf"
    conf.write_text(f"track_interface {GROUP} uplink0\n")
    n1.signal(signal.SIGHUP)
    n1.wait_log(r"configuration reloaded", since=m1, timeout=10)
    n1.wait_log(r"unfit on this node \(link:uplink0: uplink0 does not exist\)", since=m1,
                timeout=5)
    wait_answer(lab, VIP, "n2", timeout=5)
    m1 = n1.mark()
    conf.write_text("")
    n1.signal(signal.SIGHUP)
    n1.wait_log(r"may run on this node again \(link:uplink0 cleared\)", since=m1, timeout=10)
    wait_answer(lab, VIP, "n1", timeout=10)  # auto_failback on


def test_an_address_removed_by_someone_else_moves_the_group(
        cluster: tuple[Lab, dict[str, HbdNode]]) -> None:
    lab, nodes = cluster
    n1 = nodes["n1"]
    wait_answer(lab, VIP, "n1", timeout=10)
    time.sleep(1.0)
    m1 = n1.mark()
    lab.run("n1", ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"])
    n1.wait_log(rf"address {VIP} was removed from eth0 by someone else", since=m1, timeout=5)
    wait_answer(lab, VIP, "n2", timeout=5)
    assert wait_for(lambda: owner_by_arp(lab, VIP) == "n2", 3, "client's ARP on n2")
    time.sleep(2.0)
    assert who_answers(lab, VIP) == "n2"  # it stays away (until hbctl cleanup)
