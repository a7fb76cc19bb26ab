"""Notify hooks: executables run on every state change of a group here and of a node.

hbd.conf names them (`notify PATH` lines, run first, in file order) and a
directory holds more (`notify_dir`, by default `notify.d` in the
configuration directory when it exists; its entries run in name order, like
run-parts).  Each is called as `HOOK group KEY STATE` or `HOOK node NAME
STATE` with the details in HBD_* variables (hbd/core/hookevents.py decides
which events there are and what they say; docs/operations.md documents them).

The engine never waits for a hook:

* `HookRunner.feed()` runs inside the daemon's dispatch; it only appends
  the events to a bounded queue.  When a slow hook lets the queue fill up,
  new events are dropped and counted (HBD_SEQ shows the gap, HBD_DROPPED the
  count, and one log line reports each episode).
* One task takes the events in order and runs every hook for one event
  before the next event, one hook at a time: a hook sees the events in the
  order they happened.  Each runs without a shell, in its own session, with a
  clean environment, stdin from /dev/null, at normal scheduling priority
  whatever hbd's own, under `notify_timeout`; past it, its process group is
  killed.  Listing the hooks (stat, readdir) happens in a worker thread.
* Output (stdout and stderr together) is logged, bounded; failures
  (exit code, signal, timeout, cannot run) are logged and never fatal.
* At stop, `stop()` lets the queued events run, for a bounded time, so the
  hooks see the groups' `stopped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import stat
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from hbd.agents import DEFAULT_PATH
from hbd.childproc import run_child
from hbd.core.actions import Action
from hbd.core.config import HbdConf
from hbd.core.hookevents import HookEvent, HookEvents
from hbd.eventlog import MessageId

log = logging.getLogger(__name__)

MAX_PENDING = 256  # events waiting for the hooks; beyond, new ones are dropped
OUTPUT_LIMIT = 4096  # bytes of a hook's output kept for the log
OUTPUT_LINES = 20  # lines of it logged
STOP_WAIT = 30.0  # at stop, the longest wait for queued events (or 2 x notify_timeout)
NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # run-parts' rule: no backups, no dpkg leftovers


@dataclass(frozen=True)
class HookSettings:
    """Where the hooks are and how long each may take."""

    paths: tuple[str, ...] = ()  # `notify PATH` lines
    directory: str = ""  # "" : none
    directory_named: bool = False  # set in hbd.conf: its absence is worth a log line
    timeout: float = 10.0

    @classmethod
    def from_conf(cls, conf: HbdConf, config_dir: str) -> HookSettings:
        named = conf.notify_dir is not None
        directory = conf.notify_dir if named else os.path.join(config_dir, "notify.d")
        return cls(conf.notify, directory or "", bool(named and directory),
                   conf.notify_timeout_ms / 1000.0)


@dataclass(frozen=True)
class HookResult:
    rc: int | None  # exit code, -N for signal N; None: timed out or never ran
    elapsed: float
    output: bytes = b""
    truncated: int = 0  # output bytes not kept
    timed_out: bool = False
    error: str | None = None  # could not run it at all


Execute = Callable[[str, tuple[str, ...], Mapping[str, str], float], Awaitable[HookResult]]
Lister = Callable[[HookSettings], tuple[list[str], list[str]]]


def _unfit(path: str, st: os.stat_result) -> str | None:
    """Why a hook must not run (keepalived's script security), or None."""
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_mode & 0o111 == 0:
        return "is not executable"
    if st.st_mode & 0o022:
        return f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}): not run"
    if st.st_uid not in (0, os.geteuid()):
        return f"belongs to uid {st.st_uid}, neither root nor hbd's: not run"
    return None


def list_hooks(settings: HookSettings) -> tuple[list[str], list[str]]:
    """Blocking (stat, readdir): the hooks to run, in order, and what is wrong with others."""
    found: list[str] = []
    problems: list[str] = []
    for path in settings.paths:
        try:
            why = _unfit(path, os.stat(path))
        except OSError as err:
            why = f"cannot be used: {err.strerror}"
        if why is None:
            found.append(path)
        else:
            problems.append(f"notify hook {path} {why}")
    if settings.directory:
        try:
            names = sorted(os.listdir(settings.directory))
        except FileNotFoundError:
            names = []
            if settings.directory_named:
                problems.append(f"notify_dir {settings.directory} does not exist")
        except OSError as err:
            names = []
            problems.append(f"notify_dir {settings.directory}: {err.strerror}")
        for name in names:
            path = os.path.join(settings.directory, name)
            if not NAME.match(name) or path in found:
                continue  # editor backups, .dpkg-old, README.md: as run-parts does
            try:
                st = os.stat(path)
            except OSError:
                continue  # a dangling link, or gone meanwhile
            if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o111 == 0:
                continue  # a plain file in the directory is not a hook
            why = _unfit(path, st)
            if why is None:
                found.append(path)
            else:
                problems.append(f"notify hook {path} {why}")
    return found, problems


async def execute(path: str, argv: tuple[str, ...], env: Mapping[str, str],
                  timeout: float) -> HookResult:
    """Run one hook: no shell, own session, output captured, group killed past `timeout`."""
    run = await run_child([path, *argv], env, timeout, OUTPUT_LIMIT, keep="head",
                          merge_stderr=True)
    if run.error is not None:
        return HookResult(None, run.elapsed, error=run.error)
    return HookResult(run.rc, run.elapsed, run.stdout, run.stdout_dropped, run.timed_out)


