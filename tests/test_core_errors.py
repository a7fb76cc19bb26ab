"""No error loses state: wire values range-checked before anything moves, and a
failure inside the packet path contained (issue 16, part 3).

Each message here is built by the real sender's outbox (right key, its next
sequence number) and handed to the receiver alone, as a buggy or compromised
peer holding the key would send it.
"""

from __future__ import annotations

import logging

import pytest

from hbd.core import auth, wire
from hbd.core.actions import (
    Action,
    BadPackets,
    NodeStatusChanged,
    Notice,
    PersistPeerGeneration,
    Transmit,
)
from hbd.core.engine import Engine
from hbd.core.failover import Failover
from hbd.core.fields import DT_MAX_MS, shown
from hbd.core.wire import Message
from tests.simnet import SimNet, make_config

DEADTIME, KEEPALIVE = 0.5, 0.1
HARESOURCES = "n1 10.0.0.1\nn2 10.0.0.2\n"


def settled() -> SimNet:
    kw = dict(haresources=HARESOURCES, extra="auto_failback off\n")
    net = SimNet({n: make_config(n, **kw) for n in ("n1", "n2")})  # type: ignore[arg-type]
    net.run_for(2.0)
    assert net.status_of("n2", "n1") == "active"
    return net


def from_n1(net: SimNet, msgtype: str, fields: list[tuple[str, str]],
            dest: str | None = None) -> bytes:
    """n1's next message, as its outbox signs and numbers it; sent to nobody."""
    return net.nodes["n1"].engine.send(msgtype, fields, net.wall, dest).netstring


def state_of(engine: Engine) -> tuple[object, ...]:
    peer = engine.peers["n1"]
    return (peer.status.state, peer.seq.generation, peer.seq.last_seq,
            tuple(sorted(peer.seq.missing)), peer.seq.status_seqno, peer.deadtime,
            peer.last_status_at, peer.ackseq)


def bad_reasons(actions: list[Action]) -> list[str]:
    return [a.reason for a in actions if isinstance(a, BadPackets)]


# --- every number from the wire has a range, checked before any state moves ---------

OUT_OF_RANGE = [
    pytest.param("status", [("st", "active"), ("dt", "f" * 300)], "dt", id="dt-300-hex-digits"),
    pytest.param("status", [("st", "active"), ("dt", "ffffffffffff")], "dt", id="dt-immortal"),
    pytest.param("status", [("st", "active"), ("dt", "0")], "dt", id="dt-zero"),
    pytest.param("status", [("st", "active"), ("dt", "-1f4")], "dt", id="dt-negative"),
    pytest.param("status", [("st", "active"), ("dt", "zz")], "dt", id="dt-not-hex"),
    pytest.param("status", [("st", "active"), ("hbd_ping", "9" * 40)], "hbd_ping",
                 id="ping-count-huge"),
    pytest.param("NS_ackmsg", [("ackseq", "f" * 300)], "ackseq", id="ackseq-huge"),
    pytest.param("NS_rexmit", [("firstseq", "1"), ("lastseq", "9" * 30)], "lastseq",
                 id="lastseq-huge"),
]


@pytest.mark.parametrize("msgtype,fields,name", OUT_OF_RANGE)
def test_out_of_range_field_is_a_bad_packet_and_changes_nothing(
        msgtype: str, fields: list[tuple[str, str]], name: str) -> None:
    net = settled()
    n2 = net.nodes["n2"].engine
    before = state_of(n2)
    data = from_n1(net, msgtype, fields, dest="n2" if msgtype.startswith("NS_") else None)
    actions = n2.receive(data, 0, net.now, net.wall)  # raised OverflowError for 300 digits
    assert bad_reasons(actions) == [f"bad {name} field"]
    assert [a for a in actions if not isinstance(a, BadPackets)] == []
    assert state_of(n2) == before
    assert n2.bad.totals == {f"bad {name} field": 1}


