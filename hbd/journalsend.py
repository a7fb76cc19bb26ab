"""Entries for journald over its native protocol, from Python, letting go of the GIL.

systemd-python's `journal.send` calls sd_journal_sendv() while holding the
GIL: when journald is frozen its socket queue fills, the call blocks, and
with it every Python thread, the event loop included (heartbeats stop).
This is the same datagram protocol (systemd's "Native Journal Protocol")
written with `socket.sendto`, which releases the GIL while it waits.

An entry is a datagram of fields: `NAME=value\\n`, or for a value holding
a newline `NAME\\n` + its length as 64-bit little endian + value + `\\n`.
One too large for a datagram goes in a sealed memfd passed with
SCM_RIGHTS.  journald adds _PID, _SYSTEMD_UNIT... from the socket's
credentials itself.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import re
import socket
import struct
from collections.abc import Mapping

SOCKET = "/run/systemd/journal/socket"
_NAME = re.compile(r"[A-Z0-9][A-Z0-9_]{0,63}")  # journald drops entries with other names
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def encode(fields: Mapping[str, object]) -> bytes:
    """One entry.  Raises ValueError for a field name journald would refuse."""
    parts = []
    for name, value in fields.items():
        if not _NAME.fullmatch(name):
            raise ValueError(f"bad journal field name {name!r}")
        data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
        if b"\n" in data:
            parts.append(name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(name.encode() + b"=" + data + b"\n")
    return b"".join(parts)


class JournalSocket:
    """A datagram socket to journald; `send` blocks while journald's queue is full."""

    def __init__(self, path: str = SOCKET) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def send(self, fields: Mapping[str, object]) -> None:
        """Raises OSError (journald gone) or ValueError (a bad field name)."""
        data = encode(fields)
        try:
            self.sock.sendto(data, self.path)
        except OSError as err:
            if err.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(data)

    def _send_memfd(self, data: bytes) -> None:
        fd = os.memfd_create("hbd-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, data)  # memory, not a disk: never waits
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)  # journald accepts only sealed ones
            self.sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                    array.array("i", [fd]))], 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.sock.close()
