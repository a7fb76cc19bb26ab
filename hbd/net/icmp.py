"""ICMP echo for Heartbeat's `ping` and `ping_group` nodes.

One socket serves every ping node.  As root it is a raw ICMP socket with a
kernel filter that passes only echo replies; without CAP_NET_RAW it falls
back to an unprivileged ICMP datagram socket (net.ipv4.ping_group_range),
where the kernel itself picks the identifier and delivers only our replies.

A reply counts only if it carries our identifier, a sequence number we sent
to that very address, and the random token this pinger puts in every
payload, so replies to other pingers on the host (or forged ones that do not
know the token) are ignored.  IPv4 only, as Heartbeat's ping plugin.
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


def _open() -> tuple[socket.socket, bool]:
    """(socket, raw?) — raw if we may, else an unprivileged ping socket."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except PermissionError:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        except OSError as err:
            raise NetError(f"cannot open an ICMP socket (no CAP_NET_RAW and ping sockets "
                           f"not allowed by net.ipv4.ping_group_range): {err}") from err
        return sock, False
    except OSError as err:
        raise NetError(f"cannot open an ICMP socket: {err}") from err
    # everything but echo replies is dropped in the kernel
    sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("I", ~(1 << ICMP_ECHO_REPLY) & 0xFFFFFFFF))
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
        self._token = secrets.token_bytes(8)
        # raw sockets see every echo reply on the host: a random identifier
        # keeps ours apart from ping(8)'s; a ping socket's kernel sets its own
        self._ident = secrets.randbits(16)
        self._seq = secrets.randbits(16)
        self._pending: dict[int, str] = {}
        self._closed = False
        self._loop.add_reader(self._sock.fileno(), self._readable)

    def send(self, address: str) -> bool:
        """Send one echo request to `address`; False if the kernel refused it.

        Raises NetError if `address` is not an IPv4 address.  An unreachable
        network is not an error here: the node is down and will not answer.
        """
        if self._closed:
            raise NetError("pinger is closed")
        try:
            target = str(ipaddress.IPv4Address(address))
        except ValueError:
            raise NetError(f"ping node {address!r} is not an IPv4 address") from None
        self._seq = (self._seq + 1) & 0xFFFF
        header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, self._ident, self._seq)
        packet = header + self._token
        packet = packet[:2] + struct.pack("!H", internet_checksum(packet)) + packet[4:]
        self._pending[self._seq] = target
        while len(self._pending) > _MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        try:
            self._sock.sendto(packet, (target, 0))
        except OSError as err:
            log.debug("ping %s: %s", target, err)
            return False
        return True

    def _readable(self) -> None:
        for _ in range(_MAX_READS):
            try:
                data, (source, _port) = self._sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # e.g. a queued ICMP error on a ping socket
                log.debug("icmp receive: %s", err)
                continue
            address = self._match(data, source)
            if address is not None:
                try:
                    self._on_reply(address)
                except Exception:  # a faulty callback must not stop the reader
                    log.exception("ping reply handler failed for %s", address)

    def _match(self, data: bytes, source: str) -> str | None:
        if self.raw:
            if len(data) < 20:
                return None
            data = data[(data[0] & 0x0F) * 4:]
        if len(data) < 8 + len(self._token):
            return None
        kind, _code, _csum, ident, seq = struct.unpack("!BBHHH", data[:8])
        if kind != ICMP_ECHO_REPLY or data[8:8 + len(self._token)] != self._token:
            return None
        if self.raw and ident != self._ident:
            return None
        if self._pending.get(seq) != source:
            return None
        del self._pending[seq]  # a duplicate reply is reported once
        return source

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()

    def __enter__(self) -> Pinger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
