"""Continuations run after the world changed (issue 16, part 3).

A protocol step's continuation (`then`: say `done`, announce what we hold,
finish the shutdown) runs when its groups finish starting or stopping, which
with real agents is seconds later.  Meanwhile the peer may die, SIGTERM may
arrive, an admin may ask for something else.  The simulated runner makes
agents slow (seconds per group) or hang (failing at the runner's timeout),
so each race is exercised; none may raise, lose the actions already built,
or leave a group with nobody running it.
"""

from __future__ import annotations

import pytest

from hbd.core.actions import Action, GroupFailed, Notice, StartGroup, StopGroup, Transmit
from hbd.core.groupwork import GroupWork
from hbd.core.resources import GroupState
from hbd.core.rscstate import RscState, Standby
from hbd.errors import Busy
from tests.simnet import SimNet, make_config

G1, G2 = "10.0.0.1", "10.0.0.2"  # n1's and n2's groups
HARESOURCES = f"n1 {G1}\nn2 {G2}\n"
SLOW = 2.0  # seconds an agent takes in these races (deadtime is 0.5 s)


def cluster(failback: str = "off") -> SimNet:
    kw = dict(haresources=HARESOURCES, extra=f"auto_failback {failback}\n")
    net = SimNet({n: make_config(n, **kw) for n in ("n1", "n2")})  # type: ignore[arg-type]
    net.run_for(1.5)
    assert (net.holders(G1), net.holders(G2)) == (["n1"], ["n2"])
    return net


def run_until(net: SimNet, node: str, kind: type, group: str, limit: float = 5.0) -> float:
    """Run until `node` issues a StartGroup/StopGroup of `group`; return that time."""
    end = net.now + limit
    while net.now < end:
        for t, action in net.nodes[node].actions:
            if isinstance(action, kind) and getattr(action, "group", None) == group:
                return t
        net.run_for(0.01)
    raise AssertionError(f"{node} never issued {kind.__name__} {group}")


def live_holders(net: SimNet, group: str) -> list[str]:
    """Holders among the nodes still running (a crashed node's resources died with it)."""
    return [n for n in net.holders(group) if net.nodes[n].alive]


def sent(net: SimNet, node: str, msgtype: str, since: float) -> list[Transmit]:
    return [a for t, a in net.nodes[node].actions
            if isinstance(a, Transmit) and a.msgtype == msgtype and t >= since]


def notices(net: SimNet, node: str, since: float = 0.0) -> list[str]:
    return [a.text for t, a in net.nodes[node].actions if isinstance(a, Notice) and t >= since]


def settled_state(net: SimNet, node: str) -> None:
    failover = net.nodes[node].failover
    assert failover.standby.state is Standby.NOT
    assert not failover.jobs and not failover.groups.busy()


# --- the acquiring side of a standby (_go_standby_other) ----------------------------------

def standby_to_n2_with_slow_start() -> SimNet:
    """n1 hands everything to n2; n2's start of G1 takes SLOW seconds."""
    net = cluster()
    net.nodes["n2"].runner.start_delay[G1] = SLOW
    net.command("n1", "release", "all")
    run_until(net, "n2", StartGroup, G1)
    assert net.nodes["n2"].failover.standby.state is Standby.DONE
    return net


def test_peer_dies_while_the_acquired_groups_are_starting() -> None:
    net = standby_to_n2_with_slow_start()
    mark = net.now
    net.nodes["n1"].alive = False  # power loss on the node that just released
    net.run_for(SLOW + 1.0)  # used to raise TransitionError (standby not -> not)
    assert net.status_of("n2", "n1") == "dead"
    assert live_holders(net, G1) == ["n2"] and live_holders(net, G2) == ["n2"]
    n2 = net.nodes["n2"].failover
    settled_state(net, "n2")
    assert n2.rscstatus() == "all"
    # what the acquisition built after the start is not lost: a resource message
    # saying what n2 holds, sent after G1 was running
    running_at = next(t for t, a in net.nodes["n2"].actions
                      if getattr(a, "group", "") == G1 and getattr(a, "new", "") == "running")
    assert [m for m in sent(net, "n2", "resource", running_at)]
    assert any("cancelled" in text for text in notices(net, "n2", mark))


