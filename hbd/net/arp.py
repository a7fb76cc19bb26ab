"""Gratuitous ARP and unsolicited neighbour advertisements for taken-over addresses.

When an address moves to this node, every client on the segment still maps
it to the old node's MAC.  Heartbeat's IPaddr2 fixes that with send_arp (or
send_ua for IPv6); hbd sends the same frames itself, from an AF_PACKET
socket bound to the address's interface, so no helper binary is needed.

The frames match Debian's /usr/libexec/heartbeat/send_arp byte for byte:
an ARP request (sender = target = the address, target MAC zero) and an ARP
reply (target MAC = our MAC), both to ff:ff:ff:ff:ff:ff.  Linux clients
update an existing neighbour entry on either; other stacks honour only one
kind, which is why send_arp sends both.  Where send_arp sleeps half the
interval between the request and the reply, hbd sends them back to back:
the first round is what ends a failover's blackout, so all of it goes out
at once, for every address.

IPv6 gets what the kernel itself sends after a link comes up: a neighbour
advertisement with the override flag and a target link-layer option, from
the address to ff02::1, hop limit 255.  It is built by hand and sent through
AF_PACKET too, so it needs no source-address selection and goes out even
while the address is still tentative (duplicate address detection).

Sending needs CAP_NET_RAW.  Sockets belong to the network namespace of the
thread that opens them, i.e. the event loop's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from hbd.errors import NetError
from hbd.net.addresses import VirtualAddress
from hbd.net.icmp import internet_checksum

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2
BROADCAST_MAC = b"\xff" * 6
ALL_NODES = ipaddress.IPv6Address("ff02::1")
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"
ND_NEIGHBOR_ADVERT = 136
ND_NA_FLAG_OVERRIDE = 0x20000000
ND_OPT_TARGET_LINKADDR = 2

DEFAULT_COUNT = 5  # IPaddr2's arp_count
DEFAULT_INTERVAL = 0.2  # IPaddr2's arp_interval, 200 ms


def arp_frames(mac: bytes, address: str) -> tuple[bytes, bytes]:
    """The gratuitous ARP request and reply announcing `address` at `mac`."""
    ip = ipaddress.IPv4Address(address).packed
    eth = BROADCAST_MAC + mac + struct.pack("!H", ETH_P_ARP)
    head = struct.pack("!HHBB", ARPHRD_ETHER, ETH_P_IP, 6, 4)
    request = eth + head + struct.pack("!H", ARPOP_REQUEST) + mac + ip + b"\x00" * 6 + ip
    reply = eth + head + struct.pack("!H", ARPOP_REPLY) + mac + ip + mac + ip
    return request, reply


def na_frame(mac: bytes, address: str) -> bytes:
    """An unsolicited neighbour advertisement of `address` at `mac`, to all nodes."""
    target = ipaddress.IPv6Address(address).packed
    option = struct.pack("!BB", ND_OPT_TARGET_LINKADDR, 1) + mac
    body = struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, ND_NA_FLAG_OVERRIDE) + target + option
    pseudo = target + ALL_NODES.packed + struct.pack("!I3xB", len(body), socket.IPPROTO_ICMPV6)
    csum = internet_checksum(pseudo + body)
    body = body[:2] + struct.pack("!H", csum) + body[4:]
    ipv6 = struct.pack("!IHBB", 0x60000000, len(body), socket.IPPROTO_ICMPV6, 255)
    ipv6 += target + ALL_NODES.packed
    return ALL_NODES_MAC + mac + struct.pack("!H", ETH_P_IPV6) + ipv6 + body


def _close_links(links: list[_Link]) -> None:
    for link in links:
        link.close()


class _Link:
    """A send-only AF_PACKET socket on one interface, and the interface's MAC."""

    def __init__(self, interface: str) -> None:
        # protocol 0: the socket receives nothing, so it costs nothing to keep open
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.setblocking(False)
            sock.bind((interface, 0))
            _name, _proto, _type, hatype, mac = sock.getsockname()
        except OSError:
            sock.close()
            raise
        if hatype != ARPHRD_ETHER or len(mac) != 6:
            sock.close()
            raise OSError(f"{interface} is not an Ethernet interface (hardware type {hatype})")
        self.sock = sock
        self.mac: bytes = mac

    def frames(self, va: VirtualAddress) -> tuple[bytes, ...]:
        if va.family == socket.AF_INET6:
            return (na_frame(self.mac, va.address),)
        return arp_frames(self.mac, va.address)

    def close(self) -> None:
        self.sock.close()


