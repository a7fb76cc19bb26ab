"""Wire format and authentication against real Heartbeat 3.0.6 traffic.

Ground truth: every packet of the UDP capture and every frame of the serial
capture must parse, verify with the lab key, and re-encode to the same bytes;
and hbd's own signing must reproduce Heartbeat's MACs exactly.
"""

from __future__ import annotations

import pytest

from hbd.core import auth, wire
from hbd.core.authkeys import parse_authkeys
from hbd.core.config import AuthKey, AuthKeys, AuthMethod
from hbd.core.wire import Field, FieldType, Message
from hbd.errors import AuthError, WireError
from tests.captures import serial_streams, udp_datagrams

LAB_KEYS, _ = parse_authkeys("auth 1\n1 sha1 labsecret\n")
assert LAB_KEYS is not None


def test_every_udp_packet_parses_verifies_and_reencodes() -> None:
    datagrams = udp_datagrams()
    assert len(datagrams) == 150
    for d in datagrams:
        packet = wire.decode(d.payload)
        assert packet.form == "netstring"
        assert auth.verify(packet, LAB_KEYS).index == 1
        assert wire.encode_netstring(packet.message, packet.trailer) == d.payload
        # hbd's own signing reproduces both of Heartbeat's MACs
        resigned = packet.message.copy()
        auth.sign_fields(resigned, LAB_KEYS)
        assert resigned == packet.message
        assert auth.trailer(LAB_KEYS, wire.netstring_body(resigned)) == packet.trailer


def test_every_serial_frame_parses_verifies_and_reencodes() -> None:
    streams = serial_streams()
    assert set(streams) == {">", "<"}
    total = 0
    for stream in streams.values():
        frames, leftover = wire.split_classic_stream(stream)
        assert leftover == b""
        assert b"".join(frames) == stream
        for frame in frames:
            packet = wire.decode(frame)
            assert packet.form == "classic"
            auth.verify(packet, LAB_KEYS)
            assert wire.encode_classic(packet.message) == frame
        total += len(frames)
    assert total == 151


def test_same_message_on_both_media_carries_the_same_auth_field() -> None:
    udp = [wire.decode(d.payload).message for d in udp_datagrams()]
    frames, _ = wire.split_classic_stream(serial_streams()[">"])
    serial = [wire.decode(f).message for f in frames]
    udp_n1 = {m.get("auth") for m in udp if m.get("src") == "n1"}
    assert {m.get("auth") for m in serial} <= udp_n1 | {None}
    first = serial[0]
    assert first.type == "status" and first.raw("srcuuid") == udp[0].raw("srcuuid")
    assert [f.type for f in first if f.name == "srcuuid"] == [FieldType.BINARY]


def test_known_field_values() -> None:
    first = wire.decode(udp_datagrams()[0].payload).message
    assert [f.name for f in first] == ["t", "st", "dt", "protocol", "src", "srcuuid", "seq",
                                       "hg", "ts", "ld", "ttl", "auth"]
    assert first.get("st") == "init"
    assert first.get_int("hg", 16) == 1795625247  # hg tracks the clock (time-based)
    assert first.get_int("dt", 16) == 7000
    assert len(first.raw("srcuuid") or b"") == 16


def test_split_stream_handles_noise_and_partial_frames() -> None:
    frames, _ = wire.split_classic_stream(serial_streams()[">"])
    one, two = frames[0], frames[1]
    got, rest = wire.split_classic_stream(b"\x00garbage" + one + two[:10])
    assert got == [one] and rest == two[:10]
    got, rest = wire.split_classic_stream(rest + two[10:])
    assert got == [two] and rest == b""


@pytest.mark.parametrize("bad", [
    b"", b"hello", b"###\n", b"###\n5:(0)t=x,", b"###\n99:(0)t=status,%%%\n",
    b"###\n8:(0)t=stat,%%%\n", b"###\n10:(9)t=status,%%%\n", b"###\n9:t=status,%%%\n",
    b"###\n%%%\n", b">>>\n<<<\n", b">>>\nt=status\n", b">>>\nnoequals\n<<<\n",
    b">>>\n(1)x=!!!notbase64\n<<<\n", b"###\n11:(0)t=status,%%%\n5:1 ab,junk",
    b"###\nx1:(0)t=status,%%%\n",
])
def test_malformed_packets_raise_wire_error(bad: bytes) -> None:
    with pytest.raises(WireError):
        wire.decode(bad)


def test_oversized_packet_refused() -> None:
    with pytest.raises(WireError, match="too long"):
        wire.decode(b"###\n" + b"x" * (300 * 1024))