def test_sequence_and_generation_out_of_range_are_bad_packets() -> None:
    net = settled()
    n2 = net.nodes["n2"].engine
    before = state_of(n2)
    template = wire.decode(from_n1(net, "status", [("st", "active")])).message
    for name, value in (("seq", "f" * 17), ("hg", "-5"), ("hg", "1" * 300)):
        message = Message([f for f in template if f.name not in (name, "auth")])
        message.add(name, value)
        auth.sign_fields(message, n2.config.auth)
        data = wire.encode_netstring(message, auth.trailer(n2.config.auth,
                                                           wire.netstring_body(message)))
        assert bad_reasons(n2.receive(data, 0, net.now, net.wall)) in (
            [f"bad {name} field"], [])  # the second of a reason is only counted
    assert n2.bad.totals == {"bad seq field": 1, "bad hg field": 2}
    assert state_of(n2) == before


def test_an_immortal_dt_does_not_keep_a_dead_peer_alive() -> None:
    net = settled()
    n2 = net.nodes["n2"]
    net.inject("n2", from_n1(net, "status", [("st", "active"), ("dt", "ffffffffffff")]))
    net.run_for(0.001)
    assert n2.engine.peers["n1"].deadtime == DEADTIME
    net.nodes["n1"].alive = False  # power loss right after
    crashed = net.now
    net.run_for(3.0)
    assert net.status_of("n2", "n1") == "dead"
    dead_at = next(t for t, a in n2.actions if type(a).__name__ == "NodeStatusChanged"
                   and getattr(a, "new", "") == "dead" and getattr(a, "node", "") == "n1")
    assert dead_at - crashed <= DEADTIME + KEEPALIVE + 1e-9


def test_a_dt_in_range_is_still_the_peers_deadtime() -> None:
    net = settled()
    n2 = net.nodes["n2"].engine
    n2.receive(from_n1(net, "status", [("st", "active"), ("dt", f"{DT_MAX_MS:x}")]), 0,
               net.now, net.wall)
    assert n2.peers["n1"].deadtime == DT_MAX_MS / 1000
    n2.receive(from_n1(net, "status", [("st", "active"), ("dt", "3e8")]), 0, net.now, net.wall)
    assert n2.peers["n1"].deadtime == 1.0
    assert n2.bad.totals == {}


# --- a failure inside the packet path is contained ---------------------------------------

