"""hbd/childproc.py's input: a child's stdin holds the bytes it was given, then EOF
(fence agents read their options there), /dev/null without them; too much is refused
before anything runs, and a child that never reads its input still ends normally."""

from __future__ import annotations

import asyncio

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