def test_sigterm_while_the_acquired_groups_are_starting() -> None:
    net = standby_to_n2_with_slow_start()
    net.command("n2", "shutdown")
    net.run_for(SLOW + 1.0)  # used to raise, and `shutdone` never came
    n2 = net.nodes["n2"].failover
    assert n2.shutdown_done
    assert sent(net, "n2", "shutdone", 0.0)
    assert net.holders(G1) == ["n1"] and net.holders(G2) == ["n1"]  # n1 took all back
    settled_state(net, "n1")
    assert net.nodes["n1"].failover.rscstatus() == "all"


def test_release_while_the_acquired_groups_are_starting_is_refused_then_works() -> None:
    net = standby_to_n2_with_slow_start()
    with pytest.raises(Busy, match="standby exchange is already under way"):
        net.command("n2", "release", "all")
    net.run_for(SLOW + 1.0)
    assert (net.holders(G1), net.holders(G2)) == (["n2"], ["n2"])
    settled_state(net, "n2")
    net.command("n2", "release", "all")  # once settled, the same command is accepted
    net.run_for(1.0)
    assert (net.holders(G1), net.holders(G2)) == (["n1"], ["n1"])


def test_a_hanging_start_during_standby_fails_at_the_timeout_and_goes_back() -> None:
    net = cluster()
    runner = net.nodes["n2"].runner
    runner.hang_start.add(G1)
    runner.timeout = 3.0
    net.command("n1", "release", "all")
    run_until(net, "n2", StartGroup, G1)
    net.run_for(2.0)
    assert net.nodes["n2"].failover.groups.groups[G1].state is GroupState.STARTING
    net.run_for(4.0)
    failed = [a for _, a in net.nodes["n2"].actions if isinstance(a, GroupFailed)]
    assert [(f.group, f.operation, f.detail) for f in failed] == [
        (G1, "start", "start timed out after 3 s")]
    assert net.holders(G1) == ["n1"] and net.holders(G2) == ["n2"]  # handed back
    for node in ("n1", "n2"):
        settled_state(net, node)


# --- the releasing side of a standby (_go_standby_me) -----------------------------------

def standby_from_n1_with_slow_stop() -> SimNet:
    net = cluster()
    net.nodes["n1"].runner.stop_delay[G1] = SLOW
    net.command("n1", "release", "all")
    run_until(net, "n1", StopGroup, G1)
    assert net.nodes["n1"].failover.standby.state is Standby.DONE
    return net


def test_peer_dies_while_our_released_groups_are_stopping() -> None:
    net = standby_from_n1_with_slow_stop()
    net.nodes["n2"].alive = False
    died = net.now
    net.run_for(SLOW + 1.0)
    assert net.status_of("n1", "n2") == "dead"
    # nobody else can run G1 now: n1 must not be left without it (it used to be)
    assert live_holders(net, G1) == ["n1"] and live_holders(net, G2) == ["n1"]
    settled_state(net, "n1")
    assert net.nodes["n1"].failover.rscstatus() == "all"
    assert not [a for a in sent(net, "n1", "ask_resources", died) if b"info=done" in a.netstring]


def test_sigterm_while_our_released_groups_are_stopping() -> None:
    net = standby_from_n1_with_slow_stop()
    net.command("n1", "shutdown")
    net.run_for(SLOW + 1.0)
    n1 = net.nodes["n1"].failover
    assert n1.shutdown_done
    assert (net.holders(G1), net.holders(G2)) == (["n2"], ["n2"])
    settled_state(net, "n2")
    assert net.nodes["n2"].failover.state.state is RscState.STABLE


# --- shutdown while a takeover after the peer's death is starting ------------------------

def test_sigterm_while_taking_over_a_dead_peers_groups() -> None:
    net = cluster()
    net.nodes["n2"].runner.start_delay[G1] = SLOW
    net.nodes["n1"].alive = False
    run_until(net, "n2", StartGroup, G1)
    net.command("n2", "shutdown")
    net.run_for(SLOW + 1.0)
    n2 = net.nodes["n2"].failover
    assert n2.shutdown_done and live_holders(net, G1) == [] and live_holders(net, G2) == []
    stable_claims = [a for a in sent(net, "n2", "resource", 0.0)
                     if b"info=mach_down" in a.netstring]
    shut_at = next(t for t, a in net.nodes["n2"].actions
                   if isinstance(a, Transmit) and a.msgtype == "resource"
                   and b"info=shutdown" in a.netstring)
    # after the shutdown began, n2 never again claims to be stable with the groups
    assert all(t < shut_at for t, a in net.nodes["n2"].actions if a in stable_claims)


