"""ha.cf `respawn USER COMMAND`: programs hbd runs and restarts, as Heartbeat does.

Heartbeat 3.0.6 (heartbeat.c start_a_child_client, ManagedChildDied) starts
each `respawn` program once the daemon is up, as USER (its primary group and
supplementary groups), and starts it again whenever it exits, except:

* it exited with code 100 (the program's way of saying "do not restart me");
* it was restarted more than MAX_SHORT times in a row, each run shorter than
  SHORT_RUN seconds: "respawning too fast" is logged and it stays stopped;
* the program is not executable (any more): Heartbeat does not fork it.

A run that follows a short one waits RESPAWN_DELAY first (Heartbeat sleeps a
second in the child before exec).  At shutdown the programs are stopped in
reverse order of their lines, each with SIGTERM to its process group, then
SIGKILL after STOP_TIMEOUT, before the groups are released (Heartbeat's
order).  Every run goes through hbd.childproc.run_child: its own session and
process group, normal scheduling and nice 0 whatever hbd's own, stdin
/dev/null, the last lines of its output logged when it exits.  Heartbeat ran
`sh -c "exec COMMAND"`; hbd splits COMMAND as a shell would and runs no
shell (no variables, redirections or pipes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import signal
from collections.abc import Callable, Mapping

from hbd.childproc import run_child
from hbd.core.config import Problem, Respawn, Severity

log = logging.getLogger(__name__)

SHORT_RUN = 30.0  # seconds: a run shorter than this counts as a fast respawn
MAX_SHORT = 10  # fast respawns in a row after which the program is left stopped
RESPAWN_DELAY = 1.0  # seconds before restarting a program whose last run was short
STOP_TIMEOUT = 10.0  # seconds a program has to exit after SIGTERM at shutdown
NO_RESPAWN_RC = 100  # Heartbeat: "If they exit 100 we won't restart them"
OUTPUT_LIMIT = 4096  # bytes of a run's output kept for the log


def runs_ipfail(entries: tuple[Respawn, ...]) -> bool:
    """Whether a respawn line runs ipfail (directly or through a wrapper)."""
    return any(os.path.basename(arg) == "ipfail" for e in entries for arg in e.argv)


class _Child:
    def __init__(self, entry: Respawn) -> None:
        self.entry = entry
        self.pid: int | None = None
        self.stopping = False
        self.ended = False  # will not be started again (until a reload)
        self.task: asyncio.Task[None] | None = None
        self.runs = 0


class Respawner:
    """The `respawn` programs of one configuration.

    `on_end` is told of a line whose program will not be started again until the
    next reload (it exited 100, respawned too fast, cannot be run): the built-in ping
    rule takes over again when that program was ipfail.
    """

    def __init__(self, env: Mapping[str, str],
                 on_end: Callable[[Respawn], None] | None = None) -> None:
        self.env = dict(env)
        self._children: list[_Child] = []
        self._on_end = on_end

    def pids(self) -> dict[str, int]:
        return {c.entry.command: c.pid for c in self._children if c.pid is not None}

    def kept(self) -> tuple[Respawn, ...]:
        """The lines whose program runs or will be started again."""
        return tuple(c.entry for c in self._children if not (c.ended or c.stopping))

    def start(self, entries: tuple[Respawn, ...]) -> None:
        """Start every program (the daemon is up and its API socket open)."""
        for entry in entries:
            self._launch(entry)

    def _launch(self, entry: Respawn) -> None:
        child = _Child(entry)
        child.task = asyncio.get_running_loop().create_task(self._keep_running(child))
        self._children.append(child)

    async def update(self, entries: tuple[Respawn, ...]) -> None:
        """A reload: stop the programs whose line went away or changed, start new ones,
        and try again the lines that had ended (too fast, exit 100, missing program):
        the admin may have fixed them."""
        wanted = [(e.user, e.argv) for e in entries]
        for child in reversed(list(self._children)):
            if child.ended:
                self._children.remove(child)  # ended: started again below if still wanted
            elif (child.entry.user, child.entry.argv) not in wanted:
                await self._stop(child)
                self._children.remove(child)
        running = [(c.entry.user, c.entry.argv) for c in self._children]
        for entry in entries:
            if (entry.user, entry.argv) not in running:
                self._launch(entry)

    async def stop(self) -> None:
        """Shutdown: each program in reverse order, SIGTERM then SIGKILL."""
        for child in reversed(self._children):
            await self._stop(child)
        self._children.clear()

    async def _stop(self, child: _Child) -> None:
        child.stopping = True
        task = child.task
        if task is None or task.done():
            return
        if child.pid is not None:
            log.info("stopping client \"%s\" (pid %d)", child.entry.command, child.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGTERM)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT)
        if not task.done():
            log.warning("client \"%s\" did not exit within %gs of SIGTERM: killed",
                        child.entry.command, STOP_TIMEOUT)
            task.cancel()  # run_child kills its process group and reaps it
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep_running(self, child: _Child) -> None:
        cancelled = False
        try:
            await self._run_until_ended(child)
        except asyncio.CancelledError:
            cancelled = True  # hbd's end (the loop's last tasks): nothing to report
            raise
        finally:
            if not child.stopping and not cancelled:
                child.ended = True
                if self._on_end is not None:
                    self._on_end(child.entry)

    async def _run_until_ended(self, child: _Child) -> None:
        entry = child.entry
        loop = asyncio.get_running_loop()
        short = 0
        while not child.stopping:
            ids = await asyncio.to_thread(_ids, entry.user)  # NSS may block
            if ids is None:
                log.error("respawn (ha.cf line %d): invalid uid [%s] specified for client "
                          "child: not started", entry.line, entry.user)
                return
            if child.stopping:  # stopped while the user was looked up
                return
            if not os.access(entry.argv[0], os.X_OK):
                log.error("Cannot exec %s: not an executable file: not started",
                          entry.argv[0])
                return
            if short:
                await asyncio.sleep(RESPAWN_DELAY)
                if child.stopping:
                    return
            uid, gid, groups = ids
            log.info("Starting child client \"%s\" (%d,%d)", entry.command, uid, gid)
            began = loop.time()
            child.runs += 1

            def note(pid: int) -> None:
                child.pid = pid
                log.info("client \"%s\" runs as pid %d", entry.command, pid)
                if child.stopping:  # stopped while it was being started: SIGTERM now
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGTERM)

            result = await run_child(entry.argv, self.env, None, OUTPUT_LIMIT, keep="tail",
                                     merge_stderr=True, user=uid, group=gid,
                                     extra_groups=groups, on_start=note)
            last_pid, child.pid = child.pid, None
            output = result.stdout.decode(errors="replace").strip()
            if output:
                log.log(logging.DEBUG if child.stopping else logging.INFO,
                        "client \"%s\" said: %s", entry.command, output[-1000:])
            if result.error is not None:
                log.error("Cannot exec %s: %s", entry.command, result.error)
                return
            if child.stopping:
                return
            if result.rc is not None and result.rc < 0:
                log.error("Client %s (pid=%s) killed by signal %d.", entry.command,
                          last_pid, -result.rc)
            elif result.rc:
                log.error("Client %s exited with return code %d.", entry.command, result.rc)
            if result.rc == NO_RESPAWN_RC:
                log.error("Client %s exited with code %d: not respawned", entry.command,
                          NO_RESPAWN_RC)
                return
            short = short + 1 if loop.time() - began < SHORT_RUN else 0
            if short > MAX_SHORT:
                log.error("Client %s \"respawning too fast\"", entry.command)
                return
            log.error("Respawning client \"%s\":", entry.command)


def _ids(user: str) -> tuple[int, int, list[int]] | None:
    """(uid, gid, supplementary groups) of `user`, a name or a number; None: unknown."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError):
        return None
    try:
        groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    except OSError:
        groups = [entry.pw_gid]
    return entry.pw_uid, entry.pw_gid, groups


