"""The heartbeat sockets' kernel filter (hbd.links.sockfilter) and when hbd.links.udp
enforces its source list.

Real sockets on the loopback device of the test's own network namespace-free
host (127.0.0.0/8 and ::1 are there already; nothing is configured): the
kernel runs the programs, and a datagram either arrives or it does not.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from hbd.core.config import UcastLink
from hbd.links import sockfilter
from hbd.links.udp import UdpEndpoint


def arrives(family: int, receiver: str, sender: str, size: int, **kwargs: object) -> bool:
    """Does a datagram of `size` bytes from `sender` reach a socket with this filter?"""
    with socket.socket(family, socket.SOCK_DGRAM) as rx, \
            socket.socket(family, socket.SOCK_DGRAM) as tx:
        rx.bind((receiver, 0))
        port = rx.getsockname()[1]
        rx.settimeout(0.2)
        sockfilter.attach(rx, sockfilter.program(port=port, ipv6=family == socket.AF_INET6,
                                                 **kwargs))  # type: ignore[arg-type]
        tx.bind((sender, 0))
        tx.sendto(b"h" * size, (receiver, port))
        try:
            rx.recv(70000)
        except TimeoutError:
            return False
        return True


def test_sizes_outside_the_heartbeat_range_dropped() -> None:
    v4 = socket.AF_INET
    assert arrives(v4, "127.0.0.1", "127.0.0.1", 300)
    assert arrives(v4, "127.0.0.1", "127.0.0.1", sockfilter.MIN_DATAGRAM)
    assert not arrives(v4, "127.0.0.1", "127.0.0.1", sockfilter.MIN_DATAGRAM - 1)
    assert arrives(v4, "127.0.0.1", "127.0.0.1", sockfilter.MAX_DATAGRAM)
    assert not arrives(v4, "127.0.0.1", "127.0.0.1", sockfilter.MAX_DATAGRAM + 1)
    assert not arrives(v4, "127.0.0.1", "127.0.0.1", 60000)


def test_ipv4_sources() -> None:
    v4 = socket.AF_INET
    learned = ("127.0.0.9", "127.0.0.2")
    assert arrives(v4, "127.0.0.1", "127.0.0.2", 300, sources=learned)
    assert arrives(v4, "127.0.0.1", "127.0.0.9", 300, sources=learned)
    assert not arrives(v4, "127.0.0.1", "127.0.0.3", 300, sources=learned)
    assert not arrives(v4, "127.0.0.1", "127.0.0.2", 8, sources=learned)  # size first
    assert arrives(v4, "127.0.0.1", "127.0.0.3", 300, sources=None)


def test_ipv6_sources() -> None:
    v6 = socket.AF_INET6
    assert arrives(v6, "::1", "::1", 300, sources=("fe80::1", "::1"))
    assert not arrives(v6, "::1", "::1", 300, sources=("::2",))
    assert not arrives(v6, "::1", "::1", 300, sources=("::1:0:0:1",))  # last word differs
    assert arrives(v6, "::1", "::1", 300)


def test_own_echo_dropped_by_source_port() -> None:
    """Our own broadcasts come back from our address and port; other ports pass."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        rx.bind(("127.0.0.1", 0))
        port = rx.getsockname()[1]
        rx.settimeout(0.2)
        sockfilter.attach(rx, sockfilter.program(port=port, ipv6=False, own="127.0.0.1"))
        rx.sendto(b"echo" * 10, ("127.0.0.1", port))  # from our port: the echo
        other.sendto(b"peer" * 10, ("127.0.0.1", port))
        assert rx.recv(1000) == b"peer" * 10
        with pytest.raises(TimeoutError):
            rx.recv(1000)


def test_too_many_sources_refused() -> None:
    sources = tuple(f"10.0.{n // 250}.{n % 250 + 1}" for n in range(sockfilter.MAX_SOURCES))
    assert len(sockfilter.program(port=694, ipv6=False, sources=sources)) > 0
    with pytest.raises(ValueError):
        sockfilter.program(port=694, ipv6=False, sources=(*sources, "10.9.9.9"))


# --- the endpoint: learning, enforcing, opening again ------------------------------------

HOLD = 0.3


@pytest.fixture
def endpoint() -> Iterator[tuple[UdpEndpoint, asyncio.AbstractEventLoop, list[str]]]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    heard: list[str] = []

    def deliver(data: bytes, link: int) -> str | None:
        heard.append(data.decode())
        return "n2" if data.startswith(b"signed") else None

    found = UdpEndpoint("lo", port, {1: UcastLink("lo", "127.0.0.2", port)}, deliver,
                        peers=frozenset({"n2"}), hold=HOLD)
    loop = asyncio.new_event_loop()
    try:
        found.open(loop)
        yield found, loop, heard
    finally:
        found.close()
        loop.close()


def send(endpoint: UdpEndpoint, loop: asyncio.AbstractEventLoop, source: str,
         payload: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.bind((source, 0))
        tx.sendto(payload.ljust(40, b"."), ("127.0.0.1", endpoint.port))
    loop.run_until_complete(asyncio.sleep(0.05))  # the reader runs


def test_endpoint_learns_enforces_and_reopens(
        endpoint: tuple[UdpEndpoint, asyncio.AbstractEventLoop, list[str]]) -> None:
    ep, loop, heard = endpoint
    send(ep, loop, "127.0.0.3", b"junk before the peer")  # open: everybody reaches us
    assert ep.next_due() is None
    send(ep, loop, "127.0.0.2", b"signed by n2")
    due = ep.next_due()
    assert due is not None and due <= loop.time() + HOLD
    send(ep, loop, "127.0.0.3", b"junk from a third host")  # dropped by the kernel
    send(ep, loop, "127.0.0.2", b"signed again")
    send(ep, loop, "127.0.0.4", b"signed from n2's new address")  # dropped too, for now
    assert [h.rstrip(".") for h in heard] == ["junk before the peer", "signed by n2",
                                              "signed again"]
    # n2 silent through the filter for HOLD: the timer opens it for n2's new address
    time.sleep(HOLD + 0.05)
    ep.tick(loop.time())
    assert ep.next_due() is None
    send(ep, loop, "127.0.0.4", b"signed from n2's new address")
    assert heard[-1].startswith("signed from n2's new address")
    send(ep, loop, "127.0.0.3", b"junk again")  # strict again, 127.0.0.4 admitted
    send(ep, loop, "127.0.0.4", b"signed, heard")
    assert [h.rstrip(".") for h in heard[-2:]] == ["signed from n2's new address",
                                                   "signed, heard"]


def test_unsigned_datagrams_teach_nothing(
        endpoint: tuple[UdpEndpoint, asyncio.AbstractEventLoop, list[str]]) -> None:
    ep, loop, heard = endpoint
    for _ in range(3):
        send(ep, loop, "127.0.0.3", b"forged")
    assert ep.next_due() is None  # still admitting everybody
    assert len(heard) == 3
