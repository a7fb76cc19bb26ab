"""hbd's entry point: arguments, --check-config, daemonizing, choosing the stack.

`main` reads and checks the configuration, then runs the daemon of the
configured cluster stack — `hbd.stack_heartbeat.HeartbeatDaemon` (hbd's own
Heartbeat-compatible links) or `hbd.stack_corosync.CorosyncDaemon` — on one
asyncio loop until it stops.  Both stand on `hbd.service.ServiceBase`.
Signals: SIGTERM/SIGINT stop cleanly, SIGHUP re-reads the configuration (a
bad new configuration is logged and the old one kept).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys

from hbd import __version__, configfiles, logs, realtime
from hbd.agents import DEFAULT_TIMEOUTS
from hbd.core.config import ClusterStack, HaCf, Severity
from hbd.errors import ConfigError, HbdError
from hbd.notify import Notifier
from hbd.service import Options, ServiceBase

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
    parser.add_argument("--heartbeat-dir", default="/var/lib/heartbeat",
                        help="where Heartbeat's tools find the daemon: the FIFO that "
                        "hb_standby and hb_takeover write to; '' for none (%(default)s)")
    parser.add_argument("--api-socket", default="/var/run/heartbeat/register",
                        help="Heartbeat's client API socket, where cl_status signs on; '' "
                        "for none (%(default)s)")
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
        heartbeat_dir=args.heartbeat_dir,
        api_socket=args.api_socket,
        agent_timeouts={op: getattr(args, f"{op}_timeout") for op in DEFAULT_TIMEOUTS},
    )
    daemon: ServiceBase
    if config.hacf.cluster_stack is ClusterStack.COROSYNC:  # membership from Corosync
        from hbd.stack_corosync import CorosyncDaemon

        daemon = CorosyncDaemon(options, config)
    else:
        from hbd.stack_heartbeat import HeartbeatDaemon

        daemon = HeartbeatDaemon(options, config)
    # after daemonizing (fork drops memory locks), in the thread that runs the loop
    daemon.realtime = realtime.apply(config.hacf.realtime, config.hacf.rtprio)
    # a helper thread holding the GIL hands it over after 1 ms, not 5: the loop waits less
    sys.setswitchinterval(0.001)
    return asyncio.run(daemon.run())


if __name__ == "__main__":
    sys.exit(main())
