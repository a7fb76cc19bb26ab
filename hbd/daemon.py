"""hbd's entry point: the only module that knows every other one.

It reads the configuration, builds the engine, opens the adapters and runs
one asyncio loop with a single timer.  Signals: SIGTERM/SIGINT stop cleanly,
SIGHUP re-reads the configuration (a bad new configuration is logged and the
old one kept).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
import time
from typing import Any

from hbd import __version__, configfiles, eventlog, logs
from hbd.agents import DEFAULT_TIMEOUTS
from hbd.control import Snapshot, build_snapshot
from hbd.core.actions import (
    Action,
    AnnounceGroup,
    PersistPeerGeneration,
    SendPing,
    StartGroup,
    StopGroup,
    Transmit,
)
from hbd.core.config import AuthMethod, ClusterConfig, ClusterStack, HaCf, Severity
from hbd.core.engine import Engine
from hbd.core.failover import Failover
from hbd.core.pingnodes import PingNodes
from hbd.errors import ConfigError, HbdError
from hbd.links import LinkSet
from hbd.notify import Notifier
from hbd.service import Options, ServiceBase
from hbd.state import StateDir

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hbd", description="Linux-HA Heartbeat-compatible failover daemon"
    )
    parser.add_argument("--config-dir", default=configfiles.DEFAULT_CONFIG_DIR,
                        help="directory holding ha.cf, haresources, authkeys (%(default)s)")
    parser.add_argument("--state-dir", default="/var/lib/hbd",
                        help="persistent state: generation number, node uuid (%(default)s)")
    parser.add_argument("--runtime-dir", default="/run/hbd",
                        help="reserved for runtime files; hbd keeps nothing there yet "
                        "(%(default)s)")
    parser.add_argument("--node", default=None,
                        help="this node's name (default: uname -n, lower-cased)")
    parser.add_argument("--no-dbus", action="store_true", help="do not use the system bus")
    parser.add_argument("--check-config", action="store_true",
                        help="check the configuration, print the effective cluster, exit 0/1")
    parser.add_argument("--debug", action="store_true", help="log debug messages")
    parser.add_argument("--daemonize", action="store_true",
                        help="fork into the background (SysV init scripts; not under systemd)")
    parser.add_argument("--pidfile", default="/run/hbd.pid",
                        help="pid file written with --daemonize (%(default)s)")
    # Heartbeat waited forever on a hung agent; hbd kills it and blocks the group.
    for operation, default in DEFAULT_TIMEOUTS.items():
        parser.add_argument(f"--{operation}-timeout", type=_seconds, default=default,
                            metavar="SECONDS",
                            help=f"kill a resource agent's {operation} after this long, "
                                 "then treat it as failed (%(default)s)")
    parser.add_argument("--version", action="version", version=f"hbd {__version__}")
    return parser.parse_args(argv)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds: {text}")
    return value


def check_config(args: argparse.Namespace) -> int:
    """`hbd --check-config`: every problem, then the effective cluster (like keepalived -t)."""
    config, problems = configfiles.load(args.config_dir, node_name=args.node)
    for problem in problems:
        print(problem, file=sys.stderr)
    if config is None:
        errors = sum(1 for p in problems if p.severity is Severity.ERROR)
        print(f"configuration invalid: {errors} error(s)", file=sys.stderr)
        return 1
    print(configfiles.describe(config))
    print("configuration OK")
    return 0


class Daemon(ServiceBase):
    """Owns the loop, the single timer, the engine and the adapters."""

    def __init__(self, options: Options, config: ClusterConfig) -> None:
        super().__init__(options, config)
        self.state = StateDir(options.state_dir)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._load_read_at = 0.0
        self.engine: Engine | None = None
        self.failover: Failover | None = None
        self.pingnodes: PingNodes | None = None
        self.pinger: Any = None  # hbd.net.icmp.Pinger when ping nodes are configured
        self.links: LinkSet | None = None

    def _group_work(self) -> Failover:
        assert self.failover is not None
        return self.failover

    async def _apply(self, new: ClusterConfig) -> None:
        engine, failover, links, runner, pings = (self.engine, self.failover, self.links,
                                                  self.runner, self.pingnodes)
        assert engine is not None and failover is not None and links is not None
        assert runner is not None and pings is not None and self._loop is not None
        for warning in new.warnings:
            log.warning("%s", warning)
        now, wall = self._now()
        engine.reconfigure(new, now)
        if new.hacf.links != self.config.hacf.links:
            links.close_all()
            self.links = LinkSet(new.hacf, self._on_packet)
            self.links.open_all(self._loop)
        pings.update(new.hacf)
        runner.update(new)
        self._dispatch(failover.reconfigure(new, now, wall))
        self._arm()  # before the netlink work below: timers may have changed
        await runner.prepare()

    # --- the engine and its single timer ------------------------------------------------

    def _on_packet(self, data: bytes, link: int) -> None:
        assert self.engine is not None
        now, wall = self._now()
        self._dispatch(self.engine.receive(data, link, now, wall))
        self._arm()

    def _on_timer(self) -> None:
        assert self.engine is not None and self.links is not None
        self._timer = self._timer_at = None
        now, wall = self._now()
        self.links.retry(now)
        if now - self._load_read_at >= 5.0:
            self._load_read_at = now
            self.engine.outbox.load = _loadavg()
        self._dispatch(self.engine.handle_timer(now, wall))
        self._feed_watchdog(now)
        self._arm()

    def _arm(self) -> None:
        """Point the one timer at the earliest thing anybody is waiting for."""
        assert self._loop is not None and self.engine is not None and self.links is not None
        deadline = self.engine.next_timer()
        retry = self.links.next_retry()
        if retry is not None:
            deadline = min(deadline, retry)
        if self._watchdog_at is not None:
            deadline = min(deadline, self._watchdog_at)
        if self._timer is not None:
            if self._timer_at is not None and self._timer_at <= deadline:
                return  # it fires no later than needed; re-armed then
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    # --- the Controller protocol (hbd.control): what D-Bus and hbctl may ask ---------

    def snapshot(self) -> Snapshot:
        assert self.failover is not None and self.links is not None
        pings = self.pingnodes.statuses(self._now()[0]) if self.pingnodes is not None else None
        return build_snapshot(self.failover, self.links.status(), pings)

    def _publish_status(self) -> None:
        if self.failover is None or self.links is None:
            return
        snapshot = self.snapshot()
        peers = ", ".join(f"{n.name} {n.status}" for n in snapshot.nodes if not n.local)
        local = next(n.status for n in snapshot.nodes if n.local)
        self.notifier.status(f"{local}; peers: {peers or 'none'}; "
                             f"holding: {snapshot.resources_held}")

    def _dispatch(self, actions: list[Action]) -> None:
        assert self.links is not None
        # Anything but routine traffic may change what admins see (a standby ending
        # changes ResourcesHeld without a group event); _publish skips repeats.
        if any(not isinstance(a, _ROUTINE) for a in actions):
            asyncio.get_running_loop().call_soon(self._publish)
        for action in actions:
            if isinstance(action, Transmit):
                self.links.send(action)
            elif isinstance(action, StartGroup):
                assert self.runner is not None
                eventlog.log_event(action)
                self.runner.start(action.group)
            elif isinstance(action, StopGroup):
                assert self.runner is not None
                eventlog.log_event(action)
                self.runner.stop(action.group)
            elif isinstance(action, SendPing):
                if self.pinger is not None:
                    self.pinger.send(action.address)
            elif isinstance(action, AnnounceGroup):
                assert self.runner is not None
                self.runner.announce(action.group)
            elif isinstance(action, PersistPeerGeneration):
                try:
                    self.state.record_peer_generation(action.node, action.generation)
                except OSError as err:
                    log.warning("cannot record the generation of %s: %s", action.node, err)
            elif not eventlog.log_event(action):
                log.debug("unhandled action %r", action)

    async def run(self) -> int:
        self._loop = loop = asyncio.get_running_loop()
        self._handle_signals(loop)
        self._configure_logging(self.config)
        try:
            self.state.ensure()
            uuid = self.state.uuid()
            generation = self.state.next_generation(time.time())
            peers = self.state.peer_generations()
        except OSError as err:
            log.error("cannot use state directory %s: %s", self.options.state_dir, err)
            self.notifier.errno(err.errno or 5)
            return 1
        log.info("hbd %s starting as node %s (generation %d)", __version__, self.options.node,
                 generation)
        if self.config.auth.active_key.method is AuthMethod.CRC:
            log.warning("authkeys signs with crc: that authenticates nothing; anyone on the "
                        "heartbeat network can forge messages. Use sha1 or blake2b.")
        self.engine = Engine(self.config, uuid=uuid, generation=generation, now=loop.time(),
                             peer_generations=peers)
        self.failover = Failover(self.engine, self.config)
        self.pingnodes = PingNodes(self.engine, self.failover, self.config.hacf)
        if self.pingnodes.addresses:
            from hbd.net.icmp import Pinger

            pings = self.pingnodes
            try:
                self.pinger = Pinger(lambda address: pings.ping_reply(address, loop.time()))
            except (OSError, HbdError) as err:
                log.error("cannot ping the ping nodes (%s): they will count as unreachable", err)
        await self._start_runner()
        self.links = LinkSet(self.config.hacf, self._on_packet)
        self.links.open_all(loop)
        now, wall = self._now()
        self._dispatch(self.engine.start(now, wall))
        self._arm()
        await self._start_bus()
        # Ready: configuration loaded, links opened (failed ones keep retrying), bus name
        # owned when D-Bus is on (BusService.start returns once owned, or after a logged
        # failure: the cluster does not wait for the bus).
        self._publish_status()
        links = self.links.status()
        self._ready(f"{sum(links.values())} of {len(links)} link(s) open" + (
            "" if self.bus is None else
            f", D-Bus name {'owned' if self.bus.owned else 'not (yet) owned'}"))
        await self._serve_until_stopped()
        self.engine.stop_heartbeats()
        if self._timer is not None:
            self._timer.cancel()
        await asyncio.sleep(0.05)  # let a buffered serial write of `shutdone` drain
        self.links.close_all()
        if self.pinger is not None:
            self.pinger.close()
        if self.bus is not None:
            await self.bus.stop()
        log.info("hbd stopped")
        return 0


_ROUTINE = (Transmit, PersistPeerGeneration, SendPing)


def _loadavg() -> str:
    """Heartbeat's `ld` field: the first line of /proc/loadavg."""
    try:
        with open("/proc/loadavg") as f:
            return f.readline().strip() or "n/a"
    except OSError:
        return "n/a"


