"""hbd/net/linkwatch.py's decoder on crafted rtnetlink datagrams (the kernel's in the netns test).

Malformed input (a truncated header, an attribute longer than its message, a
name that is not ASCII) is skipped without raising and without reporting
anything; a rename reports the old name absent.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from hbd.core.linktrack import LinkState
from hbd.net import linkwatch as lw


def attr(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def message(kind: int, body: bytes, seq: int = 0) -> bytes:
    data = struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body
    return data + b"\0" * (-len(data) % 4)


def link(index: int, name: bytes, flags: int, kind: int = lw.RTM_NEWLINK, seq: int = 0) -> bytes:
    return message(kind, struct.pack("=BxHiII", 0, 1, index, flags, 0)
                   + attr(lw.IFLA_IFNAME, name + b"\0"), seq)


def address(index: int, raw: bytes, kind: int = lw.RTM_DELADDR) -> bytes:
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return message(kind, struct.pack("=BBBBI", family, 24, 0, 0, index)
                   + attr(lw.IFA_LOCAL if family == socket.AF_INET else lw.IFA_ADDRESS, raw))


def watcher() -> tuple[lw.LinkWatch, list[Any]]:
    seen: list[Any] = []
    watch = lw.LinkWatch(lambda n, s: seen.append((n, s)),
                         lambda names: seen.append(("synced", names)),
                         lambda a, i, p: seen.append((a, i, p)))
    return watch, seen


UP = lw.IFF_UP | lw.IFF_LOWER_UP


def test_states_renames_removals_and_addresses() -> None:
    watch, seen = watcher()
    watch.feed(link(2, b"eth0", UP) + link(3, b"eth1", lw.IFF_UP) + link(4, b"eth2", 0))
    watch.feed(link(2, b"wan0", UP))  # renamed
    watch.feed(link(3, b"eth1", 0, lw.RTM_DELLINK))
    watch.feed(address(2, bytes([10, 0, 0, 5])))
    watch.feed(address(4, socket.inet_pton(socket.AF_INET6, "fd00::5"), lw.RTM_NEWADDR))
    assert seen == [("eth0", LinkState.UP), ("eth1", LinkState.NO_CARRIER),
                    ("eth2", LinkState.DOWN), ("eth0", LinkState.ABSENT),
                    ("wan0", LinkState.UP), ("eth1", LinkState.ABSENT),
                    ("10.0.0.5", "wan0", False), ("fd00::5", "eth2", True)]


def test_a_dump_reports_synced_with_the_names_it_listed() -> None:
    watch, seen = watcher()
    watch._dump_seq = 7  # as _dump() sets it
    watch.feed(link(1, b"lo", UP, seq=7) + link(2, b"eth0", UP, seq=7)
               + link(9, b"late", UP) + message(lw.NLMSG_DONE, b"\0" * 4, seq=7))
    assert seen[-1] == ("synced", ["lo", "eth0"])  # an event beside the dump is not listed
    watch.feed(message(lw.NLMSG_DONE, b"\0" * 4, seq=7))  # a stale DONE: nothing
    assert seen[-1] == ("synced", ["lo", "eth0"]) and len(seen) == 4


def test_malformed_messages_are_skipped() -> None:
    watch, seen = watcher()
    good = link(2, b"eth0", UP)
    bad_attr = message(lw.RTM_NEWLINK, struct.pack("=BxHiII", 0, 1, 5, UP, 0)
                       + struct.pack("=HH", 200, lw.IFLA_IFNAME) + b"eth9")
    not_ascii = link(6, b"\xffeth", UP)
    short_body = message(lw.RTM_NEWLINK, b"\0" * 6)
    truncated = good[:-3]
    for data in (bad_attr, not_ascii, short_body, truncated, b"\0" * 10, b""):
        watch.feed(data)
    assert seen == []
    watch.feed(short_body + good)  # one bad message does not hide the next
    assert seen == [("eth0", LinkState.UP)]
