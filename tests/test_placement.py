"""N-node placement on Corosync, in the sans-I/O core, against a simulated Corosync.

The simulation (tests/cpgsim.py) delivers CPG and quorum events in random
interleavings, so each scenario runs under several seeds; after every event
it checks that no group is active on two nodes of one partition and that no
node starts a group without quorum.
"""

from __future__ import annotations

import pytest

from hbd.core.actions import CpgSend, GroupFailed, Shutdown, SplitBrain, StartGroup
from hbd.core.assemble import ConfigTexts, check
from hbd.core.config import Severity
from hbd.core.cpgview import (
    ClaimOutcome,
    Confchg,
    CpgMember,
    OwnerConflict,
    View,
    preference_order,
)
from hbd.core.cpgwire import Announced, NodeState, decode, encode
from hbd.core.placement import LEAVE_SETTLE, Placement, order_problems
from hbd.core.resources import GroupState
from hbd.errors import Busy, InvalidScope, WireError
from tests.cpgsim import SimCorosync, make_config

N3 = ("n1", "n2", "n3")
N5 = ("n1", "n2", "n3", "n4", "n5")
SEEDS = range(1, 9)


def haresources(nodes: tuple[str, ...]) -> str:
    """One group per node, named after its home: g1 on n1, ..."""
    return "".join(f"{n} 10.0.0.{i}\n" for i, n in enumerate(nodes, start=1))


def key(i: int) -> str:
    return f"10.0.0.{i}"


def started(nodes: tuple[str, ...], seed: int, extra: str = "",
            resources: str | None = None) -> SimCorosync:
    sim = SimCorosync(nodes, haresources(nodes) if resources is None else resources,
                      extra=extra, seed=seed)
    for name in nodes:
        sim.start_hbd(name)
    sim.settle()
    return sim


# --- the order, the message, the view ------------------------------------------------------

def test_preference_order_rotates_after_the_home_node() -> None:
    config = make_config("n1", N5, "n3 10.0.0.3\nn1 10.0.0.1\n")
    g3, g1 = config.groups
    assert preference_order(g3, N5, {}) == ("n3", "n4", "n5", "n1", "n2")
    assert preference_order(g1, N5, {}) == N5
    assert preference_order(g3, N5, {g3.key: ("n5", "n3")}) == ("n5", "n3")


def test_group_order_directive() -> None:
    texts = ConfigTexts("ha.cf", "cluster_stack corosync\nnode n1 n2 n3\n"
                        "group_order 10.0.0.1 n3 N1\n", "haresources", "n1 10.0.0.1\n",
                        "authkeys", "auth 1\n1 sha1 x\n", 0o100600)
    config, problems = check(texts, node_name="n1")
    assert config is not None and not problems
    assert config.hacf.group_orders == (("10.0.0.1", ("n3", "n1")),)
    assert Placement(config).orders["10.0.0.1"] == ("n3", "n1")
    bad = ConfigTexts("ha.cf", "bcast eth0\nnode n1 n2\ngroup_order g n1 n9\ngroup_order h\n"
                      "group_order k n1 n1\n", "haresources", "n1 10.0.0.1\n", "authkeys",
                      "auth 1\n1 sha1 x\n", 0o100600)
    _, problems = check(bad, node_name="n1")
    text = [str(p) for p in problems]
    assert "ha.cf:3: group_order g: not in ha.cf: n9" in text
    assert sum("needs a group key (once) and distinct nodes" in t for t in text) == 2
    assert any(p.severity is Severity.WARNING and "only used with 'cluster_stack corosync'"
               in p.message for p in problems)


def test_group_order_for_an_unknown_group_is_reported() -> None:
    config = make_config("n1", N3, "n1 10.0.0.1\n", extra="group_order 10.9.9.9 n2 n1\n")
    assert order_problems(config) == [
        "ha.cf: group_order 10.9.9.9: no haresources group has that key (keys: 10.0.0.1)"]


