"""The resource protocol in the sans-I/O core, on the simulated network.

Every protocol transition of issue 4 at the core level: start-up, hard
failover, failback on/off, standby and takeover with each scope, graceful
stop, start and stop failures, split brain heal, a stalled node, legacy
mode; and the illegal moves of each state machine.
"""

from __future__ import annotations

import pytest

from hbd import snapshot
from hbd.control import PingInfo
from hbd.core.actions import (
    AnnounceGroup,
    GroupFailed,
    Notice,
    PingNodeChanged,
    SplitBrain,
    StartGroup,
    StopGroup,
    Transmit,
)
from hbd.core.failover import RSC_TRANSITIONS, RscState
from hbd.core.fsm import StateMachine
from hbd.core.resources import GROUP_TRANSITIONS, GroupState, Held, takeover_request_scope
from hbd.errors import Busy, InvalidScope, TransitionError
from tests.simnet import SimNet, make_config

G1, G2 = "10.0.0.1", "10.0.0.2"  # n1's and n2's groups
HARESOURCES = f"n1 {G1}\nn2 {G2}\n"


def cluster(failback: str = "on", *, seed: int = 1) -> SimNet:
    kw = dict(haresources=HARESOURCES, extra=f"auto_failback {failback}\n")
    net = SimNet({"n1": make_config("n1", **kw), "n2": make_config("n2", **kw)},  # type: ignore[arg-type]
                 seed=seed)
    net.run_for(1.5)
    return net


def sent(net: SimNet, node: str, msgtype: str, since: float = 0.0) -> int:
    return sum(1 for t, a in net.nodes[node].actions
               if isinstance(a, Transmit) and a.msgtype == msgtype and t >= since)


def test_start_each_node_takes_its_own_group_at_once() -> None:
    net = cluster()
    assert net.holders(G1) == ["n1"] and net.holders(G2) == ["n2"]
    for node in ("n1", "n2"):
        failover = net.nodes[node].failover
        assert failover.state.state is RscState.STABLE
        assert failover.rscstatus() == "local"
        assert sent(net, node, "starting") == 1


@pytest.mark.parametrize("failback", ["on", "off"])
def test_hard_failover_then_failback_only_when_on(failback: str) -> None:
    net = cluster(failback)
    net.cut("n1")
    cut_at = net.now
    net.run_for(1.0)
    assert net.holders(G1) == ["n1", "n2"]  # n1 still has it (it is cut off, not dead)
    assert net.nodes["n2"].failover.rscstatus() == "all"
    took = [t for t, a in net.nodes["n2"].actions
            if getattr(a, "group", None) == G1 and type(a).__name__ == "StartGroup"]
    assert took and took[0] - cut_at <= 0.5 + 0.1 + 0.01
    assert sent(net, "n2", "stonith") == 1
    # n1 really goes away: crash it; bring it back as a fresh start
    net.nodes["n1"].alive = False
    net.run_for(0.5)
    net.cut("n1", cut=False)
    net.add_node("n1", make_config("n1", haresources=HARESOURCES,
                                   extra=f"auto_failback {failback}\n"), generation=200)
    net.run_for(2.0)
    expected = ["n1"] if failback == "on" else ["n2"]
    assert net.holders(G1) == expected
    assert net.holders(G2) == ["n2"]


SCOPE_CASES = [
    # (who runs standby, scope) -> where G1 and G2 end up
    ("n1", "all", ["n2"], ["n2"]),
    ("n1", "local", ["n2"], ["n2"]),
    ("n1", "foreign", ["n1"], ["n2"]),  # n1 holds no foreign group: nothing moves
    ("n2", "local", ["n1"], ["n1"]),
    ("n2", "all", ["n1"], ["n1"]),
]


@pytest.mark.parametrize("node,scope,g1,g2", SCOPE_CASES)
def test_standby_scopes(node: str, scope: str, g1: list[str], g2: list[str]) -> None:
    net = cluster("off")
    net.command(node, "release", scope)
    net.run_for(1.0)
    assert (net.holders(G1), net.holders(G2)) == (g1, g2)
    for name in ("n1", "n2"):
        assert net.nodes[name].failover.rscstatus() != "transition"


def test_standby_foreign_and_failback_give_back_what_we_took() -> None:
    net = cluster("off")
    net.command("n1", "release", "all")
    net.run_for(1.0)
    assert net.holders(G1) == ["n2"]
    net.command("n2", "release", "foreign")  # G1 is foreign on n2
    net.run_for(1.0)
    assert (net.holders(G1), net.holders(G2)) == (["n1"], ["n2"])
    net.command("n1", "release", "all")
    net.run_for(1.0)
    net.command("n2", "release", "failback")
    net.run_for(1.0)
    assert (net.holders(G1), net.holders(G2)) == (["n1"], ["n2"])