def detached_logging(hacf: HaCf) -> HaCf:
    """--daemonize loses stderr: with no syslog facility and no log file, lines would go
    nowhere, so they go to syslog's `daemon` facility.  A `logfacility none` next to a
    logfile or debugfile is respected (the files get everything)."""
    files = [f for f in (hacf.logfile, hacf.debugfile) if f and f != "/dev/null"]
    if hacf.logfacility is None and not files:
        return dataclasses.replace(hacf, logfacility="daemon")
    return hacf


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check_config:
        return check_config(args)
    logs.setup(debug=args.debug)
    node = (args.node or configfiles.default_node_name()).lower()
    try:
        config = configfiles.load_or_raise(args.config_dir, node_name=node)
    except ConfigError as err:
        log.error("configuration invalid, not starting:")
        for problem in err.problems:
            log.error("  %s", problem)
        Notifier().errno(22)  # EINVAL: systemctl status shows why it failed
        return 1
    for warning in config.warnings:
        log.warning("%s", warning)
    if args.daemonize:
        from hbd import sysv

        try:
            sysv.daemonize(args.pidfile)
        except HbdError as err:
            log.error("%s", err)
            return 1
        config = dataclasses.replace(config, hacf=detached_logging(config.hacf))
        logs.setup(debug=args.debug, to_journal=False)
    options = Options(
        config_dir=args.config_dir,
        state_dir=args.state_dir,
        runtime_dir=args.runtime_dir,
        node=node,
        dbus=not args.no_dbus,
        debug=args.debug,
        agent_timeouts={op: getattr(args, f"{op}_timeout") for op in DEFAULT_TIMEOUTS},
    )
    if config.hacf.cluster_stack is ClusterStack.COROSYNC:  # membership from Corosync
        from hbd.stack_corosync import CorosyncDaemon

        return asyncio.run(CorosyncDaemon(options, config).run())
    return asyncio.run(Daemon(options, config).run())


if __name__ == "__main__":
    sys.exit(main())
