"""Link tracking in the sans-I/O core (hbd.core.linktrack) on the simulated network.

The tracker is fed interface states as the netlink adapter would report them;
the groups move through the unfit-here mechanism of hbd.core.monitoring while
heartbeats keep flowing (SimNet's two links are untouched: only the tracked
interface's state changes).  On the Corosync stack (tests/cpgsim.py) the same
tracker drives Placement: the group goes to the next node of its order.
"""

from __future__ import annotations

import pytest

from hbd import snapshot
from hbd.core.actions import (
    AddressRemoved,
    CpgSend,
    GroupRecovery,
    TrackedLinkChanged,
    Transmit,
)
from hbd.core.cpgwire import decode
from hbd.core.linktrack import ADDRESS_GRACE, SETTLE, LinkState, LinkTracker
from hbd.core.placement import Placement
from hbd.core.resources import GroupState
from hbd.core.standby import Standby
from tests.cpgsim import SimCorosync
from tests.simnet import SimNet, make_config

G1, G2 = "10.0.0.1", "10.0.0.2"
HARESOURCES = f"n1 {G1}\nn2 {G2}\n"
UP, NO_CARRIER, DOWN, ABSENT = (LinkState.UP, LinkState.NO_CARRIER, LinkState.DOWN,
                                LinkState.ABSENT)


def cluster(failback: str = "on") -> tuple[SimNet, dict[str, LinkTracker]]:
    def cfg(node: str) -> object:
        return make_config(node, haresources=HARESOURCES, extra=f"auto_failback {failback}\n")
    net = SimNet({"n1": cfg("n1"), "n2": cfg("n2")})  # type: ignore[dict-item]
    trackers = {}
    for name, node in net.nodes.items():
        tracker = LinkTracker(node.failover)
        net._apply(node, tracker.configure({"eth0": [G1, G2]}, {G1: G1, G2: G2},
                                           {G1: "eth0", G2: "eth0"}, net.now, net.wall))
        net._apply(node, tracker.link("eth0", UP, net.now, net.wall))
        net._apply(node, tracker.synced(["lo", "eth0"], net.now, net.wall))
        trackers[name] = tracker
    net.run_for(1.5)
    assert net.holders(G1) == ["n1"] and net.holders(G2) == ["n2"]
    return net, trackers


def feed(net: SimNet, trackers: dict[str, LinkTracker], node: str, state: LinkState,
         interface: str = "eth0") -> None:
    net._apply(net.nodes[node], trackers[node].link(interface, state, net.now, net.wall))


def tick(net: SimNet, trackers: dict[str, LinkTracker], seconds: float) -> None:
    """Run the network, serving the trackers' timers as the stack's one timer would."""
    end = net.now + seconds
    while True:
        due = [t for t in (tr.next_timer() for tr in trackers.values()) if t is not None]
        at = min(due) if due else None
        if at is None or at > end:
            net.run_until(end)
            return
        net.run_until(max(at, net.now))
        for name, tracker in trackers.items():
            net._apply(net.nodes[name], tracker.handle_timer(net.now, net.wall))


def test_carrier_loss_hands_the_group_over_at_once_and_it_returns_after_settling() -> None:
    net, trackers = cluster()
    lost_at = net.now
    feed(net, trackers, "n1", NO_CARRIER)
    changed = [a for _, a in net.events("n1", TrackedLinkChanged, lost_at)]
    assert changed == [TrackedLinkChanged("eth0", "up", "no-carrier", (G1, G2))]
    net.run_for(0.2)  # well under the 500 ms deadtime: no death was needed
    assert net.holders(G1) == ["n2"] and net.holders(G2) == ["n2"]
    assert net.status_of("n2", "n1") == "active"  # heartbeats still flow
    moves = [a for _, a in net.events("n1", GroupRecovery, lost_at) if a.what == "move"]
    assert moves and "eth0 lost carrier" in moves[0].detail
    assert [r.name for r in net.nodes["n1"].failover.unfit_reasons(G1)] == ["link:eth0"]
    # carrier back: nothing happens before SETTLE, then auto_failback brings G1 home
    back_at = net.now
    feed(net, trackers, "n1", UP)
    tick(net, trackers, SETTLE - 0.1)
    assert net.holders(G1) == ["n2"]
    tick(net, trackers, 1.0)
    assert net.holders(G1) == ["n1"] and net.holders(G2) == ["n2"]
    fit = [a for _, a in net.events("n1", GroupRecovery, back_at) if a.what == "fit"]
    assert fit and fit[0].group == G1