@pytest.mark.parametrize("scope,g1,g2", [
    ("all", ["n1"], ["n1"]), ("local", ["n1"], ["n2"]), ("foreign", ["n2"], ["n1"]),
    ("failback", ["n1"], ["n1"])])
def test_takeover_scopes(scope: str, g1: list[str], g2: list[str]) -> None:
    net = cluster("off")
    net.command("n1", "release", "all")
    net.run_for(1.0)
    assert net.holders(G1) == ["n2"]
    net.command("n1", "takeover", scope)
    net.run_for(1.0)
    assert (net.holders(G1), net.holders(G2)) == (g1, g2)


def test_takeover_scope_mapping_matches_heartbeat() -> None:
    assert [takeover_request_scope(s) for s in ("all", "local", "foreign", "failback")] == [
        "all", "foreign", "local", "all"]


def test_bad_commands_change_nothing() -> None:
    net = cluster("off")
    with pytest.raises(InvalidScope):
        net.command("n1", "release", "everything")
    with pytest.raises(InvalidScope):
        net.command("n1", "takeover", "")
    net.command("n1", "release", "all")
    with pytest.raises(Busy, match="already under way"):
        net.command("n1", "release", "all")
    net.run_for(1.0)
    assert net.holders(G1) == ["n2"]


def test_graceful_stop_hands_over_at_once() -> None:
    net = cluster()
    start = net.now
    net.command("n1", "shutdown")
    net.run_for(0.2)
    assert net.holders(G1) == ["n2"] and net.holders(G2) == ["n2"]
    shutdone_at = next(t for t, a in net.nodes["n1"].actions
                   if isinstance(a, Transmit) and a.msgtype == "shutdone")
    took_at = next(t for t, a in net.nodes["n2"].actions
               if type(a).__name__ == "GroupStateChanged" and getattr(a, "new", "") == "running"
               and getattr(a, "group", "") == G1)
    assert took_at - start < 0.05  # no deadtime wait
    assert shutdone_at < took_at
    assert net.nodes["n1"].failover.shutdown_done


def test_shutdown_while_a_group_is_starting_stops_it_once_started() -> None:
    # SIGTERM right after start-up: the group's start is still under way.  The stop
    # must wait for it, then stop it and only then say `shutdone` (found by the
    # start-up benchmark: the daemon used to hang holding the VIP).
    kw = dict(haresources=HARESOURCES, extra="auto_failback on\n")
    net = SimNet({"n1": make_config("n1", **kw), "n2": make_config("n2", **kw)})  # type: ignore[arg-type]
    net.nodes["n1"].runner.delay = 0.3
    while not any(isinstance(a, StartGroup) and a.group == G1
                  for _, a in net.nodes["n1"].actions):
        net.run_for(0.01)
        assert net.now < 5
    assert net.nodes["n1"].failover.groups.groups[G1].state is GroupState.STARTING
    net.command("n1", "shutdown")
    net.run_for(2.0)
    assert net.nodes["n1"].failover.shutdown_done
    assert net.holders(G1) == ["n2"] and net.holders(G2) == ["n2"]
    n1 = net.nodes["n1"].actions
    stopped_at = next(t for t, a in n1 if isinstance(a, StopGroup) and a.group == G1)
    shutdone_at = next(t for t, a in n1 if isinstance(a, Transmit) and a.msgtype == "shutdone")
    assert stopped_at < shutdone_at


def test_reload_stops_and_forgets_a_removed_group_and_starts_an_added_one() -> None:
    net = cluster("off")
    G3 = "10.0.0.3"
    kw = dict(haresources=f"n2 {G2}\nn1 {G3}\n", extra="auto_failback off\n")
    net.command("n1", "reconfigure", make_config("n1", **kw))  # type: ignore[arg-type]
    n1 = net.nodes["n1"].failover
    assert G1 in n1.retiring  # still running: stopped first
    net.run_for(0.5)
    assert G1 not in n1.groups.groups and G1 not in n1.retiring
    assert net.holders(G1) == [] and net.holders(G3) == ["n1"] and net.holders(G2) == ["n2"]