# --- the backstop: a continuation that raises loses nothing else -------------------------

def test_a_failing_continuation_is_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    net = cluster()
    n1 = net.nodes["n1"].failover

    def broken(now: float, wall: float) -> list[Action]:
        raise RuntimeError("injected failure")

    actions = n1._stop([n1.groups.groups[G1]], "test", broken, net.now, net.wall)
    assert [a for a in actions if isinstance(a, StopGroup)]
    done = n1.group_done(G1, "stop", True, "", net.now, net.wall)  # must not raise
    assert n1.groups.groups[G1].state is GroupState.STOPPED
    assert not n1.jobs
    changed = [a for a in done if getattr(a, "new", "") == "stopped"]
    assert changed, done  # the state change built before the continuation is kept
    errors = [a for a in done if isinstance(a, Notice) and a.level == "error"]
    assert errors and "injected failure" in errors[0].text
    assert isinstance(n1, GroupWork)


# --- a group stopped for the peer, which died before it could take it ---------------------

def test_peer_dies_while_we_stop_the_group_it_asked_for_legacy() -> None:
    net = cluster("legacy")
    net.nodes["n2"].alive = False
    net.run_for(1.5)
    assert live_holders(net, G2) == ["n1"]  # taken over
    net.nodes["n1"].runner.stop_delay[G2] = SLOW
    kw = dict(haresources=HARESOURCES, extra="auto_failback legacy\n")
    net.add_node("n2", make_config("n2", **kw), generation=200)  # type: ignore[arg-type]
    run_until(net, "n1", StopGroup, G2)  # n2 asked for it back (ip-request)
    net.nodes["n2"].alive = False  # and died again before it got it
    net.run_for(SLOW + 1.0)
    assert live_holders(net, G1) == ["n1"] and live_holders(net, G2) == ["n1"]
    settled_state(net, "n1")


def test_peer_dies_while_we_stop_a_group_it_kept_in_a_split_brain() -> None:
    net = cluster("off")
    net.cut("n1")
    net.run_for(1.5)
    assert net.holders(G2) == ["n1", "n2"]
    net.nodes["n1"].runner.stop_delay[G2] = SLOW
    net.cut("n1", cut=False)
    run_until(net, "n1", StopGroup, G2)  # the contest: G2 stays on its home, n2
    net.nodes["n2"].alive = False
    net.run_for(SLOW + 1.0)
    assert live_holders(net, G1) == ["n1"] and live_holders(net, G2) == ["n1"]
    settled_state(net, "n1")


def test_sigterm_while_a_start_is_failing_asks_for_no_standby() -> None:
    kw = dict(haresources=HARESOURCES, extra="auto_failback off\n")
    net = SimNet({n: make_config(n, **kw) for n in ("n1", "n2")})  # type: ignore[arg-type]
    net.nodes["n1"].runner.start_delay[G1] = SLOW
    net.nodes["n1"].runner.fail_start.add(G1)
    run_until(net, "n1", StartGroup, G1)
    mark = net.now
    net.command("n1", "shutdown")
    net.run_for(SLOW + 2.0)
    assert net.nodes["n1"].failover.shutdown_done
    # the failed start's hand-over (a standby request) must not start during a shutdown
    assert [a for a in sent(net, "n1", "ask_resources", mark)] == []
    assert (live_holders(net, G1), live_holders(net, G2)) == (["n2"], ["n2"])
    settled_state(net, "n2")


def test_a_hanging_stop_during_standby_blocks_the_group_and_the_peer_never_starts_it() -> None:
    net = cluster()
    runner = net.nodes["n1"].runner
    runner.hang_stop.add(G1)
    runner.timeout = 3.0
    mark = net.now
    net.command("n1", "release", "all")
    run_until(net, "n1", StopGroup, G1)
    net.run_for(5.0)
    group = net.nodes["n1"].failover.groups.groups[G1]
    assert group.state is GroupState.BLOCKED  # may still be running: claimed, never moved
    assert group.detail == "stop timed out after 3 s"
    assert net.holders(G1) == ["n1"]
    assert [(t, a) for t, a in net.nodes["n2"].actions
            if t >= mark and isinstance(a, StartGroup) and a.group == G1] == []
    assert net.nodes["n2"].failover.groups.groups[G1].state is GroupState.STOPPED
