"""A throw-away multi-node Ethernet lab made of Linux network namespaces.

Why: hbd must be tested on real broadcast/ARP against real peers, not mocks,
without ever touching the host's root namespace (no address, no link):

* one *switch* namespace holds a Linux bridge per network (``br0`` for
  ``eth0`` = 10.77.0.0/24, ``br1`` for ``eth1`` = 10.78.0.0/24, ...), so two
  heartbeat networks are truly independent L2 domains;
* each node namespace has ``ethK``, a veth whose peer is a port of ``brK``;
  it is created from the switch namespace with its peer placed straight
  into the node namespace, so it never appears in the host root namespace.

Names carry a per-run tag ``hbdt-<creator pid>-<random>`` (netns names, the
work dir under $TMPDIR).  :func:`cleanup_stale` removes leftovers whose
creator pid is dead, so a crashed run is cleaned by the next one while a
concurrent run (alive pid) is left alone.

Cut model: :meth:`Lab.cut` sets the *switch-side* veth down.  The node then
sees NO-CARRIER on its NIC while keeping addresses and routes, and frames in
both directions vanish silently: that is what pulling the cable out of a
switch port does.  ``how="silent"`` instead drops frames on the bridge with
nftables while carrier stays up (a broken switch / far-side failure).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, TypeVar

from hbd.demo.lab import NETNS_DIR, list_netns, netns_pids  # the demo's cleanup uses them too
from tests.infra import commands

log = logging.getLogger(__name__)

FAMILY = "hbdt"
"""Prefix family of every name this module creates (netns, temp dirs)."""
DEFAULT_NETWORKS: tuple[str, ...] = ("10.77.0.0/24", "10.78.0.0/24")
SWITCH = "switch"
PDEATHSIG = ("setpriv", "--pdeathsig", "KILL", "--")
_T = TypeVar("_T")


class LabError(RuntimeError):
    """A lab operation failed (command error, bad name)."""


class NetemUnsupported(LabError):
    """The kernel lacks sch_netem and the spec has no nftables fallback."""


def wait_for(pred: Callable[[], _T], timeout: float, what: str = "condition",
             interval: float = 0.02) -> _T:
    """Poll ``pred`` until it returns a truthy value; raise TimeoutError.

    Deadline polling instead of fixed sleeps keeps tests both fast and
    robust on a loaded machine.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def proc_pids() -> list[int]:
    """All pids currently in /proc (of the caller's PID namespace)."""
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the comm field ([0] = state), [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def proc_start_time(pid: int) -> str | None:
    """Kernel start time of ``pid`` (guards recorded pids against reuse)."""
    fields = _stat(pid)
    return fields[19] if fields else None


def pid_running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    fields = _stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (this kernel has no /proc/PID/task/*/children)."""
    return [p for p in proc_pids() if (f := _stat(p)) and int(f[1]) == pid]


class PidLedger:
    """Records the pids a run started, one file per pid holding its start time.

    Stale cleanup kills a recorded pid only if its start time still matches,
    so a recycled pid belonging to someone else is never signalled.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory / "pids"
        self.dir.mkdir(parents=True, exist_ok=True)

    def record(self, pid: int) -> None:
        (self.dir / str(pid)).write_text(proc_start_time(pid) or "")

    def forget(self, pid: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / str(pid)).unlink()

    def kill_all(self) -> None:
        for entry in sorted(self.dir.glob("[0-9]*")):
            pid = int(entry.name)
            if proc_start_time(pid) == entry.read_text() and entry.read_text():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            entry.unlink()


def stop_process(proc: subprocess.Popen[Any], timeout: float = 3.0,
                 sig: int = signal.SIGTERM) -> int | None:
    """Signal ``proc`` (and its session if it leads one), wait, then SIGKILL."""
    def send(s: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, s)
            else:
                os.kill(proc.pid, s)

    if proc.poll() is None:
        send(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("pid %d ignored signal %d, killing", proc.pid, sig)
            send(signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


def _cmd(argv: Sequence[str], *, check: bool = True, timeout: float = 15.0,
         input: str | None = None) -> subprocess.CompletedProcess[str]:
    res = commands.run(list(argv), capture_output=True, text=True, timeout=timeout,
                       input=input, check=False)
    if check and res.returncode != 0:
        raise LabError(f"{shlex.join(argv)} -> rc={res.returncode}: {res.stderr.strip()}")
    return res


def kill_netns(name: str) -> None:
    """SIGKILL every process inside netns ``name`` (found by namespace, not name)."""
    for _ in range(20):
        pids = [p for p in netns_pids(name) if p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    log.warning("processes survive in netns %s: %s", name, netns_pids(name))


def delete_netns(name: str) -> None:
    """Kill what runs in ``name`` and delete it; idempotent."""
    kill_netns(name)
    if (NETNS_DIR / name).exists():
        _cmd(["ip", "netns", "delete", name], check=False)


def _creator_alive(name: str, family: str) -> bool | None:
    """None if ``name`` is not ours; else whether the creating pid lives."""
    m = re.match(rf"^{re.escape(family)}-(\d+)-[0-9a-f]+", name)
    if m is None:
        return None
    return Path(f"/proc/{m.group(1)}").exists()


def cleanup_stale(family: str = FAMILY) -> list[str]:
    """Remove netns and temp dirs of *family* left by runs whose pid is dead.

    Only names of the form ``<family>-<pid>-<hex>...`` are considered, and
    only when that pid is gone, so concurrent live runs are never touched.
    """
    removed: list[str] = []
    dirs = [d for d in Path(tempfile.gettempdir()).glob(f"{family}-*")
            if _creator_alive(d.name, family) is False]
    for d in dirs:  # recorded pids first: socat etc. live outside any netns
        if (d / "pids").is_dir():
            PidLedger(d).kill_all()
    for ns in list_netns():
        if _creator_alive(ns, family) is False:
            delete_netns(ns)
            removed.append(ns)
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
        removed.append(str(d))
    if removed:
        log.info("removed stale leftovers: %s", removed)
    return removed


def new_tag(family: str = FAMILY) -> str:
    """A per-run unique prefix: ``<family>-<pid>-<4 hex>``."""
    return f"{family}-{os.getpid()}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class Iface:
    """One node NIC: ``name`` inside the node, ``port`` on bridge ``br<net>``."""

    node: str
    name: str
    net: int
    port: str
    cidr: str
    mac: str

    @property
    def ip(self) -> str:
        return self.cidr.split("/")[0]


class Lab:
    """N node namespaces wired to per-network bridges in a switch namespace.

    >>> with Lab(["n1", "n2", "client"], networks=DEFAULT_NETWORKS[:1]) as lab:
    ...     assert lab.ping("client", lab.ip("n1"))

    Node *i* (1-based, in creation order) gets host number *i* on every
    network unless ``host=`` is given; its MAC is ``02:00:<ipv4 bytes>``;
    IPv6 is off unless ``ipv6=True`` (no ND/MLD noise in captures).
    """

    def __init__(self, nodes: Iterable[str] = (), *,
                 networks: Sequence[str] = DEFAULT_NETWORKS[:1],
                 family: str = FAMILY, ipv6: bool = False,
                 clean_stale: bool = True) -> None:
        self.family = family
        self.tag = new_tag(family)
        self.networks = [ipaddress.IPv4Network(n) for n in networks]
        self.ipv6 = ipv6
        self.workdir = Path(tempfile.gettempdir()) / self.tag
        self.ifaces: dict[str, dict[str, Iface]] = {}
        self._hosts: dict[str, int] = {}
        self._procs: list[subprocess.Popen[Any]] = []
        self._isolated: list[Isolated] = []
        self._closed = False
        if clean_stale:
            cleanup_stale(family)
        self.workdir.mkdir(mode=0o755)
        self.ledger = PidLedger(self.workdir)
        try:
            self._add_ns(SWITCH)
            for k in range(len(self.networks)):
                sw = self.nsname(SWITCH)
                _cmd(["ip", "-n", sw, "link", "add", f"br{k}", "type", "bridge",
                      "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"])
                _cmd(["ip", "-n", sw, "link", "set", f"br{k}", "up"])
            for node in nodes:
                self.add_node(node)
        except BaseException:
            self.teardown()
            raise

    def nsname(self, node: str) -> str:
        """Full netns name of ``node`` (or of the switch)."""
        if node != SWITCH and node not in self.ifaces:
            raise LabError(f"unknown node {node!r}")
        return f"{self.tag}-{node}"

    def _add_ns(self, node: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.]{1,32}", node):
            raise LabError(f"bad node name {node!r}")
        _cmd(["ip", "netns", "add", name := f"{self.tag}-{node}"])
        _cmd(["ip", "-n", name, "link", "set", "lo", "up"])
        if not self.ipv6:
            _cmd(["ip", "netns", "exec", name, "sysctl", "-qw",
                  "net.ipv6.conf.all.disable_ipv6=1",
                  "net.ipv6.conf.default.disable_ipv6=1"], check=False)

    def add_node(self, node: str, *, nets: Sequence[int] | None = None,
                 host: int | None = None) -> dict[str, Iface]:
        """Create node ``node`` with ``eth<k>`` on each network index in ``nets``."""
        if node in self.ifaces or node == SWITCH:
            raise LabError(f"node {node!r} exists")
        index = len(self.ifaces) + 1
        host = index if host is None else host
        if host in self._hosts.values():
            raise LabError(f"host number {host} already used")
        self._add_ns(node)
        self.ifaces[node], self._hosts[node] = {}, host
        ns, sw = self.nsname(node), self.nsname(SWITCH)
        for k in range(len(self.networks)) if nets is None else nets:
            net = self.networks[k]
            addr = net.network_address + host
            mac = "02:00:" + ":".join(f"{b:02x}" for b in addr.packed)
            ifc = Iface(node, f"eth{k}", k, f"p{index}e{k}", f"{addr}/{net.prefixlen}", mac)
            _cmd(["ip", "-n", sw, "link", "add", ifc.port, "type", "veth",
                  "peer", "name", ifc.name, "netns", ns])
            _cmd(["ip", "-n", sw, "link", "set", ifc.port, "alias", f"{node}:{ifc.name}"])
            _cmd(["ip", "-n", sw, "link", "set", ifc.port, "master", f"br{k}", "up"])
            _cmd(["ip", "-n", ns, "link", "set", ifc.name, "address", mac])
            _cmd(["ip", "-n", ns, "addr", "add", ifc.cidr, "brd", "+", "dev", ifc.name])
            _cmd(["ip", "-n", ns, "link", "set", ifc.name, "up"])
            self.ifaces[node][ifc.name] = ifc
        log.info("lab %s: node %s %s", self.tag, node,
                 [i.cidr for i in self.ifaces[node].values()])
        return self.ifaces[node]

    def iface(self, node: str, ifname: str = "eth0") -> Iface:
        try:
            return self.ifaces[node][ifname]
        except KeyError:
            raise LabError(f"no interface {node}:{ifname}") from None

    def ip(self, node: str, ifname: str = "eth0") -> str:
        """The node's configured (non-VIP) address on ``ifname``."""
        return self.iface(node, ifname).ip

    def node_dir(self, node: str) -> Path:
        """A per-node scratch directory under the lab's work dir."""
        (d := self.workdir / node).mkdir(exist_ok=True)
        return d

    def argv(self, node: str, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed so that it runs inside ``node``'s netns."""
        return ["ip", "netns", "exec", self.nsname(node), *argv]

    def run(self, node: str, argv: Sequence[str], *, check: bool = True,
            timeout: float = 15.0, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion inside ``node`` and capture text output."""
        return _cmd(self.argv(node, argv), check=check, timeout=timeout, input=input)

    def popen(self, node: str, argv: Sequence[str], *,
              stdout: int | IO[Any] | None = subprocess.DEVNULL,
              stderr: int | IO[Any] | None = subprocess.STDOUT,
              stdin: int | IO[Any] | None = subprocess.DEVNULL,
              env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` in ``node`` in its own session; stopped by teardown."""
        if self._closed:
            raise LabError("lab is torn down")
        # pdeathsig: the kernel kills the child if the spawning *thread* dies
        proc = commands.popen([*PDEATHSIG, *self.argv(node, argv)], stdout=stdout, stderr=stderr,
                                stdin=stdin, start_new_session=True,
                                env=None if env is None else dict(env))
        self.ledger.record(proc.pid)
        self._procs.append(proc)
        log.debug("started pid %d in %s: %s", proc.pid, node, shlex.join(argv))
        return proc

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 3.0,
             sig: int = signal.SIGTERM) -> int | None:
        """Stop a process started by :meth:`popen` (by its recorded pid)."""
        rc = stop_process(proc, timeout, sig)
        self.ledger.forget(proc.pid)
        if proc in self._procs:
            self._procs.remove(proc)
        return rc

    def ping(self, node: str, dst: str, *, count: int = 1, timeout: float = 1.0) -> bool:
        """One-shot ICMP reachability from ``node`` to ``dst`` (in-lab address)."""
        res = self.run(node, ["ping", "-n", "-q", "-c", str(count), "-i", "0.05",
                              "-W", str(timeout), dst], check=False, timeout=timeout * count + 5)
        return res.returncode == 0

    def _json(self, node: str, argv: Sequence[str]) -> list[dict[str, Any]]:
        out = _cmd(["ip", "-j", "-n", self.nsname(node), *argv]).stdout.strip()
        return list(json.loads(out)) if out else []

    def addresses(self, node: str, ifname: str = "eth0") -> list[str]:
        """IPv4 ``addr/prefix`` strings currently on ``ifname`` (VIPs included)."""
        out = []
        for link in self._json(node, ["-4", "addr", "show", "dev", ifname]):
            out += [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])]
        return out

    def has_address(self, node: str, ip: str, ifname: str = "eth0") -> bool:
        return any(a.split("/")[0] == ip for a in self.addresses(node, ifname))

    def mac(self, node: str, ifname: str = "eth0") -> str:
        return str(self._json(node, ["link", "show", "dev", ifname])[0]["address"])

    def link_state(self, node: str, ifname: str = "eth0") -> str:
        """Operstate seen by the node: UP, or DOWN when the cable is cut."""
        return str(self._json(node, ["link", "show", "dev", ifname])[0]["operstate"])

    def arp_entry(self, node: str, ip: str) -> str | None:
        """MAC that ``node``'s neighbour table holds for ``ip`` (None if unresolved)."""
        for entry in self._json(node, ["neigh", "show", "to", ip]):
            states = set(entry.get("state", []))
            if "lladdr" in entry and not states & {"FAILED", "INCOMPLETE"}:
                return str(entry["lladdr"])
        return None

    def flush_arp(self, node: str, ifname: str = "eth0") -> None:
        _cmd(["ip", "-n", self.nsname(node), "neigh", "flush", "dev", ifname])

    def _nft(self, table: str, rules: str | None) -> None:
        """(Re)create bridge table ``table`` with forward ``rules``; None deletes it."""
        script = f"table bridge {table}\ndelete table bridge {table}\n"
        if rules is not None:
            script += (f"table bridge {table} {{\n chain impair {{\n  type filter hook forward"
                       f" priority 0; policy accept;\n  {rules}\n }}\n}}\n")
        _cmd(["ip", "netns", "exec", self.nsname(SWITCH), "nft", "-f", "-"], input=script)

    def cut(self, node: str, ifname: str = "eth0",
            how: Literal["carrier", "silent"] = "carrier") -> None:
        """Pull ``node``'s cable on ``ifname`` (see module doc for the model)."""
        port = self.iface(node, ifname).port
        if how == "carrier":
            _cmd(["ip", "-n", self.nsname(SWITCH), "link", "set", port, "down"])
        else:
            self._nft(f"cut_{port}", f'iifname "{port}" drop\n  oifname "{port}" drop')
        log.info("cut %s:%s (%s)", node, ifname, how)

    def restore(self, node: str, ifname: str = "eth0") -> None:
        """Undo :meth:`cut` (either kind); idempotent."""
        port = self.iface(node, ifname).port
        self._nft(f"cut_{port}", None)
        _cmd(["ip", "-n", self.nsname(SWITCH), "link", "set", port, "up"])
        log.info("restored %s:%s", node, ifname)

    def partition(self, a: str, b: str, ifname: str = "eth0") -> None:
        """Drop every frame between ``a`` and ``b`` on ``ifname``'s network.

        Both stay reachable from every other node (a client sees both sides
        of a split brain).
        """
        pa, pb = self.iface(a, ifname).port, self.iface(b, ifname).port
        self._nft(f"part_{pa}_{pb}", f'iifname "{pa}" oifname "{pb}" drop\n'
                                     f'  iifname "{pb}" oifname "{pa}" drop')

    def heal(self, a: str, b: str, ifname: str = "eth0") -> None:
        pa, pb = self.iface(a, ifname).port, self.iface(b, ifname).port
        self._nft(f"part_{pa}_{pb}", None)

    def netem(self, node: str, ifname: str, spec: str) -> str:
        """Impair frames *sent* by ``node`` on ``ifname`` (egress, like netem).

        Uses ``tc qdisc netem`` when the kernel has it.  Kernels without
        sch_netem (this CI VM) get an nftables fallback on the switch port
        that supports ``loss N%`` only.  Returns "netem" or "nft".
        """
        ifc = self.iface(node, ifname)
        res = self.run(node, ["tc", "qdisc", "replace", "dev", ifname, "root", "netem",
                              *spec.split()], check=False)
        if res.returncode == 0:
            return "netem"
        m = re.fullmatch(r"\s*loss\s+(\d+(?:\.\d+)?)%\s*", spec)
        if not m:
            raise NetemUnsupported(f"netem {spec!r} unavailable: {res.stderr.strip()}")
        # numgen yields 0..9999; drop when below pct*100 (0.01 % resolution)
        limit = round(float(m.group(1)) * 100)
        chance = f" numgen random mod 10000 < {limit}" if limit < 10000 else ""
        self._nft(f"loss_{ifc.port}", f'iifname "{ifc.port}"{chance} drop')
        return "nft"

    def clear_netem(self, node: str, ifname: str = "eth0") -> None:
        ifc = self.iface(node, ifname)
        self.run(node, ["tc", "qdisc", "del", "dev", ifname, "root"], check=False)
        self._nft(f"loss_{ifc.port}", None)

    def spawn_isolated(self, node: str, argv: Sequence[str], *, hostname: str | None = None,
                       binds: Mapping[str, Path] | None = None,
                       output: Path | None = None,
                       env: Mapping[str, str] | None = None) -> Isolated:
        """Run a daemon in ``node``'s netns plus private mount/UTS/PID namespaces.

        ``binds`` maps host paths (e.g. ``/run``) to per-node directories that
        are bind-mounted over them, so state, pid files and logs stay private
        while binaries, users and resource agents come from the host.  The
        PID namespace makes SIGKILL of the daemon (its init) take every child
        with it, like a node losing power.
        """
        script = ["set -e", *(f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)}"
                              for dst, src in (binds or {}).items()),
                  f"hostname {shlex.quote(hostname or node)}", 'exec "$@"']
        full = ["unshare", "--mount", "--uts", "--pid", "--fork", "--kill-child",
                "--mount-proc", "--propagation", "private", "--",
                "sh", "-c", "\n".join(script), "sh", *argv]
        out: IO[Any] | int = open(output, "ab") if output else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = self.popen(node, full, stdout=out, env=env)
        finally:
            if not isinstance(out, int):
                out.close()
        iso = Isolated(self, node, proc)
        self._isolated.append(iso)
        return iso

    def teardown(self) -> None:
        """Stop processes, delete namespaces and the work dir; idempotent."""
        self._closed = True
        # isolated wrappers ignore SIGTERM: those go straight to KILL
        for item in [*self._isolated, *reversed(self._procs)]:
            try:
                item.kill() if isinstance(item, Isolated) else stop_process(item, 2.0)
            except Exception:  # keep tearing down whatever happens
                log.exception("stopping %r", item)
        self._isolated.clear()
        self._procs.clear()
        if self.workdir.is_dir():
            PidLedger(self.workdir).kill_all()
        for ns in [n for n in list_netns() if n.startswith(self.tag + "-")]:
            delete_netns(ns)
        shutil.rmtree(self.workdir, ignore_errors=True)
        log.info("lab %s torn down", self.tag)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.teardown()


class Isolated:
    """A daemon started by :meth:`Lab.spawn_isolated`.

    ``proc`` is the ``unshare`` wrapper (recorded pid); :meth:`inner_pid` is
    the daemon itself, pid 1 of its private PID namespace, which is what gets
    signalled and what ``nsenter`` targets.
    """

    def __init__(self, lab: Lab, node: str, proc: subprocess.Popen[bytes]) -> None:
        self.lab, self.node, self.proc = lab, node, proc
        self._inner: int | None = None

    def inner_pid(self, timeout: float = 5.0) -> int:
        if self._inner is None:
            kids = wait_for(lambda: children_of(self.proc.pid) or self.proc.poll() is not None,
                            timeout, f"{self.node} daemon fork")
            if not isinstance(kids, list):
                raise LabError(f"{self.node}: daemon wrapper exited rc={self.proc.returncode}")
            self._inner = kids[0]
        return self._inner

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def nsenter_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside all of the daemon's namespaces."""
        return ["nsenter", "-t", str(self.inner_pid()), "-m", "-u", "-n", "-p",
                "--wd=/", "--", *argv]

    def exec(self, argv: Sequence[str], *, check: bool = True, timeout: float = 15.0,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        return _cmd(self.nsenter_argv(argv), check=check, timeout=timeout, input=input)

    def signal(self, sig: int) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.inner_pid(), sig)

    def kill(self) -> None:
        """SIGKILL the daemon; the kernel then kills its whole PID namespace.

        Returns once the daemon and the wrapper are gone.  The wrapper is
        left to reap its child: killing it first would leave the dying init
        to a host reaper and its namespace still draining.
        """
        with contextlib.suppress(LabError):
            self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.lab.stop(self.proc, timeout=2.0, sig=signal.SIGKILL)
        inner = self._inner
        if inner is not None:
            wait_for(lambda: not pid_running(inner), 5, f"{self.node} daemon exit")


_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(lab: Lab, node: str, fn: Callable[[], _T]) -> _T:
    """Run `fn` in a fresh thread inside `node`'s network namespace.

    For calling hbd's own adapters (netlink, raw sockets) as the daemon would
    from inside a node; the thread's children inherit the namespace.
    """
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{lab.nsname(node)}", os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as err:
            box["error"] = err

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]