@pytest.fixture
def broken_failover(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """Failover's `resource` handler and peer-status hook, failing on demand (a bug)."""
    broken = {"on": False}
    # the peer-status hook's name differs once Failover is a declared EngineComponent
    hook = "peer_status" if hasattr(Failover, "peer_status") else "_peer_status"
    for name in ("_on_resource", hook):
        original = getattr(Failover, name)

        def failing(self: Failover, *args: object, _original: object = original) -> object:
            if broken["on"]:
                raise RuntimeError("injected failure")
            return _original(self, *args)  # type: ignore[operator]

        monkeypatch.setattr(Failover, name, failing)
    return broken


def test_a_failing_handler_is_contained_and_the_ack_already_built_is_kept(
        broken_failover: dict[str, bool], caplog: pytest.LogCaptureFixture) -> None:
    net = settled()
    n2 = net.nodes["n2"].engine
    n1 = net.nodes["n1"].engine
    trigger = n2.peers["n1"].seq.ack_trigger
    while (n1.outbox.history.hiseq + 1) % 10 != trigger:  # the next one is acked
        n2.receive(from_n1(net, "status", [("st", "active")]), 0, net.now, net.wall)
    broken_failover["on"] = True
    with caplog.at_level(logging.ERROR, logger="hbd.core.engine"):
        actions = n2.receive(from_n1(net, "resource", [("rsc_hold", "all"), ("rtype", "full")]),
                             0, net.now, net.wall)
        again = n2.receive(from_n1(net, "resource", [("rsc_hold", "all")]), 0, net.now,
                           net.wall)
    assert [a.msgtype for a in actions if isinstance(a, Transmit)] == ["NS_ackmsg"]
    assert bad_reasons(actions) == ["internal error handling 'resource'"]
    assert bad_reasons(again) == []  # counted; reported once per interval
    assert n2.bad.totals == {"internal error handling 'resource'": 2}
    assert n2.peers["n1"].seq.last_seq == n1.outbox.history.hiseq  # no hole, no rexmit loop
    assert len([r for r in caplog.records if r.exc_info]) == 1  # the traceback, once
    assert "injected failure" in caplog.text
    broken_failover["on"] = False  # and the cluster goes on
    net.run_for(2.0)
    assert net.status_of("n2", "n1") == "active" and n2.bad.totals.keys() == {
        "internal error handling 'resource'"}


def test_a_failing_hook_in_the_timer_path_is_contained(
        broken_failover: dict[str, bool], caplog: pytest.LogCaptureFixture) -> None:
    net = settled()
    broken_failover["on"] = True
    net.nodes["n1"].alive = False
    mark = net.now
    with caplog.at_level(logging.ERROR, logger="hbd.core.engine"):
        net.run_for(2.0)  # n2's timer declares n1 dead; the hook raised out of handle_timer
    actions = [a for t, a in net.nodes["n2"].actions if t >= mark]
    deaths = [a for a in actions if isinstance(a, NodeStatusChanged) and a.new == "dead"]
    assert [d.node for d in deaths] == ["n1"]  # the event of the move that happened is kept
    assert net.status_of("n2", "n1") == "dead"
    errors = [a.text for a in actions if isinstance(a, Notice) and a.level == "error"]
    assert len(errors) == 1 and "injected failure" in errors[0]
    assert len([r for r in caplog.records if r.exc_info]) == 1
    # heartbeats went on: the timer was not lost with the exception
    sent = [t for t, a in net.nodes["n2"].actions if isinstance(a, Transmit)
            and a.msgtype == "status" and t >= mark]
    assert len(sent) >= 2.0 / KEEPALIVE - 2


def test_a_failing_hook_keeps_the_restart_and_the_generation_to_persist(
        broken_failover: dict[str, bool]) -> None:
    net = settled()
    n2 = net.nodes["n2"].engine
    net.nodes["n1"].alive = False
    net.run_for(2.0)  # n2 declares n1 dead
    assert net.status_of("n2", "n1") == "dead"
    kw = dict(haresources=HARESOURCES, extra="auto_failback off\n")
    broken_failover["on"] = True
    n1 = net.add_node("n1", make_config("n1", **kw), generation=300)  # type: ignore[arg-type]
    first = next(a for _, a in n1.actions if isinstance(a, Transmit) and a.msgtype == "status")
    actions = n2.receive(first.netstring, 0, net.now, net.wall)
    assert [a.generation for a in actions if isinstance(a, PersistPeerGeneration)] == [300]
    assert n2.peers["n1"].seq.generation == 300  # what the persisted action says
    # the hook failed, not the packet: the status move and its event are kept
    assert [(a.old, a.new) for a in actions if isinstance(a, NodeStatusChanged)] == [
        ("dead", "up")]
    assert net.status_of("n2", "n1") == "up"
    assert bad_reasons(actions) == []
    assert [a.level for a in actions if isinstance(a, Notice)] == ["error"]


# --- text from peers is bounded and printable before it reaches a log line -----------

def test_shown_bounds_and_escapes_peer_text() -> None:
    assert shown("n2") == "n2"
    assert shown("a\nb\x1b[31m\u202e") == "a\\nb\\x1b[31m\\u202e"
    long = shown("x" * 10_000)
    assert len(long) <= 80 and long.endswith("...")
    assert shown("") == ""


@pytest.mark.parametrize("msgtype,fields", [
    ("resource", [("rsc_hold", "bogus\nFAKE: node n1: is dead" + "x" * 5000)]),
    ("ask_resources", [("rsc_hold", "all"), ("info", "\nFAKE line" + "y" * 5000)]),
])
def test_peer_text_in_notices_is_sanitised(msgtype: str, fields: list[tuple[str, str]]) -> None:
    net = settled()
    n2 = net.nodes["n2"]
    actions = n2.engine.receive(from_n1(net, msgtype, fields), 0, net.now, net.wall)
    notices = [a.text for a in actions if isinstance(a, Notice)]
    assert notices, actions
    for text in notices:
        assert "\n" not in text and len(text) < 300, text