@dataclass
class AnnounceReport:
    """How an announcement went; errors are per address and interface, deduplicated."""

    addresses: int
    rounds: int = 0  # rounds completed
    frames: int = 0  # frames handed to the kernel
    cancelled: bool = False
    errors: list[NetError] = field(default_factory=list)


class Announcement:
    """Announce addresses `count` times, `interval` seconds apart.

    The constructor sends the first round for every address before it
    returns; the other rounds run as a task on the running loop (only
    `count=1` works without one).  `cancel()` stops them at once: a release
    of the addresses should call it.  Sending never raises; failures are
    logged once and collected in `report.errors`.
    """

    def __init__(self, vas: Sequence[VirtualAddress], count: int = DEFAULT_COUNT,
                 interval: float = DEFAULT_INTERVAL) -> None:
        if count < 1 or interval < 0:
            raise ValueError(f"bad announcement count={count} interval={interval}")
        self.vas = tuple(vas)
        self.count = count
        self.interval = interval
        self.report = AnnounceReport(len(self.vas))
        self._links: dict[str, _Link | None] = {}
        self._seen_errors: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        # before anything is sent or opened: a later round needs the loop
        loop = asyncio.get_running_loop() if count > 1 and self.vas else None
        self._send_round()
        if loop is not None:
            self._task = loop.create_task(self._rest(),
                                          name=f"announce {len(self.vas)} address(es)")
        else:
            self._close()

    def _error(self, message: str) -> None:
        if message not in self._seen_errors:
            self._seen_errors.add(message)
            err = NetError(message)
            self.report.errors.append(err)
            log.warning("%s", err)

    def _link(self, interface: str) -> _Link | None:
        if interface not in self._links:
            try:
                self._links[interface] = _Link(interface)
            except OSError as err:
                self._links[interface] = None
                self._error(f"cannot announce on {interface}: {err}")
        return self._links[interface]

    def _send_round(self) -> None:
        for va in self.vas:
            link = self._link(va.interface)
            if link is None:
                continue
            for frame in link.frames(va):
                try:
                    link.sock.send(frame)
                except OSError as err:  # ENETDOWN, ENOBUFS...: the next round may do better
                    self._error(f"cannot announce {va}: {err}")
                else:
                    self.report.frames += 1
        self.report.rounds += 1

    async def _rest(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            for k in range(1, self.count):
                # against the start time, so that send time does not add up
                await asyncio.sleep(max(0.0, start + k * self.interval - loop.time()))
                self._send_round()
        finally:
            self._close()

    def _close(self) -> None:
        links = [link for link in self._links.values() if link is not None]
        self._links.clear()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: nothing to hold up
            loop = None
        if loop is None or not links:
            _close_links(links)
            return
        # closing an AF_PACKET socket waits for an RCU grace period (the kernel's
        # packet_release calls synchronize_net): 0.2-13 ms measured here, 15 ms seen
        # on the loop after a takeover; a helper thread waits instead.  Nothing is
        # sent on them after this.
        try:
            loop.run_in_executor(None, _close_links, links)
        except RuntimeError:  # the loop's executor is already shut down: hbd is exiting
            _close_links(links)

    def done(self) -> bool:
        return self._task is None or self._task.done()

    def cancel(self) -> None:
        """Stop sending; idempotent.  Nothing is sent after it; the sockets are handed
        to a helper thread to close now, not at the next loop turn."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            self.report.cancelled = True
        self._close()

    async def wait(self) -> AnnounceReport:
        """Wait until the last round (or a cancel); waiting can itself be cancelled."""
        if self._task is not None:
            await asyncio.wait({self._task})
        return self.report


async def announce(vas: Sequence[VirtualAddress], count: int = DEFAULT_COUNT,
                   interval: float = DEFAULT_INTERVAL) -> AnnounceReport:
    """Send `count` rounds of announcements for `vas` and report how it went.

    Cancelling this coroutine stops the announcement.  Failures are logged
    and reported, never raised: an address that could not be announced is
    still served, clients just learn it later.
    """
    ann = Announcement(vas, count, interval)
    try:
        return await ann.wait()
    finally:
        ann.cancel()


def announce_once(vas: Sequence[VirtualAddress]) -> AnnounceReport:
    """One round, synchronously; needs no event loop (tools, threads)."""
    return Announcement(vas, count=1).report
