"""Serial heartbeat links over pyserial: Heartbeat's classic `>>>`…`<<<` frames.

The port is opened raw at the configured baud, 8N1 with RTS/CTS as
Heartbeat does; reads and writes never block the loop.  Bytes before a
`>>>` line (noise, half a frame from before we opened) are skipped.  If the
device vanishes or errors, the link is closed and the owner reopens it later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

import serial

from hbd.core import wire
from hbd.core.config import SerialLink
from hbd.errors import LinkError

log = logging.getLogger(__name__)

MAX_PENDING_WRITE = 64 * 1024  # a stuck peer must not make us hoard memory


class SerialEndpoint:
    def __init__(self, index: int, link: SerialLink,
                 deliver: Callable[[bytes, int], object],
                 on_failure: Callable[[SerialEndpoint, str], None]) -> None:
        self.index = index
        self.link = link
        self.deliver = deliver
        self.on_failure = on_failure
        self.port: serial.Serial | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbuf = b""
        self._outbuf = bytearray()
        self._writer_armed = False
        self.dropped_writes = 0

    @property
    def is_open(self) -> bool:
        return self.port is not None

    def describe(self) -> str:
        return f"serial {self.link.device}"

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            port = serial.Serial(
                port=self.link.device, baudrate=self.link.baud, bytesize=serial.EIGHTBITS,
                parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_ONE, rtscts=True,
                timeout=0, write_timeout=0, exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as err:
            raise LinkError(f"{self.describe()}: {err}") from err
        self.port = port
        self._loop = loop
        self._inbuf = b""
        loop.add_reader(port.fileno(), self._readable)

    def close(self) -> None:
        port = self.port
        if port is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(port.fileno())
            if self._writer_armed:
                self._loop.remove_writer(port.fileno())
        self._writer_armed = False
        self._outbuf.clear()
        with contextlib.suppress(serial.SerialException, OSError):
            port.close()
        self.port = None

    def _fail(self, reason: str) -> None:
        self.close()
        self.on_failure(self, reason)

    def _readable(self) -> None:
        port = self.port
        if port is None:
            return
        try:
            chunk = os.read(port.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError as err:
            self._fail(err.strerror or str(err))
            return
        if not chunk:
            return
        # Heartbeat sets ISTRIP: only 7-bit data is meaningful on the line.
        frames, self._inbuf = wire.split_classic_stream(self._inbuf + chunk)
        for frame in frames:
            self.deliver(frame, self.index)

    def send(self, data: bytes) -> None:
        if self.port is None or not data:  # b"": built before a serial link was configured
            return
        if len(self._outbuf) + len(data) > MAX_PENDING_WRITE:
            self.dropped_writes += 1
            if self.dropped_writes in (1, 10, 100) or self.dropped_writes % 1000 == 0:
                log.warning("%s: peer not reading, %d frame(s) dropped", self.describe(),
                            self.dropped_writes)
            return
        self._outbuf += data
        self._flush()

    def _flush(self) -> None:
        port = self.port
        if port is None or self._loop is None:
            return
        while self._outbuf:
            try:
                written = os.write(port.fileno(), self._outbuf)
            except BlockingIOError:
                break
            except OSError as err:
                self._fail(err.strerror or str(err))
                return
            del self._outbuf[:written]
        want_writer = bool(self._outbuf)
        if want_writer and not self._writer_armed:
            self._loop.add_writer(port.fileno(), self._flush)
        elif not want_writer and self._writer_armed:
            self._loop.remove_writer(port.fileno())
        self._writer_armed = want_writer
