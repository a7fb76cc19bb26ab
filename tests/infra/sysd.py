"""Throwaway systemd containers: real systemd as PID 1 on a copy-on-write root.

Why: hbd is a Type=notify service with journald logging and failover that
involves two nodes; only a real systemd (and a second "machine") can prove
READY=1 ordering, unit states and journal fields.  The host's PID 1 is not
systemd and must never be replaced, and booting systemd on the real root would
let systemd-tmpfiles wipe the host's /tmp - so each container gets:

* new mount/pid/uts/net/ipc/cgroup namespaces (``unshare``), tied to this
  Python process with ``setpriv --pdeathsig`` + ``unshare --kill-child`` so a
  crashed test run still tears the container down;
* an overlayfs root (lower ``/``, upper on a tmpfs that exists only in the
  container's mount namespace), fresh tmpfs /run, /tmp, /dev (a handful of
  device nodes, private devpts), private /proc (with /proc/sys read-only
  except /proc/sys/net), read-only sysfs of the new netns, and a cgroup2
  mount rooted at a dedicated sub-cgroup (its own cgroup namespace);
* host-enabled units disabled (only an allow-list such as rsyslog stays) and
  units that would touch the kernel/host masked (sysctl, modules, binfmt,
  clock sync, udev, gettys...).

Nothing is mounted in the host namespace, so cleanup is: stop PID 1, rmdir the
sub-cgroup, remove the temp dir (which only holds empty mount points).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.infra import commands

log = logging.getLogger(__name__)

SYSTEMD = "/lib/systemd/systemd"
RUN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "cat",
    "SYSTEMD_COLORS": "0",
}
# Enabled-by-host units kept in the container (everything else under
# /etc/systemd/system/*.wants is removed in the overlay).
DEFAULT_KEEP = ("rsyslog.service",)
# Units that would touch the host kernel/clock/devices, or have no console.
DEFAULT_MASKS = (
    "getty@.service", "serial-getty@.service", "console-getty.service",
    "container-getty@.service", "getty-static.service", "getty.target",
    "systemd-ask-password-console.path", "systemd-ask-password-wall.path",
    "systemd-sysctl.service", "systemd-modules-load.service", "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount", "proc-sys-fs-binfmt_misc.mount",
    "systemd-timesyncd.service", "systemd-networkd.service", "systemd-networkd.socket",
    "systemd-networkd-wait-online.service", "systemd-network-generator.service",
    "systemd-resolved.service", "systemd-udevd.service", "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket", "systemd-udev-trigger.service",
    "systemd-udev-settle.service", "systemd-hwdb-update.service",
    "systemd-random-seed.service", "systemd-pstore.service", "systemd-remount-fs.service",
    "systemd-firstboot.service", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
    "sys-kernel-config.mount", "sys-fs-fuse-connections.mount", "dev-hugepages.mount",
    "systemd-journald-audit.socket", "apt-daily.timer", "apt-daily-upgrade.timer",
    "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer", "man-db.timer",
    "networking.service", "ifupdown-pre.service", "hwclock.service", "cron.service",
    "ssh.service", "modprobe@.service", "apparmor.service", "auditd.service",
)
# Generators that would resurrect host services from /etc/init.d or add gettys.
DEFAULT_MASKED_GENERATORS = ("systemd-sysv-generator", "systemd-getty-generator")

# Stage 2: runs as PID 1 of the new pid namespace, builds the root, execs systemd.
_INIT_SH = r"""
set -eu
W="$HBD_WORKDIR"; R="$W/root"; U="$W/rw"
mount --make-rprivate /
mount -t tmpfs -o mode=0755 hbd-rw "$U"
mkdir -p "$U/upper" "$U/work"
mount -t overlay -o "lowerdir=/,upperdir=$U/upper,workdir=$U/work" hbd-root "$R"
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount --bind "$R/proc/sys" "$R/proc/sys"
mount --bind "$R/proc/sys/net" "$R/proc/sys/net"
mount -o remount,bind,ro "$R/proc/sys"
for f in sysrq-trigger kcore; do
  [ -e "$R/proc/$f" ] || continue
  mount --bind "$R/proc/$f" "$R/proc/$f"; mount -o remount,bind,ro "$R/proc/$f"
