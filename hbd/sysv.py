"""Running without systemd: the classic double fork and a pid file.

SysV init scripts (RHEL 3, Debian without systemd) start `hbd --daemonize
--pidfile /var/run/hbd.pid`; under systemd hbd stays in the foreground
(Type=notify) and none of this runs.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import sys
from pathlib import Path

from hbd.errors import HbdError


def read_pid(pidfile: str) -> int | None:
    try:
        text = Path(pidfile).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM
    return True


def daemonize(pidfile: str) -> None:
    """Detach from the terminal and record our pid; the parent exits 0 once it is written.

    Raises HbdError if another hbd already runs with this pid file.
    """
    existing = read_pid(pidfile)
    if existing is not None and existing != os.getpid() and running(existing):
        raise HbdError(f"hbd is already running (pid {existing}, {pidfile})")
    read_end, write_end = os.pipe()
    if os.fork():
        # The parent waits until the daemon has written its pid file, so an init
        # script that checks right after `start` sees it.
        os.close(write_end)
        status = os.read(read_end, 1)
        os._exit(0 if status == b"1" else 1)
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    os.umask(0o022)
    with open(os.devnull, "rb") as null_in, open(os.devnull, "ab") as null_out:
        os.dup2(null_in.fileno(), sys.stdin.fileno())
        os.dup2(null_out.fileno(), sys.stdout.fileno())
        os.dup2(null_out.fileno(), sys.stderr.fileno())
    try:
        Path(pidfile).parent.mkdir(parents=True, exist_ok=True)
        Path(pidfile).write_text(f"{os.getpid()}\n")
    except OSError:
        os.write(write_end, b"0")
        os._exit(1)
    os.write(write_end, b"1")
    os.close(write_end)
    atexit.register(_remove, pidfile, os.getpid())


def _remove(pidfile: str, pid: int) -> None:
    if read_pid(pidfile) == pid:
        with contextlib.suppress(OSError):
            os.unlink(pidfile)