def test_struct_fields_round_trip() -> None:
    inner = wire.netstring_body(Message.of(("a", "1")))
    outer = Message([Field("t", b"x"), Field("child", inner, FieldType.STRUCT)])
    data = wire.encode_netstring(outer, None)
    assert wire.decode(data).message == outer


# --- authentication ----------------------------------------------------------------

def _keys(*specs: tuple[int, AuthMethod, bytes], active: int = 1) -> AuthKeys:
    return AuthKeys(active=active, keys=tuple(AuthKey(i, m, s) for i, m, s in specs))


def test_crc_matches_heartbeat_algorithm() -> None:
    # CRC-32/CKSUM parameters (init 0, non-reflected, complemented) = reveng check value;
    # the last value came from compiling Heartbeat's own crc.c loop over the same bytes.
    assert auth.heartbeat_crc(b"") == "ffffffff"
    assert auth.heartbeat_crc(b"123456789") == "765e7680"
    assert auth.heartbeat_crc(b"\x01\xf0\x80\xffhello\x7f\x90 world") == "862290fe"


@pytest.mark.parametrize("method,secret", [
    (AuthMethod.SHA1, b"k1"), (AuthMethod.MD5, b"k2"), (AuthMethod.CRC, b""),
    (AuthMethod.BLAKE2B, b"k4"), (AuthMethod.BLAKE2B, b"x" * 100)])
def test_sign_and_verify_each_method(method: AuthMethod, secret: bytes) -> None:
    keys = _keys((1, method, secret))
    msg = Message.of(("t", "status"), ("src", "n1"))
    auth.sign_fields(msg, keys)
    data = wire.encode_netstring(msg, auth.trailer(keys, wire.netstring_body(msg)))
    assert auth.verify(wire.decode(data), keys).method is method
    assert auth.verify(wire.decode(wire.encode_classic(msg)), keys).method is method


def test_any_listed_key_is_accepted_and_active_one_signs() -> None:
    old = _keys((1, AuthMethod.SHA1, b"old"), (2, AuthMethod.SHA1, b"new"), active=1)
    new = _keys((1, AuthMethod.SHA1, b"old"), (2, AuthMethod.SHA1, b"new"), active=2)
    msg = Message.of(("t", "status"))
    auth.sign_fields(msg, new)
    assert msg.get("auth", ).startswith("2 ")  # type: ignore[union-attr]
    assert auth.verify(wire.decode(wire.encode_classic(msg)), old).index == 2


def test_verify_failures_name_the_reason_never_the_key() -> None:
    mine = _keys((1, AuthMethod.SHA1, b"secret-one"))
    theirs = _keys((1, AuthMethod.SHA1, b"secret-two"))
    other_index = _keys((3, AuthMethod.SHA1, b"secret-one"), active=3)
    msg = Message.of(("t", "status"))
    auth.sign_fields(msg, theirs)
    data = wire.encode_netstring(msg, auth.trailer(theirs, wire.netstring_body(msg)))
    with pytest.raises(AuthError, match="bad MAC under key 1") as err:
        auth.verify(wire.decode(data), mine)
    assert "secret" not in str(err.value)
    with pytest.raises(AuthError, match="unknown key index 1"):
        auth.verify(wire.decode(data), other_index)
    with pytest.raises(AuthError, match="no netstring trailer"):
        auth.verify(wire.decode(wire.netstring_body(msg)), mine)
    unsigned = Message.of(("t", "status"))
    with pytest.raises(AuthError, match="no auth field"):
        auth.verify(wire.decode(wire.encode_classic(unsigned)), mine)


def test_tampered_capture_packet_fails() -> None:
    payload = udp_datagrams()[5].payload
    tampered = payload.replace(b"st=", b"sT=", 1)
    packet = wire.decode(tampered)
    with pytest.raises(AuthError):
        auth.verify(packet, LAB_KEYS)


def test_trailer_precheck_agrees_with_full_verify() -> None:
    """The cheap MAC check before parsing accepts exactly what verify accepts."""
    for d in udp_datagrams():
        signed = auth.precheck_netstring(d.payload, LAB_KEYS)
        assert signed is not None and signed == wire.decode(d.payload).signed
    payload = udp_datagrams()[5].payload
    with pytest.raises(AuthError, match="bad MAC"):
        auth.precheck_netstring(payload.replace(b"st=", b"sT=", 1), LAB_KEYS)
    wrong = _keys((1, AuthMethod.SHA1, b"not-the-lab-secret"))
    with pytest.raises(AuthError, match="bad MAC under key 1"):
        auth.precheck_netstring(payload, wrong)
    # layouts too broken to cut are left to the parser, which names the fault
    for broken in (b"", b"junk", payload[:-3], payload.replace(b"%%%\n", b"%%%x")):
        assert auth.precheck_netstring(broken, LAB_KEYS) is None
