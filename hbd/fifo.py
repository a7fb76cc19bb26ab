"""Heartbeat's FIFO (/var/lib/heartbeat/fifo) on the event loop: hb_standby, hb_takeover.

The FIFO is created as Heartbeat creates it (mode 0600, owned by the
daemon's user, root; a non-FIFO in its place is replaced) and opened
non-blocking.  Like Heartbeat, hbd also holds a write end open itself, so
the read end never sees end-of-file when a script closes its end; should
it anyway (the write end lost), the FIFO is reopened.  Every read is
bounded, so a writer flooding the FIFO cannot starve the loop.  Parsing and
the meaning of each message live in hbd.core.fifomsg.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Callable

from hbd.core.fifomsg import FifoCommand, FifoJunk, FifoMessage, FifoReader, interpret

log = logging.getLogger(__name__)

FIFO_NAME = "fifo"
FIFO_MODE = 0o600  # Heartbeat's FIFOMODE (include/heartbeat.h)
_READ_SIZE = 4096
_MAX_READS = 16  # reads per wake-up


class HeartbeatFifo:
    """Reads Heartbeat's FIFO and hands each request to `on_command`.

    `on_command(command)` runs the command; it raises HbdError when the
    daemon refuses (Busy, InvalidScope), which is logged here.
    """

    def __init__(self, directory: str, on_command: Callable[[FifoCommand], None]) -> None:
        self.path = os.path.join(directory, FIFO_NAME)
        self._on_command = on_command
        self._reader = FifoReader()
        self._rfd: int | None = None
        self._wfd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.junk = 0  # malformed inputs seen, for tests and debugging

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Create (if needed) and open the FIFO.  Raises OSError."""
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o755, exist_ok=True)
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            st = None
        if st is None or not stat.S_ISFIFO(st.st_mode):
            if st is not None:
                log.warning("%s is not a FIFO: replacing it", self.path)
                os.unlink(self.path)
            log.info("creating FIFO %s", self.path)
            os.mkfifo(self.path, FIFO_MODE)
        os.chmod(self.path, FIFO_MODE)
        self._loop = loop
        self._open_fds()

    def _open_fds(self) -> None:
        assert self._loop is not None
        rfd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            # our own writer: a script closing its end never gives us EOF
            wfd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            os.close(rfd)
            raise
        self._rfd, self._wfd = rfd, wfd
        self._loop.add_reader(rfd, self._readable)

    def _close_fds(self) -> None:
        if self._rfd is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._rfd)
            os.close(self._rfd)
        if self._wfd is not None:
            os.close(self._wfd)
        self._rfd = self._wfd = None

    def close(self) -> None:
        self._close_fds()

    def _readable(self) -> None:
        for _ in range(_MAX_READS):
            if self._rfd is None:
                return
            try:
                data = os.read(self._rfd, _READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.error("%s: read failed (%s): reopening", self.path, err.strerror)
                self._reopen()
                return
            if not data:  # every writer gone, our own included: start afresh
                self._reopen()
                return
            for item in self._reader.feed(data):
                self._handle(item)

    def _reopen(self) -> None:
        self._close_fds()
        self._reader = FifoReader()
        try:
            self._open_fds()
        except OSError as err:
            log.error("%s: cannot reopen (%s): hb_standby and hb_takeover will not work "
                      "until hbd restarts", self.path, err.strerror)

    def _handle(self, item: FifoMessage | FifoJunk) -> None:
        if isinstance(item, FifoJunk):
            self.junk += 1
            log.warning("%s: ignored %s", self.path, item.reason)
            return
        meaning = interpret(item)
        if not isinstance(meaning, FifoCommand):
            self.junk += 1
            log.warning("%s: ignored message [%s]: %s", self.path, item, meaning.reason)
            return
        log.info("%s: %s [%s] requested through the FIFO", self.path, meaning.tool,
                 meaning.scope)
        self._on_command(meaning)
