"""UDP heartbeat links (bcast, mcast, ucast): thin asyncio adapters.

All UDP links on one interface and port share one socket bound to that
device (SO_BINDTODEVICE), so a packet's arrival interface is known and two
links never steal each other's datagrams.  IP_PKTINFO tells which link a
datagram belongs to: a multicast destination means the mcast link, a
broadcast destination the bcast link, a unicast one the ucast link of that
peer.  The kernel loops our own broadcasts back to us; a socket filter drops
them before they wake us (Heartbeat reads and discards them).

The IPv6 media (ucast6, mcast6) get a socket of their own per interface and
port (IPV6_V6ONLY, so it never sees the IPv4 links' datagrams), told apart
the same way with IPV6_PKTINFO.  Link-local peers and groups are reached
through the line's interface (the scope id is its index, as Heartbeat sets
it).
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable

from hbd.core.config import BcastLink, Mcast6Link, McastLink, Ucast6Link, UcastLink
from hbd.errors import LinkError

log = logging.getLogger(__name__)

UdpLink = BcastLink | McastLink | UcastLink | Ucast6Link | Mcast6Link
IPV6_LINKS = (Ucast6Link, Mcast6Link)
Deliver = Callable[[bytes, int], None]  # (payload, link index)

SIOCGIFADDR = 0x8915
SIOCGIFBRDADDR = 0x8919
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
SKF_NET_OFF = -0x100000  # classic BPF: negative offsets address the IP header
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
# A burst (a flood, or a peer catching up on retransmissions) must not push
# real heartbeats out of a default-sized buffer while the loop is busy.
RECEIVE_BUFFER = 1024 * 1024
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
MAX_DATAGRAM = 65535


def _interface_ipv4(interface: str, request_code: int, what: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("256s", interface.encode()[:15])
        try:
            reply = fcntl.ioctl(probe.fileno(), request_code, request)
        except OSError as err:
            raise LinkError(f"{interface}: no IPv4 {what} ({err.strerror})") from err
    return socket.inet_ntoa(reply[20:24])


def broadcast_address(interface: str) -> str:
    """The interface's IPv4 broadcast address, as Heartbeat's bcast plugin finds it.

    An address added without `brd` has none (0.0.0.0): the limited broadcast
    255.255.255.255 then reaches the same segment, since the socket is bound
    to the device.
    """
    address = _interface_ipv4(interface, SIOCGIFBRDADDR, "broadcast address")
    return "255.255.255.255" if address == "0.0.0.0" else address


def echo_filter(own_address: str, port: int) -> tuple[bytes, ctypes.Array[ctypes.c_char]]:
    """A socket filter dropping our own broadcasts (source = our address and port).

    The kernel loops every broadcast we send back to our own socket; dropping
    those copies in the kernel saves a wake-up and a parse per datagram, which
    is most of an idle node's CPU.  Returns (sock_fprog, the buffer it points to,
    which must stay alive until the filter is attached).
    """
    def insn(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)

    address = struct.unpack("!I", socket.inet_aton(own_address))[0]
    program = b"".join((
        insn(0x28, 0, 0, 0),                   # ldh [0]: UDP source port
        insn(0x15, 0, 3, port),                # not our port: accept
        insn(0x20, 0, 0, SKF_NET_OFF + 12),    # ld [ip+12]: IPv4 source address
        insn(0x15, 0, 1, address),             # not our address: accept
        insn(0x06, 0, 0, 0),                   # ret 0: drop our own echo
        insn(0x06, 0, 0, 0xFFFFFFFF),          # ret all: accept
    ))
    buffer = ctypes.create_string_buffer(program, len(program))
    return struct.pack("@HP", len(program) // 8, ctypes.addressof(buffer)), buffer


class UdpEndpoint:
    """One socket on (interface, port) carrying one or more links."""

    def __init__(self, interface: str, port: int, links: dict[int, UdpLink],
                 deliver: Deliver) -> None:
        self.ipv6 = all(isinstance(link, IPV6_LINKS) for link in links.values())
        if not self.ipv6 and any(isinstance(link, IPV6_LINKS) for link in links.values()):
            raise ValueError("IPv4 and IPv6 links never share an endpoint")
        self.interface = interface
        self.port = port
        self.links = links
        self.deliver = deliver
        self.sock: socket.socket | None = None
        self._targets: dict[int, tuple[str, int] | tuple[str, int, int, int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.failed_sends = 0

    @property
    def is_open(self) -> bool:
        return self.sock is not None

    def describe(self) -> str:
        kinds = sorted({type(link).__name__.removesuffix("Link").lower()
                        for link in self.links.values()})
        return f"{'/'.join(kinds)} {self.interface} udp/{self.port}"

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the socket.  Raises LinkError (the caller retries later)."""
        try:
            ifindex = socket.if_nametoindex(self.interface)
        except OSError:
            raise LinkError(f"{self.describe()}: no such interface") from None
        if self.ipv6:
            self._install(self._open6(ifindex), loop)
            return
        targets: dict[int, tuple[str, int] | tuple[str, int, int, int]] = {}
        echo_filtered = False
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.interface.encode())
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            _grow_receive_buffer(sock)
            for index, link in self.links.items():
                if isinstance(link, BcastLink):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                    targets[index] = (broadcast_address(self.interface), link.port)
                    if not echo_filtered:
                        own = _interface_ipv4(self.interface, SIOCGIFADDR, "address")
                        program, _buffer = echo_filter(own, self.port)
                        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program)
                        echo_filtered = True
                elif isinstance(link, McastLink):
                    mreqn = struct.pack("4s4si", socket.inet_aton(link.group),
                                        socket.inet_aton("0.0.0.0"), ifindex)
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, link.ttl)
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP,
                                    1 if link.loop else 0)
                    targets[index] = (link.group, link.port)
                elif isinstance(link, UcastLink):
                    targets[index] = (link.peer, link.port)
            sock.bind(("", self.port))
            sock.setblocking(False)
        except OSError as err:
            sock.close()
            raise LinkError(f"{self.describe()}: {err.strerror or err}") from err
        except LinkError:
            sock.close()
            raise
        self._install((sock, targets), loop)

    def _install(self, opened: tuple[socket.socket, dict[int, tuple[str, int] |
                                                         tuple[str, int, int, int]]],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.sock, self._targets = opened
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._readable)

    def _open6(self, ifindex: int) -> tuple[socket.socket, dict[int, tuple[str, int] |
                                                                tuple[str, int, int, int]]]:
        """The IPv6 socket and each link's destination.  Raises LinkError."""
        targets: dict[int, tuple[str, int] | tuple[str, int, int, int]] = {}
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        except OSError as err:
            raise LinkError(f"{self.describe()}: {err.strerror or err}") from err
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.interface.encode())
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            _grow_receive_buffer(sock)
            for index, link in self.links.items():
                if isinstance(link, Mcast6Link):
                    group = socket.inet_pton(socket.AF_INET6, link.group)
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                                    group + struct.pack("@I", ifindex))
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, link.hops)
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP,
                                    1 if link.loop else 0)
                    targets[index] = (link.group, link.port, 0, _scope(link.group, ifindex))
                elif isinstance(link, Ucast6Link):
                    targets[index] = (link.peer, link.port, 0, _scope(link.peer, ifindex))
            sock.bind(("::", self.port))
            sock.setblocking(False)
        except OSError as err:
            sock.close()
            raise LinkError(f"{self.describe()}: {err.strerror or err}") from err
        return sock, targets

    def close(self) -> None:
        if self.sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.sock = None

    def _link_for(self, source: str, destination: str) -> int | None:
        if len(self.links) == 1:
            return next(iter(self.links))
        if self.ipv6:
            source = source.split("%")[0]
            for index, link in self.links.items():
                if isinstance(link, Mcast6Link) and link.group == destination:
                    return index
                if isinstance(link, Ucast6Link) and link.peer == source:
                    return index
            return None
        dest = ipaddress.IPv4Address(destination)
        for index, link in self.links.items():
            if isinstance(link, McastLink) and dest.is_multicast and link.group == destination:
                return index
            if isinstance(link, UcastLink) and link.peer == source:
                return index
        for index, link in self.links.items():
            if isinstance(link, BcastLink):
                return index
        return None

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        for _ in range(64):  # bounded, so a flood cannot starve the timer
            try:
                data, ancdata, _flags, address = sock.recvmsg(
                    MAX_DATAGRAM, socket.CMSG_SPACE(20))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.warning("%s: receive failed: %s", self.describe(), err.strerror)
                return
            destination = "0.0.0.0"
            for level, kind, value in ancdata:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= 12:
                    destination = socket.inet_ntoa(value[8:12])
                elif (level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO
                      and len(value) >= 16):
                    destination = socket.inet_ntop(socket.AF_INET6, value[:16])
            index = self._link_for(address[0], destination)
            if index is not None:
                self.deliver(data, index)

    def send(self, data: bytes, links: tuple[int, ...] | None) -> None:
        sock = self.sock
        if sock is None:
            return
        for index, target in self._targets.items():
            if links is not None and index not in links:
                continue
            try:
                sock.sendto(data, target)
            except (BlockingIOError, InterruptedError):
                self.failed_sends += 1
            except OSError as err:
                self.failed_sends += 1
                if self.failed_sends in (1, 10, 100) or self.failed_sends % 1000 == 0:
                    log.warning("%s: send to %s failed (%d so far): %s", self.describe(),
                                target[0], self.failed_sends, err.strerror)


def _scope(address: str, ifindex: int) -> int:
    """The scope id a destination needs: the interface's for link-local ones, else 0."""
    parsed = ipaddress.IPv6Address(address)
    if parsed.is_link_local or (parsed.is_multicast and parsed.packed[1] & 0x0F == 0x2):
        return ifindex
    return 0


def _grow_receive_buffer(sock: socket.socket) -> None:
    """Ask for RECEIVE_BUFFER; root may pass net.core.rmem_max, others get what it allows."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
