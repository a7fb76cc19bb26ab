"""Named API clients' messages through two simulated hbd cores (hbd.core.clientmsgs).

What ipfail and api_test rely on: a client's message reaches the same client name
on the other node (and here, for a cluster message), a node message only its node,
signon/signoff reach the other node's client of the same name, protocol messages
are never relayed as they are (ipfail's ask_resources becomes the standby command),
and whatever a peer sends that a client could not read is dropped, not passed on.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from hbd.core import clientmsgs, fields
from hbd.core.actions import Action, DeliverToClients, Notice, Transmit
from hbd.core.clientmsgs import ClientRelay, Refused
from hbd.core.config import DEFAULT_API_CLIENT_RATE, DEFAULT_API_CLIENTS_RATE
from hbd.core.engine import Engine
from hbd.core.failover import Failover
from hbd.core.fifomsg import FifoCommand
from hbd.core.pingnodes import PingNodes
from hbd.core.wire import Field, FieldType, Message
from tests.simnet import SimNet, SimNode, make_config

CLIENT_RATE = DEFAULT_API_CLIENT_RATE
CLIENT_BURST = int(clientmsgs._burst(DEFAULT_API_CLIENT_RATE, clientmsgs.CLIENT_BURST_MIN))
TOTAL_BURST = int(clientmsgs._burst(DEFAULT_API_CLIENTS_RATE, clientmsgs.TOTAL_BURST_MIN))


def pair() -> tuple[SimNet, dict[str, ClientRelay]]:
    net = SimNet({})
    relays = {}
    for name in ("n1", "n2"):
        cfg = make_config(name)
        engine = Engine(cfg, uuid=name.encode().ljust(16, b"\0"), generation=100, now=net.now)
        failover = Failover(engine, cfg)
        pings = PingNodes(cfg.hacf, failover)
        relay = ClientRelay(engine)
        engine.attach(failover, pings, relay)
        node = SimNode(name, engine, failover, pings)
        net.nodes[name] = node
        net._apply(node, engine.start(net.now, net.wall))
        relays[name] = relay
    net.run_for(3.0)
    assert net.status_of("n1", "n2") == "active"
    return net, relays


def deliveries(net: SimNet, node: str, since: float) -> list[DeliverToClients]:
    return [a for _, a in net.events(node, DeliverToClients, since)
            if isinstance(a, DeliverToClients)]


def send(net: SimNet, node: str, actions: list[Action]) -> None:
    net._apply(net.nodes[node], actions)


def test_cluster_message_reaches_the_same_client_on_both_nodes() -> None:
    net, relays = pair()
    t0 = net.now
    out = relays["n1"].from_client("ipfail", (("t", "num_ping_nodes"), ("src", "forged"),
                                              ("num_ping", "2")), 3, net.now, net.wall)
    assert isinstance(out, list)
    send(net, "n1", out)
    net.run_for(0.2)
    here = deliveries(net, "n1", t0)
    there = deliveries(net, "n2", t0)
    assert len(here) == 1 and len(there) == 1
    for got in (here[0], there[0]):
        msg = dict(got.fields)
        assert got.to_id == "ipfail" and msg["from_id"] == "ipfail"
        assert msg["t"] == "num_ping_nodes" and msg["num_ping"] == "2"
        assert msg["src"] == "n1"  # the daemon's stamp, not the client's
        assert msg["client_gen"] == "3"


def test_node_message_reaches_that_node_only() -> None:
    net, relays = pair()
    t0 = net.now
    out = relays["n2"].from_client("ipfail", (("t", "you_are_dead"), ("dest", "n1")), 1,
                                   net.now, net.wall)
    assert isinstance(out, list) and [type(a) for a in out] == [Transmit]
    send(net, "n2", out)
    net.run_for(0.2)
    assert deliveries(net, "n2", t0) == []
    (got,) = deliveries(net, "n1", t0)
    assert dict(got.fields)["t"] == "you_are_dead" and got.to_id == "ipfail"


def test_message_to_ourselves_stays_here() -> None:
    net, relays = pair()
    out = relays["n1"].from_client("ping", (("t", "pingreply"), ("dest", "n1")), 1, net.now,
                                   net.wall)
    assert isinstance(out, list) and [type(a) for a in out] == [DeliverToClients]


def test_signon_reaches_the_other_nodes_client() -> None:
    net, relays = pair()
    t0 = net.now
    send(net, "n2", relays["n2"].client_status("ipfail", True, "signon", 7, net.now,
                                                      net.wall))
    net.run_for(0.2)
    (got,) = deliveries(net, "n1", t0)
    msg = dict(got.fields)
    assert msg["t"] == "hbapi-clstat" and msg["st"] == "join" and msg["src"] == "n2"
    assert msg["from_id"] == "ipfail" and got.to_id == "ipfail" and msg["info"] == "signon"


def test_protocol_messages_are_not_relayed_as_they_are() -> None:
    net, relays = pair()
    relay = relays["n1"]
    giveup = relay.from_client("ipfail", (("t", "ask_resources"), ("rsc_hold", "all"),
                                          ("src", "n1"), ("info", "me")), 1, net.now, net.wall)
    assert giveup == FifoCommand("release", "all", "API client ipfail")
    for forged in ("status", "resource", "shutdone", "hbapi-clstat", "respond-cstatus"):
        out = relay.from_client("ipfail", (("t", forged), ("st", "dead")), 1, net.now, net.wall)
        assert isinstance(out, Refused), forged
    bad = relay.from_client("ipfail", (("t", "x"), ("v", "a\nb")), 1, net.now, net.wall)
    assert isinstance(bad, Refused)
    assert isinstance(relay.from_client("ipfail", (("t", "x"), ("dest", "n9")), 1, net.now,
                                        net.wall), Refused)
    assert isinstance(relay.from_client("a b", (("t", "x"),), 1, net.now, net.wall), Refused)
    big = tuple(("t", "x") if i == 0 else (f"f{i}", "y" * 1000) for i in range(40))
    assert isinstance(relay.from_client("ipfail", big, 1, net.now, net.wall), Refused)


def test_messages_a_client_could_not_read_are_dropped() -> None:
    assert fields.client_message(Message([Field("t", b"x"), Field("v", b"\xff")])) is None
    assert fields.client_message(Message([Field("t", b"x"), Field("v", b"a\nb")])) is None
    assert fields.client_message(Message([Field("t", b"x")] * 65)) is None
    assert fields.client_message(Message([Field("t", b"x"), Field("v", b"y" * 1025)])) is None
    ok = fields.client_message(Message([Field("t", b"x"), Field("auth", b"1 abc")]))
    assert ok == (("t", "x"),)
    assert fields.client_id("ipfail") == "ipfail"
    for bad in ("", "x" * 32, "a b", "a=b", "a\nb"):
        assert fields.client_id(bad) is None


def test_clientstatus_query_goes_to_the_node() -> None:
    net, relays = pair()
    actions = relays["n1"].query((("t", "query-cstatus"), ("dest", "n2"), ("cn", "ipfail"),
                                  ("from_id", "1234")), net.now, net.wall)
    assert [type(a) for a in actions] == [Transmit]
    assert relays["n1"].query((("dest", "n9"), ("cn", "x"), ("from_id", "1")), net.now,
                             net.wall) == []


def test_a_flooding_client_is_held_to_its_rate() -> None:
    net, relays = pair()
    relay = relays["n1"]
    now = net.now
    sent = [relay.from_client("api_test", (("t", "flood"), ("i", str(i))), 1, now, net.wall)
            for i in range(200)]
    passed = [s for s in sent if isinstance(s, list)]
    refused = [s for s in sent if isinstance(s, Refused)]
    # a burst passes, then nothing until tokens come back; nothing half-sent
    assert len(passed) == CLIENT_BURST and len(refused) == 200 - len(passed)
    assert relay.rate_limited == len(refused) and "rate limit" in refused[0].reason
    # another client has its own budget, the shared one still has room
    assert isinstance(relay.from_client("ipfail", (("t", "x"),), 1, now, net.wall), list)
    # a second later the flooder has earned CLIENT_RATE more, and no more
    later = [relay.from_client("api_test", (("t", "flood"),), 1, now + 1.0, net.wall)
             for _ in range(100)]
    assert sum(isinstance(s, list) for s in later) == CLIENT_RATE
    # a standby request over the budget is refused too (it would move the groups)
    ask = (("t", "ask_resources"), ("rsc_hold", "all"), ("info", "me"))
    assert isinstance(relay.from_client("api_test", ask, 1, now + 1.0, net.wall), Refused)


def test_all_clients_share_one_budget() -> None:
    net, relays = pair()
    relay = relays["n1"]
    now = net.now
    big = (("t", "x"), ("v", "y" * 600), ("w", "y" * 600))  # two started KiB: two tokens
    passed = 0
    for i in range(40):
        for _ in range(10):
            if isinstance(relay.from_client(f"c{i}", big, 1, now, net.wall), list):
                passed += 1
    assert passed * 2 == TOTAL_BURST
    # questions of casual clients for a peer pay too
    asks = [relay.query((("dest", "n2"), ("cn", "ipfail"), ("from_id", "4242")), now + 100,
                        net.wall) for _ in range(100)]
    assert sum(isinstance(a, list) for a in asks) == CLIENT_BURST
    assert isinstance(asks[-1], Refused)


def test_bucket_table_is_bounded() -> None:
    net, relays = pair()
    relay = relays["n1"]
    for i in range(clientmsgs.BUCKETS_MAX * 3):
        relay.from_client(f"c{i}", (("t", "x"),), 1, net.now + i * 10.0, net.wall)
    assert len(relay._buckets) <= clientmsgs.BUCKETS_MAX


def test_a_field_name_cannot_pose_as_a_type_prefix() -> None:
    """Classic form writes a typed field as `(N)name=value`: a client's field named
    "(1)x" or "(2)x" would reach the peers as binary data or a nested message."""
    from hbd.core.wire import decode, encode_classic

    net, relays = pair()
    for name in ("(1)x", "(2)x", "(0)x"):
        out = relays["n1"].from_client("ipfail", (("t", "x"), (name, "QUJD")), 1, net.now,
                                       net.wall)
        assert isinstance(out, Refused), name
    # what is relayed keeps its fields' types: strings out, strings in
    out = relays["n1"].from_client("ipfail", (("t", "x"), ("a(1)", "(1)QUJD")), 1, net.now,
                                   net.wall)
    assert isinstance(out, list) and isinstance(out[0], Transmit)
    sent = decode(out[0].netstring).message
    # the classic form is built only with a serial link: encode it from what was sent
    for raw in (out[0].netstring, out[0].classic or encode_classic(sent)):
        again = decode(raw).message
        assert [f.type for f in again.fields if f.name == "a(1)"] == [FieldType.STRING]
        assert again.get("a(1)") == "(1)QUJD"


def test_signing_on_and_off_in_a_loop_does_not_flood_the_peer() -> None:
    net, relays = pair()
    relay = relays["n1"]
    outs = [relay.client_status("cl_status", i % 2 == 0, "signon", i, net.now, net.wall)
            for i in range(300)]
    sent = sum(any(isinstance(a, Transmit) for a in out) for out in outs)
    assert sent == CLIENT_BURST
    # told here every time (the same client name on this node hears of it)
    assert all(any(isinstance(a, DeliverToClients) for a in out) for out in outs)
    warnings = [a for out in outs for a in out if isinstance(a, Notice)]
    assert len(warnings) == 1 and "not sent to the cluster" in warnings[0].text


def test_the_rates_are_hbd_conf_s() -> None:
    net, relays = pair()
    relay = relays["n1"]
    relay.configure(100, 1000)  # a reload: the buckets grow with their rates...
    now = net.now + 10  # ...and fill up at them
    sent = [relay.from_client("api_test", (("t", "x"),), 1, now, net.wall) for _ in range(400)]
    assert sum(isinstance(s, list) for s in sent) == int(100 * clientmsgs.BURST_SECONDS)
    relay.configure(1, 1000)  # slower: ten seconds earn it ten
    later = [relay.from_client("api_test", (("t", "x"),), 1, now + 10, net.wall)
             for _ in range(400)]
    assert sum(isinstance(s, list) for s in later) == 10


def test_a_refused_standby_request_of_a_client_goes_back_to_be_logged_rate_limited(
        caplog: pytest.LogCaptureFixture) -> None:
    """ipfail's ask_resources that hbd cannot carry out (here: nothing is stable yet) is
    not logged by the stack at every request: the refusal goes back to the API server,
    whose warnings a client can cause are rate-limited."""
    from hbd.core.clientmsgs import ClientRelay
    from hbd.core.engine import Engine
    from hbd.core.failover import Failover
    from hbd.service import Options
    from hbd.stack_heartbeat import HeartbeatDaemon
    from tests.simnet import make_config

    config = make_config("n1", extra="auto_failback off\n")
    options = Options(config_dir="/nonexistent", state_dir="/nonexistent",
                      runtime_dir="/nonexistent", node="n1", dbus=False, debug=False)
    daemon = HeartbeatDaemon(options, config)
    engine = Engine(config, uuid=b"n1".ljust(16, b"\0"), generation=1, now=0.0)
    daemon.engine, daemon.failover = engine, Failover(engine, config)
    daemon.relay = ClientRelay(engine)
    caplog.set_level(logging.INFO)
    ask = [("t", "ask_resources"), ("rsc_hold", "all"), ("info", "me")]

    async def main() -> None:
        daemon._loop = asyncio.get_running_loop()
        for _ in range(5):
            refusal = daemon.client_message("ipfail", ask, 1)
            assert refusal is not None and refusal.startswith("standby [all] refused: ")
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    asyncio.run(main())
