"""The demo's stand-in for journald, and the failover history read back from it.

On a real node hbd runs under systemd and logs every cluster event to the
journal with a MESSAGE_ID and HBD_* fields; `hbctl history` reads them back.
The demo's nodes are plain processes in network namespaces, with no journald
of their own (and the machine's journal would mix both nodes).  So each node's
hbd is also given a socket of the demo's (HBD_JOURNAL_SOCKET) to which it sends
the very datagrams it would send journald (its native protocol); a thread
here stamps each with its arrival time, the node's name and the sender's
credentials (_PID, _UID, _GID from SCM_CREDENTIALS: `hbctl history` trusts only
_UID 0), as journald does, and writes it as `journalctl -o json` would print it.  At the end
`hbctl history --file` reads that file: the same events, fields and
durations an admin gets from `hbctl history` on a node.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from pathlib import Path
from typing import TextIO

MAX_DATAGRAM = 256 * 1024  # hbd's event entries are a few hundred bytes
_UCRED = struct.Struct("=iII")  # struct ucred: pid, uid, gid


def decode(data: bytes) -> dict[str, str]:
    """One native-protocol entry (`NAME=value\\n`, or `NAME\\n` + u64 length + value +
    `\\n`) as a dict.  Raises ValueError on a malformed one."""
    fields: dict[str, str] = {}
    at = 0
    while at < len(data):
        end = data.find(b"\n", at)
        if end < 0:
            raise ValueError("entry does not end with a newline")
        line = data[at:end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            at = end + 1
        else:
            name = line
            if end + 9 > len(data):
                raise ValueError(f"field {name!r}: no length")
            (size,) = struct.unpack("<Q", data[end + 1:end + 9])
            value = data[end + 9:end + 9 + size]
            if len(value) != size or data[end + 9 + size:end + 10 + size] != b"\n":
                raise ValueError(f"field {name!r}: bad length {size}")
            at = end + 10 + size
        fields[name.decode("ascii", "replace")] = value.decode("utf-8", "replace")
    return fields


class JournalCatcher:
    """Receives one node's journal datagrams on `socket_path`, appends them to `out`."""

    def __init__(self, socket_path: Path, out: Path, hostname: str) -> None:
        self.socket_path = socket_path
        self.out = out
        self.hostname = hostname
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(str(socket_path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # who sent it
        self.bad = 0  # datagrams that were not entries
        self._closing = False
        self._file: TextIO = out.open("a", encoding="utf-8")
        self._thread = threading.Thread(target=self._run, name=f"journal-{hostname}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(
                    MAX_DATAGRAM, socket.CMSG_SPACE(_UCRED.size))
            except OSError:  # closed
                return
            if self._closing:  # shutdown() woke us up
                return
            try:
                fields = decode(data)
            except ValueError:
                self.bad += 1
                continue
            for key in [k for k in fields if k.startswith("_")]:
                del fields[key]  # trusted fields are the receiver's, as in journald
            fields["__REALTIME_TIMESTAMP"] = str(time.time_ns() // 1000)
            fields["_HOSTNAME"] = self.hostname
            for level, kind, value in ancillary:
                if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS) \
                        and len(value) >= _UCRED.size:
                    pid, uid, gid = _UCRED.unpack_from(value)
                    fields.update(_PID=str(pid), _UID=str(uid), _GID=str(gid))
            self._file.write(json.dumps(fields) + "\n")
            self._file.flush()

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(2)
        self._file.close()
