"""ICMP echo for Heartbeat's `ping` and `ping_group` nodes.

One socket serves every ping node.  As root it is a raw ICMP socket with a
kernel filter that passes only echo replies; without CAP_NET_RAW it falls
back to an unprivileged ICMP datagram socket (net.ipv4.ping_group_range),
where the kernel itself picks the identifier and delivers only our replies.

A reply counts only if it carries our identifier, a sequence number we sent
to that very address, and the random token this pinger puts in every
payload, so replies to other pingers on the host (or forged ones that do not
know the token) are ignored.  `ping` nodes are IPv4 (Heartbeat's ping
plugin); `ping6` nodes are IPv6 (its ping6 plugin): ICMPv6 echo on a second
socket, opened when the first IPv6 node is pinged, filtered the same way
(ICMP6_FILTER); a link-local node is written `fe80::1%eth0`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import socket
import struct
from collections.abc import Callable

from hbd.errors import NetError

log = logging.getLogger(__name__)

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129
_ICMP6_FILTER = 1
_SOL_RAW = 255
_ICMP_FILTER = 1
_MAX_PENDING = 4096  # sequence numbers remembered for matching replies
_MAX_READS = 64  # datagrams read per wake-up, so a flood cannot starve the loop


def internet_checksum(data: bytes) -> int:
    """RFC 1071 ones'-complement checksum (ICMP, ICMPv6 with its pseudo-header)."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _open(family: int = socket.AF_INET) -> tuple[socket.socket, bool]:
    """(socket, raw?) — raw if we may, else an unprivileged ping socket."""
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    what = "an ICMP" if family == socket.AF_INET else "an ICMPv6"
    try:
        sock = socket.socket(family, socket.SOCK_RAW, proto)
    except PermissionError:
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM, proto)
        except OSError as err:
            raise NetError(f"cannot open {what} socket (no CAP_NET_RAW and ping sockets "
                           f"not allowed by net.ipv4.ping_group_range): {err}") from err
        return sock, False
    except OSError as err:
        raise NetError(f"cannot open {what} socket: {err}") from err
    # everything but echo replies is dropped in the kernel
    if family == socket.AF_INET:
        sock.setsockopt(_SOL_RAW, _ICMP_FILTER,
                        struct.pack("I", ~(1 << ICMP_ECHO_REPLY) & 0xFFFFFFFF))
    else:  # ICMP6_FILTER: a set bit blocks that type
        words = [0xFFFFFFFF] * 8
        words[ICMP6_ECHO_REPLY >> 5] &= ~(1 << (ICMP6_ECHO_REPLY & 31)) & 0xFFFFFFFF
        sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("8I", *words))
    return sock, True


class Pinger:
    """Sends echo requests and calls `on_reply(address)` for each matching reply.

    Must be created with an event loop running (it registers a reader on
    it); `close()` unregisters and closes the socket.
    """

    def __init__(self, on_reply: Callable[[str], None]) -> None:
        self._on_reply = on_reply
        self._loop = asyncio.get_running_loop()
        self._sock, self.raw = _open()
        self._sock.setblocking(False)
        self._sock6: socket.socket | None = None  # opened for the first ping6 node
        self.raw6 = False
        self._token = secrets.token_bytes(8)
        # raw sockets see every echo reply on the host: a random identifier
        # keeps ours apart from ping(8)'s; a ping socket's kernel sets its own
        self._ident = secrets.randbits(16)
        self._seq = secrets.randbits(16)
        # sequence -> (the node as configured, its address): replies name the address
        self._pending: dict[int, tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address]] = {}
        self._closed = False
        self._loop.add_reader(self._sock.fileno(), self._readable, self._sock, False)

    def send(self, address: str) -> bool:
        """Send one echo request to `address`; False if the kernel refused it.

        Raises NetError if `address` is not an IP address (IPv6 ones may carry a
        `%interface`), or if no ICMPv6 socket can be opened for an IPv6 one.  An
        unreachable network is not an error here: the node is down and will not
        answer.
        """
        if self._closed:
            raise NetError("pinger is closed")
        try:
            target = ipaddress.ip_address(address)
        except ValueError:
            raise NetError(f"ping node {address!r} is not an IP address") from None
        self._seq = (self._seq + 1) & 0xFFFF
        if isinstance(target, ipaddress.IPv6Address):
            sock = self._icmp6()
            kind = ICMP6_ECHO_REQUEST  # the kernel fills in the ICMPv6 checksum
            packet = struct.pack("!BBHHH", kind, 0, 0, self._ident, self._seq) + self._token
        else:
            sock = self._sock
            header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, self._ident, self._seq)
            packet = header + self._token
            packet = packet[:2] + struct.pack("!H", internet_checksum(packet)) + packet[4:]
        self._pending[self._seq] = (address, target)
        while len(self._pending) > _MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        try:
            sock.sendto(packet, (address, 0))
        except OSError as err:
            log.debug("ping %s: %s", address, err)
            return False
        return True

    def _icmp6(self) -> socket.socket:
        if self._sock6 is None:
            sock, self.raw6 = _open(socket.AF_INET6)
            sock.setblocking(False)
            self._sock6 = sock
            self._loop.add_reader(sock.fileno(), self._readable, sock, True)
        return self._sock6

    def _readable(self, sock: socket.socket, ipv6: bool) -> None:
        for _ in range(_MAX_READS):
            try:
                data, source = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # e.g. a queued ICMP error on a ping socket
                log.debug("icmp receive: %s", err)
                continue
            address = self._match(data, source[0], ipv6)
            if address is not None:
                try:
                    self._on_reply(address)
                except Exception:  # a faulty callback must not stop the reader
                    log.exception("ping reply handler failed for %s", address)

    def _match(self, data: bytes, source: str, ipv6: bool = False) -> str | None:
        raw = self.raw6 if ipv6 else self.raw
        if raw and not ipv6:  # raw ICMPv6 sockets get no IP header
            if len(data) < 20:
                return None
            data = data[(data[0] & 0x0F) * 4:]
        if len(data) < 8 + len(self._token):
            return None
        kind, _code, _csum, ident, seq = struct.unpack("!BBHHH", data[:8])
        reply = ICMP6_ECHO_REPLY if ipv6 else ICMP_ECHO_REPLY
        if kind != reply or data[8:8 + len(self._token)] != self._token:
            return None
        if raw and ident != self._ident:
            return None
        pending = self._pending.get(seq)
        try:
            sender = ipaddress.ip_address(source)
        except ValueError:
            return None
        if pending is None or not _same_address(pending[1], sender):
            return None
        del self._pending[seq]  # a duplicate reply is reported once
        return pending[0]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            if self._sock6 is not None:
                self._loop.remove_reader(self._sock6.fileno())
                self._sock6.close()

    def __enter__(self) -> Pinger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _same_address(sent: ipaddress.IPv4Address | ipaddress.IPv6Address,
                  source: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A reply's source is the node pinged; a scope the kernel reports may be a name
    or an index, so a link-local node matches on its address alone."""
    if isinstance(sent, ipaddress.IPv6Address) and isinstance(source, ipaddress.IPv6Address):
        return sent.packed == source.packed
    return sent == source
