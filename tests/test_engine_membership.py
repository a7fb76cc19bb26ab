"""Membership in the sans-I/O engine, on a simulated network with a fake clock."""

from __future__ import annotations

import pytest

from hbd.core import auth, wire
from hbd.core.actions import (
    Action,
    BadPackets,
    LateHeartbeat,
    LinkStatusChanged,
    LostPackets,
    NodeStatusChanged,
    PartitionHealed,
    PeerRestarted,
    Transmit,
)
from hbd.core.authkeys import parse_authkeys
from hbd.core.engine import Engine, EngineComponent, Handler, Received
from hbd.core.fsm import StateMachine
from hbd.core.membership import LOCAL_TRANSITIONS, NodeStatus
from hbd.core.wire import Message
from hbd.errors import TransitionError
from tests.simnet import SimNet, make_config

KEEPALIVE, DEADTIME = 0.1, 0.5


def two_nodes(**kw: object) -> SimNet:
    return SimNet({"n1": make_config("n1", **kw), "n2": make_config("n2", **kw)})  # type: ignore[arg-type]


def deaths(net: SimNet, node: str, peer: str) -> list[float]:
    return [t for t, e in net.events(node, NodeStatusChanged)
            if isinstance(e, NodeStatusChanged) and e.node == peer and e.new == "dead"]


def test_two_nodes_become_active_and_see_each_other() -> None:
    net = two_nodes()
    net.run_for(2)
    for me, other in (("n1", "n2"), ("n2", "n1")):
        engine = net.nodes[me].engine
        assert engine.status.state is NodeStatus.ACTIVE
        assert net.status_of(me, other) == "active"
        assert engine.peers[other].links_up() == 2
        local = [e.new for _, e in net.events(me, NodeStatusChanged)
                 if isinstance(e, NodeStatusChanged) and e.local]
        assert local == ["up", "active"]


@pytest.mark.parametrize("seed", range(8))
def test_death_within_deadtime_plus_keepalive_never_before(seed: int) -> None:
    net = SimNet({"n1": make_config("n1"), "n2": make_config("n2")}, seed=seed)
    net.run_for(2 + seed * 0.013)
    cut_at = net.now
    last_heard = net.nodes["n2"].engine.peers["n1"].last_status_at
    assert last_heard is not None
    net.cut("n1")
    net.run_for(3)
    [dead_at] = deaths(net, "n2", "n1")
    assert dead_at - last_heard >= DEADTIME  # never before deadtime of silence
    # the event says when n1 was last heard: a failover is timed from there
    [(_, dead)] = [(t, e) for t, e in net.events("n2", NodeStatusChanged)
                   if isinstance(e, NodeStatusChanged) and e.new == "dead"]
    assert isinstance(dead, NodeStatusChanged) and dead.last_heard == last_heard
    assert dead_at - cut_at <= DEADTIME + KEEPALIVE + 1e-9
    # both links reported dead too, and n1 saw n2 die symmetrically
    downs = [e.link for _, e in net.events("n2", LinkStatusChanged, cut_at)
             if isinstance(e, LinkStatusChanged) and not e.up]
    assert sorted(downs) == ["eth0", "eth1"]
    assert deaths(net, "n1", "n2")


def test_one_dead_link_of_two_changes_no_membership() -> None:
    net = two_nodes()
    net.run_for(2)
    mark = net.now
    net.cut("n1", link=0)
    net.run_for(5)
    changes = [e for _, e in net.events("n2", NodeStatusChanged, mark)]
    assert changes == []
    link_events = [(e.link, e.up) for _, e in net.events("n2", LinkStatusChanged, mark)
                   if isinstance(e, LinkStatusChanged)]
    assert link_events == [("eth0", False)]
    net.cut("n1", link=0, cut=False)
    net.run_for(1)
    assert [(e.link, e.up) for _, e in net.events("n2", LinkStatusChanged, mark)
            if isinstance(e, LinkStatusChanged)] == [("eth0", False), ("eth0", True)]


@pytest.mark.parametrize("seed", range(4))
def test_loss_on_one_link_and_jitter_cause_no_false_death(seed: int) -> None:
    net = SimNet({"n1": make_config("n1"), "n2": make_config("n2")}, seed=seed)
    net.run_for(1.5)
    net.rule("n1", 0).loss = 0.2
    for node in ("n1", "n2"):
        for link in (0, 1):
            net.rule(node, link).jitter = DEADTIME / 2 - 0.02  # reorders packets
    net.run_for(60)
    assert deaths(net, "n1", "n2") == [] and deaths(net, "n2", "n1") == []