def test_start_failure_hands_the_group_to_the_peer() -> None:
    kw = dict(haresources=HARESOURCES, extra="auto_failback off\n")
    net = SimNet({"n1": make_config("n1", **kw), "n2": make_config("n2", **kw)})  # type: ignore[arg-type]
    net.nodes["n1"].runner.fail_start.add(G1)
    net.run_for(2.0)
    assert net.holders(G1) == ["n2"]
    failed = [a for _, a in net.nodes["n1"].actions if isinstance(a, GroupFailed)]
    assert [(f.group, f.operation) for f in failed] == [(G1, "start")]


def test_stop_failure_blocks_the_group_until_cleanup() -> None:
    net = cluster("off")
    net.nodes["n1"].runner.fail_stop.add(G1)
    net.command("n1", "release", "all")
    net.run_for(3.0)
    group = net.nodes["n1"].failover.groups.groups[G1]
    assert group.state is GroupState.BLOCKED
    assert net.holders(G1) == ["n1"]  # the peer never started it
    assert "n2" not in net.holders(G1)
    net.command("n1", "shutdown")  # refuses to finish while blocked
    net.run_for(1.0)
    assert not net.nodes["n1"].failover.shutdown_done
    net.nodes["n1"].runner.fail_stop.clear()  # the admin fixed it
    net.command("n1", "cleanup", G1)
    net.run_for(1.0)
    assert group.state is GroupState.STOPPED
    assert net.nodes["n1"].failover.shutdown_done
    assert net.holders(G1) == ["n2"]


def test_split_brain_heals_to_one_owner_each_on_its_home_node() -> None:
    net = cluster("off")
    net.cut("n1")
    net.run_for(1.5)
    assert net.holders(G1) == ["n1", "n2"] and net.holders(G2) == ["n1", "n2"]
    net.cut("n1", cut=False)
    net.run_for(2.0)
    assert net.holders(G1) == ["n1"] and net.holders(G2) == ["n2"]
    for node, mine in (("n1", G1), ("n2", G2)):
        events = [a for _, a in net.nodes[node].actions if isinstance(a, SplitBrain)]
        assert {(e.group, e.keeper) for e in events} == {(G1, "n1"), (G2, "n2")}
        assert [a.group for _, a in net.nodes[node].actions
                if isinstance(a, AnnounceGroup)] == [mine]


def test_stalled_node_gives_up_what_the_peer_took() -> None:
    net = cluster("off")
    net.freeze("n1")
    net.run_for(2.0)  # n2 declares n1 dead and takes G1
    assert net.holders(G1) == ["n1", "n2"]
    net.thaw("n1")
    net.run_for(2.0)
    assert net.holders(G1) == ["n2"] and net.holders(G2) == ["n2"]
    assert net.nodes["n1"].failover.rscstatus() == "none"


def test_legacy_mode_requests_own_groups_with_ip_request() -> None:
    net = cluster("legacy")
    assert net.holders(G1) == ["n1"] and net.holders(G2) == ["n2"]
    assert sent(net, "n1", "ip-request") == 1 and sent(net, "n2", "ip-request-resp") >= 1
    with pytest.raises(Busy, match="legacy"):
        net.command("n1", "release", "all")
    net.cut("n1")
    net.run_for(1.0)
    assert "n2" in net.holders(G1)


def test_state_machines_refuse_illegal_moves_and_stay_put() -> None:
    group = StateMachine("g", GroupState.STOPPED, GROUP_TRANSITIONS)
    with pytest.raises(TransitionError):
        group.move(GroupState.RUNNING)
    assert group.state is GroupState.STOPPED
    rsc = StateMachine("r", RscState.STABLE, RSC_TRANSITIONS)
    with pytest.raises(TransitionError):
        rsc.move(RscState.STARTING)
    assert rsc.state is RscState.STABLE
    net = cluster()
    with pytest.raises(TransitionError):  # a start report for a running group
        net.nodes["n1"].failover.group_done(G1, "start", True, "", net.now, net.wall)
    assert net.nodes["n1"].failover.groups.groups[G1].state is GroupState.RUNNING


def test_held_sets_mirror() -> None:
    assert Held.LOCAL.mirror() is Held.FOREIGN and Held.ALL.mirror() is Held.ALL
    assert Held.parse("foreign") is Held.FOREIGN and Held.parse("bogus") is None


