"""`python -m hbd.demo [--non-interactive] [--no-dbus]`: a live two-node failover.

Needs root (network namespaces) and iproute2; dbus-daemon and busctl for
the D-Bus step.  Everything it creates is removed when it ends, however it
ends: normally, on a failed check, on Ctrl-C, SIGTERM or SIGHUP.  What a
run killed with SIGKILL leaves behind, the next run removes first.

Exit status: 0 when every check held (the cluster formed, the takeover
after the cable cut, the failback after the restore, and the D-Bus and
auto_failback steps), 1 when one failed, 2 when the demo cannot run here,
130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from types import FrameType

from hbd.demo import commands
from hbd.demo.lab import LabError, cleanup_stale
from hbd.demo.scenario import Demo, StepFailed
from hbd.demo.view import Screen, ansi_capable


class Interrupted(Exception):
    """SIGTERM or SIGHUP: stop the demo and clean up, as Ctrl-C does."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hbd.demo",
        description="A live two-node hbd failover in network namespaces on this machine.")
    parser.add_argument("--non-interactive", action="store_true",
                        help="no pauses and plain line output (CI); exit 1 unless every "
                             "check held")
    parser.add_argument("--no-dbus", action="store_true",
                        help="run hbd without D-Bus and skip the manual takeover step")
    return parser.parse_args(argv)


def preflight() -> str | None:
    if os.geteuid() != 0:
        return "the demo needs root: it creates network namespaces (try: sudo bash .ci/demo)"
    # Only `ip` is indispensable: without dbus-daemon, busctl or setpriv the demo
    # runs with less (no bus, hbctl instead of busctl, no pdeathsig).
    if shutil.which("ip") is None:
        return (f"`ip` is not installed (apt-get install {commands.DEMO_COMMANDS['ip']}, "
                "or run: bash .ci/demo)")
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = preflight()
    if problem is not None:
        print(f"hbd demo: {problem}", file=sys.stderr)
        return 2
    interactive = not args.non_interactive and sys.stdin.isatty()
    screen = Screen(live=not args.non_interactive and ansi_capable(sys.stdout))
    removed = cleanup_stale()
    if removed:
        screen.say(f"Removed what an earlier, killed demo left behind: {', '.join(removed)}")
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    # Ctrl-C must clean up even when started with SIGINT ignored (a background job).
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    demo = Demo(screen, interactive=interactive, use_dbus=not args.no_dbus)
    screen.say(screen.bold("hbd demo: two nodes, one virtual IP, a client, and a pulled cable"))
    if interactive:
        screen.say("Press Enter at each step; Ctrl-C at any time stops and cleans up.")
    code = 1
    try:
        demo.run()
        code = 1 if demo.failed else 0
    except StepFailed:
        code = 1
    except (KeyboardInterrupt, Interrupted) as err:
        screen.drop_status()
        screen.say(f"\nInterrupted ({str(err) or 'Ctrl-C'}): cleaning up.")
        code = 130
    except (LabError, TimeoutError, OSError) as err:
        screen.drop_status()
        screen.say(f"\nhbd demo: {err}")
        code = 2 if not demo.checks else 1
    finally:
        # Nothing may interrupt the cleanup itself; it has its own time limits.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if code != 130:
            demo.summary()
        left = demo.cleanup()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if left:
        return max(code, 1)
    return code