def test_message_round_trip_and_refusals() -> None:
    state = NodeState("n2", 7, (("IPaddr::10.0.0.1", Announced.CLAIM),
                                ("10.0.0.2", Announced.RUNNING)),
                      frozenset({"g"}), frozenset({"h"}), frozenset(), True)
    state = NodeState(state.node, state.seq, tuple(sorted(state.groups)), state.declined,
                      state.preferred, state.failed, state.leaving)
    assert decode(encode(state)) == state
    assert decode(encode(state) + b"future=field\n") == state  # unknown keys are ignored
    for bad, why in ((b"hbd=2\ntype=state\nnode=n1\n", "newer than ours"),
                     (b"hbd=1\ntype=vote\nnode=n1\n", "unknown message type"),
                     (b"hbd=1\ntype=state\nnode=n1\ngroup=dancing g\n", "unknown state"),
                     (b"\xff\xfe", "not UTF-8"), (b"hbd=1\nnonsense\n", "key=value"),
                     (b"type=state\nnode=n1\n", "no protocol version")):
        with pytest.raises(WireError, match=why):
            decode(bad)


@pytest.mark.parametrize("bad,why", [
    (b"hbd=\xc2\xb2\ntype=state\nnode=n1\n", "no protocol version"),  # "2" superscript
    (b"hbd=" + b"9" * 5000 + b"\ntype=state\nnode=n1\n", "no protocol version"),
    (b"hbd=1\ntype=state\nnode=n1\nseq=\xc2\xb2\n", "bad seq"),
    (b"hbd=1\ntype=state\nnode=n1\nseq=" + b"9" * 5000 + b"\n", "bad seq"),
    (b"hbd=1\ntype=state\nnode=\x1b[31mn1\n", "bad node name"),
    (b"hbd=1\ntype=state\nnode=" + b"n" * 300 + b"\n", "bad node name"),
    (b"hbd=1\ntype=state\nnode=n1\ngroup=running \x1b]0;owned\x07\n", "bad group key"),
    (b"hbd=1\ntype=state\nnode=n1\ngroup=running " + b"k" * 5000 + b"\n", "bad group key"),
    (b"hbd=1\ntype=state\nnode=n1\ndeclined=a \x1b b\n", "bad group key"),
    # `failed` also carries the groups unfit there (monitoring): the same bounds
    (b"hbd=1\ntype=state\nnode=n1\nfailed=g \x1b[2J\n", "bad group key"),
    (b"hbd=1\ntype=state\nnode=n1\nfailed=" + b"k" * 1025 + b"\n", "bad group key"),
    (b"hbd=1\ntype=state\nnode=n1\nfailed=" + b" ".join(b"g%d" % i for i in range(4097))
     + b"\n", "too many groups"),
    (b"hbd=1\ntype=" + b"\x1b" * 3000 + b"\nnode=n1\n", "unknown message type"),
    (b"hbd=1\ntype=state\nnode=n1\n"
     + b"".join(b"group=running g%d\n" % i for i in range(5000)), "too many groups"),
])
def test_message_values_are_range_checked_and_errors_printable(bad: bytes, why: str) -> None:
    # Each used to be accepted, or raised ValueError (not WireError) out of decode.
    with pytest.raises(WireError, match=why) as caught:
        decode(bad)
    text = str(caught.value)
    assert text.isprintable() and text.isascii() and len(text) < 200, text


def _member(n: int) -> CpgMember:
    return CpgMember(n, 100 + n)


def _view(*nodes: int) -> View:
    view = View({"g": ("n1", "n2", "n3")})
    view.confchg(Confchg(tuple(_member(n) for n in nodes)))
    return view


def test_first_claim_delivered_wins() -> None:
    view = _view(1, 2, 3)
    claim = (("g", Announced.CLAIM),)
    assert view.deliver(_member(2).id, NodeState("n2", 1, claim)) == [
        ClaimOutcome("g", _member(2).id, True)]
    assert view.deliver(_member(3).id, NodeState("n3", 1, claim)) == [
        ClaimOutcome("g", _member(3).id, False)]
    assert view.deliver(_member(3).id, NodeState("n3", 2, claim)) == []  # same claim again
    view.deliver(_member(2).id, NodeState("n2", 2, (("g", Announced.RUNNING),)))
    assert view.owner["g"] == _member(2).id
    view.deliver(_member(2).id, NodeState("n2", 3))  # released
    assert "g" not in view.owner


