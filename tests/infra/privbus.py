"""A private, system-like D-Bus with the real polkitd on it, for tests.

Why: hbd's control interface is guarded by a bus policy file and by polkit
checks.  Mocking either would hide the exact failures we care about (policy
denials, polkit subject handling), so tests get the real ``dbus-daemon`` with
Debian's ``system.conf`` semantics and the real ``polkitd``, but on a private
socket so the host's own system bus (if any) is never touched.

Isolation design (the "clean way" to let tests add polkit files):

* One long-lived *holder* process (``unshare --mount ... sleep``) owns a
  private mount namespace.  In it, a few host paths are bind-mounted over with
  copies living in our temp dir:

  - ``/usr/share/polkit-1/actions`` -> copy of the host actions + test actions
  - ``/etc/polkit-1/rules.d``       -> copy of the host rules + test rules
  - ``/etc/passwd``, ``/etc/group`` -> copies plus *virtual* test users/groups

* ``dbus-daemon``, ``polkitd`` and every :meth:`PrivateBus.run_as` command are
  started inside that namespace with ``nsenter --mount``.  The host's ``/etc``
  and ``/usr`` are never written, test users never exist on the host, and
  everything vanishes with the holder, even when a test run is killed
  (``setpriv --pdeathsig`` ties the helpers to this Python process).

Files the tests drop into ``actions_dir``/``rules_dir`` are visible to polkitd
immediately (same inodes through the bind mount); :meth:`install_polkit_action`
and :meth:`install_polkit_rule` restart polkitd so the change is deterministic
instead of depending on inotify timing.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.infra import commands

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]  # the checkout hbctl runs from

SYSTEM_CONF = Path("/usr/share/dbus-1/system.conf")
POLKITD = Path("/usr/lib/polkit-1/polkitd")
POLKIT_ACTIONS = Path("/usr/share/polkit-1/actions")
POLKIT_ETC_RULES = Path("/etc/polkit-1/rules.d")
POLKIT_BUS_NAME = "org.freedesktop.PolicyKit1"

_DOCTYPE = (
    '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"\n'
    ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
)
# Elements of system.conf that make no sense for a private root-run bus:
# privilege drop to messagebus, daemonising, the global pidfile, the setuid
# activation helper (it only reads the compiled-in config), syslog noise.
_DROP_TAGS = {"user", "fork", "pidfile", "servicehelper", "standard_system_servicedirs", "syslog"}
# Local override files may carry <listen>/<user>: never let them redirect us
# onto the host's socket.
_DROP_INCLUDES = {"/etc/dbus-1/system.conf", "/etc/dbus-1/system-local.conf"}


class PrivBusError(RuntimeError):
    """The private bus or polkitd could not be brought up."""


def missing_prerequisites() -> list[str]:
    """Return human-readable reasons why a PrivateBus cannot run here."""
    reasons: list[str] = []
    if os.geteuid() != 0:
        reasons.append("needs root (mount namespaces, setpriv, polkitd user switch)")
    for tool in ("dbus-daemon", "unshare", "nsenter", "setpriv", "busctl"):
        if shutil.which(tool) is None:
            reasons.append(f"{tool} not installed")
    if not SYSTEM_CONF.exists():
        reasons.append(f"{SYSTEM_CONF} missing (package dbus-system-bus-common)")
    if not POLKITD.exists():
        reasons.append(f"{POLKITD} missing (package polkitd)")
    return reasons


def rewrite_system_conf(
    source: str,
    *,
    source_dir: Path,
    listen: str,
    extra_includedirs: Sequence[Path],
    extra_servicedirs: Sequence[Path],
) -> str:
    """Turn Debian's system.conf into a config for a private root-run bus.

    Relative ``include``/``includedir`` paths are resolved against the original
    file's directory (that is what dbus-daemon does), because our copy lives
    elsewhere.  Our own dirs are appended last so test policy wins.
    """
    root = ET.fromstring(source)
    for child in list(root):
        tag = child.tag
        if tag in _DROP_TAGS:
            root.remove(child)
        elif tag == "listen":
            child.text = listen
        elif tag in ("include", "includedir") and child.text:
            path = child.text.strip()
            if child.get("selinux_root_relative") == "yes":
                continue  # resolved by dbus against the SELinux root, leave alone
            if not os.path.isabs(path):
                path = str(source_dir / path)
            if tag == "include" and path in _DROP_INCLUDES:
                root.remove(child)
                continue
            child.text = path
    for d in extra_servicedirs:
        ET.SubElement(root, "servicedir").text = str(d)
    for d in extra_includedirs:
        ET.SubElement(root, "includedir").text = str(d)
    ET.indent(root)
    return _DOCTYPE + ET.tostring(root, encoding="unicode") + "\n"


@dataclass(frozen=True)
class TestUser:
    """A user that exists only inside the bus mount namespace."""

    name: str
    uid: int
    groups: tuple[str, ...] = ()


@dataclass
class _Proc:
    argv: list[str]
    popen: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None


def _terminate(proc: subprocess.Popen[bytes] | None, what: str, timeout: float = 5.0) -> None:
    """Stop one process we started, by its recorded PID, SIGKILL on timeout."""
    if proc is None or proc.poll() is not None:
        return
    log.debug("stopping %s pid %d", what, proc.pid)
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s pid %d ignored SIGTERM, killing", what, proc.pid)
        proc.kill()
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def reap_stale(base_dir: Path | None = None) -> list[Path]:
    """Delete temp dirs of buses whose owning test process was SIGKILLed.

    The daemons die with their owner (pdeathsig / lost bus), and nothing is
    mounted on the host, so only the directory itself can be left over.
    """
    removed: list[Path] = []
    for d in Path(base_dir or tempfile.gettempdir()).glob("hbd-privbus-*"):
        try:
            pid_s, start = (d / "owner").read_text().split()
        except (OSError, ValueError):
            continue
        if _start_time(int(pid_s)) != start:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
            log.info("reaped stale bus dir %s", d)
    return removed


def _free_id(used: set[int], start: int) -> int:
    n = start
    while n in used:
        n += 1
    used.add(n)
    return n


@dataclass
class PrivateBus:
    """A private system-like bus + polkitd living in a private mount namespace.

    Use :meth:`start`, then ``address``/``env()``/``run_as()``; always call
    :meth:`stop` (idempotent) - the fixtures do this for you.
    """

    users: Sequence[tuple[str, Sequence[str]]] = (("hbdtest", ()), ("hbdadmin", ("haclient",)))
    with_polkit: bool = True
    base_dir: Path | None = None
    workdir: Path = field(init=False)
    test_users: dict[str, TestUser] = field(init=False, default_factory=dict)
    _holder: subprocess.Popen[bytes] | None = field(init=False, default=None)
    _dbus: _Proc = field(init=False)
    _polkit: _Proc = field(init=False)
    _stopped: bool = field(init=False, default=False)

    # -- layout ------------------------------------------------------------
    @property
    def socket_path(self) -> Path:
        return self.workdir / "system_bus_socket"

    @property
    def address(self) -> str:
        """D-Bus address of the private bus (``unix:path=...``)."""
        return f"unix:path={self.socket_path}"

    @property
    def policy_dir(self) -> Path:
        """Bus policy includedir: drop e.g. ``org.linuxha.hbd1.conf`` here."""
        return self.workdir / "system.d"

    @property
    def service_dir(self) -> Path:
        """Activation ``servicedir`` (services are exec'd directly, as root)."""
        return self.workdir / "system-services"

    @property
    def actions_dir(self) -> Path:
        """Seen by polkitd as /usr/share/polkit-1/actions."""
        return self.workdir / "polkit-actions"

    @property
    def rules_dir(self) -> Path:
        """Seen by polkitd as /etc/polkit-1/rules.d."""
        return self.workdir / "polkit-rules"

    @property
    def holder_pid(self) -> int:
        """PID whose mount namespace holds the bind mounts (for nsenter -m)."""
        if self._holder is None:
            raise PrivBusError("bus not started")
        return self._holder.pid

    @property
    def dbus_pid(self) -> int | None:
        return self._dbus.pid

    @property
    def polkitd_pid(self) -> int | None:
        return self._polkit.pid

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a client of this bus (system bus = our bus)."""
        env = dict(os.environ if base is None else base)
        env["DBUS_SYSTEM_BUS_ADDRESS"] = self.address
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        return env

    # -- lifecycle ---------------------------------------------------------
    def start(self, timeout: float = 10.0) -> PrivateBus:
        """Create the namespace, start dbus-daemon and (optionally) polkitd."""
        reasons = missing_prerequisites()
        if reasons:
            raise PrivBusError("; ".join(reasons))
        self.workdir = Path(tempfile.mkdtemp(prefix="hbd-privbus-", dir=self.base_dir))
        try:
            self._prepare_files()
            self._start_holder(timeout)
            self._dbus = _Proc(self._dbus_argv(), log_path=self.workdir / "dbus-daemon.log")
            self._polkit = _Proc(
                ["/usr/bin/env", f"DBUS_SYSTEM_BUS_ADDRESS={self.address}", str(POLKITD),
                 "--no-debug"],
                log_path=self.workdir / "polkitd.log",
            )
            self._start_dbus(timeout)
            if self.with_polkit:
                self._start_polkit(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything we started; safe to call repeatedly."""
        if self._stopped:
            return
        self._stopped = True
        if hasattr(self, "_polkit"):
            _terminate(self._polkit.popen, "polkitd")
        if hasattr(self, "_dbus"):
            _terminate(self._dbus.popen, "dbus-daemon")
        _terminate(self._holder, "namespace holder")
        if self._holder is not None:
            for stream in (self._holder.stdout, self._holder.stderr):
                if stream is not None:
                    stream.close()
        if hasattr(self, "workdir") and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrivateBus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def restart_dbus(self, timeout: float = 10.0) -> None:
        """Stop and start dbus-daemon on the same address (reconnect tests).

        polkitd exits when it loses its bus name, so it is restarted too.
        """
        _terminate(self._polkit.popen, "polkitd")
        _terminate(self._dbus.popen, "dbus-daemon")
        self._start_dbus(timeout)
        if self.with_polkit:
            self._start_polkit(timeout)

    def restart_polkit(self, timeout: float = 10.0) -> None:
        """Restart polkitd so it re-reads actions and rules deterministically."""
        _terminate(self._polkit.popen, "polkitd")
        self._start_polkit(timeout)

    def reload_dbus(self) -> None:
        """Make dbus-daemon re-read its config now (ReloadConfig is synchronous)."""
        self.busctl("call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                    "org.freedesktop.DBus", "ReloadConfig")

    # -- test files --------------------------------------------------------
    def install_bus_policy(self, name: str, content: str) -> Path:
        """Install a bus policy file (e.g. hbd's dbus/org.linuxha.hbd1.conf)."""
        path = self._write(self.policy_dir / name, content)
        self.reload_dbus()
        return path

    def install_polkit_action(self, name: str, content: str, *, restart: bool = True) -> Path:
        """Install a ``.policy`` file where polkitd looks for actions."""
        path = self._write(self.actions_dir / name, content)
        if restart and self.with_polkit:
            self.restart_polkit()
        return path

    def install_polkit_rule(self, name: str, content: str, *, restart: bool = True) -> Path:
        """Install a JavaScript ``.rules`` file into (polkitd's) /etc/polkit-1/rules.d."""
        path = self._write(self.rules_dir / name, content)
        if restart and self.with_polkit:
            self.restart_polkit()
        return path

    # -- running clients ---------------------------------------------------
    def busctl(self, *args: str, timeout: float = 10.0) -> str:
        """Run ``busctl --address=<bus>`` as root and return stdout."""
        res = commands.run(
            ["busctl", f"--address={self.address}", *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if res.returncode != 0:
            raise PrivBusError(f"busctl {' '.join(args)} failed: {res.stderr.strip()}")
        return res.stdout

    def as_user_argv(self, user: str | int, argv: Sequence[str]) -> list[str]:
        """argv that runs ``argv`` as ``user`` inside the bus namespace.

        Names are resolved inside the namespace, so the virtual test users
        work; an int uid without a passwd entry runs with no supplementary
        groups and gid == uid.
        """
        ns = ["nsenter", f"--target={self.holder_pid}", "--mount", "--"]
        if isinstance(user, int) and not self._uid_known(user):
            ids = [f"--reuid={user}", f"--regid={user}", "--clear-groups"]
        else:
            name = user if isinstance(user, str) else self._uid_name(user)
            gid = self._primary_gid(name)
            ids = [f"--reuid={name}", f"--regid={gid}", "--init-groups"]
        return [*ns, "setpriv", *ids, "--", *argv]

    def user_env(self, user: str | int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A minimal login-like environment pointing at this bus."""
        if isinstance(user, str):
            name = user
        else:
            name = self._uid_name(user) if self._uid_known(user) else str(user)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": "/",
            "USER": name,
            "LOGNAME": name,
            "LANG": "C.UTF-8",
            "DBUS_SYSTEM_BUS_ADDRESS": self.address,
        }
        env.update(extra or {})
        return env

    def run_as(
        self,
        user: str | int,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        check: bool = False,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as an unprivileged ``user`` with this bus as system bus."""
        return commands.run(
            self.as_user_argv(user, argv), env=self.user_env(user, env), cwd="/",
            capture_output=True, text=True, timeout=timeout, check=check, input=input,
        )

    def popen_as(
        self, user: str | int, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[str]:
        """Like :meth:`run_as` but returns the Popen (caller must wait/kill it)."""
        return commands.popen(
            self.as_user_argv(user, argv), env=self.user_env(user, env), cwd="/",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    # -- internals ---------------------------------------------------------
    def _write(self, path: Path, content: str) -> Path:
        path.write_text(content)
        path.chmod(0o644)
        return path

    def _prepare_files(self) -> None:
        wd = self.workdir
        wd.chmod(0o755)  # unprivileged clients and polkitd must reach the socket
        (wd / "owner").write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
        for d in (self.policy_dir, self.service_dir, self.actions_dir, self.rules_dir):
            d.mkdir(mode=0o755)
            d.chmod(0o755)
        for src in sorted(POLKIT_ACTIONS.glob("*.policy")):
            shutil.copy2(src, self.actions_dir / src.name)
        if POLKIT_ETC_RULES.is_dir():
            for src in sorted(POLKIT_ETC_RULES.glob("*.rules")):
                shutil.copy2(src, self.rules_dir / src.name)
        conf = rewrite_system_conf(
            SYSTEM_CONF.read_text(),
            source_dir=SYSTEM_CONF.parent,
            listen=self.address,
            extra_includedirs=[self.policy_dir],
            extra_servicedirs=[self.service_dir],
        )
        (wd / "system.conf").write_text(conf)
        self._write_identity_files()

    def _write_identity_files(self) -> None:
        """passwd/group copies with the virtual test users appended."""
        passwd = Path("/etc/passwd").read_text().splitlines()
        group = Path("/etc/group").read_text().splitlines()
        used_uids = {int(line.split(":")[2]) for line in passwd if line.count(":") >= 6}
        used_gids = {int(line.split(":")[2]) for line in group if line.count(":") >= 3}
        group_rows = {line.split(":")[0]: line.split(":") for line in group if line}
        members: dict[str, list[str]] = {}
        for name, groups in self.users:
            if any(row.split(":")[0] == name for row in passwd):
                raise PrivBusError(f"test user {name!r} already exists on the host")
            uid = _free_id(used_uids, 64100)
            gid = uid if uid not in used_gids else _free_id(used_gids, 64100)
            used_gids.add(gid)
            passwd.append(f"{name}:x:{uid}:{gid}:hbd test user:/nonexistent:/usr/sbin/nologin")
            group_rows[name] = [name, "x", str(gid), ""]
            for g in groups:
                members.setdefault(g, []).append(name)
            self.test_users[name] = TestUser(name, uid, tuple(groups))
        for g, names in members.items():
            row = group_rows.get(g)
            if row is None:
                row = [g, "x", str(_free_id(used_gids, 64100)), ""]
                group_rows[g] = row
            current = [m for m in row[3].split(",") if m]
            row[3] = ",".join(current + [n for n in names if n not in current])
        (self.workdir / "passwd").write_text("\n".join(passwd) + "\n")
        (self.workdir / "group").write_text(
            "\n".join(":".join(r) for r in group_rows.values()) + "\n")
        for f in ("passwd", "group"):
            (self.workdir / f).chmod(0o644)

    def _start_holder(self, timeout: float) -> None:
        binds = [
            (self.workdir / "passwd", Path("/etc/passwd")),
            (self.workdir / "group", Path("/etc/group")),
            (self.actions_dir, POLKIT_ACTIONS),
        ]
        if POLKIT_ETC_RULES.is_dir():
            binds.append((self.rules_dir, POLKIT_ETC_RULES))
        script = "set -e\n" + "".join(f"mount --bind '{a}' '{b}'\n" for a, b in binds)
        script += self._repo_view_script()
        script += "echo ready\nexec sleep infinity\n"
        self._holder = commands.popen(
            ["setpriv", "--pdeathsig", "SIGKILL", "--", "unshare", "--mount",
             "--propagation", "private", "--", "/bin/sh", "-c", script],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline()  # holder prints once, then sleeps
        if line.strip() != b"ready":
            err = self._holder.stderr.read() if self._holder.stderr else b""
            raise PrivBusError(f"namespace holder failed: {err.decode(errors='replace')}")
        log.debug("bus namespace holder pid %d", self._holder.pid)

    def _repo_view_script(self) -> str:
        """Let unprivileged users reach this checkout (hbctl runs from it as them).

        A clone in root's home (/root is 0700 on Debian) is out of their reach.
        Inside the holder's namespace only, the first directory they cannot
        cross is covered by a 0755 tmpfs holding just the path down to the
        checkout, which is bound back in place; the host sees no change.
        """
        blocking = next((p for p in reversed(REPO.parents)
                         if p != Path("/") and not p.stat().st_mode & 0o001), None)
        if blocking is None:
            return ""
        keep = self.workdir / "repo"
        keep.mkdir(mode=0o700, exist_ok=True)
        below = REPO.relative_to(blocking)
        return (f"mount --bind '{REPO}' '{keep}'\n"
                f"mount -t tmpfs -o mode=0755 hbd-repo-view '{blocking}'\n"
                f"mkdir -p -m 0755 '{blocking / below}'\n"
                f"mount --bind '{keep}' '{REPO}'\n")

    def _dbus_argv(self) -> list[str]:
        return ["dbus-daemon", f"--config-file={self.workdir / 'system.conf'}", "--nofork",
                "--nopidfile", "--nosyslog"]

    def _spawn(self, proc: _Proc) -> None:
        assert proc.log_path is not None
        with proc.log_path.open("ab") as logf:
            proc.popen = commands.popen(
                ["setpriv", "--pdeathsig", "SIGTERM", "--", "nsenter",
                 f"--target={self.holder_pid}", "--mount", "--", *proc.argv],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True, cwd="/",
            )

    def _start_dbus(self, timeout: float) -> None:
        self.socket_path.unlink(missing_ok=True)
        self._spawn(self._dbus)
        self._wait(lambda: self.socket_path.exists() and self._bus_answers(), timeout,
                   "dbus-daemon", self._dbus)

    def _start_polkit(self, timeout: float) -> None:
        self._spawn(self._polkit)
        self._wait(self._polkit_owned, timeout, "polkitd", self._polkit)

    def _wait(self, cond: Callable[[], bool], timeout: float, what: str, proc: _Proc) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while time.monotonic() < deadline:
            if proc.popen is not None and proc.popen.poll() is not None:
                break
            if cond():
                log.debug("%s up (pid %s)", what, proc.pid)
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        text = proc.log_path.read_text(errors="replace") if proc.log_path else ""
        raise PrivBusError(f"{what} did not come up within {timeout}s: {text[-2000:]}")

    def _bus_answers(self) -> bool:
        try:
            self.busctl("call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                        "org.freedesktop.DBus", "GetId", timeout=2)
        except (PrivBusError, subprocess.TimeoutExpired):
            return False
        return True

    def _polkit_owned(self) -> bool:
        try:
            out = self.busctl("call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                              "org.freedesktop.DBus", "NameHasOwner", "s", POLKIT_BUS_NAME,
                              timeout=2)
        except (PrivBusError, subprocess.TimeoutExpired):
            return False
        return out.strip() == "b true"

    def _passwd_rows(self) -> list[list[str]]:
        src = self.workdir / "passwd"
        return [line.split(":") for line in src.read_text().splitlines() if line.count(":") >= 6]

    def _uid_known(self, uid: int) -> bool:
        return any(int(r[2]) == uid for r in self._passwd_rows())

    def _uid_name(self, uid: int) -> str:
        for r in self._passwd_rows():
            if int(r[2]) == uid:
                return r[0]
        raise KeyError(uid)

    def _primary_gid(self, name: str) -> int:
        for r in self._passwd_rows():
            if r[0] == name:
                return int(r[3])
        raise KeyError(f"no user {name!r} in the bus namespace")
