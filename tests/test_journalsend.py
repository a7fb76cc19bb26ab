"""hbd.journalsend against a real datagram socket standing in for journald's.

The decisive case: a journald that stops reading makes the sender block, and
while it is blocked the other Python threads (the event loop) keep running.
systemd-python's journal.send held the GIL there and froze the whole daemon.
"""

from __future__ import annotations

import array
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hbd.journalsend import JournalSocket, encode

WAIT = 10.0


def decode(data: bytes) -> dict[str, bytes]:
    """journald's parser, for what hbd sends."""
    fields = {}
    while data:
        line, _, rest = data.partition(b"\n")
        if b"=" in line:
            name, _, value = line.partition(b"=")
            data = rest
        else:
            name = line
            (size,) = struct.unpack("<Q", rest[:8])
            value, data = rest[8:8 + size], rest[8 + size + 1:]
        fields[name.decode()] = value
    return fields


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield sock, path
    sock.close()


def test_encode_plain_and_multiline_values() -> None:
    data = encode({"MESSAGE": "line one\nline two", "PRIORITY": 6, "HBD_NODE": "n2"})
    assert decode(data) == {"MESSAGE": b"line one\nline two", "PRIORITY": b"6",
                            "HBD_NODE": b"n2"}
    assert b"PRIORITY=6\n" in data
    with pytest.raises(ValueError, match="bad journal field name"):
        encode({"message": "lower case names are dropped by journald"})


def test_entry_reaches_the_socket(journald: tuple[socket.socket, str]) -> None:
    sock, path = journald
    JournalSocket(path).send({"MESSAGE": "info: hello", "MESSAGE_ID": "abc"})
    assert decode(sock.recv(65536)) == {"MESSAGE": b"info: hello", "MESSAGE_ID": b"abc"}


def test_large_entry_goes_in_a_sealed_memfd(journald: tuple[socket.socket, str]) -> None:
    sock, path = journald
    big = "x" * 400_000  # beyond a datagram's maximum size
    JournalSocket(path).send({"MESSAGE": big})
    fds = array.array("i")
    msg, ancdata, _, _ = sock.recvmsg(16, socket.CMSG_SPACE(fds.itemsize))
    assert msg == b""
    fds.frombytes(ancdata[0][2][:fds.itemsize])
    with os.fdopen(fds[0], "rb") as f:
        f.seek(0)  # the sender's write moved the offset both share; journald mmaps it
        assert decode(f.read()) == {"MESSAGE": big.encode()}


def test_a_blocked_send_lets_other_threads_run(journald: tuple[socket.socket, str]) -> None:
    _, path = journald  # bound, never read: like a journald stopped with SIGSTOP
    sender = JournalSocket(path)
    sent = 0
    stuck = threading.Event()

    def flood() -> None:
        nonlocal sent
        while True:
            try:
                sender.send({"MESSAGE": "filler"})
            except OSError:
                return  # the socket was closed under us at the end of the test
            sent += 1

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    # wait until the flood stops advancing: the sender is blocked in sendto()
    last, steady_since = -1, time.monotonic()
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if sent != last:
            last, steady_since = sent, time.monotonic()
        elif time.monotonic() - steady_since > 0.3:
            stuck.set()
            break
        time.sleep(0.01)  # this loop running at all is the GIL being free
    assert stuck.is_set(), "the sender never blocked"
    assert thread.is_alive() and sent > 0
    # the main thread still runs Python while the sender waits in the kernel
    started = time.monotonic()
    total = sum(range(200_000))
    assert total and time.monotonic() - started < 2.0
    sender.close()