def test_owner_leaving_the_group_frees_its_groups() -> None:
    view = _view(1, 2)
    view.deliver(_member(1).id, NodeState("n1", 1, (("g", Announced.RUNNING),)))
    view.confchg(Confchg((_member(2),), left=(_member(1),)))
    assert view.owner == {}


def test_active_beats_a_claim_and_conflicts_resolve_the_same_everywhere() -> None:
    a, b = _view(1, 2, 3), _view(1, 2, 3)
    claim, running = (("g", Announced.CLAIM),), (("g", Announced.RUNNING),)
    blocked = (("g", Announced.BLOCKED),)
    a.deliver(_member(3).id, NodeState("n3", 1, claim))
    a.deliver(_member(2).id, NodeState("n2", 1, blocked))  # a node that kept it, blocked
    assert a.owner["g"] == _member(2).id
    out = a.deliver(_member(1).id, NodeState("n1", 1, running))
    assert out == [OwnerConflict("g", _member(1).id, _member(2).id)]  # running beats blocked
    # the same states in another order (another history) give the same owner
    b.deliver(_member(1).id, NodeState("n1", 1, running))
    b.deliver(_member(2).id, NodeState("n2", 1, blocked))
    assert a.owner == b.owner == {"g": _member(1).id}
    # equal states: the earlier node in the order keeps it
    c = _view(1, 2, 3)
    c.deliver(_member(3).id, NodeState("n3", 1, running))
    c.deliver(_member(2).id, NodeState("n2", 1, running))
    assert c.owner["g"] == _member(2).id


# --- clusters ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_three_nodes_start_home_then_move_in_order_until_quorum_goes(seed: int) -> None:
    sim = started(N3, seed)
    assert sim.placement() == {key(1): ["n1"], key(2): ["n2"], key(3): ["n3"]}
    sim.power_off("n1")
    sim.settle()
    assert sim.placement() == {key(1): ["n2"], key(2): ["n2"], key(3): ["n3"]}
    sim.power_off("n2")  # one node of three: no quorum, everything stops at once
    sim.settle()
    assert sim.placement() == {key(1): [], key(2): [], key(3): []}
    assert sim.nodes["n3"].placement.quorate() is False  # type: ignore[union-attr]


@pytest.mark.parametrize("seed", SEEDS)
def test_five_nodes_each_loss_moves_groups_to_the_next_in_order(seed: int) -> None:
    sim = started(N5, seed)
    sim.power_off("n2")
    sim.settle()
    assert sim.placement()[key(2)] == ["n3"]
    sim.power_off("n3")  # n3 held its own group and n2's: both go to n4
    sim.settle()
    assert sim.placement() == {key(1): ["n1"], key(2): ["n4"], key(3): ["n4"],
                               key(4): ["n4"], key(5): ["n5"]}
    sim.power_off("n1")  # 2 of 5 left: quorum lost
    sim.settle()
    assert all(not holders for holders in sim.placement().values())


@pytest.mark.parametrize("seed", SEEDS)
def test_partition_two_three_then_heal(seed: int) -> None:
    sim = started(N5, seed)
    sim.partition({"n1", "n2"}, {"n3", "n4", "n5"})
    sim.settle()
    # the minority released its groups; the majority runs all of them, in order
    assert sim.placement() == {key(1): ["n3"], key(2): ["n3"], key(3): ["n3"],
                               key(4): ["n4"], key(5): ["n5"]}
    for node in ("n1", "n2"):
        assert sim.nodes[node].placement.quorate() is False  # type: ignore[union-attr]
    sim.heal()
    sim.settle()
    assert sim.placement() == {key(i): [f"n{i}"] for i in range(1, 6)}  # failback on


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_heal_without_failback_keeps_groups_where_they_are(seed: int) -> None:
    sim = started(N5, seed, extra="auto_failback off\n")
    sim.partition({"n1", "n2"}, {"n3", "n4", "n5"})
    sim.settle()
    sim.heal()
    sim.settle()
    assert sim.placement() == {key(1): ["n3"], key(2): ["n3"], key(3): ["n3"],
                               key(4): ["n4"], key(5): ["n5"]}


