"""The demo's two hbd nodes: their /etc/ha.d, their private buses, their logs.

Each node gets a directory in the lab's work directory holding what would be
/etc/ha.d on a real machine (ha.cf, haresources, authkeys), hbd's state and
runtime directories, its log, and, when dbus-daemon is installed, a bus of
its own: on a real cluster every node has its own system bus, and the bus
name org.linuxha.hbd1 is per node.  That bus allows root to own
org.linuxha.hbd1 and anyone to call it, as hbd's shipped policy does; with no
polkitd on it, hbd lets root (and only root) manage the cluster.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import hbd
from hbd.demo.journal import JournalCatcher
from hbd.demo.lab import Lab
from hbd.logs import JOURNAL_SOCKET_ENV

VIP = "10.77.0.240"
PORT = 7777  # the demo service: a UDP responder on each node
METRICS_PORT = 9817  # hbd.conf metrics_listen: each node's Prometheus metrics
NODES = ("n1", "n2")

HA_CF = """\
# ha.cf of both nodes: heartbeats every 200 ms by broadcast on eth0; a node
# silent for 1 s is dead; the address goes home to n1 when n1 is back.
keepalive 200ms
deadtime 1
warntime 500ms
initdead 2
bcast eth0
auto_failback on
node n1 n2
"""

HARESOURCES = f"""\
# haresources: one group, preferred on n1: the virtual IP {VIP} on eth0.
n1 {VIP}/24/eth0
"""

BUS_CONF = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- A private bus for one demo node: system-bus rules for hbd (only root may
     own org.linuxha.hbd1; anyone may call it), nothing else on it. -->
<busconfig>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <deny own="*"/>
  </policy>
  <policy user="root">
    <allow own="org.linuxha.hbd1"/>
  </policy>
</busconfig>
"""

# hbd.cluster carries the cluster's events (eventlog.py); of the rest, only these.
_OTHER_LOGGERS = {
    "__main__": ("ready:", "takeover [", "standby [", "SIGTERM received", "hbd stopped"),
    "hbd.service": ("ready:", "takeover [", "standby [", "SIGTERM received"),
    "hbd.stack_heartbeat": ("hbd stopped",),
    "hbd.bus.service": ("authorized for", "refused"),
}
# Bookkeeping lines that would drown the story.
_BORING = ("resources held:", "transition completed", "lost packet")


def authkeys_text() -> str:
    return f"auth 1\n1 sha1 {secrets.token_hex(16)}\n"


class LogTail:
    """New complete lines of a growing log file, each time it is asked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        *complete, self.partial = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in complete]


def interesting(line: str) -> str | None:
    """The message of an hbd log line worth showing a newcomer, or None.

    hbd logs to stderr as `2024-01-01 12:00:00,123 hbd.cluster WARNING: node n1: is dead`.
    """
    head, sep, message = line.partition(": ")
    words = head.split()
    if not sep or len(words) != 4:
        return None
    logger, level = words[2], words[3]
    if level in ("ERROR", "CRITICAL") and logger != "hbd.cluster":
        return f"{level}: {message}"
    if any(word in message for word in _BORING):
        return None
    if logger == "hbd.cluster":
        return message
    return message if message.startswith(_OTHER_LOGGERS.get(logger, ())) else None


@dataclass
class Node:
    name: str
    dir: Path
    bus_address: str | None = None
    bus_proc: subprocess.Popen[bytes] | None = None  # its dbus-daemon
    proc: subprocess.Popen[bytes] | None = None  # hbd itself
    journal: JournalCatcher | None = None  # its journal entries (hbd/demo/journal.py)
    tail: LogTail = field(init=False)
    pid: int | None = None

    def __post_init__(self) -> None:
        self.tail = LogTail(self.log_path)

    @property
    def config_dir(self) -> Path:
        return self.dir / "ha.d"

    @property
    def log_path(self) -> Path:
        return self.dir / "hbd.log"

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "hbd.daemon", "--config-dir", str(self.config_dir),
                "--state-dir", str(self.dir / "state"), "--runtime-dir", str(self.dir / "run"),
                # each demo node its own Heartbeat FIFO and API socket, not the host's
                "--heartbeat-dir", str(self.dir / "heartbeat"),
                "--api-socket", str(self.dir / "heartbeat" / "register"), "--node", self.name]
        return argv if self.bus_address else [*argv, "--no-dbus"]


def write_config(lab: Lab, authkeys: str) -> dict[str, Node]:
    """Write each node's ha.d (the same three files on both, as Heartbeat wants)."""
    nodes = {}
    for name in NODES:
        node = Node(name, lab.workdir / name)
        node.config_dir.mkdir(parents=True)
        (node.config_dir / "ha.cf").write_text(HA_CF)
        (node.config_dir / "haresources").write_text(HARESOURCES)
        (node.config_dir / "hbd.conf").write_text(
            "# hbd.conf: hbd's own settings (Heartbeat never reads this file)\n"
            f"metrics_listen {lab.hosts[name].address}:{METRICS_PORT}\n")
        keys = node.config_dir / "authkeys"
        fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(authkeys)
        nodes[name] = node
    return nodes


def have_dbus() -> bool:
    return shutil.which("dbus-daemon") is not None


def start_bus(lab: Lab, node: Node, timeout: float = 10.0) -> None:
    """A private dbus-daemon for `node`, in its namespace.  Raises TimeoutError."""
    socket_path = node.dir / "bus.socket"
    conf = node.dir / "bus.conf"
    conf.write_text(BUS_CONF.format(socket=socket_path))
    node.bus_proc = lab.spawn(node.name, ["dbus-daemon", "--nofork", f"--config-file={conf}"],
                              output=node.dir / "dbus.log")
    deadline = time.monotonic() + timeout
    while not socket_path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"dbus-daemon for {node.name} did not start; see "
                               f"{node.dir / 'dbus.log'}")
        time.sleep(0.02)
    node.bus_address = f"unix:path={socket_path}"


def hbd_env(node: Node) -> dict[str, str]:
    env = dict(os.environ)
    # hbd logs to the journal and talks to systemd when it finds these: not here.
    for name in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "INVOCATION_ID", "WATCHDOG_USEC",
                 "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"):
        env.pop(name, None)
    package_root = str(Path(hbd.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH"))
                                        if p)
    if node.journal is not None:
        env[JOURNAL_SOCKET_ENV] = str(node.journal.socket_path)
    if node.bus_address:
        env["DBUS_SYSTEM_BUS_ADDRESS"] = node.bus_address
    else:
        env.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
    return env


def start_hbd(lab: Lab, node: Node) -> None:
    if node.journal is None:  # kept across restarts: one history per node
        node.journal = JournalCatcher(node.dir / "journal.socket", node.dir / "journal.json",
                                      node.name)
    proc = lab.spawn(node.name, node.argv(), output=node.log_path, env=hbd_env(node))
    node.proc = proc
    node.pid = proc.pid


def client_env() -> dict[str, str]:
    env = dict(os.environ)
    package_root = str(Path(hbd.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH"))
                                        if p)
    return env