done
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=0755,nosuid,size=4m hbd-dev "$R/dev"
for n in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
  set -- $n; mknod -m 666 "$R/dev/$1" c "$2" "$3"
done
mkdir -m 755 "$R/dev/pts"; mkdir -m 1777 "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev hbd-shm "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"; ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"; ln -s /proc/self/fd/2 "$R/dev/stderr"
mount -t tmpfs -o mode=0755,nosuid,nodev hbd-run "$R/run"
mount -t tmpfs -o mode=1777,nosuid,nodev hbd-tmp "$R/tmp"
for p in $HBD_BINDS; do
  mkdir -p "$R$p"; mount --bind "$p" "$R$p"; mount -o remount,bind,ro "$R$p"
done
E="$R/etc/systemd/system"
for w in "$E"/*.wants/*; do
  [ -e "$w" ] || [ -L "$w" ] || continue
  case " $HBD_KEEP " in *" ${w##*/} "*) ;; *) rm -f "$w" ;; esac
done
for m in $HBD_MASKS; do rm -f "$E/$m"; ln -s /dev/null "$E/$m"; done
mkdir -p "$R/etc/systemd/system-generators"
for g in $HBD_GENERATORS; do ln -sf /dev/null "$R/etc/systemd/system-generators/$g"; done
echo "$HBD_HOSTNAME" > "$R/etc/hostname"
hostname "$HBD_HOSTNAME"
echo "$HBD_MACHINE_ID" > "$R/etc/machine-id"
cd "$R"
pivot_root . .
umount -l .
cd /
exec env -i container=hbd-sysd PATH="$HBD_PATH" "$HBD_SYSTEMD" $HBD_ARGS
"""


class ContainerError(RuntimeError):
    """The container could not be started or a command in it failed."""


def _mounts() -> list[tuple[str, str]]:
    """(mount point, fstype) of the caller's mount namespace."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        out.append((left.split()[4], right.split()[0]))
    return out


def cgroup2_root() -> Path | None:
    """Where the unified (cgroup2) hierarchy is mounted: pure v2 or hybrid."""
    mounts = dict(_mounts())
    for cand in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if mounts.get(cand) == "cgroup2":
            return Path(cand)
    return None


def own_cgroup2_path() -> str:
    """This process's cgroup2 path ('0::/...' line of /proc/self/cgroup)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    return "/"


def missing_prerequisites() -> list[str]:
    """Human-readable reasons why containers cannot run on this host."""
    reasons: list[str] = []
    if os.geteuid() != 0:
        reasons.append("needs root")
    for tool in ("unshare", "nsenter", "setpriv", "mount", "pivot_root", "ip"):
        if shutil.which(tool) is None:
            reasons.append(f"{tool} not installed")
    if not Path(SYSTEMD).exists():
        reasons.append(f"{SYSTEMD} missing (package systemd)")
    if cgroup2_root() is None:
        reasons.append("no cgroup2 hierarchy mounted (need /sys/fs/cgroup or .../unified)")
    if not _overlay_available():
        reasons.append("overlayfs not available (kernel module 'overlay')")
    return reasons


def _overlay_available() -> bool:
    if "overlay" in Path("/proc/filesystems").read_text():
        return True
    # Not loaded yet (fresh VM): mount(2) autoloads fs-overlay if the module exists.
    release = os.uname().release
    return any(Path(f"/lib/modules/{release}/kernel/fs/overlayfs").glob("overlay.ko*"))


def _start_time(pid: int) -> str | None:
    """Kernel start time of ``pid`` (guards owner checks against PID reuse)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_stamp() -> str:
    return f"{os.getpid()} {_start_time(os.getpid())}\n"