@pytest.mark.parametrize("seed", SEEDS)
def test_corosync_restart_under_the_active_node(seed: int) -> None:
    sim = started(N3, seed)
    sim.corosync_stop("n1")
    sim.settle()
    assert sim.placement()[key(1)] == ["n2"]
    assert sim.nodes["n1"].placement.quorate() is False  # type: ignore[union-attr]
    sim.corosync_start("n1")
    sim.settle()
    assert sim.placement()[key(1)] == ["n1"]


def test_whole_cluster_outage_and_return() -> None:
    sim = started(N3, 3)
    for node in N3:
        sim.corosync_stop(node)
    sim.settle()
    assert all(not h for h in sim.placement().values())
    for node in N3:
        sim.corosync_start(node)
    sim.settle()
    assert sim.placement() == {key(i): [f"n{i}"] for i in range(1, 4)}


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_group_order_line_is_followed(seed: int) -> None:
    sim = started(N5, seed, extra="group_order 10.0.0.1 n1 n5 n4\n")
    sim.power_off("n1")
    sim.settle()
    assert sim.placement()[key(1)] == ["n5"]
    sim.power_off("n5")
    sim.settle()
    assert sim.placement()[key(1)] == ["n4"]
    sim.power_off("n4")
    sim.settle()  # n2 and n3 are quorate but not in the list
    assert sim.placement()[key(1)] == []


def test_a_joining_node_decides_nothing_until_it_heard_everyone() -> None:
    sim = SimCorosync(N3, haresources(N3), seed=5)
    sim.start_hbd("n2")
    sim.start_hbd("n3")
    sim.settle()
    # n1's corosync is up, its hbd not yet: the others leave its group alone for initdead
    assert sim.placement() == {key(1): [], key(2): ["n2"], key(3): ["n3"]}
    sim.advance(29.9)  # ha.cf's default initdead is deadtime, 30 s
    sim.settle()
    assert sim.placement()[key(1)] == []
    sim.advance(0.2)
    sim.settle()
    assert sim.placement()[key(1)] == ["n2"]  # n1 not there: next in order
    sim.start_hbd("n1")
    placement = sim.nodes["n1"].placement
    assert placement is not None
    while sim.step():  # until n1 knows everyone's state it claims nothing
        if not placement.view.synced():
            assert not placement.claims
    assert sim.placement()[key(1)] == ["n1"]
    assert not sim.violations


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_failed_start_goes_to_the_next_node_until_cleanup(seed: int) -> None:
    sim = SimCorosync(N3, haresources(N3), seed=seed)
    sim.fail_start.add(("n1", key(1)))
    for node in N3:
        sim.start_hbd(node)
    sim.settle()
    assert sim.placement()[key(1)] == ["n2"]
    n1 = sim.nodes["n1"]
    assert any(isinstance(a, GroupFailed) for a in n1.actions)
    assert n1.placement is not None and key(1) in n1.placement.failed
    sim.fail_start.clear()
    sim._apply(n1, n1.placement.cleanup(key(1), 0.0, 0.0))
    sim.settle()
    assert sim.placement()[key(1)] == ["n1"]


