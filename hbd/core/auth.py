"""Message authentication exactly as Heartbeat 3.0.6 computes it, plus BLAKE2b.

Heartbeat signs twice (heartbeat/ha_msg_internal.c: add_msg_auth, and
cluster-glue cl_netstring.c: msg2netstring_ll):

* the ``auth`` field: MAC of the classic form of every other field, no head;
* the netstring trailer ``N HEX``: MAC of the netstring bytes ``###\\n`` through
  ``%%%\\n`` (which include the auth field).

A receiver checks the trailer on netstring packets and the auth field on
classic ones.  Methods: crc (CRC-32, poly 0x04C11DB7, not reflected, init 0,
complemented, printed %lx: it authenticates nothing), md5 and sha1 (HMAC,
lower-case hex) and hbd's own blake2b (keyed BLAKE2b-256, hashlib: libsodium's; keys
longer than 64 bytes are first hashed to 64).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from hbd.core.authkeys import MAX_KEY_INDEX
from hbd.core.config import AuthKey, AuthKeys, AuthMethod
from hbd.core.wire import NETSTRING_END, NETSTRING_START, Message, Packet, classic_body
from hbd.errors import AuthError


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


def heartbeat_crc(data: bytes) -> str:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) ^ byte) & 0xFF]
    return f"{~crc & 0xFFFFFFFF:x}"


BLAKE2B_KEY_MAX = 64  # longer secrets are hashed to 64 bytes first (libsodium's rule)


def _blake2b_key(secret: bytes) -> bytes:
    if len(secret) <= BLAKE2B_KEY_MAX:
        return secret
    return hashlib.blake2b(secret, digest_size=64).digest()


# HMAC's two padded-key hash states per (method, secret), computed once: each MAC then
# copies them (no digest lookup per packet: OpenSSL 3 fetches the algorithm on every
# one-shot hmac.digest).  Keys come from authkeys only, so this stays a few entries.
_PADDED: dict[tuple[str, bytes], tuple[Any, Any]] = {}


def _hmac_hex(name: str, secret: bytes, data: bytes) -> str:
    pads = _PADDED.get((name, secret))
    if pads is None:
        key = hashlib.new(name, secret).digest() if len(secret) > 64 else secret
        key = key.ljust(64, b"\0")
        pads = (hashlib.new(name, bytes(b ^ 0x36 for b in key)),
                hashlib.new(name, bytes(b ^ 0x5C for b in key)))
        _PADDED[(name, secret)] = pads
    inner, outer = pads[0].copy(), pads[1].copy()
    inner.update(data)
    outer.update(inner.digest())
    return str(outer.hexdigest())


def compute(key: AuthKey, data: bytes) -> str:
    """The MAC of `data` under `key`, as the hex text Heartbeat puts on the wire."""
    if key.method is AuthMethod.SHA1:
        return _hmac_hex("sha1", key.secret, data)
    if key.method is AuthMethod.MD5:
        return _hmac_hex("md5", key.secret, data)
    if key.method is AuthMethod.CRC:
        return heartbeat_crc(data)
    return hashlib.blake2b(data, key=_blake2b_key(key.secret), digest_size=32).hexdigest()


def sign_fields(message: Message, keys: AuthKeys) -> None:
    """Set the message's auth field (replacing any) with the active key's MAC."""
    key = keys.active_key
    message.remove("auth")
    message.add("auth", f"{key.index} {compute(key, classic_body(message, skip_auth=True))}")


def trailer(keys: AuthKeys, signed: bytes) -> str:
    """The netstring trailer text for the bytes ###\\n..%%%\\n."""
    key = keys.active_key
    return f"{key.index} {compute(key, signed)}"


def _check(keys: AuthKeys, token: str | None, data: bytes, what: str) -> AuthKey:
    if token is None:
        raise AuthError(f"no {what}")
    index_text, _, given = token.partition(" ")
    # ASCII only: "²".isdigit() is true but int() refuses it.  The reason must come
    # from a small set: the bad-packet log keeps one counter and one line per reason.
    if not (index_text.isascii() and index_text.isdigit()) or not given:
        raise AuthError(f"malformed {what}")
    if len(index_text) > 2 or int(index_text) > MAX_KEY_INDEX:
        raise AuthError(f"key index out of range (0-{MAX_KEY_INDEX})")
    key = keys.get(int(index_text))
    if key is None:
        raise AuthError(f"unknown key index {index_text}")
    expected = compute(key, data)
    if not hmac.compare_digest(expected.encode(), given.strip().encode()):
        raise AuthError(f"bad MAC under key {key.index}")
    return key


def precheck_netstring(data: bytes, keys: AuthKeys) -> bytes | None:
    """Check a netstring datagram's trailer MAC before its fields are parsed.

    Parsing costs several times what a MAC does; checking first means a flood
    of forged or junk datagrams is refused at the price of a hash.  Returns
    the signed bytes when the MAC is right, None when the layout is too broken
    to cut (the parser then says what is wrong), and raises AuthError when the
    MAC is wrong.  The last `%%%\n` is the end marker: the trailer after it is
    digits, a space and hex, so it cannot hold another.
    """
    end = data.rfind(NETSTRING_END)
    if end < 0 or not data.startswith(NETSTRING_START):
        return None
    signed = data[:end + len(NETSTRING_END)]
    rest = data[end + len(NETSTRING_END):].rstrip(b"\0")
    colon = rest.find(b":")
    if colon <= 0 or colon > 6 or not rest[:colon].isdigit() or not rest.endswith(b","):
        return None
    payload = rest[colon + 1:-1]
    if len(payload) != int(rest[:colon]):
        return None
    _check(keys, payload.decode("ascii", errors="replace"), signed, "netstring trailer")
    return signed


def verify(packet: Packet, keys: AuthKeys) -> AuthKey:
    """Check a received packet as Heartbeat does; return the key that matched.

    Raises AuthError naming the reason (never the key or the MAC).
    """
    if packet.form == "netstring":
        return _check(keys, packet.trailer, packet.signed, "netstring trailer")
    body = classic_body(packet.message, skip_auth=True)
    return _check(keys, packet.message.get("auth"), body, "auth field")
