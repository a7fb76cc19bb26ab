"""Property-based fuzzing of everything a stranger or a typo controls.

Targets: the wire parser (netstring datagrams, classic frames, the serial
stream splitter), MAC verification, the engine's receive path and the three
config parsers.  Each target is a plain `check_*` function that raises
AssertionError when a property breaks and lets any unexpected exception
through; hypothesis drives them here with a few hundred examples each, and
benchmarks/fuzz.py drives the same functions with 100,000+ random and
mutated inputs per target.

Properties:
* wire.decode raises nothing but WireError; whatever it accepts re-encodes,
  and decoding the re-encoding gives the same message (decode is idempotent
  up to normalisation: leading zeros, NUL padding, blank classic lines);
* a valid message survives encode -> decode in both forms, and a signed one
  verifies; auth.verify raises nothing but AuthError;
* Engine.receive never raises on any bytes, and input that fails to parse or
  authenticate changes no membership, sequence or resource state;
* assemble.check never raises on any text (NUL, invalid UTF-8 read with
  errors="replace", > 64 KiB, huge, negative and Unicode numbers, duplicate
  and missing fields) and every problem reads `file[:line]: message` with a
  line number inside the file; an authkeys secret never appears in a problem.
"""

from __future__ import annotations

import copy
import functools
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hbd.core import auth, wire
from hbd.core.actions import Action, BadPackets, Transmit
from hbd.core.assemble import ConfigTexts, check
from hbd.core.authkeys import parse_authkeys
from hbd.core.config import AuthKey, AuthKeys, AuthMethod, Problem, Severity
from hbd.core.engine import Engine
from hbd.core.failover import Failover
from hbd.core.fields import bad_number
from hbd.core.hacf import KNOWN_DIRECTIVES
from hbd.core.wire import Field, FieldType, Message
from hbd.errors import AuthError, WireError
from tests.captures import serial_streams, udp_datagrams
from tests.simnet import SimNet, make_config