class _TestMessages(EngineComponent):
    """A component that answers `test-msg` by noting its `n` field."""

    def __init__(self) -> None:
        self.received: list[str] = []

    def message_handlers(self) -> dict[str, Handler]:
        return {"test-msg": self._on_test}

    def _on_test(self, rx: Received, now: float, wall: float) -> list[Action]:
        self.received.append(rx.message.get("n") or "")
        return []


def test_duplicates_over_two_links_are_delivered_once_and_gaps_refilled() -> None:
    net = SimNet({"n1": make_config("n1")})
    component = _TestMessages()
    net.add_node("n2", make_config("n2"), extra=(component,))
    received = component.received
    net.run_for(1.5)
    # lose message 3 on both links the first time it is sent
    dropped: set[bytes] = set()

    def drop(sender: str, receiver: str, link: int, payload: bytes) -> bool:
        if b"(0)n=3," in payload and receiver == "n2" and len(dropped) < 2:
            dropped.add(bytes([link]))
            return True
        return False

    net.drop = drop
    engine = net.nodes["n1"].engine
    for i in range(6):
        net._apply(net.nodes["n1"], [engine.send("test-msg", [("n", str(i))], net.wall)])
        net.run_for(0.01)
    net.run_for(1)
    assert sorted(received) == ["0", "1", "2", "3", "4", "5"]
    assert received.index("3") > received.index("4")  # arrived late, by retransmission
    lost = [e for _, e in net.events("n2", LostPackets) if isinstance(e, LostPackets)]
    assert len(lost) == 1 and lost[0].first == lost[0].last
    rexmit_requests = [a for _, a in net.events("n2", Transmit)
                       if isinstance(a, Transmit) and a.msgtype == "NS_rexmit"]
    assert rexmit_requests


def test_acks_follow_heartbeat_flow_control() -> None:
    net = two_nodes()
    net.run_for(5)
    acks = [wire.decode(a.netstring).message for _, a in net.events("n2", Transmit)
            if isinstance(a, Transmit) and a.msgtype == "NS_ackmsg"]
    assert acks
    trigger = net.nodes["n2"].engine.peers["n1"].seq.ack_trigger
    for ack in acks:
        assert ack.get("dest") == "n1"
        assert (ack.get_int("ackseq", 16) or 0) % 10 == trigger
    assert net.nodes["n1"].engine.peers["n2"].ackseq > 0


def test_partition_then_heal_is_reported() -> None:
    net = two_nodes()
    net.run_for(2)
    net.cut("n1")
    net.run_for(2)
    assert net.status_of("n2", "n1") == "dead"
    net.cut("n1", cut=False)
    net.run_for(1)
    assert net.status_of("n2", "n1") == "active"
    assert [e.node for _, e in net.events("n2", PartitionHealed)
            if isinstance(e, PartitionHealed)] == ["n1"]


def test_restart_with_higher_generation_accepted_old_packets_refused() -> None:
    net = two_nodes()
    net.run_for(2)
    old_packets = [a.netstring for _, a in net.events("n1", Transmit)
                   if isinstance(a, Transmit) and a.msgtype == "status"][-5:]
    net.nodes["n1"].alive = False
    net.run_for(1)
    net.add_node("n1", make_config("n1"), generation=101)
    net.run_for(2)
    assert [e.generation for _, e in net.events("n2", PeerRestarted)
            if isinstance(e, PeerRestarted)] == [101]
    assert net.status_of("n2", "n1") == "active"
    mark = net.now
    for packet in old_packets:
        net.inject("n2", packet)
    net.run_for(0.5)
    bad = [e for _, e in net.events("n2", BadPackets, mark) if isinstance(e, BadPackets)]
    assert bad and bad[0].reason == "old generation (replay?)"
    assert net.status_of("n2", "n1") == "active"


def _forged(keys_text: str, src: str, seq: int = 1) -> bytes:
    keys, _ = parse_authkeys(keys_text)
    assert keys is not None
    msg = Message.of(("t", "status"), ("st", "active"), ("src", src), ("seq", f"{seq:x}"),
                     ("hg", "ffffff"), ("ts", "1"))
    auth.sign_fields(msg, keys)
    return wire.encode_netstring(msg, auth.trailer(keys, wire.netstring_body(msg)))


