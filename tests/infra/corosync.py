"""Real Corosync 3 nodes inside lab namespaces, with hbd beside each one.

Why: hbd's corosync stack must be shown against the real daemon (knet,
totem, votequorum, CPG) and its real client libraries, not a model.

Each lab node gets a *holder*: `unshare --mount` inside the node's network
namespace running `sleep`, whose private mount namespace has its own
/etc/corosync (the cluster's corosync.conf and authkey), /var/lib/corosync,
/run, /dev/shm and /var/log (tmpfs), and a private /etc/hosts naming the lab
addresses.  corosync and hbd are both started with `nsenter --mount` into
the holder, so they share what libqb's IPC needs: the abstract unix sockets
of the network namespace *and* the shared-memory ring buffers in /dev/shm
(abstract sockets alone do not suffice: the client maps the server's
/dev/shm files by path).  Either can be killed and restarted while the
other runs, as on a real node.  Nothing touches the host's /etc/corosync,
/run or /dev/shm; every process is a lab process, stopped by its recorded
pid.

corosync.conf comes from hbd's own Pacemaker export (hbd.export.corosync),
so these tests also run the configuration hbd tells admins to use.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from typing import Any

from hbd.core.assemble import ConfigTexts, check
from hbd.export.corosync import render_corosync
from tests.hbdproc import AUTHKEYS, HbdNode
from tests.infra import commands
from tests.infra.netns import Lab, LabError, wait_for

TOOLS = ("corosync", "corosync-keygen", "corosync-quorumtool", "unshare", "nsenter", "ip")
# What a corosync needs private in its mount namespace (shared with test_export_corosync).
PRIVATE_TMPFS = ("/etc/corosync", "/var/lib/corosync", "/run", "/dev/shm")

HOLDER = """\
set -eu
for d in {tmpfs}; do mount -t tmpfs tmpfs "$d"; done
mount -t tmpfs tmpfs /var/log
mkdir -p /var/log/corosync
mount --bind "$DIR/log" /var/log/corosync
mount --bind "$DIR/hosts" /etc/hosts
cp "$DIR/corosync.conf" "$DIR/authkey" /etc/corosync/
chmod 400 /etc/corosync/authkey
touch "$DIR/ready"
exec sleep infinity
"""


@functools.cache
def corosync_unavailable(libraries: bool = True) -> str | None:
    """Why real-corosync tests cannot run here, or None when they can.

    `libraries`: hbd's ctypes adapter must load the client libraries too.
    """
    if os.geteuid() != 0:
        return "needs root for mount and network namespaces"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: corosync, util-linux, iproute2)"
    if not libraries:
        return None
    from hbd.corosync import available

    return available()


def need_corosync_tools(libraries: bool = True) -> None:
    """pytest.skip with the reason when corosync cannot run here."""
    import pytest

    reason = corosync_unavailable(libraries)
    if reason:
        pytest.skip(reason)


def private_mounts_script() -> str:
    """Shell lines giving a fresh mount namespace its own corosync directories."""
    return "".join(f"mount -t tmpfs tmpfs {d}\n" for d in PRIVATE_TMPFS)


def hacf_text(nodes: Sequence[str], extra: str = "") -> str:
    """An ha.cf for the corosync stack (deadtime 2 s -> the export's minimum token, 1 s)."""
    return (f"cluster_stack corosync\nkeepalive 500ms\ndeadtime 2\nauto_failback on\n"
            f"node {' '.join(nodes)}\n{extra}")


class CorosyncNode:
    """One node's corosync, in its holder's mount namespace."""

    def __init__(self, lab: Lab, node: str, conf: str, authkey: bytes, hosts: str) -> None:
        self.lab, self.node = lab, node
        self.dir = lab.node_dir(node) / "corosync"
        (self.dir / "log").mkdir(parents=True, exist_ok=True)
        (self.dir / "corosync.conf").write_text(conf)
        (self.dir / "authkey").write_bytes(authkey)
        (self.dir / "hosts").write_text(hosts)
        self.log_path = self.dir / "log" / "corosync.log"
        self.holder: subprocess.Popen[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def boot(self) -> None:
        """Create the holder (the node's private mount namespace)."""
        script = HOLDER.replace("{tmpfs}", " ".join(PRIVATE_TMPFS))
        self.holder = self.lab.popen(self.node, ["unshare", "--mount", "--propagation",
                                                 "private", "--", "sh", "-c", script],
                                     env={**os.environ, "DIR": str(self.dir)})
        holder = self.holder
        wait_for(lambda: (self.dir / "ready").exists() or holder.poll() is not None, 10,
                 f"{self.node} mount namespace")
        if holder.poll() is not None:
            raise LabError(f"{self.node}: holder exited rc={holder.returncode}")

    @property
    def holder_pid(self) -> int:
        assert self.holder is not None
        return self.holder.pid

    def enter(self, argv: Sequence[str]) -> list[str]:
        """`argv` run in the holder's mount namespace (the network one comes from the lab)."""
        return ["nsenter", "-t", str(self.holder_pid), "-m", "--", *argv]

    def run(self, argv: Sequence[str], *, check: bool = False,
            timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
        return self.lab.run(self.node, self.enter(argv), check=check, timeout=timeout)

    def start(self) -> None:
        with open(self.dir / "corosync.out", "ab") as out:
            self.proc = self.lab.popen(self.node, self.enter(["corosync", "-f"]), stdout=out)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM (systemctl stop) or SIGKILL; waits until it is gone."""
        if self.proc is not None:
            self.lab.stop(self.proc, timeout=15.0, sig=sig)
            self.proc = None

    def quorum(self) -> dict[str, str]:
        """corosync-quorumtool -s as a dict ('Quorate': 'Yes', 'Total votes': '3'...)."""
        out = self.run(["corosync-quorumtool", "-s"]).stdout
        return {k.strip(): v.strip() for k, v in re.findall(r"^([A-Za-z ]+):\s+(.*)$", out,
                                                                  re.M)}

    def wait_quorate(self, members: int, timeout: float = 30.0) -> None:
        def ok() -> bool:
            q = self.quorum()
            return q.get("Quorate", "").startswith("Yes") and q.get("Nodes") == str(members)

        wait_for(ok, timeout, f"{self.node}: quorate with {members} nodes", interval=0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class CorosyncHbd(HbdNode):
    """A real hbd that runs in its node's corosync mount namespace."""

    def __init__(self, corosync: CorosyncNode, hacf: str, haresources: str,
                 **kwargs: Any) -> None:
        super().__init__(corosync.lab, corosync.node, hacf, haresources, AUTHKEYS, **kwargs)
        self.corosync = corosync

    def argv(self) -> list[str]:
        return self.corosync.enter(super().argv())


class CorosyncCluster:
    """corosync on every given lab node, from hbd's exported corosync.conf."""

    def __init__(self, lab: Lab, nodes: Sequence[str], *, hacf: str, haresources: str,
                 token_ms: int | None = None, token_coefficient_ms: int | None = None) -> None:
        self.lab = lab
        self.names = tuple(nodes)
        config, problems = check(ConfigTexts("ha.cf", hacf, "haresources", haresources,
                                             "authkeys", AUTHKEYS, 0o100600),
                                 node_name=self.names[0])
        if config is None:
            raise LabError(f"bad test configuration: {[str(p) for p in problems]}")
        conf = render_corosync(config).text
        if token_ms is not None:
            conf = re.sub(r"(?m)^(\s+token:) \d+$", rf"\1 {token_ms}", conf)
        if token_coefficient_ms is not None:  # corosync adds it per node beyond two
            conf = re.sub(r"(?m)^(\s+token: \d+)$", rf"\1\n    token_coefficient: "
                          rf"{token_coefficient_ms}", conf)
        self.conf = conf
        token = re.search(r"(?m)^\s+token: (\d+)$", conf)
        assert token is not None
        coefficient = 650 if token_coefficient_ms is None else token_coefficient_ms
        # what corosync runs with (runtime.config.totem.token)
        self.token_ms = int(token.group(1)) + max(0, len(self.names) - 2) * coefficient
        keyfile = lab.workdir / "corosync-authkey"
        commands.run(["corosync-keygen", "-k", str(keyfile)], check=True,
                     capture_output=True, timeout=30)
        hosts = "127.0.0.1 localhost\n" + "".join(f"{lab.ip(n)} {n}\n" for n in self.names)
        self.nodes = {n: CorosyncNode(lab, n, conf, keyfile.read_bytes(), hosts)
                      for n in self.names}
        for node in self.nodes.values():
            node.boot()

    def start(self, nodes: Sequence[str] | None = None, *, wait: bool = True) -> None:
        names = self.names if nodes is None else tuple(nodes)
        for name in names:
            self.nodes[name].start()
        if wait:
            for name in names:
                self.nodes[name].wait_quorate(len(names))

    def logs(self) -> str:
        return "\n".join(f"--- corosync {n} ---\n{c.log()[-3000:]}"
                         for n, c in self.nodes.items())