# CI runs a few hundred examples per property; HBD_FUZZ_EXAMPLES=20000 hunts longer.
FUZZ = settings(max_examples=int(os.environ.get("HBD_FUZZ_EXAMPLES", "300")), deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

LAB_KEYS, _ = parse_authkeys("auth 1\n1 sha1 labsecret\n")  # the captures' key
assert LAB_KEYS is not None
ALL_KEYS = [
    LAB_KEYS,
    AuthKeys(1, (AuthKey(1, AuthMethod.MD5, b"md5-secret-Q"), AuthKey(2, AuthMethod.CRC, b""),
                 AuthKey(3, AuthMethod.BLAKE2B, b"blake-secret-Q" * 8))),
]


# --- seeds: real traffic ------------------------------------------------------------------

@functools.cache
def captured_datagrams() -> tuple[bytes, ...]:
    """Heartbeat 3.0.6's own UDP packets (netstring form)."""
    return tuple(d.payload for d in udp_datagrams())


@functools.cache
def captured_frames() -> tuple[bytes, ...]:
    """Heartbeat 3.0.6's own serial frames (classic form)."""
    frames: list[bytes] = []
    for stream in serial_streams().values():
        frames += wire.split_classic_stream(stream)[0]
    return tuple(frames)


def mutate(data: bytes, rng: random.Random, rounds: int = 3) -> bytes:
    """A few structure-aware edits: what truncation, line noise and attackers do."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, rounds)):
        pos = rng.randrange(len(buf) + 1)
        choice = rng.randrange(12)
        if choice == 0:  # truncate
            del buf[pos:]
        elif choice == 1:  # flip a bit
            if buf:
                buf[pos % len(buf)] ^= 1 << rng.randrange(8)
        elif choice == 2:  # random byte
            if buf:
                buf[pos % len(buf)] = rng.randrange(256)
        elif choice == 3:  # delete a run
            del buf[pos:pos + rng.randint(1, 40)]
        elif choice == 4:  # insert special bytes
            buf[pos:pos] = rng.choice([b"\0", b"\0" * 50, b"\xff\xfe", b"\xc3(", b"\xed\xa0\x80",
                                       b"\n", b"\r\n", b",", b":", b"=", b"(2)", b"###\n",
                                       b"%%%\n", b">>>\n", b"<<<\n", "²".encode()])
        elif choice == 5:  # a netstring length becomes huge, negative or odd
            digits = [m.span() for m in re.finditer(rb"\d+(?=:)", bytes(buf))]
            if digits:
                a, b = rng.choice(digits)
                buf[a:b] = rng.choice([b"9" * rng.randint(5, 40), b"-1", b"0", b"00011",
                                       b"4294967296", b"+5", b" 5", "١".encode()])
        elif choice == 6:  # duplicate a region (duplicate fields)
            end = min(len(buf), pos + rng.randint(1, 80))
            buf[end:end] = buf[pos:end]
        elif choice == 7:  # swap two regions (reordered fields)
            a, b = sorted(rng.randrange(len(buf) + 1) for _ in range(2))
            buf[a:b] = buf[a:b][::-1]
        elif choice == 8:  # oversize
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(64)) * rng.randint(1, 1100)
        elif choice == 9:  # change a field's type prefix
            spans = [m.span() for m in re.finditer(rb"\(\d\)", bytes(buf))]
            if spans:
                a, b = rng.choice(spans)
                buf[a:b] = b"(%d)" % rng.randrange(10)
        elif choice == 10:  # a value becomes a huge or odd number
            spans = [m.span(1) for m in re.finditer(rb"=([0-9a-f]+)[,\n]", bytes(buf))]
            if spans:
                a, b = rng.choice(spans)
                buf[a:b] = rng.choice([b"f" * 200, b"-1", b"0", b"", b"9" * 5000, b"x"])
        else:  # splice in part of another real packet
            other = rng.choice(captured_datagrams() + captured_frames())
            start = rng.randrange(len(other))
            buf[pos:pos] = other[start:start + rng.randint(1, 200)]
    return bytes(buf)


# --- the targets (also driven by benchmarks/fuzz.py) ----------------------------------------

def check_decode(data: bytes) -> wire.Packet | None:
    """decode raises only WireError; what it accepts re-encodes and re-decodes the same."""
    try:
        packet = wire.decode(data)
    except WireError:
        return None
    if packet.form == "netstring":
        again = wire.decode(wire.encode_netstring(packet.message, packet.trailer))
        assert again.trailer == packet.trailer
    else:
        again = wire.decode(wire.encode_classic(packet.message))
    assert again.message == packet.message
    check_verify(packet)
    return packet


def check_verify(packet: wire.Packet) -> None:
    """Verification says yes or raises AuthError; its reason never shows a key."""
    for keys in ALL_KEYS:
        try:
            auth.verify(packet, keys)
        except AuthError as err:
            assert not any(k.secret and k.secret in str(err).encode() for k in keys.keys)


def check_stream(stream: bytes, cuts: list[int]) -> None:
    """The serial splitter, fed in arbitrary chunks, never raises or grows without bound."""
    leftover = b""
    previous = 0
    for cut in [*sorted(cuts), len(stream)]:
        frames, leftover = wire.split_classic_stream(leftover + stream[previous:cut])
        previous = max(previous, cut)
        assert len(leftover) <= wire.MAX_MESSAGE + 4096
        for frame in frames:
            assert frame.startswith(wire.CLASSIC_START) and frame.endswith(wire.CLASSIC_END)
            check_decode(frame)


@dataclass
class EngineRig:
    """n2's engine and failover after a healthy start, plus n1's real packets."""

    engine: Engine
    failover: Failover
    now: float
    wall: float
    peer_packets: tuple[bytes, ...]


HARESOURCES = "n1 10.77.0.240/24/eth0\nn2 10.77.0.241/24/eth0\n"


@functools.cache
def _engine_rig() -> EngineRig:
    configs = {n: make_config(n, haresources=HARESOURCES) for n in ("n1", "n2")}
    net = SimNet(configs)
    net.run_for(3.0)
    n2 = net.nodes["n2"]
    assert n2.engine.peers["n1"].status.state.value == "active"
    sent = tuple(a.netstring for _, a in net.nodes["n1"].actions if isinstance(a, Transmit))
    return EngineRig(n2.engine, n2.failover, net.now, net.wall, sent[-40:])


def engine_rig() -> EngineRig:
    """A private copy of the prepared rig (deepcopy keeps engine and failover wired)."""
    return copy.deepcopy(_engine_rig())


def fingerprint(rig: EngineRig) -> tuple[object, ...]:
    """Everything a packet could wrongly change: membership, sequences, resources."""
    e, f = rig.engine, rig.failover
    peers = tuple(
        (name, p.status.state, p.seq.generation, p.seq.last_seq, tuple(sorted(p.seq.missing)),
         p.seq.status_seqno, p.last_status_at, p.deadtime, p.uuid, p.heard_from, p.ackseq,
         p.rsc_hold, tuple((i, s.fsm.state, s.last_heard) for i, s in p.links.items()))
        for name, p in e.peers.items())
    groups = tuple((g.key, g.state) for g in f.groups)
    return (e.status.state, e.comm_up, peers, f.state.state, f.standby.state, f.other_holds,
            f.other_stable, f.we_declared_peer_dead, f.peer_declared_us_dead, groups)


def _authentic(data: bytes, keys: AuthKeys) -> bool:
    try:
        auth.verify(wire.decode(data), keys)
    except (WireError, AuthError):
        return False
    return True


def check_engine_receive(rig: EngineRig, data: bytes, link: int) -> list[Action]:
    """receive never raises; unauthenticated input changes nothing but counters."""
    before = fingerprint(rig)
    actions = rig.engine.receive(data, link, rig.now, rig.wall)
    if not _authentic(data, rig.engine.config.auth):
        assert fingerprint(rig) == before, "unauthenticated input changed the cluster state"
        assert all(isinstance(a, BadPackets) for a in actions), actions
        for a in actions:
            assert isinstance(a, BadPackets)
            assert len(a.reason) <= 80 and a.reason.isprintable()
            assert len(a.last_source) <= 80 and a.last_source.isprintable()
    return actions


def check_engine_authenticated(rig: EngineRig, fields: list[tuple[str, bytes]],
                               steps: int = 3) -> None:
    """A peer with the key (buggy or compromised) sends anything: still no exception."""
    message = Message([Field(name, value) for name, value in fields])
    auth.sign_fields(message, rig.engine.config.auth)
    data = wire.encode_netstring(message, auth.trailer(rig.engine.config.auth,
                                                       wire.netstring_body(message)))
    before = fingerprint(rig)
    rig.engine.receive(data, 0, rig.now, rig.wall)
    decoded = wire.decode(data).message
    if decoded.type and bad_number(decoded, decoded.type) is not None:
        # a number out of its range: refused before anything moved
        assert fingerprint(rig) == before, "a refused message changed the cluster state"
    rig.engine.receive(wire.encode_classic(message), 1, rig.now + 0.001, rig.wall)
    now = rig.now + 0.001
    for _ in range(steps):  # and the timers that follow run without error
        now = max(now + 0.05, min(rig.engine.next_timer(), now + 5.0))
        rig.engine.handle_timer(now, rig.wall + (now - rig.now))
    rig.wall += now - rig.now  # a reused rig's clock only moves forward
    rig.now = now


LINE_COUNT: Callable[[str], int] = lambda text: text.count("\n") + 1  # noqa: E731
_PROBLEM = re.compile(r"^(?P<file>ha\.cf|haresources|authkeys)(?::(?P<line>[1-9]\d*))?: "
                      r"(?:warning: )?\S")


def check_config(hacf: str | None, haresources: str | None, authkeys: str | None,
                 mode: int | None = 0o100600, secret: str | None = None) -> None:
    """check() never raises; every problem is `file[:line]: message` pointing into the file."""
    texts = ConfigTexts("ha.cf", hacf, "haresources", haresources, "authkeys", authkeys, mode)
    config, problems = check(texts, node_name="n1")
    lines = {name: None if text is None else LINE_COUNT(text)
             for name, text in (("ha.cf", hacf), ("haresources", haresources),
                                ("authkeys", authkeys))}
    for problem in problems:
        assert isinstance(problem, Problem)
        rendered = str(problem)
        match = _PROBLEM.match(rendered)
        assert match, f"badly formed problem: {rendered[:200]!r}"
        count = lines[match["file"]]
        if match["line"] is not None:
            assert count is not None and int(match["line"]) <= count, rendered[:200]
        if secret is not None:
            assert secret not in rendered, f"authkeys secret shown: {rendered!r}"
    errors = [p for p in problems if p.severity is Severity.ERROR]
    assert (config is None) == bool(errors) or (config is None and authkeys is None)


# --- wire --------------------------------------------------------------------------------

packets = st.one_of(
    st.binary(max_size=600),
    st.binary(max_size=600).map(lambda b: wire.NETSTRING_START + b),
    st.binary(max_size=600).map(lambda b: wire.CLASSIC_START + b + wire.CLASSIC_END),
    st.lists(st.binary(max_size=30), max_size=12).map(
        lambda items: wire.NETSTRING_START + b"".join(wire.netstring_item(i) for i in items)
        + wire.NETSTRING_END),
)


@FUZZ
@given(packets)
@example(b"###\n" + b"9" * 5000 + b":x,%%%\n")
@example(b">>>\n(1)auth=\xc2\xb2 ab\n<<<\n")
@example(b">>>\nauth=\xc2\xb2 ab\n<<<\n")
@example(b"###\n9:(0)src=n1,%%%\n5003:" + b"9" * 5000 + b" ab,")
def test_decode_arbitrary_bytes(data: bytes) -> None:
    check_decode(data)


@FUZZ
@given(st.integers(0, 2**32), st.sampled_from(["udp", "serial"]))
def test_decode_mutated_real_packets(seed: int, which: str) -> None:
    rng = random.Random(seed)
    seeds = captured_datagrams() if which == "udp" else captured_frames()
    check_decode(mutate(rng.choice(seeds), rng))


@FUZZ
@given(st.integers(0, 2**32), st.lists(st.integers(0, 40_000), max_size=8))
def test_serial_stream_mutated_and_chunked(seed: int, cuts: list[int]) -> None:
    rng = random.Random(seed)
    streams = serial_streams()
    stream = streams[rng.choice(sorted(streams))][: rng.randint(0, 40_000)]
    check_stream(mutate(stream, rng, rounds=6), cuts)


def test_oversized_and_pathological_inputs() -> None:
    field = wire.netstring_item(b"(0)a=b")
    huge = [
        wire.NETSTRING_START + field * (wire.MAX_FIELDS + 1) + wire.NETSTRING_END,
        wire.NETSTRING_START + b"x" * (64 * 1024 + 1),
        wire.CLASSIC_START + b"a=b\n" * 70_000 + wire.CLASSIC_END,
        wire.CLASSIC_START + b"a=" + b"v" * 300_000 + b"\n" + wire.CLASSIC_END,
    ]
    nested = wire.netstring_body(Message.of(("a", "1")))
    for _ in range(wire.MAX_DEPTH + 2):
        nested = wire.netstring_body(Message([Field("s", nested, FieldType.STRUCT)]))
    huge.append(nested)
    for data in huge:
        with pytest.raises(WireError):
            wire.decode(data)
    check_stream(wire.CLASSIC_START * 70_000, [1000, 300_000])
    check_stream(b"\0" * 300_000 + captured_frames()[0], [5])


names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="="),
                min_size=1, max_size=10).filter(lambda n: re.match(r"\(\d\)", n) is None)
plain_values = st.binary(max_size=60).filter(lambda v: b"\n" not in v and not v.endswith(b"\r"))


@st.composite
def messages(draw: st.DrawFn, classic_safe: bool, depth: int = 0) -> Message:
    fields = []
    for _ in range(draw(st.integers(1, 8))):
        kinds = [FieldType.STRING, FieldType.BINARY]
        if not classic_safe and depth < 3:
            kinds += [FieldType.STRUCT, FieldType.LIST]
        kind = draw(st.sampled_from(kinds))
        if kind is FieldType.STRUCT:
            value = wire.netstring_body(draw(messages(classic_safe=False, depth=depth + 1)))
        elif kind is FieldType.STRING and classic_safe:
            value = draw(plain_values)
        else:
            value = draw(st.binary(max_size=60))
        fields.append(Field(draw(names), value, kind))
    return Message(fields)


trailers = st.one_of(st.none(), st.text(st.characters(max_codepoint=0x7F), max_size=40))


@FUZZ
@given(messages(classic_safe=False), trailers)
def test_netstring_round_trip(message: Message, trailer: str | None) -> None:
    data = wire.encode_netstring(message, trailer)
    packet = wire.decode(data)
    assert packet.message == message and packet.trailer == trailer
    assert wire.encode_netstring(packet.message, packet.trailer) == data


@FUZZ
@given(messages(classic_safe=True), st.sampled_from(ALL_KEYS))
def test_classic_round_trip_and_signing(message: Message, keys: AuthKeys) -> None:
    data = wire.encode_classic(message)
    assert wire.decode(data).message == message
    assert wire.decode(wire.encode_netstring(message, None)).message == message
    auth.sign_fields(message, keys)
    signed = wire.encode_netstring(message, auth.trailer(keys, wire.netstring_body(message)))
    assert auth.verify(wire.decode(signed), keys) == keys.active_key
    assert auth.verify(wire.decode(wire.encode_classic(message)), keys) == keys.active_key


auth_tokens = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["1", "2", "3", "15", "16", "0", "-1", "²", "١", "9" * 5000, "1 ", " 1"]),
)


@FUZZ
@given(auth_tokens, st.text(max_size=60), st.binary(max_size=200),
       st.sampled_from(["netstring", "classic"]))
def test_verify_raises_only_auth_error(index: str, mac: str, signed: bytes, form: str) -> None:
    token = f"{index} {mac}"
    if form == "netstring":
        packet = wire.Packet(Message.of(("t", "status")), form, signed, token)
    else:
        packet = wire.Packet(Message.of(("t", "status"), ("auth", token)), form, b"", None)
    check_verify(packet)


# --- the engine --------------------------------------------------------------------------

@FUZZ
@given(st.one_of(packets, st.integers(0, 2**32)), st.integers(-2, 3))
@example(b">>>\nsrc=n1\nauth=\xc2\xb2 ab\n<<<\n", 0)
def test_engine_receive_survives_and_ignores_unauthenticated(data: bytes | int,
                                                             link: int) -> None:
    rig = engine_rig()
    if isinstance(data, int):  # a mutated packet of the real peer, from this cluster
        rng = random.Random(data)
        data = mutate(rng.choice(rig.peer_packets), rng)
    check_engine_receive(rig, data, link)


def test_flood_of_varied_bad_packets_is_reported_not_logged_per_packet() -> None:
    """Attacker-chosen text (key index, claimed sender) must not make reasons unbounded."""
    rig = engine_rig()
    reports: list[Action] = []
    for i in range(2000):
        src = f"n{i}\nFAKE: node n1: is dead".encode()
        trailer = b"%d abc" % (16 + i)
        data = (wire.NETSTRING_START + wire.netstring_item(b"(0)src=" + src)
                + wire.NETSTRING_END + wire.netstring_item(trailer))
        reports += check_engine_receive(rig, data, 0)
    assert len(reports) <= 5, reports[:10]
    assert len(rig.engine.bad.totals) <= 5


MESSAGE_TYPES = (b"status", b"resource", b"ask_resources", b"starting", b"NS_rexmit",
                 b"NS_ackmsg", b"reqnodes", b"repnodes", b"hb_takeover", b"ip-request",
                 b"ip-request-resp", b"stonith", b"shutdone")
FIELD_NAMES = ("t", "st", "src", "dest", "seq", "hg", "ts", "dt", "ld", "ttl", "srcuuid",
               "destuuid", "rsc_hold", "rtype", "info", "isstable", "node", "ok", "ipaddr",
               "ackseq", "firstseq", "lastseq", "hbd_declared_dead", "hbd_ping", "protocol",
               "result")
FIELD_VALUES = (*MESSAGE_TYPES, b"n1", b"n2", b"n9", b"active", b"dead", b"up", b"init", b"all",
                b"local", b"foreign", b"none", b"full", b"mach_down", b"me", b"other", b"1", b"0",
                b"10.77.0.240", b"1f4", b"ffffffffffffffffffff", b"-1", b"0x10", b"")

field_values = st.one_of(
    st.sampled_from(FIELD_VALUES),
    st.integers(-(2**70), 2**70).map(lambda i: f"{i:x}".encode()),
    st.binary(max_size=20),
)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(FIELD_NAMES), field_values), max_size=14),
       st.sampled_from(MESSAGE_TYPES))
def test_engine_survives_authenticated_nonsense(fields: list[tuple[str, bytes]],
                                                msgtype: bytes) -> None:
    rig = engine_rig()
    check_engine_authenticated(rig, [("t", msgtype), ("src", b"n1"), ("ts", b"1"), *fields])


# --- the config parsers ---------------------------------------------------------------------

ODD_NUMBERS = ("", "-1", "0", "00", "1e309", "9" * 400, "9" * 5000, "²", "١٢", "nan", "inf",
               "0x10", "500ms", "-500ms", "1.5", ".5", "1..5", "1500us", "3.7e2")
WORDS = ("eth0", "eth1", "lo", "/dev/ttyS0", "10.77.0.1", "225.0.0.7", "255.255.255.255",
         "10.0.0.1/24/eth0", "10.0.0.1/99", "IPaddr::1.2.3.4", "on", "off", "legacy", "n1", "n2",
         "N1", "sha1", "md5", "crc", "blake2b", "\0", "\x0c", "\x0b", "\u2028", "\x85", "#", "\\",
         "'", "\ufffd", ",")
HARESOURCES_HEADS = ("n1", "n2", "n3", "N1", "")
AUTHKEYS_HEADS = ("auth", "1", "2", "15", "16", "²", "-1", "x")

numbers = st.one_of(st.integers(-(2**80), 2**80).map(str), st.sampled_from(ODD_NUMBERS))
tokens = st.one_of(numbers, st.sampled_from(WORDS), st.text(max_size=10))


def lines_of(heads: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    line = st.builds(lambda head, args: " ".join([head, *args]), heads,
                     st.lists(tokens, max_size=5))
    return st.lists(line, max_size=25).map("\n".join)


GOOD_HACF = "keepalive 100ms\ndeadtime 500ms\ninitdead 1\nbcast eth0\nnode n1 n2\n"
any_text = st.one_of(
    st.text(max_size=400),
    st.binary(max_size=400).map(lambda b: b.decode("utf-8", errors="replace")),
)
hacf_texts = st.one_of(any_text, lines_of(st.sampled_from(sorted(KNOWN_DIRECTIVES))),
                       lines_of(st.sampled_from(sorted(KNOWN_DIRECTIVES))).map(
                           lambda t: GOOD_HACF + t))
haresources_texts = st.one_of(any_text, lines_of(st.sampled_from(HARESOURCES_HEADS)))
authkeys_texts = st.one_of(any_text, lines_of(st.sampled_from(AUTHKEYS_HEADS)))


@FUZZ
@given(st.one_of(st.none(), hacf_texts), st.one_of(st.none(), haresources_texts),
       st.one_of(st.none(), authkeys_texts),
       st.sampled_from([None, 0o100600, 0o100644, 0o100640, 0o100604, 0o100000]))
@example(GOOD_HACF + "udpport ²", "", "auth 1\n1 sha1 x\n", 0o100600)
@example(GOOD_HACF + "deadtime " + "9" * 400, "", "auth 1\n1 sha1 x\n", 0o100600)
@example(GOOD_HACF + "udpport " + "9" * 5000, "", "auth 1\n1 sha1 x\n", 0o100600)
@example(GOOD_HACF, "", "auth ²\n1 sha1 x\n", 0o100600)
@example(GOOD_HACF + "\x0c\n\x0b\n\u2028node n3", "\x85n1 10.0.0.1", "auth 1\n1 sha1 x\n",
         0o100600)
def test_config_parsers_never_raise(hacf: str | None, haresources: str | None,
                                    authkeys: str | None, mode: int | None) -> None:
    check_config(hacf, haresources, authkeys, mode)


secrets_ = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="#"),
                   min_size=6, max_size=20).map(lambda s: "Zq" + s)
authkeys_shapes = st.sampled_from([
    "auth 1\n1 sha1 {s}\n", "auth 1\n1 {s}\n", "auth 1\n1 sha1\n{s}\n", "auth 1\n{s}\n",
    "auth {s}\n1 sha1 k\n", "auth 1\n1 crc {s}\n", "auth 1\n1 md5 {s} {s}\n",
    "auth 1\n16 sha1 {s}\n", "auth 1\n1 sha1 {s}\n1 sha1 {s}\n", "auth 1\n{s} sha1\n",
    "auth 1\n1 sha1 {s}\nauth 1\n", "auth 2\n1 sha1 {s}\n", "auth 1\n 1 sha1\\\n{s}\n",
])


@FUZZ
@given(authkeys_shapes, secrets_, st.sampled_from([0o100600, 0o100644]))
@example("auth 1\n1 Zqs3cr3tkey\n", "Zqs3cr3tkey", 0o100600)
@example("auth 1\nZqs3cr3tkey\n", "Zqs3cr3tkey", 0o100600)
def test_authkeys_problems_never_show_a_secret(shape: str, secret: str, mode: int) -> None:
    check_config(GOOD_HACF, "", shape.format(s=secret), mode, secret=secret)


@pytest.mark.parametrize("shape", ["one-line", "many-lines", "many-nodes", "binary", "nul"])
def test_config_files_over_64_kib(shape: str) -> None:
    rng = random.Random(shape)
    size = 70 * 1024
    text = {
        "one-line": "deadtime " + "9" * size,
        "many-lines": "bcast eth0\n" * (size // 11),
        "many-nodes": "node " + " ".join(f"x{i}" for i in range(size // 6)),
        "binary": bytes(rng.randrange(256) for _ in range(size)).decode("utf-8", "replace"),
        "nul": ("keepalive 1\0\n" * (size // 13)),
    }[shape]
    check_config(GOOD_HACF + text, text, "auth 1\n1 sha1 x\n" + text, 0o100600)
