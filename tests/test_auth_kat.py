"""Known answers for hbd's blake2b MAC, from an implementation other than pynacl's.

hbd signs with keyed BLAKE2b-256 through pynacl (libsodium); keys longer than
64 bytes are first hashed to 64 with BLAKE2b-512.  The reference here is
Python's hashlib.blake2b (the BLAKE2 reference code CPython bundles), itself
checked first against published vectors: RFC 7693 Appendix A and the keyed
vector of the BLAKE2 team's blake2b-kat.txt.  A change of digest size, key
handling or encoding on hbd's side fails these tests, and two hbd builds
that disagree with each other could not form a cluster.
"""

from __future__ import annotations

import hashlib

import pytest

from hbd.core import auth, wire
from hbd.core.config import AuthKey, AuthKeys, AuthMethod
from hbd.core.wire import Message

# RFC 7693, Appendix A: BLAKE2b-512("abc")
RFC7693_ABC = ("ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
               "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923")
# blake2b-kat.txt, first keyed vector: key 00 01 .. 3f, empty input
KAT_KEYED_EMPTY = ("10ebb67700b1868efb4417987acf4690ae9d972fb7a590c2f02871799aaa4786"
                   "b5e996e8f0f4eb981fc214b005f42d2ff4233499391653df7aefcbc13fc51568")
# hbd's own MAC (keyed BLAKE2b-256) over a fixed text, computed once with hashlib
FIXED_TEXT = b"hbd blake2b known answer"
FIXED_KEY = b"hbd-kat-secret"
FIXED_MAC = "c1f2f5093d7006ddd790e3a9f4892f840fd5abbfde1b0bf917d26dddcef2a42e"
FIXED_LONG_KEY = b"L" * 100  # over 64 bytes: hashed to 64 first
FIXED_LONG_MAC = "dccf67e335f010280b5a0ba65603a47ccb4a5dedcef4a4a9cc3c15b4f51ecc21"


def reference(secret: bytes, data: bytes) -> str:
    """hbd's MAC as documented, written with hashlib."""
    key = secret if len(secret) <= 64 else hashlib.blake2b(secret, digest_size=64).digest()
    return hashlib.blake2b(data, key=key, digest_size=32).hexdigest()


def blake(secret: bytes, index: int = 1) -> AuthKey:
    return AuthKey(index, AuthMethod.BLAKE2B, secret)


def test_the_reference_agrees_with_published_vectors() -> None:
    assert hashlib.blake2b(b"abc", digest_size=64).hexdigest() == RFC7693_ABC
    assert hashlib.blake2b(b"", key=bytes(range(64)), digest_size=64).hexdigest() == (
        KAT_KEYED_EMPTY)


def test_fixed_vectors() -> None:
    assert auth.compute(blake(FIXED_KEY), FIXED_TEXT) == FIXED_MAC
    assert auth.compute(blake(FIXED_LONG_KEY), FIXED_TEXT) == FIXED_LONG_MAC
    assert reference(FIXED_KEY, FIXED_TEXT) == FIXED_MAC


@pytest.mark.parametrize("key_size", [1, 16, 32, 63, 64, 65, 128, 1000])
@pytest.mark.parametrize("data_size", [0, 1, 127, 128, 129, 255, 256, 4096])
def test_every_key_and_block_boundary_matches_the_reference(key_size: int,
                                                            data_size: int) -> None:
    secret = bytes((7 * i + key_size) % 256 for i in range(key_size))
    data = bytes((13 * i + data_size) % 256 for i in range(data_size))
    assert auth.compute(blake(secret), data) == reference(secret, data)


def test_a_signed_message_carries_the_reference_macs() -> None:
    keys = AuthKeys(active=2, keys=(blake(b"cluster-secret", 2),))
    message = Message.of(("t", "status"), ("st", "active"), ("dt", "1f4"), ("src", "n1"),
                         ("seq", "2a"), ("hg", "65"), ("ts", "6b49d200"))
    auth.sign_fields(message, keys)
    field_mac = reference(b"cluster-secret", wire.classic_body(message, skip_auth=True))
    assert message.get("auth") == f"2 {field_mac}"
    body = wire.netstring_body(message)
    data = wire.encode_netstring(message, auth.trailer(keys, body))
    assert data.endswith(b"%%%%\n%d:2 %s," % (len(field_mac) + 2, reference(
        b"cluster-secret", body).encode()))
    assert auth.verify(wire.decode(data), keys).index == 2
