"""Watch interfaces and addresses through rtnetlink, on the event loop without blocking.

One non-blocking NETLINK_ROUTE socket subscribed to the link and address
groups, read by `loop.add_reader`: the kernel pushes RTM_NEWLINK/DELLINK
(carrier, admin state, rename, removal) and RTM_NEWADDR/DELADDR, each a few
dozen bytes decoded here with `struct` (pyroute2's socket objects may block
and lock; nothing of that belongs on the loop).  At start, and again when
the kernel says the socket overflowed (ENOBUFS: events were lost), one
RTM_GETLINK dump on the same socket gives every interface's state afresh.

What it reports, by callback, on the loop:
* `link(name, state)`: the state of an interface (hbd.core.linktrack's
  LinkState: up = IFF_UP and IFF_LOWER_UP; no-carrier = IFF_UP without
  IFF_LOWER_UP; down = not IFF_UP; absent = removed, or renamed away from
  `name`), for every interface, repeats included;
* `synced(names)`: a dump ended; `names` are the interfaces present;
* `address(address, interface, present)`: an address added or removed.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Callable

from hbd.core.linktrack import LinkState
from hbd.errors import NetError

log = logging.getLogger(__name__)

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 2, 3, 4
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR = 20, 21
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL = 1, 2

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change mask
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
_RTATTR = struct.Struct("=HH")  # length, type
RCVBUF = 1 << 20

LinkCallback = Callable[[str, LinkState], None]
SyncedCallback = Callable[[list[str]], None]
AddressCallback = Callable[[str, str, bool], None]


def link_state(flags: int) -> LinkState:
    if not flags & IFF_UP:
        return LinkState.DOWN
    return LinkState.UP if flags & IFF_LOWER_UP else LinkState.NO_CARRIER


def _attributes(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    """The rtattrs of one message (the first of each type); a malformed tail is ignored."""
    out: dict[int, bytes] = {}
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > end:
            break
        out.setdefault(kind & 0x3FFF, data[offset + _RTATTR.size:offset + length])
        offset += (length + 3) & ~3
    return out


def _name(raw: bytes | None) -> str | None:
    if not raw:
        return None
    name = raw.split(b"\0", 1)[0]
    try:
        return name.decode("ascii") if name else None
    except UnicodeDecodeError:
        return None


class LinkWatch:
    """The rtnetlink subscription; `start` on the loop, `close` when done."""

    def __init__(self, on_link: LinkCallback, on_synced: SyncedCallback,
                 on_address: AddressCallback) -> None:
        self.on_link = on_link
        self.on_synced = on_synced
        self.on_address = on_address
        self.names: dict[int, str] = {}  # ifindex -> name, as last reported
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dump_seq = 0  # the dump in flight (0: none)
        self._dumped: list[str] = []
        self._again = False  # events were lost during a dump: dump once more after it
        self.resyncs = 0  # dumps after an overflow

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Subscribe and ask for every interface's state.  Raises NetError."""
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK
                                 | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        except OSError as err:
            raise NetError(f"cannot open a netlink socket: {err}") from err
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        except OSError as err:
            sock.close()
            raise NetError(f"cannot subscribe to link events: {err}") from err
        self._sock, self._loop = sock, loop
        loop.add_reader(sock.fileno(), self._readable)
        self._dump()

    def close(self) -> None:
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _dump(self) -> None:
        assert self._sock is not None
        self._dump_seq = (self._dump_seq % 0x7FFFFFFF) + 1
        self._dumped = []
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETLINK,
                                NLM_F_REQUEST | NLM_F_DUMP, self._dump_seq, 0)
        try:
            self._sock.sendto(header + body, (0, 0))
        except OSError as err:  # a full socket buffer: the next overflow retries
            log.error("cannot ask netlink for the interfaces: %s", err)
            self._dump_seq = 0

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(64):  # bounded: other work gets the loop between batches
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    # events were lost: every interface's state afresh
                    self.resyncs += 1
                    log.warning("netlink events lost (socket overflow): re-reading the "
                                "interfaces")
                    if self._dump_seq:
                        self._again = True  # one dump at a time per socket
                    else:
                        self._dump()
                    continue
                log.error("netlink read failed: %s", err)
                return
            self.feed(data)

    def feed(self, data: bytes) -> None:
        """Decode one datagram of netlink messages and report them."""
        offset = 0
        while offset + _NLMSGHDR.size <= len(data):
            length, kind, _flags, seq, _port = _NLMSGHDR.unpack_from(data, offset)
            if length < _NLMSGHDR.size or offset + length > len(data):
                return
            body, end = offset + _NLMSGHDR.size, offset + length
            try:
                if kind in (RTM_NEWLINK, RTM_DELLINK):
                    self._link(data, body, end, kind == RTM_DELLINK, seq)
                elif kind in (RTM_NEWADDR, RTM_DELADDR):
                    self._address(data, body, end, kind == RTM_NEWADDR)
                elif kind == NLMSG_DONE and seq and seq == self._dump_seq:
                    self._dump_seq = 0
                    if self._again:
                        self._again = False
                        self._dump()
                    else:
                        self.on_synced(list(self._dumped))
                elif kind == NLMSG_ERROR and seq and seq == self._dump_seq:
                    code = struct.unpack_from("=i", data, body)[0] if body + 4 <= end else 0
                    log.error("netlink refused the interface dump: %s", os.strerror(-code))
                    self._dump_seq = 0
            except struct.error:
                log.warning("malformed netlink message (type %d) ignored", kind)
            offset += (length + 3) & ~3

    def _link(self, data: bytes, body: int, end: int, deleted: bool, seq: int) -> None:
        if end - body < _IFINFOMSG.size:
            return
        _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(data, body)
        name = _name(_attributes(data, body + _IFINFOMSG.size, end).get(IFLA_IFNAME))
        if name is None:
            return
        before = self.names.get(index)
        if deleted:
            self.names.pop(index, None)
            self.on_link(name, LinkState.ABSENT)
            return
        self.names[index] = name
        if seq and seq == self._dump_seq:
            self._dumped.append(name)
        if before is not None and before != name:
            self.on_link(before, LinkState.ABSENT)  # renamed: the old name is gone
        self.on_link(name, link_state(flags))

    def _address(self, data: bytes, body: int, end: int, added: bool) -> None:
        if end - body < _IFADDRMSG.size:
            return
        family, _prefix, _flags, _scope, index = _IFADDRMSG.unpack_from(data, body)
        attrs = _attributes(data, body + _IFADDRMSG.size, end)
        raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
        if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
            return
        try:
            address = str(ipaddress.ip_address(raw))
        except ValueError:
            return
        self.on_address(address, self.names.get(index, ""), added)