def test_bad_packets_dropped_counted_and_rate_limited() -> None:
    net = two_nodes()
    net.run_for(2)
    mark = net.now
    good_key = "auth 1\n1 sha1 simsecret\n"
    for _ in range(500):
        net.inject("n2", _forged("auth 1\n1 sha1 WRONG\n", "n1"))
        net.inject("n2", _forged("auth 7\n7 sha1 simsecret\n", "n1"))
        net.inject("n2", _forged(good_key, "n9"))
        net.inject("n2", _forged(good_key, "n2"))
        net.inject("n2", b"###\ngarbage")
        net.run_for(0.02)
    engine = net.nodes["n2"].engine
    assert engine.bad.totals == {
        "bad MAC under key 1": 500, "unknown key index 7": 500, "unknown sender": 500,
        "packet claims to be from this node": 500, "malformed: bad netstring length": 500,
    }
    reports = [e for _, e in net.events("n2", BadPackets, mark) if isinstance(e, BadPackets)]
    assert 5 <= len(reports) <= 5 * 3  # first at once, then at most one per 10 s each
    assert sum(r.count for r in reports) <= 2500
    assert net.status_of("n2", "n1") == "active"
    assert "simsecret" not in repr(reports)


def test_late_heartbeat_warning_with_measured_gap() -> None:
    net = two_nodes()
    net.run_for(2)
    mark = net.now
    blocked = {"on": True}

    def drop(sender: str, receiver: str, link: int, payload: bytes) -> bool:
        return blocked["on"] and sender == "n1" and b"t=status" in payload

    net.drop = drop
    net.run_for(0.28)
    blocked["on"] = False
    net.run_for(0.5)
    late = [e for _, e in net.events("n2", LateHeartbeat, mark) if isinstance(e, LateHeartbeat)]
    assert len(late) == 1
    assert 300 < late[0].gap_ms < 500 and not late[0].beyond_deadtime
    assert deaths(net, "n2", "n1") == []


def test_local_status_machine_refuses_illegal_moves() -> None:
    fsm = StateMachine("node x", NodeStatus.INIT, LOCAL_TRANSITIONS)
    fsm.move(NodeStatus.UP)
    with pytest.raises(TransitionError, match="illegal move up -> init"):
        fsm.move(NodeStatus.INIT)
    assert fsm.state is NodeStatus.UP
    fsm.move(NodeStatus.ACTIVE)
    with pytest.raises(TransitionError):
        fsm.move(NodeStatus.UP)
    assert fsm.state is NodeStatus.ACTIVE


def test_next_timer_is_keepalive_paced() -> None:
    cfg = make_config("n1")
    engine = Engine(cfg, uuid=b"u" * 16, generation=5, now=10.0)
    engine.start(10.0, 1e9)
    assert engine.next_timer() == pytest.approx(10.1)
    actions = engine.handle_timer(10.1, 1e9)
    statuses = [a for a in actions if isinstance(a, Transmit) and a.msgtype == "status"]
    assert len(statuses) == 1
    msg = wire.decode(statuses[0].netstring).message
    assert msg.get("st") == "up" and msg.get("dt") == "1f4" and msg.get("hg") == "5"
    assert engine.next_timer() == pytest.approx(10.2)


class _Named(EngineComponent):
    def __init__(self, name: str, heard: list[str], claims: tuple[str, ...] = ()) -> None:
        self.name, self.heard, self.claims = name, heard, claims

    def message_handlers(self) -> dict[str, Handler]:
        return {msgtype: lambda rx, now, wall: [] for msgtype in self.claims}

    def comm_up(self, now: float, wall: float) -> list[Action]:
        self.heard.append(self.name)
        return []


def test_components_are_consulted_in_the_order_attached() -> None:
    heard: list[str] = []
    engine = Engine(make_config("n1", nodes=("n1",)), uuid=b"u" * 16, generation=5, now=10.0)
    engine.attach(_Named("resources", heard), _Named("pings", heard))
    engine.start(10.0, 1e9)  # alone: communication is up at once
    assert heard == ["resources", "pings"]


def test_attach_refuses_a_message_type_claimed_twice_and_attaches_nothing() -> None:
    engine = Engine(make_config("n1"), uuid=b"u" * 16, generation=5, now=10.0)
    with pytest.raises(ValueError, match="'status'"):
        engine.attach(_Named("a", [], claims=("status",)))  # the engine's own
    with pytest.raises(ValueError, match="'test-msg'"):
        engine.attach(_Named("a", [], claims=("test-msg",)), _Named("b", [], claims=("test-msg",)))
    assert engine.components == ()
    first = _Named("a", [], claims=("test-msg",))
    engine.attach(first)
    with pytest.raises(ValueError, match="once"):
        engine.attach(_Named("b", []))
    assert engine.components == (first,)