def check_entries(entries: tuple[Respawn, ...], filename: str) -> list[Problem]:
    """`hbd --check-config`: respawn lines whose user does not exist or whose program is
    missing or not executable.  Heartbeat 3.0.6 refuses to start with such a line
    (config.c add_client_child_base); hbd warns, keeps the cluster running without that
    program and logs the same at start.  Blocking (NSS, the file system)."""
    problems = []
    for entry in entries:
        if _ids(entry.user) is None:
            problems.append(Problem(filename, entry.line, f"respawn: no user {entry.user!r}: "
                                    f"{entry.argv[0]} will not be started (Heartbeat 3.0.6 "
                                    "refuses to start with this line)", Severity.WARNING))
        if not os.path.isfile(entry.argv[0]) or not os.access(entry.argv[0], os.X_OK):
            problems.append(Problem(filename, entry.line, f"respawn: {entry.argv[0]} is "
                                    "missing or not an executable file: it will not be "
                                    "started (Heartbeat 3.0.6 refuses to start with this "
                                    "line)", Severity.WARNING))
    return problems


def client_env(node: str, logfacility: str | None, logfile: str | None,
               debugfile: str | None, debug: int) -> dict[str, str]:
    """What Heartbeat's children find in their environment (heartbeat.c, config.c)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "LC_ALL": "C",
           "HA_cluster_type": "heartbeat", "HA_CURHOST": node, "HA_debug": str(debug)}
    if logfacility:
        env["HA_LOGFACILITY"] = logfacility
    if logfile:
        env["HA_LOGFILE"] = logfile
    if debugfile:
        env["HA_DEBUGLOG"] = debugfile
    return env
