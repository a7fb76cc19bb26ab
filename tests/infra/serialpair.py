"""Virtual null-modem serial links between two processes/namespaces.

Why: Heartbeat's ``serial`` medium (and hbd's) needs a real tty.  A pty is a
real tty to the reader, and the pty slave paths are visible from every
namespace since /dev/pts is shared, so the same pair serves processes in two
lab nodes.

Two flavours, because they model different faults:

* :class:`SerialPair` (socat, the reference setup): ``cut()`` stops socat by
  its recorded pid.  Both pty masters close, so the ends see a *hang-up*
  (read -> EOF, write -> EIO), like a USB-serial adapter being unplugged.
  ``restore()`` restarts socat with the same link paths, but the links now
  point at *new* /dev/pts nodes: a consumer must reopen.  Real Heartbeat
  never reopens its tty, so for it a socat cut is permanent, and its
  reader spins on EOF logging "EOF in ttygets" (~2.5 MB/s of log): stop
  or kill such a peer soon after a socat cut.
* :class:`PtyCable` (``os.openpty``): a relay thread copies bytes between two
  pty masters that stay open.  ``cut()`` silently drops bytes, the ttys stay
  valid, ``restore()`` resumes: a pulled null-modem cable, which running
  daemons survive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
import tty
from pathlib import Path
from types import TracebackType

from tests.infra import commands
from tests.infra.netns import FAMILY, PDEATHSIG, PidLedger, new_tag, stop_process, wait_for

log = logging.getLogger(__name__)


def _workdir(directory: Path | None) -> Path:
    """Own temp dir named ``hbdt-<pid>-<hex>`` so stale cleanup can find it."""
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        return directory
    d = Path(tempfile.gettempdir()) / new_tag(FAMILY)
    d.mkdir(mode=0o755)
    return d


class SerialPair:
    """socat ``pty <-> pty`` pair with stable link paths ``<dir>/ttyA``, ``ttyB``."""

    def __init__(self, directory: Path | None = None, names: tuple[str, str] = ("ttyA", "ttyB"),
                 socat: str = "socat") -> None:
        self.owns_dir = directory is None
        self.dir = _workdir(directory)
        self.a, self.b = self.dir / names[0], self.dir / names[1]
        self.socat = socat
        self.ledger = PidLedger(self.dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.ptys: tuple[str, str] | None = None

    @property
    def paths(self) -> tuple[str, str]:
        return str(self.a), str(self.b)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 5.0) -> tuple[str, str]:
        """Start socat; returns the two link paths once both exist."""
        if self.running:
            return self.paths
        errlog = self.dir / "socat.log"
        with open(errlog, "wb") as err:
            self.proc = commands.popen(
                [*PDEATHSIG, self.socat, "-d", "-d", f"pty,raw,echo=0,link={self.a}",
                 f"pty,raw,echo=0,link={self.b}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True)
        self.ledger.record(self.proc.pid)
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"socat exited: {errlog.read_text()}")
            return "starting data transfer loop" in errlog.read_text()

        wait_for(ready, timeout, "socat ptys")
        found = re.findall(r"PTY is (\S+)", errlog.read_text())
        self.ptys = (found[-2], found[-1])
        log.info("serial pair %s <-> %s (%s, %s), socat pid %d",
                 self.a, self.b, *self.ptys, proc.pid)
        return self.paths

    def cut(self) -> None:
        """Stop socat (by recorded pid): both ends hang up (see module doc)."""
        if self.proc is not None:
            stop_process(self.proc, timeout=2.0)
            self.ledger.forget(self.proc.pid)
            log.info("serial pair cut (socat pid %d stopped)", self.proc.pid)
        for p in (self.a, self.b):  # socat unlinks them; be sure for restart
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def restore(self) -> tuple[str, str]:
        """Restart socat with the same link paths (new pty devices behind them)."""
        return self.start()

    def close(self) -> None:
        """Stop socat and remove the directory if we created it; idempotent."""
        self.cut()
        if self.owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SerialPair:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class PtyCable:
    """Two ptys joined by an in-process relay that can be cut without hang-up."""

    def __init__(self, directory: Path | None = None,
                 names: tuple[str, str] = ("ttyA", "ttyB")) -> None:
        self.owns_dir = directory is None
        self.dir = _workdir(directory)
        self.a, self.b = self.dir / names[0], self.dir / names[1]
        self._fds: list[int] = []
        self._masters: tuple[int, int] = (-1, -1)
        self._connected = threading.Event()
        self._stop_r, self._stop_w = os.pipe()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    @property
    def paths(self) -> tuple[str, str]:
        return str(self.a), str(self.b)

    def start(self) -> tuple[str, str]:
        masters = []
        for link in (self.a, self.b):
            master, slave = os.openpty()
            tty.setraw(slave)
            # keep our slave fd open: otherwise the master reads EIO until a
            # consumer opens the tty, and the relay would see a false hang-up
            self._fds += [master, slave]
            masters.append(master)
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(os.ttyname(slave))
        self._masters = (masters[0], masters[1])
        self._connected.set()
        self._thread = threading.Thread(target=self._relay, name="pty-cable", daemon=True)
        self._thread.start()
        return self.paths

    def _relay(self) -> None:
        ma, mb = self._masters
        peer = {ma: mb, mb: ma}
        while True:
            ready, _, _ = select.select([ma, mb, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if self._connected.is_set():
                    with contextlib.suppress(OSError):
                        os.write(peer[fd], data)
                else:
                    self.dropped += len(data)

    def cut(self) -> None:
        """Drop all bytes from now on; both ttys stay open and valid."""
        self._connected.clear()

    def restore(self) -> None:
        self._connected.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def close(self) -> None:
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join(2)
            self._thread = None
        for fd in [*self._fds, self._stop_r, self._stop_w]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        self._stop_r = self._stop_w = -1
        for p in (self.a, self.b):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        if self.owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PtyCable:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