def _owner_alive(stamp_file: Path) -> bool:
    try:
        pid_s, start = stamp_file.read_text().split()
    except (OSError, ValueError):
        return True  # unknown: leave it alone
    return _start_time(int(pid_s)) == start


def _rmdir_cgroup_tree(cgroup: Path, timeout: float = 5.0) -> None:
    """rmdir a cgroup tree bottom-up (systemd leaves its slices/scopes behind)."""
    if not cgroup.exists():
        return
    deadline = time.monotonic() + timeout
    for dirpath, _dirs, _files in sorted(os.walk(cgroup), key=lambda t: -len(t[0])):
        while True:
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError as e:  # EBUSY while the last processes exit
                if time.monotonic() > deadline:
                    log.warning("cannot remove cgroup %s: %s", dirpath, e)
                    break
                time.sleep(0.05)


def reap_stale(base_dir: Path | None = None) -> list[Path]:
    """Remove leftovers of containers whose owning test process was SIGKILLed.

    PID 1 and the mounts die with the owner (pdeathsig); only the temp dir
    and the (empty) cgroup tree can remain.  Live owners are never touched.
    """
    removed: list[Path] = []
    for d in Path(base_dir or tempfile.gettempdir()).glob("hbd-sysd-*"):
        if not (d / "owner").exists() or _owner_alive(d / "owner"):
            continue
        if any(m.startswith(str(d) + "/") for m, _ in _mounts()):
            continue
        try:
            cg = Path((d / "cgroup").read_text().strip())
        except OSError:
            cg = None
        if cg is not None and cg.name.startswith("hbd-sysd-"):
            _rmdir_cgroup_tree(cg)
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
        log.info("reaped stale container dir %s", d)
    return removed


def _other_fs_binds(paths: Sequence[str]) -> list[str]:
    """Paths the container would not see: other filesystems (overlayfs does not
    descend mounts) and anything under /tmp or /run, which get fresh tmpfs."""
    root_dev = os.stat("/").st_dev
    out = []
    for p in paths:
        if not os.path.exists(p):
            continue
        real = os.path.realpath(p)
        hidden = any(real == d or real.startswith(d + "/") for d in ("/tmp", "/run"))
        if hidden or os.stat(p).st_dev != root_dev:
            out.append(real)
    return out


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(x) for x in text.split()]


