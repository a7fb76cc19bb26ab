"""UDP heartbeat links (bcast, mcast, ucast): thin asyncio adapters.

All UDP links on one interface and port share one socket bound to that
device (SO_BINDTODEVICE), so a packet's arrival interface is known and two
links never steal each other's datagrams.  IP_PKTINFO tells which link a
datagram belongs to: a multicast destination means the mcast link, a
broadcast destination the bcast link, a unicast one the ucast link of that
peer.  The kernel loops our own broadcasts back to us; a socket filter drops
them before they wake us (Heartbeat reads and discards them).

The same filter (hbd.links.sockfilter) is the first defence against a flood:
it drops datagrams of impossible sizes, and once every peer has been heard on
the endpoint it admits only the source addresses that authenticated datagrams
came from.  The list is a cache, never a lock: a peer not heard through it for
half a deadtime (its address changed, it restarted elsewhere, it died) opens
the filter to every source again until it is heard, so a legitimate peer is
kept out for at most half a deadtime and a keepalive.  That review is due at
the last time a peer was heard plus half a deadtime: always later than our
next heartbeat while the peers are heard, so it costs no wake-up of its own.
A spoofed source address passes the filter; the MAC check that follows in the
engine comes before any parsing.

The IPv6 media (ucast6, mcast6) get a socket of their own per interface and
port (IPV6_V6ONLY, so it never sees the IPv4 links' datagrams), told apart
the same way with IPV6_PKTINFO.  Link-local peers and groups are reached
through the line's interface (the scope id is its index, as Heartbeat sets
it).
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable

from hbd.core.config import BcastLink, Mcast6Link, McastLink, Ucast6Link, UcastLink
from hbd.errors import LinkError
from hbd.links import sockfilter

log = logging.getLogger(__name__)

UdpLink = BcastLink | McastLink | UcastLink | Ucast6Link | Mcast6Link
IPV6_LINKS = (Ucast6Link, Mcast6Link)
# (payload, link index) -> the peer it authenticated as, or None
Deliver = Callable[[bytes, int], str | None]

SIOCGIFADDR = 0x8915
SIOCGIFBRDADDR = 0x8919
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
# A burst (a flood, or a peer catching up on retransmissions) must not push
# real heartbeats out of the buffer while the loop is busy or waits for a CPU:
# a datagram takes about 2 KiB of it (the kernel counts its whole buffer), so
# 8 MiB (16 MiB as the kernel doubles it) holds some 300 ms of a 25,000/s flood.
# The memory is only used while datagrams wait.
RECEIVE_BUFFER = 8 * 1024 * 1024
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
# One byte more than the filter admits: a longer datagram (no filter: a kernel
# refused it) arrives truncated and fails its MAC check.
RECEIVE_SIZE = sockfilter.MAX_DATAGRAM + 1
PKTINFO_SPACE = socket.CMSG_SPACE(20)


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


class UdpEndpoint:
    """One socket on (interface, port) carrying one or more links."""

    def __init__(self, interface: str, port: int, links: dict[int, UdpLink],
                 deliver: Deliver, *, peers: frozenset[str] = frozenset(),
                 hold: float = 0.0) -> None:
        """peers: the nodes expected to send here; hold: how long one of them may go
        unheard before the filter admits every source again (0: never filter by source).
        """
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
        self.peers = peers
        self.hold = hold
        self._own: str | None = None  # our address, whose broadcast echoes the filter drops
        self._sources: dict[str, float] = {}  # source address -> last authenticated datagram
        self._seen: dict[str, float] = {}  # peer -> last authenticated datagram
        self._filter: tuple[str, ...] | None = None  # sources the kernel admits (None: all)
        # link lookup without parsing: destination group, ucast peer, bcast fallback
        self._by_group = {link.group: i for i, link in links.items()
                          if isinstance(link, McastLink | Mcast6Link)}
        self._by_peer = {link.peer: i for i, link in links.items()
                         if isinstance(link, UcastLink | Ucast6Link)}
        self._bcast = next((i for i, link in links.items() if isinstance(link, BcastLink)),
                           None)
        self._single = next(iter(links)) if len(links) == 1 else None

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
                    if self._own is None:
                        self._own = _interface_ipv4(self.interface, SIOCGIFADDR, "address")
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
        sock, targets = opened
        self._sources.clear()
        self._seen.clear()
        try:
            sockfilter.attach(sock, sockfilter.program(port=self.port, ipv6=self.ipv6,
                                                       own=self._own))
        except OSError as err:
            sock.close()
            raise LinkError(f"{self.describe()}: socket filter: {err.strerror}") from err
        self.sock, self._targets = sock, targets
        self._filter = None
        self._loop = loop
        loop.add_reader(sock.fileno(), self._readable)

    # --- the source filter -----------------------------------------------------------

    def _learn(self, source: str, peer: str) -> None:
        """A datagram from `source` authenticated as `peer`: admit that source."""
        assert self._loop is not None
        now = self._loop.time()
        self._seen[peer] = now
        known = source in self._sources
        self._sources[source] = now
        if not known or self._filter is None:
            self._refilter(now)

    def _wanted(self, now: float) -> tuple[str, ...] | None:
        """The sources the kernel should admit now, or None for all of them."""
        for source, seen in list(self._sources.items()):
            if now - seen > 2 * self.hold:
                del self._sources[source]
        if (self.hold <= 0 or not self.peers or not self._sources
                or len(self._sources) > sockfilter.MAX_SOURCES):
            return None
        if any(now - self._seen.get(peer, -1e18) > self.hold for peer in self.peers):
            return None  # somebody unheard: let them in from wherever they are
        return tuple(sorted(self._sources))

    def _refilter(self, now: float) -> None:
        wanted = self._wanted(now)
        if wanted == self._filter or self.sock is None:
            return
        try:
            sockfilter.attach(self.sock, sockfilter.program(
                port=self.port, ipv6=self.ipv6, own=self._own, sources=wanted))
        except OSError as err:  # keeps the previous filter; tried again on the next change
            log.warning("%s: cannot update the socket filter: %s", self.describe(),
                        err.strerror)
            return
        self._filter = wanted
        log.debug("%s: kernel admits %s", self.describe(),
                  "every source" if wanted is None else ", ".join(wanted))

    def next_due(self) -> float | None:
        """When the source filter must be looked at again (None: not filtering)."""
        if self._filter is None:
            return None
        due = float("inf")
        for peer in self.peers:  # a loop, not min() over a generator: runs per event
            seen = self._seen.get(peer, 0.0)
            if seen < due:
                due = seen
        return due + self.hold

    def tick(self, now: float) -> None:
        due = self.next_due()
        if due is not None and now >= due:
            self._refilter(now)

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
        except BaseException:
            sock.close()
            raise
        return sock, targets

    def close(self) -> None:
        if self.sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.sock = None

    def _link_for(self, source: str, ancdata: list[tuple[int, int, bytes]]) -> int | None:
        """Which link a datagram came on: by its destination group, its ucast peer, or
        the endpoint's bcast link."""
        if self._by_group:
            for level, kind, value in ancdata:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= 12:
                    index = self._by_group.get(socket.inet_ntoa(value[8:12]))
                elif (level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO
                      and len(value) >= 16):
                    index = self._by_group.get(socket.inet_ntop(socket.AF_INET6, value[:16]))
                else:
                    continue
                if index is not None:
                    return index
        index = self._by_peer.get(source)
        return index if index is not None else self._bcast

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        single = self._single
        for _ in range(64):  # bounded, so a flood cannot starve the timer
            try:
                data, ancdata, _flags, address = sock.recvmsg(RECEIVE_SIZE, PKTINFO_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.warning("%s: receive failed: %s", self.describe(), err.strerror)
                return
            source: str = address[0]
            if self.ipv6 and "%" in source:
                source = source.split("%", 1)[0]
            index = single if single is not None else self._link_for(source, ancdata)
            if index is None:
                continue
            peer = self.deliver(data, index)
            if peer is not None and self.hold > 0:
                self._learn(source, peer)

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