def test_a_blocked_group_is_not_started_elsewhere() -> None:
    sim = started(N3, 2)
    n2 = sim.nodes["n2"]
    assert n2.placement is not None
    sim.fail_stop.add(("n2", key(2)))
    sim._apply(n2, n2.placement.release("local", 0.0, 0.0))  # n2's group should go to n3
    sim.settle()
    assert sim.holders(key(2), (GroupState.BLOCKED,)) == ["n2"]
    assert sim.holders(key(2)) == []  # n3 waits: n2 still claims it
    sim.fail_stop.clear()
    sim._apply(n2, n2.placement.handle_timer(1e9, 0.0))  # the retry timer
    sim.settle()
    assert sim.placement()[key(2)] == ["n3"]


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_release_and_takeover(seed: int) -> None:
    sim = started(N3, seed)
    n1 = sim.nodes["n1"]
    assert n1.placement is not None
    with pytest.raises(InvalidScope):
        n1.placement.release("some", 0.0, 0.0)
    sim._apply(n1, n1.placement.release("all", 0.0, 0.0))
    sim.settle()
    assert sim.placement()[key(1)] == ["n2"]
    sim._apply(n1, n1.placement.takeover("foreign", 0.0, 0.0))  # n2's and n3's groups
    sim.settle()
    assert sim.placement() == {key(1): ["n2"], key(2): ["n1"], key(3): ["n1"]}
    n3 = sim.nodes["n3"]
    assert n3.placement is not None
    sim._apply(n3, n3.placement.takeover("local", 0.0, 0.0))  # the last takeover wins
    sim.settle()
    assert sim.placement()[key(3)] == ["n3"]
    sim._apply(n1, n1.placement.takeover("all", 0.0, 0.0))
    sim.settle()
    assert sim.placement() == {key(1): ["n1"], key(2): ["n1"], key(3): ["n1"]}


def test_release_refused_when_nobody_else_may_run_it() -> None:
    sim = started(N3, 1, extra="group_order 10.0.0.1 n1\n")
    n1 = sim.nodes["n1"]
    assert n1.placement is not None
    with pytest.raises(Busy, match=r"no other node may run 10\.0\.0\.1"):
        n1.placement.release("all", 0.0, 0.0)


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_graceful_stop_hands_over_then_shuts_down(seed: int) -> None:
    sim = started(N3, seed)
    n1 = sim.nodes["n1"]
    assert n1.placement is not None
    sim._apply(n1, n1.placement.shutdown(0.0, 0.0))
    sim.settle()
    assert any(isinstance(a, Shutdown) for a in n1.actions)
    assert sim.placement()[key(1)] == ["n2"]
    from hbd.core.cpgview import Reason

    sim.kill_hbd("n1", Reason.LEAVE)
    sim.settle()
    assert sim.placement()[key(1)] == ["n2"]


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_graceful_stop_while_a_group_is_starting(seed: int) -> None:
    sim = SimCorosync(N3, haresources(N3), seed=seed)
    for name in N3:
        sim.start_hbd(name)
    n1 = sim.nodes["n1"]
    while not any(isinstance(a, StartGroup) and a.group == key(1) for a in n1.actions):
        assert sim.step(), "n1 never started its group"
    assert n1.placement is not None
    assert n1.placement.groups.groups[key(1)].state is GroupState.STARTING
    sim._apply(n1, n1.placement.shutdown(0.0, 0.0))
    sim.settle()
    assert any(isinstance(a, Shutdown) for a in n1.actions)
    assert n1.placement.groups.groups[key(1)].state is GroupState.STOPPED
    assert sim.placement()[key(1)] == ["n2"]


def test_hbd_crash_waits_deadtime_while_its_node_stays_in_the_ring() -> None:
    sim = started(N3, 4, extra="deadtime 5\nkeepalive 1\n")
    sim.advance(12.0)  # the start-up wait (initdead, 12 s here) is over
    sim.kill_hbd("n3")  # its VIP may still be up: n3's corosync still runs
    sim.settle()
    assert sim.placement()[key(3)] == []
    sim.advance(4.9)
    sim.settle()
    assert sim.placement()[key(3)] == []
    sim.advance(0.2)  # deadtime is over: n3's order is n3 n1 n2
    sim.settle()
    assert sim.placement()[key(3)] == ["n1"]
    assert any("taking it over" in getattr(a, "text", "") for a in sim.nodes["n1"].actions)
    sim.start_hbd("n3")
    sim.settle()
    assert sim.placement()[key(3)] == ["n3"]