class Container:
    """A booted throwaway systemd machine.  Create with :meth:`start`."""

    def __init__(
        self,
        name: str,
        hostname: str | None = None,
        *,
        keep: Sequence[str] = DEFAULT_KEEP,
        masks: Sequence[str] = DEFAULT_MASKS,
        extra_masks: Sequence[str] = (),
        binds: Sequence[str] = (),
        base_dir: Path | None = None,
    ) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", name):
            raise ValueError(f"bad container name {name!r}")
        self.name = name
        self.hostname = hostname or name
        self.keep = tuple(keep)
        self.masks = tuple(masks) + tuple(extra_masks)
        self.binds = tuple(binds)
        self.base_dir = base_dir
        self.workdir: Path | None = None
        self.cgroup: Path | None = None
        self.boot_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._stopped = False

    # -- lifecycle ---------------------------------------------------------
    @classmethod
    def start(
        cls, name: str, hostname: str | None = None, *, timeout: float = 60.0,
        wait: bool = True, **kwargs: Any,
    ) -> Container:
        """Boot a container; with ``wait`` block until systemd finished booting."""
        self = cls(name, hostname, **kwargs)
        try:
            self.boot(timeout=timeout, wait=wait)
        except BaseException:
            self.stop()
            raise
        return self

    def boot(self, *, timeout: float = 60.0, wait: bool = True) -> None:
        reasons = missing_prerequisites()
        if reasons:
            raise ContainerError("; ".join(reasons))
        t0 = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"hbd-sysd-{self.name}-", dir=self.base_dir))
        for d in ("root", "rw"):
            (self.workdir / d).mkdir()
        (self.workdir / "owner").write_text(_owner_stamp())
        init = self.workdir / "init.sh"
        init.write_text(_INIT_SH)
        self.cgroup = self._make_cgroup()
        (self.workdir / "cgroup").write_text(f"{self.cgroup}\n")
        repo = Path(__file__).resolve().parents[2]
        binds = [*_other_fs_binds([str(repo)]), *self.binds]
        env = {
            "PATH": RUN_ENV["PATH"],
            "HBD_PATH": RUN_ENV["PATH"],
            "HBD_WORKDIR": str(self.workdir),
            "HBD_HOSTNAME": self.hostname,
            "HBD_MACHINE_ID": uuid.uuid4().hex,
            "HBD_KEEP": " ".join(self.keep),
            "HBD_MASKS": " ".join(self.masks),
            "HBD_GENERATORS": " ".join(DEFAULT_MASKED_GENERATORS),
            "HBD_BINDS": " ".join(binds),
            "HBD_SYSTEMD": SYSTEMD,
            "HBD_ARGS": "--unit=multi-user.target systemd.show_status=0",
        }
        argv = [
            "/bin/sh", "-c", 'echo $$ > "$1" && shift && exec "$@"', "sh",
            str(self.cgroup / "cgroup.procs"),
            "setpriv", "--pdeathsig", "SIGKILL", "--",
            "unshare", "--mount", "--pid", "--uts", "--net", "--ipc", "--cgroup",
            "--fork", "--kill-child", "--propagation", "private", "--",
            "/bin/sh", str(init),
        ]
        with (self.workdir / "console.log").open("wb") as console:
            self._proc = commands.popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=console,
                stderr=subprocess.STDOUT, start_new_session=True, cwd="/",
            )
        deadline = t0 + timeout
        self._pid = self._wait_for_pid1(deadline)
        log.info("container %s: PID 1 is host pid %d", self.name, self._pid)
        if wait:
            self.wait_booted(deadline - time.monotonic())
            self.boot_seconds = time.monotonic() - t0
            log.info("container %s booted in %.2fs", self.name, self.boot_seconds)

    def wait_booted(self, timeout: float = 60.0) -> str:
        """Wait for ``systemctl is-system-running --wait``; return its state."""
        deadline = time.monotonic() + timeout
        private = self.path("/run/systemd/private")
        while not private.exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise ContainerError(f"systemd never created its socket\n{self.console()}")
            time.sleep(0.02)
        res = self.run(["systemctl", "is-system-running", "--wait"], check=False,
                       timeout=max(1.0, deadline - time.monotonic()))
        state = res.stdout.strip()
        if state not in ("running", "degraded"):
            raise ContainerError(f"container {self.name} state {state!r}: {res.stderr}")
        return state

    def stop(self, timeout: float = 20.0) -> None:
        """Power off (SIGRTMIN+3 to PID 1), wait, clean up.  Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            if self._pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._pid, signal.SIGRTMIN + 3)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("container %s: no clean poweroff, killing", self.name)
                if self._pid is not None and self._pid in _children(proc.pid):
                    os.kill(self._pid, signal.SIGKILL)
                proc.kill()
                proc.wait(timeout=timeout)
        self._remove_cgroup()
        if self.workdir is not None and self.workdir.exists():
            held = [m for m, _ in _mounts() if m.startswith(str(self.workdir))]
            if held:  # should never happen: everything lives in the container's mount ns
                raise ContainerError(f"refusing to delete {self.workdir}: mounted {held}")
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection & control ----------------------------------------------
    @property
    def pid(self) -> int:
        """Host PID of the container's PID 1 (systemd)."""
        if self._pid is None:
            raise ContainerError("container not started")
        return self._pid

    @property
    def netns(self) -> Path:
        """Path to the container's network namespace (for nsenter --net=/setns)."""
        return Path(f"/proc/{self.pid}/ns/net")

    def path(self, path_in_container: str) -> Path:
        """Host path that reaches ``path_in_container`` (via /proc/PID/root)."""
        return Path(f"/proc/{self.pid}/root") / path_in_container.lstrip("/")

    def nsenter_argv(self, argv: Sequence[str]) -> list[str]:
        return ["nsenter", f"--target={self.pid}", "--all", "--root", "--wd", "--", *argv]

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 60.0,
        input: str | None = None, env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the container (all namespaces, its root)."""
        res = commands.run(
            self.nsenter_argv(argv), capture_output=True, text=True, timeout=timeout,
            input=input, env={**RUN_ENV, **(env or {})}, check=False,
        )
        if check and res.returncode != 0:
            raise ContainerError(
                f"{self.name}: {' '.join(argv)} -> rc {res.returncode}\n"
                f"stdout: {res.stdout}\nstderr: {res.stderr}")
        return res

    def install_file(self, path_in_container: str, content: str | bytes, mode: int = 0o644) -> None:
        """Write a file into the container's overlay (parents created)."""
        target = self.path(path_in_container)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        target.write_bytes(data)
        target.chmod(mode)

    def read_file(self, path_in_container: str) -> bytes:
        return self.path(path_in_container).read_bytes()

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", "--no-pager", *args], check=check)

    def failed_units(self) -> list[str]:
        out = self.systemctl("list-units", "--failed", "--plain", "--no-legend", check=False)
        return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]

    def journal(self, *args: str) -> list[dict[str, Any]]:
        """``journalctl -o json`` entries (e.g. ``journal("-u", "x.service")``)."""
        out = self.run(["journalctl", "--no-pager", "-o", "json", *args]).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def console(self) -> str:
        """What systemd printed on its stdout/stderr (debugging aid)."""
        if self.workdir is None:
            return ""
        p = self.workdir / "console.log"
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""

    def link_to(
        self, other: Container, addr_self: str, addr_other: str, *, prefix: int = 24,
        ifname_self: str | None = None, ifname_other: str | None = None,
    ) -> tuple[str, str]:
        """Connect two containers with a veth pair; returns the interface names.

        The pair is created directly inside the two network namespaces, so no
        interface ever appears in the host's namespace.
        """
        a = ifname_self or f"to-{other.name}"[:15]
        b = ifname_other or f"to-{self.name}"[:15]
        commands.run(
            ["ip", "link", "add", a, "netns", str(self.pid), "type", "veth",
             "peer", "name", b, "netns", str(other.pid)],
            check=True, capture_output=True, text=True,
        )
        for c, ifname, addr in ((self, a, addr_self), (other, b, addr_other)):
            for cmd in (["ip", "addr", "add", f"{addr}/{prefix}", "dev", ifname],
                        ["ip", "link", "set", ifname, "up"]):
                commands.run(["nsenter", f"--net={c.netns}", "--", *cmd],
                             check=True, capture_output=True, text=True)
        return a, b

    # -- internals ---------------------------------------------------------
    def _make_cgroup(self) -> Path:
        """A fresh sub-cgroup of ours in the cgroup2 tree, root of the container's ns."""
        root = cgroup2_root()
        if root is None:
            raise ContainerError("no cgroup2 hierarchy")
        parent = root / own_cgroup2_path().lstrip("/")
        cg = parent / f"hbd-sysd-{self.name}-{uuid.uuid4().hex[:8]}"
        cg.mkdir()
        return cg

    def _remove_cgroup(self) -> None:
        if self.cgroup is not None:
            _rmdir_cgroup_tree(self.cgroup)

    def _wait_for_pid1(self, deadline: float) -> int:
        assert self._proc is not None
        while time.monotonic() < deadline:
            self._check_alive()
            kids = _children(self._proc.pid)
            if kids:
                pid = kids[0]
                try:
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                except FileNotFoundError:
                    comm = ""
                if comm == "systemd":
                    return pid
            time.sleep(0.01)
        raise ContainerError(f"systemd did not become PID 1 in time\n{self.console()}")

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise ContainerError(
                f"container {self.name} exited with {self._proc.returncode}\n{self.console()}")