def test_a_flapping_cable_is_not_cleared_until_it_stays_up() -> None:
    net, trackers = cluster()
    feed(net, trackers, "n1", NO_CARRIER)
    net.run_for(0.3)
    for _ in range(5):  # up for less than SETTLE each time
        feed(net, trackers, "n1", UP)
        tick(net, trackers, SETTLE / 2)
        feed(net, trackers, "n1", NO_CARRIER)
        tick(net, trackers, 0.1)
    assert net.holders(G1) == ["n2"]
    assert net.nodes["n1"].failover.unfit_reasons(G1)
    assert [a for _, a in net.events("n1", GroupRecovery) if a.what == "fit"] == []


def test_the_peer_with_its_interface_down_refuses_and_the_group_stays() -> None:
    net, trackers = cluster()
    feed(net, trackers, "n2", DOWN)  # n2 gives G2 to n1 and will not take G1
    net.run_for(0.5)
    assert net.holders(G2) == ["n1"]
    lost_at = net.now
    feed(net, trackers, "n1", NO_CARRIER)
    net.run_for(1.0)
    refusals = [a for t, a in net.nodes["n2"].actions if isinstance(a, Transmit)
                and t >= lost_at and b"hbd_refused" in a.netstring]
    assert refusals
    # nobody can do better: a group unfit for a link keeps running where it is
    assert net.holders(G1) == ["n1"] and net.holders(G2) == ["n1"]
    assert net.nodes["n1"].failover.standby.state is Standby.NOT


def test_a_peer_with_its_interface_down_does_not_take_over_when_the_active_node_dies() -> None:
    net, trackers = cluster()
    feed(net, trackers, "n2", ABSENT)
    net.run_for(0.5)
    assert net.holders(G2) == ["n1"]
    net.nodes["n1"].alive = False
    net.run_for(2.0)
    # n2 knows n1 is dead but runs neither group: its eth0 is gone
    assert net.status_of("n2", "n1") == "dead"
    assert [g.state for g in net.nodes["n2"].failover.groups] == [GroupState.STOPPED] * 2
    # its interface comes back: after settling, it starts both (nobody runs them)
    feed(net, trackers, "n2", UP)
    tick(net, trackers, SETTLE + 0.5)
    assert [g.state for g in net.nodes["n2"].failover.groups] == [GroupState.RUNNING] * 2


def test_an_address_removed_by_someone_else_moves_the_group_until_cleanup() -> None:
    net, trackers = cluster()
    trackers["n1"].address_removed(G1, "eth0", net.now)
    tick(net, trackers, ADDRESS_GRACE + 0.3)
    removed = [a for _, a in net.events("n1", AddressRemoved)]
    assert removed == [AddressRemoved(G1, G1, "eth0")]
    assert net.holders(G1) == ["n2"]
    reasons = net.nodes["n1"].failover.unfit_reasons(G1)
    assert [r.name for r in reasons] == [f"address:{G1}"] and reasons[0].admin_clears
    net._apply(net.nodes["n1"], net.command("n1", "cleanup", G1))
    net.run_for(1.0)
    assert net.holders(G1) == ["n1"]


