"""hbd/childproc.py's input: a child's stdin holds the bytes it was given, then EOF
(fence agents read their options there), /dev/null without them; too much is refused
before anything runs, and a child that never reads its input still ends normally."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from hbd.childproc import STDIN_LIMIT, ChildRun, run_child

ENV = {"PATH": "/usr/bin:/bin"}


def _run(argv: list[str], stdin: bytes | None, timeout: float | None = 10.0) -> ChildRun:
    return asyncio.run(run_child(argv, ENV, timeout, 1 << 20, stdin=stdin))


def test_the_child_reads_its_input_then_eof() -> None:
    data = b"action=reboot\nplug=n2\n" + b"x" * 60000 + b"\n"
    run = _run(["cat"], data, None)
    assert (run.rc, run.error, run.stdout) == (0, None, data)


def test_without_input_stdin_is_dev_null() -> None:
    run = _run(["cat"], None)
    assert (run.rc, run.stdout) == (0, b"")
    assert _run(["cat"], b"").stdout == b""


def test_too_much_input_is_refused_before_the_child_runs() -> None:
    run = _run(["cat"], b"x" * (STDIN_LIMIT + 1))
    assert run.rc is None and run.error is not None and "at most" in run.error


def test_a_child_that_ignores_its_input_ends_normally() -> None:
    run = _run(["sh", "-c", "echo done"], b"unread\n" * 100)
    assert (run.rc, run.stdout) == (0, b"done\n")


# Cancelled early (GroupRunner cancelling a monitor, Fencer.cancel, HookRunner.stop),
# run_child once left its pipes open and its child running: nothing may be left.

def _open_fds() -> int:
    """Open pipe fds (a leak here is pipes); other tests' objects may close theirs meanwhile
    (garbage collected), so callers check for no increase, never for equality."""
    gc.collect()
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
    return count


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
    return found


def _no_process_with(marker: str) -> None:
    deadline = time.monotonic() + 5.0  # a killed grandchild may take a moment to go
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_with(marker) == []


async def _cancel_after(argv: list[str], steps: int | None, **kwargs: Any) -> None:
    """Starts run_child, lets the loop run `steps` times (None: 0.3 s), then cancels it."""
    task = asyncio.create_task(run_child(argv, ENV, 30.0, 1 << 16, **kwargs))
    if steps is None:
        await asyncio.sleep(0.3)
    else:
        for _ in range(steps):
            await asyncio.sleep(0)
    assert not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()


def _marker() -> str:
    return f"3600.{random.randrange(10**8, 10**9)}"  # a sleep's duration, found in /proc


@pytest.mark.parametrize("kwargs", [{}, {"merge_stderr": True}, {"stdin": b"plug=n2\n"}],
                         ids=["pipes", "merged", "stdin"])
def test_cancelled_at_any_early_step_leaves_no_fd_and_no_child(kwargs: dict[str, Any]) -> None:
    marker = _marker()

    async def main() -> None:
        for steps in [0, 1, 2, 3, 4, 5, 6, 8, 12]:
            for _ in range(4):
                await _cancel_after(["sleep", marker], steps, **kwargs)

    asyncio.run(main())  # the loop's own fds are gone too when it returns
    before = _open_fds()
    asyncio.run(main())
    assert _open_fds() <= before
    _no_process_with(marker)


def test_cancelled_while_the_child_runs_kills_its_group_and_closes_its_pipes() -> None:
    marker = _marker()
    argv = ["sh", "-c", f"sleep {marker} & sleep {marker}; wait"]  # a grandchild in the group

    async def main() -> None:
        for _ in range(5):
            await _cancel_after(argv, None)

    asyncio.run(main())
    before = _open_fds()
    asyncio.run(main())
    assert _open_fds() <= before
    _no_process_with(marker)


def test_after_cancellations_a_child_still_runs_normally() -> None:
    async def main() -> ChildRun:
        for steps in range(6):
            await _cancel_after(["sleep", _marker()], steps)
        return await run_child(["sh", "-c", "echo out; echo err >&2"], ENV, 10.0, 1 << 16)

    run = asyncio.run(main())
    assert (run.rc, run.stdout, run.stderr) == (0, b"out\n", b"err\n")
