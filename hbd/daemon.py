"""hbd's entry point: the only module that knows every other one.

It reads the configuration, builds the engine, opens the adapters and runs
one asyncio loop with a single timer.  Signals: SIGTERM/SIGINT stop cleanly,
SIGHUP re-reads the configuration (a bad new configuration is logged and the
old one kept).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import dataclass

from hbd import __version__, configfiles, logs
from hbd.core.config import ClusterConfig, Severity
from hbd.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    config_dir: str
    state_dir: str
    runtime_dir: str
    node: str
    dbus: bool
    debug: bool


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hbd", description="Linux-HA Heartbeat-compatible failover daemon"
    )
    parser.add_argument("--config-dir", default=configfiles.DEFAULT_CONFIG_DIR,
                        help="directory holding ha.cf, haresources, authkeys (%(default)s)")
    parser.add_argument("--state-dir", default="/var/lib/hbd",
                        help="persistent state: generation number, node uuid (%(default)s)")
    parser.add_argument("--runtime-dir", default="/run/hbd",
                        help="runtime files (%(default)s)")
    parser.add_argument("--node", default=None,
                        help="this node's name (default: uname -n, lower-cased)")
    parser.add_argument("--no-dbus", action="store_true", help="do not use the system bus")
    parser.add_argument("--check-config", action="store_true",
                        help="check the configuration, print the effective cluster, exit 0/1")
    parser.add_argument("--debug", action="store_true", help="log debug messages")
    parser.add_argument("--version", action="version", version=f"hbd {__version__}")
    return parser.parse_args(argv)


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


class Daemon:
    """Owns the loop, the single timer and, later, the engine and adapters."""

    def __init__(self, options: Options, config: ClusterConfig) -> None:
        self.options = options
        self.config = config
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def request_reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> None:
        try:
            # Reading files and asking netlink for our addresses blocks: keep it off the loop.
            new = await asyncio.to_thread(
                configfiles.load_or_raise, self.options.config_dir, node_name=self.options.node
            )
        except ConfigError as err:
            log.error("reload refused, keeping the running configuration:")
            for problem in err.problems:
                log.error("  %s", problem)
            return
        self.config = new
        log.info("configuration reloaded from %s", self.options.config_dir)

    def request_stop(self, signame: str) -> None:
        log.info("%s received: stopping", signame)
        self._stop.set()

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        self._loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        self._loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        log.info("hbd %s starting as node %s", __version__, self.options.node)
        await self._stop.wait()
        log.info("hbd stopped")
        return 0


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
        return 1
    for warning in config.warnings:
        log.warning("%s", warning)
    options = Options(
        config_dir=args.config_dir,
        state_dir=args.state_dir,
        runtime_dir=args.runtime_dir,
        node=node,
        dbus=not args.no_dbus,
        debug=args.debug,
    )
    return asyncio.run(Daemon(options, config).run())


if __name__ == "__main__":
    sys.exit(main())