def test_an_address_removed_with_its_link_or_put_back_or_by_hbd_is_no_failure() -> None:
    net, trackers = cluster()
    # put back within the grace
    trackers["n1"].address_removed(G1, "eth0", net.now)
    trackers["n1"].address_added(G1)
    # gone with its interface: the link reason covers it, no address reason
    trackers["n2"].address_removed(G2, "eth0", net.now)
    feed(net, trackers, "n2", DOWN)
    tick(net, trackers, ADDRESS_GRACE + 0.5)
    assert net.events("n1", AddressRemoved) == [] and net.events("n2", AddressRemoved) == []
    assert [r.name for r in net.nodes["n2"].failover.unfit_reasons(G2)] == ["link:eth0"]
    assert net.holders(G2) == ["n1"]


def test_hbd_removing_an_address_itself_is_no_failure() -> None:
    net, trackers = cluster()
    net._apply(net.nodes["n1"], net.command("n1", "release", "local"))
    g1 = net.nodes["n1"].failover.groups.groups[G1]
    for _ in range(100):  # until the standby exchange has n1 stopping G1
        if g1.state is GroupState.STOPPING:
            break
        net.run_for(0.001)
    assert g1.state is GroupState.STOPPING
    trackers["n1"].address_removed(G1, "eth0", net.now)
    tick(net, trackers, ADDRESS_GRACE + 0.5)
    assert net.events("n1", AddressRemoved) == []
    assert net.holders(G1) == ["n2"] and net.nodes["n1"].failover.unfit_reasons(G1) == []


def test_reload_and_sync_change_what_is_tracked() -> None:
    net, trackers = cluster()
    n1, tracker = net.nodes["n1"], trackers["n1"]
    # an interface listed nowhere in the dump is absent: G1 needs it
    net._apply(n1, tracker.configure({"eth0": [G1, G2], "eth7": [G1]}, {}, {}, net.now,
                                     net.wall))
    net._apply(n1, tracker.synced(["lo", "eth0"], net.now, net.wall))
    net.run_for(0.5)
    assert net.holders(G1) == ["n2"]
    assert [(t.interface, t.state, t.groups) for t in tracker.tracked()] == [
        ("eth0", "up", (G1, G2)), ("eth7", "absent", (G1,))]
    # a reload that no longer tracks eth7 clears the reason: G1 comes home (failback on)
    net._apply(n1, tracker.configure({"eth0": [G1, G2]}, {}, {}, net.now, net.wall))
    net.run_for(1.0)
    assert net.holders(G1) == ["n1"]
    assert n1.failover.unfit_reasons(G1) == []


def test_repeats_and_untracked_interfaces_change_nothing() -> None:
    net, trackers = cluster()
    tracker = trackers["n1"]
    assert tracker.link("eth0", UP, net.now, net.wall) == []
    assert tracker.link("eth9", DOWN, net.now, net.wall) == []
    assert tracker.link("eth0", LinkState.UNKNOWN, net.now, net.wall) == []
    assert tracker.next_timer() is None
    assert net.events("n1", TrackedLinkChanged) == []  # unknown -> up at start is no news


def test_after_the_dump_a_newly_tracked_unknown_interface_is_absent() -> None:
    net, trackers = cluster()
    n1, tracker = net.nodes["n1"], trackers["n1"]
    net._apply(n1, tracker.configure({"eth0": [G1, G2], "uplink0": [G1]}, {}, {}, net.now,
                                     net.wall))
    assert ("uplink0", "absent", (G1,)) in [(t.interface, t.state, t.groups)
                                           for t in tracker.tracked()]
    net.run_for(0.5)
    assert net.holders(G1) == ["n2"]
    # it appears (and stays up): G1 may come home
    feed(net, trackers, "n1", UP, "uplink0")
    tick(net, trackers, SETTLE + 0.5)
    assert net.holders(G1) == ["n1"]
    # a resync after lost events: an interface missing from the new dump is gone
    net._apply(n1, tracker.synced(["lo", "eth0"], net.now, net.wall))
    net.run_for(0.5)
    assert net.holders(G1) == ["n2"]


# --- the Corosync stack: the same tracker on Placement (tests/cpgsim.py) --------------------

N3 = ("n1", "n2", "n3")


