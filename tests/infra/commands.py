"""Every external command the tests and benchmarks run, with its Debian package.

Why: on a fresh Debian 12 machine `.ci/test` once failed in every test that
cuts a link, because `nft` came from a package `.ci/bootstrap` never
installed (the development machine happened to have it).  So a command is
declared here with the package that provides it, tests/test_commands.py
checks each package against `.ci/bootstrap`'s list and against `dpkg -S` of
the command on the machine, and the audit hook below makes a test fail the
moment it starts a program that is not declared, whichever way it starts it
(`subprocess`, asyncio, `os.exec*`, `os.posix_spawn`), wrapped commands
included (``ip netns exec NS cmd``, ``nsenter ... -- cmd``).

The table extends the demo's (hbd/demo/commands.py).  Python processes the
tests start (hbd, hbctl, the demo, probes) load childaudit/sitecustomize.py
from their PYTHONPATH and are held to the same table, so a resource agent hbd
runs is checked too.  What escapes the check: scripts passed to ``sh -c``
(their commands, such as ``mount`` and ``hostname``, are declared by hand
below) and what non-Python programs start (Heartbeat's own helpers, systemd
inside the throwaway machine), which come with those programs' packages.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from hbd.demo.commands import DEMO, OWN, ROOT, Registry, UndeclaredCommand

__all__ = ["DEMO", "OWN", "TESTS", "UndeclaredCommand", "install_audit_hook", "popen", "run",
           "spawn", "take_violations"]

TEST_COMMANDS: Final = {
    # the lab (tests/infra/netns.py) and its isolation wrappers
    "nft": "nftables",  # silent cuts, partitions and loss on the switch's bridge
    "tc": "iproute2",  # netem where the kernel has it
    "ping": "iputils-ping",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "pivot_root": "util-linux",  # the throwaway systemd machine (tests/infra/sysd.py)
    "mount": "mount",  # inside spawn_isolated's and the bus holder's sh -c scripts
    "hostname": "hostname",
    "sh": "dash",
    "dash": "dash",
    "bash": "bash",
    "env": "coreutils",
    "timeout": "coreutils",
    "sleep": "coreutils",
    "cat": "coreutils",
    "id": "coreutils",
    "rm": "coreutils",
    "dd": "coreutils",  # filling a small tmpfs (the full-disk logging test)
    "test": "coreutils",
    "uname": "coreutils",  # platform.processor() and .architecture(), which Debian's
    "file": "file",  # pyroute2 0.7 calls when the system python3 imports it
    "kill": "procps",
    "pgrep": "procps",  # no check's process left behind
    "nice": "coreutils",
    "rsyslogd": "rsyslog",  # the frozen-syslog test's receiver
    "socat": "socat",  # serial links as pty pairs
    "tcpdump": "tcpdump",
    # real peers and their tools
    "keepalived": "keepalived",
    # run by resource-agents' IPaddr when the Heartbeat peer brings up a bare-IP group
    # (not a Python child: the audit hook cannot see it; a fresh machine lacked it)
    "ifconfig": "net-tools",
    "cl_status": "heartbeat",  # Heartbeat's client-API tool, against hbd too (issue 19)
    # run by hb_standby/hb_takeover's shellfuncs (ha_log, ha_clustermsg) inside their sh
    "ha_logger": "cluster-glue",
    "logger": "bsdutils",
    "basename": "coreutils",
    "expr": "coreutils",
    "setpriv": "util-linux",  # cl_status and API clients as nobody (issue 19); hbd without
    # CAP_SYS_NICE/CAP_IPC_LOCK (tests/test_realtime.py)
    "chrt": "util-linux",  # a daemon's and an agent's scheduling policy (issue 20)
    "grep": "grep",  # inside test_realtime.py's probe agent
    "corosync": "corosync",
    "corosync-keygen": "corosync",
    "corosync-quorumtool": "corosync",
    "corosync-cmapctl": "corosync",
    "cibadmin": "pacemaker-cli-utils",  # the Pacemaker export is checked by Pacemaker
    "crm_verify": "pacemaker-cli-utils",
    "crm_resource": "pacemaker-cli-utils",
    "crm": "crmsh",
    "pcs": "pcs",
    # fencing (issue 18): cluster-glue's stonith and meatware client, a harmless fence agent
    "stonith": "cluster-glue",
    "meatclient": "cluster-glue",
    "fence_dummy": "fence-agents",
    # D-Bus clients and systemd
    "dbus-send": "dbus-bin",
    "gdbus": "libglib2.0-bin",
    "systemctl": "systemd",
    "journalctl": "systemd",
    "systemd-run": "systemd",
    "systemd": "systemd",
    # packaging (tests/test_packaging.py)
    "dpkg": "dpkg",
    "dpkg-deb": "dpkg",
    "dpkg-buildpackage": "dpkg-dev",
    "dpkg-checkbuilddeps": "dpkg-dev",
    "dh": "debhelper",
    "lintian": "lintian",
    "checkbashisms": "devscripts",
    "groff": "groff-base",
    "rpm": "rpm",
    "rpmbuild": "rpm",
    "update-rc.d": "init-system-helpers",
    "apt-get": "apt",
    # what the packaging test installs and then runs inside its systemd machine
    "hbd": OWN,
    "hbctl": OWN,
}

TEST_PATHS: Final = {
    "/usr/lib/ocf/resource.d/heartbeat/": "resource-agents",  # Dummy, IPaddr2
    "/usr/libexec/heartbeat/": "heartbeat",  # the Heartbeat 3.0.6 peer
    "/usr/share/heartbeat/": "heartbeat",  # hb_standby, hb_takeover
    "/etc/ha.d/resource.d/": "heartbeat",
    "/usr/lib/polkit-1/polkitd": "polkitd",
    "/lib/systemd/systemd": "systemd",
    "/etc/init.d/hbd": OWN,  # installed from the .deb inside the systemd machine
    # the monitoring test's LSB script, bind-mounted over /etc/init.d for each hbd
    "/etc/init.d/udpsvc": OWN,
}

TESTS: Final = DEMO.extend(TEST_COMMANDS, TEST_PATHS)


def run(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """subprocess.run of a declared command line (same arguments, same defaults).

    Raises UndeclaredCommand before anything runs.
    """
    TESTS.check(argv, kwargs.get("cwd"))
    return subprocess.run(list(argv), **kwargs)


def popen(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """subprocess.Popen of a declared command line.  Raises UndeclaredCommand."""
    TESTS.check(argv, kwargs.get("cwd"))
    return subprocess.Popen(list(argv), **kwargs)


async def spawn(argv: Sequence[str], **kwargs: Any) -> asyncio.subprocess.Process:
    """asyncio.create_subprocess_exec of a declared command line.  Raises UndeclaredCommand."""
    TESTS.check(argv, kwargs.get("cwd"))
    return await asyncio.create_subprocess_exec(*argv, **kwargs)


# --- the audit hook -----------------------------------------------------------------
# Audit hooks cannot be removed, so the hook stays installed and the state it
# reports to lives here: what it refused, for the test that was running.

# os.spawn* and multiprocessing fork and then exec: "os.exec" in the child.
_EVENTS: Final = frozenset({"subprocess.Popen", "os.exec", "os.posix_spawn", "os.system"})
_lock = threading.Lock()
_violations: list[str] = []
_installed = False
_tolerated = 0  # >0 inside expect_refusal()


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event not in _EVENTS:
        return
    if event == "os.system":
        argv: Any = ["/bin/sh", "-c", args[0]]
        cwd = None
    elif event == "subprocess.Popen":
        argv, cwd = args[1], args[2]  # (executable, args, cwd, env)
    else:
        argv, cwd = args[1], None  # (path, args, env)
    try:
        _registry.check(argv if isinstance(argv, (str, bytes)) else list(argv),
                    os.fsdecode(cwd) if cwd is not None else None)
    except UndeclaredCommand as err:
        with _lock:
            if not _tolerated:
                _violations.append(str(err))
                if _report is not None:
                    _append(_report, f"pid {os.getpid()}: {err}")
        raise


def _append(path: str, line: str) -> None:
    # One write with O_APPEND: lines from several children do not interleave.
    # A child in another mount namespace (the systemd machine) may not see the
    # file; it still refuses the command, the test then fails on that.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, (line.replace("\n", " ") + "\n").encode())
        finally:
            os.close(fd)


_report: str | None = None  # set in a child: where to tell the test run what was refused
_registry: Registry = TESTS


def install_audit_hook(report: str | None = None, registry: Registry = TESTS) -> None:
    """From now on, refuse every program `registry` does not declare (idempotent).

    In a child process (see childaudit/sitecustomize.py) `report` is the file
    the test run reads the refusals from; the demo and what it starts are held
    to the demo's own, smaller table (CHILD_TABLE_ENV=demo).
    """
    global _installed, _report, _registry
    with _lock:
        if _installed:
            return
        _installed, _report, _registry = True, report, registry
    sys.addaudithook(_audit)


# --- the test run's children ----------------------------------------------------------
# hbd, hbctl, the demo and the probes run as child Python processes; hbd in
# turn starts resource agents.  Every Python child that inherits PYTHONPATH
# loads childaudit/sitecustomize.py, which installs the same hook there and
# appends what it refuses to the file named by CHILD_LOG_ENV.

CHILD_LOG_ENV: Final = "HBD_TEST_COMMAND_LOG"
CHILD_TABLE_ENV: Final = "HBD_TEST_COMMAND_TABLE"  # "demo": hold the child to DEMO
AUDIT_SITE: Final = Path(__file__).resolve().parent / "childaudit"
_child_log: Path | None = None


def enable_children(log: Path) -> None:
    """Have every Python child started from now on (with this environment) audited."""
    global _child_log
    log.touch(mode=0o666)
    os.chmod(log, 0o666)  # children running as test users write to it too
    _child_log = log
    os.environ[CHILD_LOG_ENV] = str(log)
    os.environ["PYTHONPATH"] = pythonpath(os.environ.get("PYTHONPATH", ""))


def pythonpath(*more: str) -> str:
    """PYTHONPATH for a child: the audit site when enabled, this repository, then `more`."""
    parts = [str(AUDIT_SITE)] if _child_log is not None else []
    parts.append(str(ROOT))
    for entry in (p for value in more for p in value.split(os.pathsep)):
        if entry and entry not in parts:
            parts.append(entry)
    return os.pathsep.join(parts)


def take_violations() -> list[str]:
    """What was refused since the last call, here or in a child (a test that
    swallowed the error, or whose daemon did, still fails)."""
    with _lock:
        found = list(_violations)
        _violations.clear()
    if _child_log is not None:
        with contextlib.suppress(OSError), open(_child_log, "r+") as f:
            found += [f"in a child, {line}" for line in f.read().splitlines() if line]
            f.truncate(0)
    return found


@contextmanager
def expect_refusal() -> Iterator[None]:
    """For the test of the mechanism itself: refusals inside are not held against it."""
    global _tolerated
    with _lock:
        _tolerated += 1
    try:
        yield
    finally:
        with _lock:
            _tolerated -= 1
