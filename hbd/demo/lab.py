"""The demo's lab: a switch and three hosts as network namespaces, nothing on the host.

    hbd-demo-<pid>-switch   bridge br0 with one veth port per host (p-n1, p-n2, p-client)
    hbd-demo-<pid>-n1       eth0 10.77.0.1/24
    hbd-demo-<pid>-n2       eth0 10.77.0.2/24
    hbd-demo-<pid>-client   eth0 10.77.0.10/24

Each veth pair is created inside the switch namespace with its other end
placed straight into the host's namespace, so no interface and no address
ever appears in the machine's own namespace.  Cutting a host's cable sets
its switch port down: the host sees NO-CARRIER and frames vanish both ways,
as when the cable is pulled out of a real switch.

Every process the demo starts runs inside one of these namespaces, and its
pid and kernel start time are recorded in the work directory
(/tmp/hbd-demo-<pid>).  Cleanup stops them by pid, then deletes the
namespaces (which unmounts their /run/netns entries) and the directory.  A
run that was killed outright leaves names carrying its dead pid; the next
run finds and removes them, and leaves a live run's names alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hbd.demo import commands

log = logging.getLogger(__name__)

PREFIX = "hbd-demo"
NETNS_DIR = Path("/run/netns")
SWITCH = "switch"
NETWORK = "10.77.0.0/24"
HOSTS = {"n1": "10.77.0.1", "n2": "10.77.0.2", "client": "10.77.0.10"}
PREFIXLEN = 24
_TAG = re.compile(rf"^{PREFIX}-(\d+)(?:-|$)")


class LabError(RuntimeError):
    """A command the lab needs failed; the message says which and why."""


def run(argv: Sequence[str], *, check: bool = True,
        timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
    """Run a short command and capture its output.  Raises LabError when check fails."""
    try:
        result = commands.run(argv, capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired, commands.UndeclaredCommand) as err:
        raise LabError(f"{shlex.join(argv)}: {err}") from err
    if check and result.returncode != 0:
        raise LabError(f"{shlex.join(argv)} failed (rc={result.returncode}): "
                       f"{result.stderr.strip()}")
    return result


def start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def list_netns() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def netns_pids(name: str) -> list[int]:
    """Processes whose network namespace is `name` (compared by nsfs inode)."""
    try:
        ref = os.stat(NETNS_DIR / name)
    except OSError:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            st = os.stat(entry / "ns" / "net")
            if (st.st_ino, st.st_dev) == (ref.st_ino, ref.st_dev):
                found.append(int(entry.name))
    return found


def _kill_pid(pid: int, recorded_start: str | None) -> None:
    """SIGKILL `pid`, but only if it is still the process that was recorded."""
    if recorded_start is not None and start_time(pid) != recorded_start:
        return  # gone, or the number now belongs to someone else
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def delete_netns(name: str) -> None:
    """Kill whatever still runs inside `name` (all of it was started there by a demo)
    and delete it.  Idempotent."""
    for _ in range(40):
        pids = [p for p in netns_pids(name) if p != os.getpid()]
        if not pids:
            break
        for pid in pids:
            _kill_pid(pid, None)
        time.sleep(0.05)
    if (NETNS_DIR / name).exists():
        run(["ip", "netns", "delete", name], check=False)


class Ledger:
    """The pids a run started, with their start times, in `<workdir>/pids.json`."""

    def __init__(self, workdir: Path) -> None:
        self.path = workdir / "pids.json"

    def read(self) -> dict[int, str]:
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {int(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def _write(self, pids: Mapping[int, str]) -> None:
        tmp = self.path.with_name("pids.json.tmp")
        tmp.write_text(json.dumps({str(k): v for k, v in pids.items()}))
        os.replace(tmp, self.path)

    def record(self, pid: int) -> None:
        pids = self.read()
        pids[pid] = start_time(pid) or ""
        self._write(pids)

    def forget(self, pid: int) -> None:
        pids = self.read()
        if pids.pop(pid, None) is not None:
            self._write(pids)

    def kill_all(self) -> None:
        for pid, started in self.read().items():
            _kill_pid(pid, started or None)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _tag_pid(name: str) -> int | None:
    match = _TAG.match(name)
    return int(match.group(1)) if match else None


def _stale(tag_pid: int, workdir: Path) -> bool:
    """Whether the run that made names with `tag_pid` is gone."""
    if tag_pid == os.getpid():
        return False
    if not Path(f"/proc/{tag_pid}").exists():
        return True
    try:
        owner_start = (workdir / "owner").read_text().strip()
    except OSError:
        return False  # a live pid and no proof it is another process: leave it alone
    return start_time(tag_pid) != owner_start


def cleanup_stale() -> list[str]:
    """Remove what demo runs that died without cleaning up left behind.

    Only names `hbd-demo-<pid>...` are considered, and only when that pid is
    dead (or was reused by another process): a demo running right now is
    never touched.  Returns what was removed.
    """
    removed: list[str] = []
    tmp = Path(tempfile.gettempdir())
    dirs = {pid: tmp / f"{PREFIX}-{pid}" for pid in
            (_tag_pid(d.name) for d in tmp.glob(f"{PREFIX}-*")) if pid is not None}
    names: dict[int, list[str]] = {}
    for name in list_netns():
        pid = _tag_pid(name)
        if pid is not None:
            names.setdefault(pid, []).append(name)
    for pid in sorted(set(dirs) | set(names)):
        workdir = tmp / f"{PREFIX}-{pid}"
        if not _stale(pid, workdir):
            continue
        if workdir.is_dir():
            Ledger(workdir).kill_all()
        for name in names.get(pid, []):
            delete_netns(name)
            removed.append(name)
        if workdir.is_dir():
            shutil.rmtree(workdir, ignore_errors=True)
            removed.append(str(workdir))
    return removed


@dataclass(frozen=True)
class Host:
    name: str
    address: str  # on eth0
    port: str  # its veth end on the switch's bridge


class Lab:
    """The namespaces, the bridge, and the processes running in them."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}-{os.getpid()}"
        self.workdir = Path(tempfile.gettempdir()) / self.tag
        self.hosts = {name: Host(name, address, f"p-{name}") for name, address in HOSTS.items()}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ledger = Ledger(self.workdir)
        self.built = False
        self._pdeathsig = (["setpriv", "--pdeathsig", "KILL", "--"]
                           if shutil.which("setpriv") else [])

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    # --- building ----------------------------------------------------------------

    def build(self, progress: Any = None) -> None:
        """Create the namespaces, the bridge and the cables.  Raises LabError."""
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(mode=0o700)
        (self.workdir / "owner").write_text(start_time(os.getpid()) or "")
        switch = self.ns(SWITCH)
        self._add_ns(SWITCH)
        run(["ip", "-n", switch, "link", "add", "br0", "type", "bridge", "stp_state", "0",
             "forward_delay", "0"])
        run(["ip", "-n", switch, "link", "set", "br0", "up"])
        for host in self.hosts.values():
            if progress is not None:
                progress(host)
            ns = self.ns(host.name)
            self._add_ns(host.name)
            run(["ip", "-n", switch, "link", "add", host.port, "type", "veth", "peer", "name",
                 "eth0", "netns", ns])
            run(["ip", "-n", switch, "link", "set", host.port, "master", "br0", "up"])
            run(["ip", "-n", ns, "addr", "add", f"{host.address}/{PREFIXLEN}", "brd", "+",
                 "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        self.built = True

    def _add_ns(self, host: str) -> None:
        name = self.ns(host)
        run(["ip", "netns", "add", name])
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        # IPv6 would only add neighbour-discovery noise to a demo about an IPv4 address.
        run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
             "net.ipv6.conf.default.disable_ipv6=1"], check=False)

    # --- processes -----------------------------------------------------------------

    def spawn(self, host: str, argv: Sequence[str], *, output: Path | None = None,
              stdout_pipe: bool = False,
              env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `argv` inside `host`'s namespace, in its own session, and record its pid.

        Its own session keeps a Ctrl-C on the terminal away from it: the demo
        stops everything itself, in order.  With setpriv, the kernel also kills
        it should the demo die without cleaning up.
        """
        out: IO[bytes] | int
        if stdout_pipe:
            out = subprocess.PIPE
        elif output is not None:
            out = open(output, "ab")  # noqa: SIM115 - closed right after Popen
        else:
            out = subprocess.DEVNULL
        try:
            proc = commands.popen(
                [*self._pdeathsig, "ip", "netns", "exec", self.ns(host), *argv],
                stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT if output is not None else subprocess.DEVNULL,
                env=None if env is None else dict(env), start_new_session=True)
        finally:
            if not isinstance(out, int):
                out.close()
        self.procs.append(proc)
        self.ledger.record(proc.pid)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int | None = signal.SIGTERM,
             timeout: float = 5.0) -> int | None:
        """Signal one of our processes by its pid (sig None: already signalled), wait,
        SIGKILL if it does not go.  A second SIGTERM would tell hbd to skip releasing
        its resources, so it is never sent twice."""
        if proc.poll() is None:
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5.0)
        if proc.stdout is not None:
            proc.stdout.close()
        self.ledger.forget(proc.pid)
        if proc in self.procs:
            self.procs.remove(proc)
        return proc.returncode

    # --- the network ---------------------------------------------------------------

    def cut(self, host: str) -> None:
        run(["ip", "-n", self.ns(SWITCH), "link", "set", self.hosts[host].port, "down"])

    def restore(self, host: str) -> None:
        run(["ip", "-n", self.ns(SWITCH), "link", "set", self.hosts[host].port, "up"])

    def has_address(self, host: str, address: str) -> bool:
        out = run(["ip", "-j", "-4", "-n", self.ns(host), "addr", "show", "dev", "eth0"],
                  check=False).stdout
        try:
            links = json.loads(out) if out.strip() else []
        except ValueError:
            return False
        return any(info.get("local") == address
                   for link in links for info in link.get("addr_info", []))

    # --- teardown ------------------------------------------------------------------

    def teardown(self, stop_first: Sequence[subprocess.Popen[bytes]] = ()) -> list[str]:
        """Stop every process (those in `stop_first` gracefully, in that order), delete
        the namespaces and the work directory.  Idempotent; never raises.

        Returns what could not be removed (empty when all went).
        """
        for proc in stop_first:  # all at once: they stop in parallel
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        for proc in stop_first:
            try:
                self.stop(proc, None, timeout=5.0)
            except Exception as err:  # keep tearing down whatever happens
                log.warning("stopping pid %d: %s", proc.pid, err)
        for proc in reversed(list(self.procs)):
            try:
                self.stop(proc, signal.SIGTERM, timeout=2.0)
            except Exception as err:
                log.warning("stopping pid %d: %s", proc.pid, err)
        if self.workdir.is_dir():
            Ledger(self.workdir).kill_all()
        for name in [n for n in list_netns() if n.startswith(self.tag + "-")]:
            delete_netns(name)
        shutil.rmtree(self.workdir, ignore_errors=True)
        left = [n for n in list_netns() if n.startswith(self.tag + "-")]
        if self.workdir.exists():
            left.append(str(self.workdir))
        return left