def corosync_cluster(seed: int, *, down_at_start: bool = False) -> tuple[SimCorosync,
                                                                          LinkTracker]:
    """Three nodes; n1 tracks eth0 for G1 (its first group).  `down_at_start`: eth0 has no
    carrier before n1's hbd joins (the daemon starts tracking before it connects)."""
    resources = "".join(f"{n} 10.0.0.{i}\n" for i, n in enumerate(N3, start=1))
    sim = SimCorosync(N3, resources, seed=seed, hbdconf="track_interface 10.0.0.1 eth0\n")
    n1 = sim.nodes["n1"]
    n1.placement = Placement(n1.config)
    tracker = LinkTracker(n1.placement)
    sim._apply(n1, tracker.configure({"eth0": [G1]}, {}, {}, sim.now, sim.now))
    sim._apply(n1, tracker.link("eth0", NO_CARRIER if down_at_start else UP, sim.now, sim.now))
    sim._apply(n1, tracker.synced(["lo", "eth0"], sim.now, sim.now))
    sim._join(n1)
    for name in N3[1:]:
        sim.start_hbd(name)
    sim.settle()
    return sim, tracker


def corosync_tick(sim: SimCorosync, tracker: LinkTracker, seconds: float) -> None:
    """Let time pass, serving n1's tracker as the stack's one timer would."""
    end = sim.now + seconds
    while (at := tracker.next_timer()) is not None and at <= end:
        sim.advance(max(at - sim.now, 0.0))
        sim._apply(sim.nodes["n1"], tracker.handle_timer(sim.now, sim.now))
        sim.settle()
    sim.advance(end - sim.now)
    sim.settle()


@pytest.mark.parametrize("seed", range(1, 4))
def test_corosync_carrier_loss_moves_the_group_to_the_next_node_and_back(seed: int) -> None:
    sim, tracker = corosync_cluster(seed)
    assert sim.placement()[G1] == ["n1"]
    n1 = sim.nodes["n1"]
    lost_at = len(n1.actions)
    sim._apply(n1, tracker.link("eth0", NO_CARRIER, sim.now, sim.now))
    sim.settle()
    assert sim.placement()[G1] == ["n2"]  # the next node of its order, nobody died
    assert TrackedLinkChanged("eth0", "up", "no-carrier", (G1,)) in n1.actions[lost_at:]
    sends = [a for a in n1.actions if isinstance(a, CpgSend)]
    assert G1 in decode(sends[-1].payload).failed  # announced: every view leaves n1 out
    snap = snapshot.corosync(n1.placement, "n1", N3, {}, None,  # type: ignore[arg-type]
                             tracker.tracked())
    assert [(t.interface, t.state, t.groups) for t in snap.tracked_links] == [
        ("eth0", "no-carrier", (G1,))]
    assert next(g for g in snap.groups if g.key == G1).unfit == "eth0 lost carrier"
    # carrier back: not before SETTLE; then G1 is fit and comes home (auto_failback on)
    sim._apply(n1, tracker.link("eth0", UP, sim.now, sim.now))
    corosync_tick(sim, tracker, SETTLE - 0.1)
    assert sim.placement()[G1] == ["n2"]
    corosync_tick(sim, tracker, 1.0)
    assert sim.placement()[G1] == ["n1"]
    assert [node for node, key in sim.started if key == G1] == ["n1", "n2", "n1"]


@pytest.mark.parametrize("seed", range(1, 3))
def test_corosync_a_link_down_before_joining_keeps_the_group_away(seed: int) -> None:
    sim, tracker = corosync_cluster(seed, down_at_start=True)
    assert sim.placement()[G1] == ["n2"]
    assert all(node != "n1" for node, key in sim.started if key == G1)
    sim._apply(sim.nodes["n1"], tracker.link("eth0", UP, sim.now, sim.now))
    corosync_tick(sim, tracker, SETTLE + 0.5)
    assert sim.placement()[G1] == ["n1"]