@pytest.mark.parametrize("seed", SEEDS[:4])
def test_corosync_shutdown_frees_groups_soon_after_its_node_leaves_the_ring(seed: int) -> None:
    sim = started(N3, seed)
    sim.corosync_shutdown("n2")  # PROCDOWN first, then the ring without n2
    sim.settle()
    assert sim.placement()[key(2)] == []  # its hbd hears of it a little later
    sim.advance(LEAVE_SETTLE)  # much less than deadtime
    sim.settle()
    assert sim.placement()[key(2)] == ["n3"]
    assert not sim.nodes["n1"].placement.in_doubt  # type: ignore[union-attr]
    sim.corosync_start("n2")
    sim.settle()
    assert sim.placement()[key(2)] == ["n2"]


def test_every_message_is_a_whole_state() -> None:
    sim = started(N3, 6)
    sends = [a for a in sim.nodes["n2"].actions if isinstance(a, CpgSend)]
    last = decode(sends[-1].payload)
    assert last.node == "n2" and last.groups == ((key(2), Announced.RUNNING),)
    assert [decode(s.payload).seq for s in sends] == list(range(1, len(sends) + 1))
    assert not [a for n in sim.nodes.values() for a in n.actions if isinstance(a, SplitBrain)]


def test_nothing_starts_until_quorum_speaks_for_the_current_ring() -> None:
    from hbd.core.cpgview import QuorumNotice, TotemChange

    placement = Placement(make_config("n1", N3, "n1 10.0.0.1\n"))
    placement.connect(1, 101, 0.0, {"n1": 1, "n2": 2, "n3": 3})
    me = CpgMember(1, 101)
    sent = placement.confchg(Confchg((me,), joined=(me,)), 0.0, 0.0)
    state = decode([a for a in sent if isinstance(a, CpgSend)][-1].payload)
    placement.deliver(me.id, encode(state), 0.0, 0.0)
    placement.totem(TotemChange((1, 8), (1, 2)), 0.0, 0.0)
    placement.quorum_notice(QuorumNotice(True, (1, 4), (1, 2, 3)), 0.0, 0.0)  # an older ring
    assert not placement.claims
    placement.quorum_notice(QuorumNotice(True, (1, 8), (1, 2)), 0.0, 0.0)
    assert placement.claims == {"10.0.0.1"}
    # a node leaves: until the new ring and its quorum decision are both in, hold
    placement.claims.clear()
    placement.confchg(Confchg((me,), left=(CpgMember(2, 102, 3),)), 0.0, 0.0)
    assert placement.ring_pending and not placement.claims


def test_reload_adds_and_retires_groups() -> None:
    sim = started(N3, 7)
    resources = haresources(N3).replace("n3 10.0.0.3\n", "n3 10.0.0.9\n")
    for node in sim.nodes.values():
        assert node.placement is not None
        new = make_config(node.name, N3, resources)
        sim._apply(node, node.placement.reconfigure(new, 0.0, 0.0))
    sim.settle()
    assert sim.holders(key(3)) == [] and sim.holders("10.0.0.9") == ["n3"]
    assert key(3) not in sim.nodes["n3"].placement.groups.groups  # type: ignore[union-attr]


def test_the_start_up_wait_ends_once_and_is_no_deadline_after() -> None:
    placement = Placement(make_config("n1", N3, "n1 10.0.0.1\n"))
    placement.connect(1, 101, 0.0, {"n1": 1, "n2": 2, "n3": 3})
    end = placement.next_timer()
    assert end is not None and end > 0.0
    placement.handle_timer(end, end)
    # nothing else is due: a deadline in the past would fire the daemon's timer for ever
    assert placement.next_timer() is None
    placement.disconnect("corosync went away", end + 1, end + 1)
    placement.connect(1, 101, end + 2, {"n1": 1, "n2": 2, "n3": 3})
    assert placement.next_timer() is None  # a reconnect does not wait again