def test_fewer_ping_nodes_hands_groups_to_the_better_connected_peer() -> None:
    kw = dict(haresources=HARESOURCES,
              extra="auto_failback off\nping 10.9.0.1 10.9.0.2\nping_group gw 10.9.1.1 10.9.1.2\n"
                    "deadping 500ms\n")
    net = SimNet({"n1": make_config("n1", **kw), "n2": make_config("n2", **kw)})  # type: ignore[arg-type]
    net.run_for(2.0)
    assert net.nodes["n1"].pings.reachable(net.now) == 3
    net.nodes["n1"].unreachable.add("10.9.1.1")  # one member of a group: the group stays up
    net.run_for(2.0)
    assert net.nodes["n1"].pings.reachable(net.now) == 3
    assert (net.holders(G1), net.holders(G2)) == (["n1"], ["n2"])
    net.nodes["n1"].unreachable.add("10.9.0.1")  # n1 loses a ping node; n2 does not
    net.run_for(3.0)
    assert net.nodes["n1"].pings.reachable(net.now) == 2
    assert (net.holders(G1), net.holders(G2)) == (["n2"], ["n2"])
    net.nodes["n1"].unreachable.clear()  # equal again: nothing moves back by itself
    net.run_for(3.0)
    assert (net.holders(G1), net.holders(G2)) == (["n2"], ["n2"])


@pytest.mark.parametrize("respawned,signed_on", [(True, False), (False, True)])
def test_the_built_in_rule_steps_aside_for_ipfail(respawned: bool, signed_on: bool) -> None:
    """A respawned (or signed-on) ipfail decides alone: the imbalance moves nothing here,
    and the ping nodes' status changes still reach the API clients (PingNodeChanged)."""
    kw = dict(haresources=HARESOURCES,
              extra="auto_failback off\nping 10.9.0.1\ndeadping 500ms\n")
    net = SimNet({"n1": make_config("n1", **kw), "n2": make_config("n2", **kw)})  # type: ignore[arg-type]
    for node in net.nodes.values():
        node.pings.ipfail_respawned, node.pings.ipfail_signed_on = respawned, signed_on
    net.run_for(2.0)
    mark = net.now
    net.nodes["n1"].unreachable.add("10.9.0.1")
    net.run_for(3.0)
    assert (net.holders(G1), net.holders(G2)) == (["n1"], ["n2"])
    assert [a for _, a in net.events("n1", PingNodeChanged, mark)] == [
        PingNodeChanged("10.9.0.1", False)]


def test_ping_node_status_and_its_log_lines() -> None:
    kw = dict(haresources=HARESOURCES,
              extra="ping 10.9.0.1\nping_group gw 10.9.1.1 10.9.1.2\ndeadping 500ms\n")
    net = SimNet({"n1": make_config("n1", **kw), "n2": make_config("n2", **kw)})  # type: ignore[arg-type]
    pings = net.nodes["n1"].pings
    assert pings.statuses(net.now) == [("10.9.0.1", False), ("gw", False)]  # nothing heard yet
    net.run_for(1.0)
    assert pings.statuses(net.now) == [("10.9.0.1", True), ("gw", True)]

    def notices(since: float) -> list[str]:
        return [a.text for t, a in net.nodes["n1"].actions
                if isinstance(a, Notice) and t >= since and "node " in a.text]

    assert notices(0.0) == ["Status update for node 10.9.0.1: status ping",
                            "Status update for node gw: status ping"]
    mark = net.now
    net.nodes["n1"].unreachable |= {"10.9.0.1", "10.9.1.1"}  # gw keeps one member
    net.run_for(1.0)
    assert pings.statuses(net.now) == [("10.9.0.1", False), ("gw", True)]
    assert notices(mark) == ["node 10.9.0.1: is dead (ping node: no reply for 0.5 s)"]
    mark = net.now
    net.nodes["n1"].unreachable.clear()
    net.run_for(0.5)
    assert notices(mark) == ["Status update for node 10.9.0.1: status ping"]
    snap = snapshot.heartbeat(net.nodes["n1"].failover, {"eth0": True}, pings.statuses(net.now))
    assert snap.ping_nodes == (PingInfo("10.9.0.1", "ping"), PingInfo("gw", "ping"))


def test_auto_failback_on_does_not_undo_a_standby() -> None:
    net = cluster("on")
    net.command("n1", "release", "all")
    net.run_for(3.0)
    assert (net.holders(G1), net.holders(G2)) == (["n2"], ["n2"])
    net.command("n1", "takeover", "all")
    net.run_for(2.0)
    assert (net.holders(G1), net.holders(G2)) == (["n1"], ["n1"])


def test_after_a_split_brain_a_manual_takeover_stays_put() -> None:
    net = cluster("on")
    net.cut("n1")
    net.run_for(1.5)
    net.cut("n1", cut=False)
    net.run_for(2.0)
    assert (net.holders(G1), net.holders(G2)) == (["n1"], ["n2"])
    net.command("n2", "takeover", "all")
    net.run_for(3.0)
    assert (net.holders(G1), net.holders(G2)) == (["n2"], ["n2"])
