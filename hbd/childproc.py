"""Running a child program from the event loop without ever waiting on it there.

Resource agents (hbd/agents.py) and notify hooks (hbd/hooks.py) run the same
way, and so do fence devices (hbd/fencer.py): an execve of an argument list,
never a shell, in a session and process group of its own, with stdin /dev/null
(or a few bytes of input in a pipe: a fence agent's options) and a small
environment.  Output is
read from pipes of our own rather than asyncio's PIPE (Python 3.11's
Process.wait() would also wait for EOF, i.e. for every daemon the child
left running with our stdout), kept up to a limit, and closed soon after the
child exits, so a daemon that kept them open gets EPIPE, not a hung hbd.  Past
the timeout, or when the caller is cancelled, the whole process group is
killed with SIGKILL and reaped (a process that left the group with setsid()
escapes that), and our ends of its pipes are closed, however early the
cancellation comes.  When the child exits by itself nothing is killed: what an
agent's `start` launched must live on.  Children run at normal scheduling
and nice 0 whatever hbd's own priority.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Literal

DRAIN_SECONDS = 0.5  # how long output is still read after the child exits
STDIN_LIMIT = 65536  # input bytes a child may be given: a pipe's room, filled before it starts


@dataclass(frozen=True)
class ChildRun:
    rc: int | None  # exit code, -N for signal N; None: timed out or never ran
    timed_out: bool
    stdout: bytes  # at most `limit` bytes (both streams, when stderr is merged)
    stderr: bytes
    elapsed: float  # seconds
    stdout_dropped: int = 0  # output bytes not kept
    stderr_dropped: int = 0
    error: str | None = None  # could not start it at all


class _Capture(asyncio.Protocol):
    """Keeps `limit` bytes of a pipe (the first or the last), counts the rest, notes EOF."""

    def __init__(self, limit: int, keep: Literal["head", "tail"]) -> None:
        self.limit = limit
        self.keep = keep
        self.data = bytearray()
        self.dropped = 0
        self.eof = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if self.keep == "head":
            room = max(self.limit - len(self.data), 0)
            self.data += data[:room]
            self.dropped += len(data) - len(data[:room])
            return
        self.data += data
        if len(self.data) > self.limit:
            excess = len(self.data) - self.limit
            del self.data[:excess]
            self.dropped += excess

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.eof.done():
            self.eof.set_result(None)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _normal_scheduling() -> None:
    """In the child, before exec: the policy and nice value of an ordinary process."""
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 0)


def _scheduling_differs() -> bool:
    try:
        return (os.sched_getscheduler(0) != os.SCHED_OTHER
                or os.getpriority(os.PRIO_PROCESS, 0) != 0)
    except OSError:
        return False


def _input_pipe(data: bytes) -> int:
    """A pipe already holding `data` and closed for writing: its read end.

    Written before the child starts, without blocking: input that does not fit in
    the pipe (64 KiB on Linux) is refused with OSError.
    """
    if len(data) > STDIN_LIMIT:
        raise ValueError(f"input of {len(data)} bytes (at most {STDIN_LIMIT})")
    r, w = os.pipe()
    try:
        os.set_blocking(w, False)
        if data and os.write(w, data) != len(data):
            raise OSError(errno.EAGAIN, "input larger than the pipe")
    except OSError:
        os.close(r)
        raise
    finally:
        os.close(w)
    return r


async def run_child(argv: Sequence[str], env: Mapping[str, str], timeout: float | None,
                    limit: int, *, keep: Literal["head", "tail"] = "tail",
                    merge_stderr: bool = False, stdin: bytes | None = None,
                    user: int | None = None, group: int | None = None,
                    extra_groups: Sequence[int] | None = None,
                    on_start: Callable[[int], None] | None = None) -> ChildRun:
    """Run `argv` to its end or `timeout` (None: no limit; the caller may cancel).

    `stdin`: bytes the child reads before EOF (at most STDIN_LIMIT), else /dev/null.
    `user`, `group`, `extra_groups`: the ids it runs as (respawned clients); `on_start`
    is told its pid (its process group's too) once it runs.
    Never raises for the child's own failures.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    # preexec_fn only when needed: it rules out vfork, and its two calls take no lock
    preexec = _normal_scheduling if _scheduling_differs() else None
    # Everything opened here is closed here, however run_child ends (an error, a
    # cancellation at any await): `inherited`, the fds only the child keeps, right
    # after it starts; `readers`, our read ends, at the end (a file object closes
    # once however many times it is closed, so also the ones handed to a transport).
    inherited: list[int] = []
    readers: list[BinaryIO] = []
    transports: list[asyncio.BaseTransport] = []
    proc: asyncio.subprocess.Process | None = None
    try:
        try:
            source: int = asyncio.subprocess.DEVNULL
            if stdin is not None:
                source = _input_pipe(stdin)
                inherited.append(source)
            writers = []
            for _ in range(1 if merge_stderr else 2):
                r, w = os.pipe()
                inherited.append(w)
                writers.append(w)
                readers.append(os.fdopen(r, "rb", 0))
            # Cancelled while it starts, asyncio kills the child itself (SIGKILL to
            # it alone: its pid is not ours yet) and reaps it.
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=source, stdout=writers[0], stderr=writers[-1],
                env=dict(env), cwd="/", start_new_session=True, preexec_fn=preexec,
                user=user, group=group, extra_groups=extra_groups)
        except (OSError, ValueError, subprocess.SubprocessError) as err:  # ValueError: a NUL
            return ChildRun(None, False, b"", b"", loop.time() - started, error=str(err))
        finally:
            _close_fds(inherited)
        if on_start is not None:
            on_start(proc.pid)
        captures = [_Capture(limit, keep) for _ in readers]
        for reader, capture in zip(readers, captures, strict=True):
            transports.append(await _read(loop, reader, capture))
        timed_out = False
        try:
            rc: int | None = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            timed_out = True
            kill_group(proc.pid)
            await proc.wait()
            rc = None
        await asyncio.wait([c.eof for c in captures], timeout=DRAIN_SECONDS)
    except BaseException:  # cancelled, mostly: no child of ours is left running
        if proc is not None:
            kill_group(proc.pid)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5.0)
        raise
    finally:
        _close_fds(inherited)
        for transport in transports:
            transport.close()  # stops watching the pipe at once; closed just below
        for reader in readers:
            reader.close()
    out, errs = captures[0], captures[-1]
    if merge_stderr:
        return ChildRun(rc, timed_out, bytes(out.data), b"", loop.time() - started, out.dropped)
    return ChildRun(rc, timed_out, bytes(out.data), bytes(errs.data), loop.time() - started,
                    out.dropped, errs.dropped)


def _close_fds(fds: list[int]) -> None:
    """Closes each fd once, emptying the list."""
    while fds:
        with contextlib.suppress(OSError):
            os.close(fds.pop())


async def _read(loop: asyncio.AbstractEventLoop, reader: BinaryIO,
                capture: _Capture) -> asyncio.BaseTransport:
    transport, _ = await loop.connect_read_pipe(lambda: capture, reader)
    return transport
