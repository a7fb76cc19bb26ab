"""What the daemons of both cluster stacks share: one life, one dispatch, one timer.

`hbd.stack_heartbeat.HeartbeatDaemon` (Heartbeat's own links) and
`hbd.stack_corosync.CorosyncDaemon` differ in how they learn membership and
what drives their timer; everything a front end (D-Bus, hbctl) and systemd
see of them is the same and lives here once, and so does the way actions are
carried out (`_dispatch`: group work, events, publishing) and the single timer
(`_arm`, `_on_timer`: the stack's deadlines and the watchdog).

A stack provides `snapshot()`, `_apply()` (a reload), `_group_work()` (its
Failover or Placement), `_carry_out()` (the actions only it knows),
`_ROUTINE` (its pure traffic, which changes nothing an admin sees),
`_deadlines()` and `_timer_work()` (what its timer serves) and
`_publish_status()` (the STATUS= line); its `run()` strings together the
shared steps below with its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hbd import configfiles, eventlog, logs, realtime
from hbd.agents import DEFAULT_TIMEOUTS, AgentRunner
from hbd.control import Snapshot
from hbd.core.actions import (
    Action,
    AnnounceGroup,
    DeliverToClients,
    GroupStateChanged,
    LinkStatusChanged,
    NodeStatusChanged,
    PingNodeChanged,
    RunMonitor,
    StartGroup,
    StopGroup,
)
from hbd.core.config import ClusterConfig
from hbd.core.groupwork import GroupWork
from hbd.core.linktrack import LinkTracker, TrackedLink
from hbd.core.monitoring import Monitoring
from hbd.core.refresh import RefreshSchedule
from hbd.core.telemetry import Telemetry
from hbd.errors import ConfigError, HbdError, NoSuchGroup, NotFencing
from hbd.frontends import FrontEnds
from hbd.grouprunner import GroupRunner
from hbd.hooks import HookRunner, HookSettings
from hbd.looplag import GcPauses, LoopLag, StallLog, stall_threshold, summary
from hbd.notify import Notifier
from hbd.tracking import LinkTracking

log = logging.getLogger(__name__)

EARLY_OK = 0.002  # seconds the one timer may stay armed ahead of the earliest deadline


@dataclass(frozen=True)
class Options:
    config_dir: str
    state_dir: str
    runtime_dir: str
    node: str
    dbus: bool
    debug: bool
    # Heartbeat's run-time directory: its FIFO (hb_standby, hb_takeover); "" for none
    heartbeat_dir: str = "/var/lib/heartbeat"
    # Heartbeat's client API registration socket (cl_status); "" for none
    api_socket: str = "/var/run/heartbeat/register"
    agent_timeouts: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))


def make_agent_runner(options: Options, config: ClusterConfig) -> AgentRunner:
    return AgentRunner(ha_dir=options.config_dir,
                       resource_dir=f"{options.config_dir}/resource.d",
                       node_name=options.node, logfacility=config.hacf.logfacility,
                       timeouts=options.agent_timeouts)


class ServiceBase(FrontEnds):
    def __init__(self, options: Options, config: ClusterConfig) -> None:
        super().__init__()
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
        self.runner: GroupRunner | None = None
        self._watchdog_at: float | None = None  # next WATCHDOG=1, when systemd asks for it
        self._timer: asyncio.TimerHandle | None = None  # the one timer (_arm)
        self._timer_at: float | None = None  # when it fires
        self._timer_closed = False  # _cancel_timer: shutting down, never re-armed
        self._started = asyncio.Event()  # READY=1 sent: everything a reload touches exists
        self._hurry = False  # a second SIGTERM: no waiting for anything any more
        # notify hooks, fed from _dispatch; the gratuitous-ARP refresh, served by _on_timer
        self.hooks = HookRunner(options.node,
                                HookSettings.from_conf(config.hbd, options.config_dir))
        self.garp = RefreshSchedule(config.hbd.garp_refresh_ms / 1000.0)
        self.tracking: LinkTracking | None = None  # link tracking (_start_tracking)
        # Prometheus metrics: events counted here always (cheap); the outputs
        # (hbd.metricsloop.MetricsLoop) exist only while hbd.conf asks for them
        self.telemetry = Telemetry(options.node)
        # ha.cf realtime/rtprio as applied by daemon.main (None: nobody asked, e.g. a test
        # running the service inside its own process)
        self.realtime: realtime.RealtimeState | None = None
        # how late the one timer runs (hbd.looplag); announced at most once a second
        self.loop_lag = LoopLag()
        self._stalls = StallLog(stall_threshold(config.hacf.timers.keepalive_ms))
        self._lag_shown = 0  # late firings (LoopLag.late) last published
        self._lag_show_at = 0.0  # not before: the next announcement of the lag
        self._lag_pending = False  # one is scheduled
        self.gc_pauses = GcPauses()  # installed by _ready, reported by _report_pauses

    # --- what a stack provides ---------------------------------------------------------

    # Actions that are only traffic (sending, pinging, bookkeeping): they change nothing
    # an admin sees, so they alone do not publish.
    _ROUTINE: ClassVar[tuple[type, ...]] = ()

    def _snapshot(self) -> Snapshot:
        """The stack's part of the snapshot."""
        raise NotImplementedError

    async def _apply(self, new: ClusterConfig) -> None:
        """Put a checked new configuration into effect (the reload's own part)."""
        raise NotImplementedError

    def _group_work(self) -> GroupWork:
        raise NotImplementedError

    def _carry_out(self, action: Action) -> bool:
        """Carry out an action only this stack knows; False: not one of them."""
        raise NotImplementedError

    def _deadlines(self) -> Iterable[float | None]:
        """When the stack's timer work is next due (None: nothing from that source)."""
        raise NotImplementedError

    def _timer_work(self, now: float, wall: float) -> list[Action]:
        """What is due when the timer fires; it may fire early and find nothing due."""
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

    # --- actions and the single timer -----------------------------------------------------

    def _dispatch(self, actions: list[Action]) -> None:
        """Carry out the core's actions: group work here, the stack's own there, events
        to the journal."""
        # Anything but routine traffic may change what admins see (a standby ending
        # changes ResourcesHeld without a group event); _publish skips repeats.
        if self._loop is not None and any(not isinstance(a, self._ROUTINE) for a in actions):
            self._loop.call_soon(self._publish)
            self.hooks.feed(actions, time.time())  # only queues: the hooks run elsewhere
            self.telemetry.feed(actions, self._loop.time())
        for action in actions:
            try:
                self._carry_out_one(action)
            except Exception:  # one adapter's failure must not drop the rest of the batch
                log.exception("could not carry out %s", type(action).__name__)

    def _carry_out_one(self, action: Action) -> None:
        """One action; its failure is the caller's to contain."""
        if isinstance(action, DeliverToClients | PingNodeChanged):
            if self.api is not None:  # for Heartbeat's API clients only (a Notice logs)
                self.api.observe(action)
            return
        elif isinstance(action, NodeStatusChanged | LinkStatusChanged) and self.api is not None:
            self.api.observe(action)  # what Heartbeat's API clients hear of it
        if isinstance(action, GroupStateChanged) and self._loop is not None:
            self.garp.group_state(action.group, action.new, self._loop.time())
        if isinstance(action, StartGroup):
            assert self.runner is not None
            eventlog.log_event(action)
            self.runner.start(action.group)
        elif isinstance(action, StopGroup):
            assert self.runner is not None
            eventlog.log_event(action)
            self.runner.stop(action.group)
        elif isinstance(action, AnnounceGroup):
            assert self.runner is not None
            self.runner.announce(action.group)
        elif isinstance(action, RunMonitor):
            assert self.runner is not None
            self.runner.monitor(action.group, action.resources, action.timeout,
                                action.token)
        elif isinstance(action, GroupStateChanged):
            # the failover it ended, if any: the very figure the metrics' histogram took
            eventlog.log_event(action, self.telemetry.take_failover(action.group))
        elif self._carry_out(action):
            pass
        elif not eventlog.log_event(action):
            log.debug("unhandled action %r", action)

    def _arm(self) -> None:
        """Point the one timer at the earliest thing anybody is waiting for.

        Runs after every event.  A timer that fires no later than needed, and at
        most EARLY_OK before, stays, so busy traffic costs no cancel and re-arm per
        packet; one armed for a deadline that has since moved on (our status sent
        early, answering the peer's) is moved, or it would wake the loop for nothing.
        """
        assert self._loop is not None
        if self._timer_closed:
            return
        tracker = self.tracking.tracker.next_timer() if self.tracking is not None else None
        due = [t for t in (*self._deadlines(), self._watchdog_at, self.garp.next_timer(),
                           tracker) if t is not None]
        if not due:
            return
        deadline = min(due)
        if self._timer is not None:
            if self._timer_at is not None and deadline - EARLY_OK <= self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        due = self._timer_at
        self._timer = self._timer_at = None
        now, wall = self._now()
        if due is not None:
            self._observe_lag(now - due, now)
        try:
            for key in self.garp.due(now):
                if self.runner is not None:
                    self.runner.refresh(key)
            self._dispatch(self._timer_work(now, wall))
            if self.tracking is not None:
                self._dispatch(self.tracking.tracker.handle_timer(now, wall))
        except Exception:  # a bug must not stop the one timer: heartbeats, watchdog
            log.exception("the timer's work failed")
        finally:
            self._feed_watchdog(now)
            self._arm()

    def _observe_lag(self, lag: float, now: float) -> None:
        self.loop_lag.observe(lag)
        self._stalls.observe(lag, now)
        # only a late firing is news, and only to subscribers (D-Bus): the STATUS= line
        # and the metrics (which read loop_lag when they build) do not show it.
        # PropertiesChanged at most once a second, the last of a burst announced when
        # the second is over.
        if (not self._subscribers or self.loop_lag.late() == self._lag_shown
                or self._lag_pending):
            return
        assert self._loop is not None
        self._lag_pending = True
        if now >= self._lag_show_at:
            self._loop.call_soon(self._show_lag)
        else:
            self._loop.call_at(self._lag_show_at, self._show_lag)

    def _show_lag(self) -> None:
        assert self._loop is not None
        self._lag_pending = False
        self._lag_shown = self.loop_lag.late()
        self._lag_show_at = self._loop.time() + 1.0
        self._notify_subscribers()

    def _report_pauses(self) -> None:
        """At stop: the loop's lag and the collector's pauses since start."""
        self.gc_pauses.uninstall()
        log.info("%s", summary(self.loop_lag, self.gc_pauses))

    def _cancel_timer(self) -> None:
        """At shutdown, for good: a stopped engine's next heartbeat stays due, and a
        packet arriving meanwhile would re-arm the timer at that past deadline again
        and again (measured: a busy loop of 1,000+ firings in 0.5 s while the links
        and the fencer closed)."""
        self._timer_closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None

    # --- the life both stacks share ------------------------------------------------------

    def _handle_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        # the helper threads (to_thread: config reads, netlink lookups) run at the loop's
        # priority: a normal-priority thread preempted while holding the GIL would hold
        # up the real-time loop behind every other process on the machine
        loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="hbd-helper",
                                                     initializer=realtime.join_thread))
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    async def _start_runner(self) -> None:
        """Before joining: resolve the addresses, and stop whatever a previous hbd left up."""
        assert self._loop is not None
        self.runner = GroupRunner(self.config, make_agent_runner(self.options, self.config),
                                  self._group_done, self._monitor_done)
        await self.runner.prepare()
        for key, error in (await self.runner.stop_stale()).items():
            log.critical("group %s could not be stopped (%s): claiming it as blocked", key,
                         error)
            self._dispatch(self._group_work().adopt_blocked(key, self._loop.time()))

    # --- link tracking (hbd.tracking), on either stack ----------------------------------

    async def _start_tracking(self) -> None:
        """After _start_runner (the addresses are resolved): watch the links the groups
        need, feeding the stack's Failover or Placement (both are Monitoring)."""
        work = self._group_work()
        assert self._loop is not None and self.runner is not None
        assert isinstance(work, Monitoring)
        self.tracking = LinkTracking(LinkTracker(work), self._feed, self._now)
        await self.tracking.start(self._loop, self.config, self.runner)

    def _feed(self, actions: list[Action]) -> None:
        """Actions from an adapter's report (link tracking): dispatch, re-arm."""
        self._dispatch(actions)
        self._arm()
        self._check_finished()

    def _retrack(self, new: ClusterConfig) -> None:
        """After a reload's runner.prepare(): what is tracked, from the new addresses."""
        if self.tracking is not None and self.runner is not None:
            self.tracking.configure(new, self.runner)

    def _tracked(self) -> tuple[TrackedLink, ...]:
        return self.tracking.tracker.tracked() if self.tracking is not None else ()

    def _stop_tracking(self) -> None:
        if self.tracking is not None:
            self.tracking.close()

    async def _start_bus(self) -> None:
        """Own org.linuxha.hbd1 when D-Bus is on (or keep retrying: the cluster never waits)."""
        if self.options.dbus:
            from hbd.bus.service import BusService

            self.bus = BusService(self)
            await self.bus.start()

    def _ready(self, what: str) -> None:
        """READY=1, and the watchdog's first beat from the timer path."""
        log.info("ready: %s", what, extra={"HBD_MONOTONIC_USEC": time.monotonic_ns() // 1000})
        self.notifier.ready()
        self._started.set()
        self._spawn(self._configure_metrics(self.config))
        # What start-up built (modules, configuration, adapters, D-Bus objects) lives as
        # long as hbd: frozen, an oldest-generation collection no longer walks it all.
        gc.freeze()
        self.gc_pauses.install()
        if self.notifier.watchdog_interval is not None:
            assert self._loop is not None
            self._watchdog_at = self._loop.time()
            self._arm()

    def _feed_watchdog(self, now: float) -> None:
        # Fed from the engine's own timer path: if the loop or the engine wedges, the
        # feeding stops and systemd's WatchdogSec restarts us.
        if self._watchdog_at is not None and now >= self._watchdog_at:
            self.notifier.watchdog()
            assert self.notifier.watchdog_interval is not None
            self._watchdog_at = now + self.notifier.watchdog_interval

    async def _serve_until_stopped(self) -> None:
        """Wait for SIGTERM, stop the respawned clients and release every group (that
        order is Heartbeat's), return once they are all down."""
        await self._stop.wait()
        self._stopping = True
        await self._stop_respawn()
        now, wall = self._now()
        self._dispatch(self._group_work().shutdown(now, wall))
        self._arm()
        self._check_finished()
        await self._finished.wait()
        # the hooks still see the last events (the groups' `stopped`), for a bounded time
        await self.hooks.stop(0.0 if self._hurry else None)
        if self.metrics is not None and not self._hurry:  # hurried: its threads just end
            await self.metrics.close()
        self.metrics = None

    def _group_done(self, key: str, operation: str, ok: bool, detail: str) -> None:
        """The group runner finished a start or stop."""
        now, wall = self._now()
        log.log(logging.INFO if ok else logging.ERROR, "group %s %s %s%s", key, operation,
                "done" if ok else "FAILED", f": {detail}" if detail else "")
        try:
            self._dispatch(self._group_work().group_done(key, operation, ok, detail, now, wall))
        except HbdError as err:
            log.error("group %s: %s", key, err)
        self._arm()
        self._check_finished()

    def _monitor_done(self, key: str, token: int, ok: bool, detail: str) -> None:
        """The group runner finished a check (RunMonitor)."""
        work = self._group_work()
        if not isinstance(work, Monitoring):
            return
        now, wall = self._now()
        log.log(logging.DEBUG if ok else logging.WARNING, "group %s monitor %s: %s", key,
                "ok" if ok else "FAILED", detail)
        self.telemetry.monitor_result(key, ok)
        self._dispatch(work.monitor_done(key, token, ok, detail, now, wall))
        self._arm()
        self._check_finished()

    def _check_finished(self) -> None:
        # The group layer declares shutdown done only when no group job is left.
        if self._stopping and self._group_work().shutdown_done:
            self._finished.set()

    async def reload(self) -> None:
        """Re-read /etc/ha.d and apply it; raises ConfigError (the running one stays).

        A SIGHUP during start-up waits until READY: half-built adapters would apply
        only part of the new configuration.
        """
        await self._started.wait()
        async with self._reload_lock:
            if self._stopping:  # the adapters are being closed: nothing to apply to
                log.info("reload ignored: hbd is stopping")
                return
            self.notifier.reloading()
            try:
                try:
                    # reading files and asking netlink for our addresses block: off the loop
                    new = await asyncio.to_thread(configfiles.load_or_raise,
                                                  self.options.config_dir,
                                                  node_name=self.options.node)
                except ConfigError as err:
                    log.error("reload refused, keeping the running configuration:")
                    for problem in err.problems:
                        log.error("  %s", problem)
                    raise
                if self._stopping:  # SIGTERM came while the files were read
                    log.info("reload ignored: hbd is stopping")
                    return
                self._configure_logging(new)
                if self.realtime is not None:  # the loop's thread: this one
                    self.realtime = realtime.apply(new.hacf.realtime, new.hacf.rtprio,
                                                   previous=self.realtime)
                await self._apply(new)
                self.hooks.update(HookSettings.from_conf(new.hbd, self.options.config_dir))
                self.garp.configure(new.hbd.garp_refresh_ms / 1000.0, self._now()[0])
                self._stalls.threshold_s = stall_threshold(new.hacf.timers.keepalive_ms)
                self.config = new
                await self._configure_metrics(new)
                if self.api is not None:
                    from hbd.apiserver import resolve_apiauth

                    self.api.auth = await asyncio.to_thread(resolve_apiauth, new)
                if self.respawner is not None:
                    await self.respawner.update(new.hacf.respawn)
                elif new.hacf.respawn:
                    self._start_respawn()
                self._arm()
                log.info("configuration reloaded from %s", self.options.config_dir)
            finally:
                if self._stopping:
                    self.notifier.stopping()
                else:
                    self.notifier.ready()
                self._publish()

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
            self._hurry = True
            self._finished.set()
            return
        log.info("%s received: stopping", signame)
        self._stop.set()

    # --- front ends ---------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The cluster as front ends see it, with the daemon's own health."""
        return dataclasses.replace(
            self._snapshot(),
            realtime=self.realtime.text() if self.realtime is not None else "",
            loop_lag_max=self.loop_lag.max_s, loop_lag=self.loop_lag.histogram())

    def subscribe(self, callback: Callable[[Snapshot], None]) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def _publish(self) -> None:
        """STATUS= always; subscribers only when what they would see changed."""
        self._publish_status()
        if self.metrics is not None:
            self.metrics.state_changed()
        self._notify_subscribers()

    def _notify_subscribers(self) -> None:
        """Subscribers (D-Bus) get the snapshot when what they would see changed."""
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
        self.telemetry.command(method, now)  # accepted: what it starts is a failover
        self._dispatch(actions)
        self._arm()
        self._publish()

    async def takeover(self, scope: str) -> None:
        log.info("takeover [%s] requested", scope)
        self._command("takeover", scope)

    async def release(self, scope: str) -> None:
        log.info("standby [%s] requested", scope)
        self._command("release", scope)

    async def fence_confirm(self, node: str) -> None:
        """Overridden by the stacks that fence (the Heartbeat stack)."""
        raise NotFencing(f"this stack does not fence: nothing to confirm for {node!r}")

    async def cleanup(self, group: str) -> None:
        if group not in self._group_work().groups.groups:
            raise NoSuchGroup(f"no group {group!r} in haresources")
        log.info("cleanup of group %s requested", group)
        self._command("cleanup", group)