class HookRunner:
    """The queue of hook events and the one task that runs the hooks for them."""

    def __init__(self, local_node: str, settings: HookSettings, *,
                 execute: Execute = execute, lister: Lister = list_hooks,
                 max_pending: int = MAX_PENDING) -> None:
        self.settings = settings
        self.events = HookEvents(local_node)
        self._execute = execute
        self._lister = lister
        self._queue: asyncio.Queue[tuple[HookEvent, int]] = asyncio.Queue(max_pending)
        self._worker: asyncio.Task[None] | None = None
        self._busy = False  # the worker is running the hooks of an event
        self._closed = False  # stop() was called: later events have nobody to run them
        self.dropped = 0  # events dropped since start
        self._dropping = 0  # dropped in the current episode, not yet reported
        self.failures = 0  # hook runs that failed since start
        self._problems: set[str] = set()  # reported once until they go away
        self._base_env = {"PATH": DEFAULT_PATH, "LANG": "C", "LC_ALL": "C"}

    def update(self, settings: HookSettings) -> None:
        """A reload: the next event runs the hooks the new settings name."""
        self.settings = settings

    # --- on the loop, inside the daemon's dispatch: never waits ----------------------

    def feed(self, actions: Iterable[Action], wall: float) -> None:
        if self._closed:
            return
        for event in self.events.translate(actions, wall):
            try:
                self._queue.put_nowait((event, self.dropped))
            except asyncio.QueueFull:
                self.dropped += 1
                self._dropping += 1
                continue
            if self._dropping:
                log.warning("%d notify hook event(s) dropped: the hooks are too slow (%d "
                            "waiting at most); HBD_SEQ %d is the first after the gap",
                            self._dropping, self._queue.maxsize, event.seq,
                            extra={"MESSAGE_ID": MessageId.HOOK_FAILED})
                self._dropping = 0
            if self._worker is None:
                self._worker = asyncio.get_running_loop().create_task(
                    self._work(), name="notify hooks")

    # --- the worker ----------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            event, dropped = await self._queue.get()
            self._busy = True
            try:
                await self._run_event(event, dropped)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end the hooks for good
                log.exception("notify hooks: internal error on event %s", event)
            finally:
                self._busy = False
                self._queue.task_done()

    async def _run_event(self, event: HookEvent, dropped: int) -> None:
        settings = self.settings
        hooks, problems = await asyncio.to_thread(self._lister, settings)
        for problem in problems:
            if problem not in self._problems:
                log.warning("%s", problem, extra={"MESSAGE_ID": MessageId.HOOK_FAILED})
        self._problems = set(problems)
        env = {**self._base_env, **event.environment(self.events.local_node, dropped)}
        for path in hooks:
            result = await self._execute(path, event.argv, env, settings.timeout)
            self._report(path, event, result, settings.timeout)

    def _report(self, path: str, event: HookEvent, result: HookResult, timeout: float) -> None:
        extra = {"MESSAGE_ID": MessageId.HOOK_FAILED, "HBD_HOOK": path,
                 f"HBD_{event.kind.upper()}": event.name}
        text = result.output.decode("utf-8", "replace")
        lines = [line for line in text.splitlines() if line.strip()]
        for line in lines[:OUTPUT_LINES]:
            log.info("notify hook %s: %s", path, line[:500])
        hidden = len(lines) - OUTPUT_LINES
        if hidden > 0 or result.truncated:
            log.info("notify hook %s: (output cut: %d more line(s), %d byte(s) not read)",
                     path, max(hidden, 0), result.truncated)
        if result.error is not None:
            why = f"could not run: {result.error}"
        elif result.timed_out:
            why = f"timed out after {timeout:g} s: its process group was killed"
        elif result.rc is not None and result.rc < 0:
            try:
                name = signal.Signals(-result.rc).name
            except ValueError:
                name = f"signal {-result.rc}"
            why = f"was killed by {name}"
        elif result.rc:
            why = f"failed: exit code {result.rc}"
        else:
            log.debug("notify hook %s (%s): done in %.3f s", path, event, result.elapsed)
            return
        self.failures += 1
        log.warning("notify hook %s (%s) %s", path, event, why, extra=extra)

    # --- stop ----------------------------------------------------------------------------

    def pending(self) -> int:
        """Events not done yet: queued, and the one whose hooks are running."""
        return self._queue.qsize() + (1 if self._busy else 0)

    async def stop(self, wait: float | None = None) -> None:
        """Run the queued events (at most `wait` seconds), then end the worker."""
        self._closed = True
        worker, self._worker = self._worker, None
        if worker is None:
            return
        limit = wait if wait is not None else max(STOP_WAIT, 2 * self.settings.timeout)
        if self.pending():
            try:
                await asyncio.wait_for(self._queue.join(), limit)
            except TimeoutError:
                log.warning("notify hooks: stopping with %d event(s) not done after "
                            "waiting %g s", self.pending(), limit)
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        if self._dropping:
            log.warning("%d notify hook event(s) dropped: the hooks are too slow",
                        self._dropping)
            self._dropping = 0
