"""What the daemons of both cluster stacks share: signals, tasks, subscribers, admin commands.

`hbd.daemon.Daemon` (Heartbeat's own links) and
`hbd.stack_corosync.CorosyncDaemon` differ in how they learn membership and
what drives their timer; everything a front end (D-Bus, hbctl) and systemd
see of them is the same and lives here once.  A subclass provides
`snapshot()`, `reload()`, `_group_work()` (its Failover or Placement),
`_dispatch()`, `_arm()` and `_publish_status()` (the STATUS= line).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from hbd import logs
from hbd.control import Snapshot
from hbd.core.actions import Action
from hbd.core.config import ClusterConfig
from hbd.core.groupwork import GroupWork
from hbd.errors import ConfigError, NoSuchGroup
from hbd.notify import Notifier

if TYPE_CHECKING:  # hbd.daemon imports this module
    from hbd.daemon import Options

log = logging.getLogger(__name__)


class ServiceBase:
    def __init__(self, options: Options, config: ClusterConfig) -> None:
        self.options = options
        self.config = config
        self.notifier = Notifier()
        self.bus: Any = None  # hbd.bus.service.BusService when D-Bus is on
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()  # SIGTERM/SIGINT asked us to stop
        self._finished = asyncio.Event()  # every group is down (or a second signal came)
        self._stopping = False
        self._subscribers: list[Callable[[Snapshot], None]] = []
        self._last_snapshot: Snapshot | None = None
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- what a subclass provides -------------------------------------------------------

    def snapshot(self) -> Snapshot:
        raise NotImplementedError

    async def reload(self) -> None:
        raise NotImplementedError

    def _group_work(self) -> GroupWork:
        raise NotImplementedError

    def _dispatch(self, actions: list[Action]) -> None:
        raise NotImplementedError

    def _arm(self) -> None:
        raise NotImplementedError

    def _publish_status(self) -> None:
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------

    def _now(self) -> tuple[float, float]:
        assert self._loop is not None
        return self._loop.time(), time.time()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    def _configure_logging(self, config: ClusterConfig) -> None:
        hacf = config.hacf
        logs.configure(debug=self.options.debug, logfacility=hacf.logfacility,
                       logfile=hacf.logfile, debugfile=hacf.debugfile)

    def request_reload(self) -> None:
        """SIGHUP: a refused configuration is already logged; the running one stays."""
        async def reload() -> None:
            with contextlib.suppress(ConfigError):
                await self.reload()

        self._spawn(reload())

    def request_stop(self, signame: str) -> None:
        self.notifier.stopping()
        if self._stopping:
            log.critical("%s received again: exiting now, without waiting for resources",
                         signame)
            self._finished.set()
            return
        log.info("%s received: stopping", signame)
        self._stop.set()

    # --- front ends ---------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Snapshot], None]) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def _publish(self) -> None:
        """STATUS= always; subscribers only when what they would see changed."""
        self._publish_status()
        if not self._subscribers:
            return
        snapshot = self.snapshot()
        if snapshot == self._last_snapshot:
            return
        self._last_snapshot = snapshot
        for callback in list(self._subscribers):
            try:
                callback(snapshot)
            except Exception:  # a front end's bug must never stop the cluster
                log.exception("state subscriber failed")

    def _command(self, method: str, *args: str) -> None:
        """Run one admin command now; its errors (InvalidScope, Busy...) propagate."""
        now, wall = self._now()
        actions: list[Action] = getattr(self._group_work(), method)(*args, now, wall)
        self._dispatch(actions)
        self._arm()
        self._publish()

    async def takeover(self, scope: str) -> None:
        log.info("takeover [%s] requested", scope)
        self._command("takeover", scope)

    async def release(self, scope: str) -> None:
        log.info("standby [%s] requested", scope)
        self._command("release", scope)

    async def cleanup(self, group: str) -> None:
        if group not in self._group_work().groups.groups:
            raise NoSuchGroup(f"no group {group!r} in haresources")
        log.info("cleanup of group %s requested", group)
        self._command("cleanup", group)
