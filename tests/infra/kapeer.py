"""Run real keepalived (VRRP) peers inside :class:`~tests.infra.netns.Lab` nodes.

Why: keepalived is the other widely deployed failover daemon; tests use it
as a reference for VRRP timing/ARP behaviour and to check that hbd coexists
with (or replaces) it on the same wire.  Each peer runs in its node's netns
with private mount/UTS/PID namespaces; ``/etc/keepalived``, ``/run`` and
``/tmp`` (keepalived dumps state files there) are per-node directories, so
pid files and state never collide between nodes or with the host.

The VRRP state is read from keepalived's own log (``Entering MASTER STATE``
etc.), which needs no notify scripts (and hence no script-security setup).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence

from tests.infra.netns import Isolated, Lab, LabError, wait_for

log = logging.getLogger(__name__)

_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
_STATE_RE = re.compile(r"\(([^)]+)\) Entering (\w+) STATE")


def find_keepalived() -> str | None:
    return shutil.which("keepalived", path=_ENV["PATH"])


def render_keepalived_conf(*, priority: int, vips: Sequence[str] = ("10.77.0.250/24",),
                           interface: str = "eth0", vrid: int = 51, state: str = "BACKUP",
                           advert_int: str = "0.1", instance: str = "VI_1",
                           nopreempt: bool = False, router_id: str = "hbdt",
                           extra: Sequence[str] = ()) -> str:
    """A minimal VRRPv3 instance with sub-second adverts (fast failover in tests).

    VRRPv3 counts adverts in centiseconds, so ``advert_int 0.1`` is legal;
    master-down is then ~3 x 100 ms plus skew.
    """
    lines = [
        "global_defs {",
        f"    router_id {router_id}",
        "    vrrp_version 3",
        "    vrrp_garp_master_delay 1",
        "}",
        f"vrrp_instance {instance} {{",
        f"    state {state}",
        f"    interface {interface}",
        f"    virtual_router_id {vrid}",
        f"    priority {priority}",
        f"    advert_int {advert_int}",
        *(["    nopreempt"] if nopreempt else []),
        *(f"    {x}" for x in extra),
        "    virtual_ipaddress {",
        *(f"        {v} dev {interface}" for v in vips),
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


class KeepalivedPeer:
    """One keepalived (VRRP only) with private config, pid files and /tmp."""

    def __init__(self, lab: Lab, node: str, config: str, *, binary: str | None = None) -> None:
        binary = binary or find_keepalived()
        if binary is None:
            raise LabError("keepalived binary not found")
        self.lab, self.node, self.binary = lab, node, binary
        self.root = lab.node_dir(node) / "keepalived"
        if self.root.exists():
            shutil.rmtree(self.root)
        self.etc, self.run_dir, self.tmp = (self.root / d for d in ("etc", "run", "tmp"))
        for d in (self.etc, self.run_dir, self.tmp):
            d.mkdir(parents=True)
        os.chmod(self.tmp, 0o1777)
        (self.etc / "keepalived.conf").write_text(config)
        self.output = self.root / "keepalived.log"
        self.iso: Isolated | None = None

    def start(self) -> KeepalivedPeer:
        argv = [self.binary, "--dont-fork", "--log-console", "--log-detail", "--no-syslog",
                "--vrrp", "--use-file=/etc/keepalived/keepalived.conf",
                "--pid=/run/keepalived.pid", "--vrrp_pid=/run/keepalived_vrrp.pid"]
        # /tmp last: the bind sources live under the host's /tmp
        self.iso = self.lab.spawn_isolated(
            self.node, argv, hostname=self.node, env=_ENV, output=self.output,
            binds={"/etc/keepalived": self.etc, "/run": self.run_dir, "/tmp": self.tmp})
        log.info("keepalived %s starting (wrapper pid %d)", self.node, self.iso.proc.pid)
        return self

    @property
    def running(self) -> bool:
        return self.iso is not None and self.iso.running

    @property
    def pid(self) -> int:
        """Host pid of the keepalived parent process."""
        if self.iso is None:
            raise LabError("keepalived not started")
        return self.iso.inner_pid()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM keepalived (it drops its VIPs) and wait for it to exit."""
        if self.iso is None or not self.iso.running:
            return None if self.iso is None else self.iso.proc.returncode
        self.iso.signal(signal.SIGTERM)
        try:
            return self.iso.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("keepalived %s ignored SIGTERM", self.node)
            self.iso.kill()
            return self.iso.proc.returncode

    def kill(self) -> None:
        """SIGKILL: VIPs stay configured, like a crashed daemon."""
        if self.iso is not None:
            self.iso.kill()

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.output.read_text(errors="replace")
        return ""

    def state(self, instance: str = "VI_1") -> str | None:
        """Last VRRP state logged for ``instance`` (MASTER/BACKUP/FAULT)."""
        states = [s for i, s in _STATE_RE.findall(self.log()) if i == instance]
        return states[-1] if states else None

    def wait_state(self, want: str, instance: str = "VI_1", timeout: float = 10.0) -> None:
        wait_for(lambda: self.state(instance) == want, timeout,
                 f"keepalived {self.node} {instance} {want}")

