"""hbd's packages and SysV init scripts: built from this checkout, inspected, run.

The .deb (packaging/build-deb: dpkg-buildpackage, pybuild) and the .rpm
(packaging/build-rpm: rpmbuild) are built once per module.  Their files,
metadata and maintainer scripts are checked, lintian must report nothing
that packaging/README.md does not explain, and the .deb is installed with
dpkg into a throwaway systemd machine where `systemctl enable --now hbd`,
`busctl call ... Takeover`, `journalctl -u hbd`, update-rc.d and
`apt-get remove` are exercised.  Both init scripts run by hand in a network
namespace (no systemd as PID 1 there), against temporary directories named
in a scratch /etc/default/hbd or /etc/sysconfig/hbd; the Red Hat one with
its plain-shell stand-ins for /etc/rc.d/init.d/functions, and its header is
read by the rules of chkconfig's parser.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from tests.hbdproc import ha_cf
from tests.infra import commands
from tests.infra.fixtures import LabFactory
from tests.infra.fixtures_sysd import ContainerFactory
from tests.infra.netns import Lab, pid_running, wait_for
from tests.infra.sysd import Container

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
DEBIAN_SCRIPT = PACKAGING / "sysv" / "hbd.debian"
RHEL_SCRIPT = PACKAGING / "sysv" / "hbd.rhel"
HBD = str(Path(sys.prefix) / "bin" / "hbd")
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
VIP = "10.77.0.240"
PYTHON_DEPS = ("python3-dbus-next", "python3-systemd", "python3-serial", "python3-pyroute2",
               "python3-nacl")
HACF = ha_cf("bcast eth0", extra="auto_failback off\n")
HARESOURCES = f"n1 {VIP}/24/eth0\n"
AUTHKEYS = "auth 1\n1 sha1 packaging-test\n"


def _run(argv: list[str], *, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a system tool with the system's PATH (no virtualenv, no pyenv shims)."""
    env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/root")}
    return commands.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                        check=False)


def _require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t, path=SYSTEM_PATH) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


def _pyproject_version() -> str:
    match = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert match
    return match.group(1)


# --- building ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    deb: Path
    changes: Path
    files: list[str]  # dpkg-deb -c paths, without the leading "."


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Built:
    _require("dpkg-buildpackage", "dpkg-checkbuilddeps", "dh")
    deps = _run(["dpkg-checkbuilddeps", str(PACKAGING / "debian" / "control")])
    if deps.returncode != 0:
        pytest.skip(f"build dependencies missing: {deps.stderr.strip()}")
    out = tmp_path_factory.mktemp("deb")
    t0 = time.monotonic()
    res = _run([str(PACKAGING / "build-deb"), str(out)])
    assert res.returncode == 0, res.stdout + res.stderr
    print(f"built the .deb in {time.monotonic() - t0:.1f}s")
    listing = _run(["dpkg-deb", "-c", str(next(out.glob("hbd_*_all.deb")))]).stdout
    files = [line.split()[5][1:] for line in listing.splitlines()]
    return Built(next(out.glob("hbd_*_all.deb")), next(out.glob("hbd_*.changes")), files)


@pytest.fixture(scope="module")
def rpm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require("rpmbuild", "rpm")
    if _run(["python3", "-c", "import build, installer"]).returncode != 0:
        pytest.skip("python3-build and python3-installer are not installed")
    out = tmp_path_factory.mktemp("rpm")
    t0 = time.monotonic()
    res = _run([str(PACKAGING / "build-rpm"), str(out)])
    assert res.returncode == 0, res.stdout + res.stderr
    print(f"built the .rpm in {time.monotonic() - t0:.1f}s")
    return next(out.glob("hbd-*.noarch.rpm"))


def _rpm_query(rpm: Path, *args: str) -> str:
    res = _run(["rpm", "-qp", *args, str(rpm)])
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_versions_agree() -> None:
    version = _pyproject_version()
    changelog = (PACKAGING / "debian" / "changelog").read_text().splitlines()[0]
    assert changelog.startswith(f"hbd ({version}-")
    spec = (PACKAGING / "rpm" / "hbd.spec").read_text()
    assert re.search(rf"^Version:\s+{re.escape(version)}$", spec, re.M)
    for page in (PACKAGING / "man").iterdir():
        assert f'"hbd {version}"' in page.read_text(), page


def test_deb_metadata_and_dependencies(deb: Built) -> None:
    info = _run(["dpkg-deb", "-f", str(deb.deb)]).stdout
    fields = dict(re.findall(r"^([\w-]+): (.*)$", info, re.M))
    assert fields["Package"] == "hbd" and fields["Architecture"] == "all"
    depends = [d.strip() for d in fields["Depends"].split(",")]
    for dep in PYTHON_DEPS:
        assert dep in depends, depends


def test_deb_contents(deb: Built) -> None:
    files = set(deb.files)
    for path in ("/usr/sbin/hbd", "/usr/bin/hbctl", "/lib/systemd/system/hbd.service",
                 "/usr/share/dbus-1/system.d/org.linuxha.hbd1.conf",
                 "/usr/share/dbus-1/interfaces/org.linuxha.hbd1.xml",
                 "/usr/share/polkit-1/actions/org.linuxha.hbd1.policy",
                 "/etc/init.d/hbd", "/etc/default/hbd",
                 "/usr/share/man/man8/hbd.8.gz", "/usr/share/man/man8/hbctl.8.gz",
                 "/usr/share/man/man5/hbd-ha.cf.5.gz",
                 "/usr/share/doc/hbd/README.md",  # hbd.service's Documentation=
                 "/usr/share/doc/hbd/README.Debian",
                 "/usr/share/doc/hbd/examples/ha.cf", "/usr/share/doc/hbd/examples/haresources",
                 "/usr/share/doc/hbd/examples/authkeys", "/usr/share/doc/hbd/examples/notify-log",
                 "/usr/share/doc/hbd/examples/50-hbd-haclient.rules.example",
                 "/usr/share/doc/hbd/examples/hbd-hardening.conf.example",
                 "/usr/lib/python3/dist-packages/hbd/daemon.py"):
        assert path in files, path
    assert not [f for f in files if f.startswith("/etc/ha.d")], "admin files are never shipped"
    assert "/usr/bin/hbd" not in files


def test_deb_does_not_clash_with_heartbeat(deb: Built) -> None:
    owned = Path("/var/lib/dpkg/info/heartbeat.list")
    if not owned.exists():
        pytest.skip("Debian's heartbeat package is not installed here")
    theirs = {line for line in owned.read_text().splitlines()}
    ours = {f for f in deb.files if not f.endswith("/")}
    assert not ours & theirs
    # Heartbeat's manual pages keep their names: ours is hbd-ha.cf(5).
    assert "/usr/share/man/man5/ha.cf.5.gz" in theirs


def _control_file(deb: Built, name: str, tmp_path: Path) -> str:
    _run(["dpkg-deb", "-e", str(deb.deb), str(tmp_path / "ctrl")])
    path = tmp_path / "ctrl" / name
    return path.read_text() if path.exists() else ""


def test_deb_maintainer_scripts(deb: Built, tmp_path: Path) -> None:
    postinst = _control_file(deb, "postinst", tmp_path)
    assert "deb-systemd-helper enable 'hbd.service'" in postinst  # enabled at installation
    assert "update-rc.d hbd defaults" in postinst
    # neither started during installation nor restarted on upgrade: that is a failover
    assert "deb-systemd-invoke" not in postinst and "invoke-rc.d" not in postinst
    prerm = _control_file(deb, "prerm", tmp_path)  # stops on removal only
    assert re.search(r'"\$1" = remove ].*\n(.*\n)?\s+deb-systemd-invoke stop hbd.service',
                     prerm)
    assert "invoke-rc.d hbd stop" in prerm
    postrm = _control_file(deb, "postrm", tmp_path)
    assert "rm -rf /var/lib/hbd" in postrm and "update-rc.d hbd remove" in postrm
    assert "/etc/ha.d" not in re.sub(r"#.*", "", postrm)
    conffiles = _control_file(deb, "conffiles", tmp_path).split()
    assert sorted(conffiles) == ["/etc/default/hbd", "/etc/init.d/hbd"]


def test_lintian_reports_only_explained_tags(deb: Built) -> None:
    _require("lintian")
    res = _run(["lintian", "-I", "--pedantic", "--show-overrides", "--tag-display-limit", "0",
                str(deb.changes)])
    tags = [line for line in res.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
    assert not tags, res.stdout
    overridden = re.findall(r"^O: hbd: (\S+)", res.stdout, re.M)
    explained = (PACKAGING / "README.md").read_text()
    overrides = (PACKAGING / "debian" / "hbd.lintian-overrides").read_text()
    for tag in overridden:
        assert f"`{tag}`" in explained, f"{tag} is overridden but not explained"
        before = overrides.split(f"hbd: {tag}")[0].rstrip().splitlines()
        assert before and before[-1].startswith("#"), f"{tag} override has no comment"


def test_rpm_metadata_and_scriptlets(rpm: Path) -> None:
    info = _rpm_query(rpm, "-i")
    assert re.search(r"^Name\s*: hbd$", info, re.M)
    assert re.search(rf"^Version\s*: {re.escape(_pyproject_version())}$", info, re.M)
    assert re.search(r"^Architecture: noarch$", info, re.M)
    requires = _rpm_query(rpm, "--requires")
    for dist in ("dbus-next", "systemd-python", "pyserial", "pyroute2", "pynacl"):
        assert f"python3dist({dist})" in requires
    scripts = _rpm_query(rpm, "--scripts")
    post, _, rest = scripts.partition("preuninstall scriptlet")
    preun, _, postun = rest.partition("postuninstall scriptlet")
    assert "systemctl --no-reload preset hbd.service" in post  # %systemd_post
    assert "/sbin/chkconfig --add hbd" in post  # the fallback without systemd
    assert "disable --now hbd.service" in preun and "/sbin/chkconfig --del hbd" in preun
    assert "daemon-reload" in postun and "restart" not in postun  # no failover on upgrade
    assert _rpm_query(rpm, "-c").split() == ["/etc/sysconfig/hbd"]


def _canonical(path: str, pysite: str, docdir: str) -> str | None:
    """A package path with the distribution-specific parts replaced."""
    if path.endswith("/") or path.endswith("/RECORD") or path.endswith("/INSTALLER"):
        return None
    for prefix, name in ((pysite, "PY"), ("/lib/systemd/system/", "UNIT/"),
                         ("/usr/lib/systemd/system/", "UNIT/"), (docdir, "DOC/")):
        if path.startswith(prefix):
            path = name + path[len(prefix):]
    path = {"/etc/init.d/hbd": "INIT", "/etc/rc.d/init.d/hbd": "INIT",
            "/etc/default/hbd": "SETTINGS", "/etc/sysconfig/hbd": "SETTINGS"}.get(path, path)
    return path.removesuffix(".gz")


def test_rpm_has_the_same_files_as_the_deb(deb: Built, rpm: Path) -> None:
    listing = _rpm_query(rpm, "--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]").splitlines()
    rpm_files = [line.split(" ", 1)[1] for line in listing if not line.startswith("d")]
    rpm_site = next(f for f in rpm_files if f.endswith("/hbd/daemon.py"))[:-len("hbd/daemon.py")]
    ours = {_canonical(f, "/usr/lib/python3/dist-packages/", "/usr/share/doc/hbd/")
            for f in deb.files}
    rpm_doc = next(f for f in rpm_files if f.endswith("/README.md")).removesuffix("README.md")
    theirs = {_canonical(f, rpm_site, rpm_doc) for f in rpm_files}
    only_deb = {"DOC/changelog.Debian", "DOC/copyright", "DOC/README.Debian",
                "/usr/share/lintian/overrides/hbd"}
    assert (ours - {None}) - only_deb == theirs - {None}


# --- the init scripts' headers ------------------------------------------------------------


class ChkconfigError(ValueError):
    pass


@dataclass
class ChkconfigHeader:
    levels: str
    start: int
    stop: int
    description: str
    fields: dict[str, list[str]] = field(default_factory=dict)


def parse_chkconfig(text: str) -> ChkconfigHeader:
    """Read an init script the way Red Hat's chkconfig does (leveldb.c, readServiceInfo).

    Comment lines are scanned until both a `chkconfig:` and a `description:` line
    were seen.  `# chkconfig: LEVELS START STOP` is read with sscanf("%s %d %d%c")
    and the character after STOP must be the newline (no trailing blanks); LEVELS
    is `-` or digits 0-6.  A description ending in a backslash continues on the
    next line, which must be a comment with text.  Both are required, else
    chkconfig says the service "does not support chkconfig".  processname,
    pidfile and config are Red Hat's documented extra fields.
    """
    lines = text.split("\n")
    levels: str | None = None
    start = stop = 0
    description: str | None = None
    fields: dict[str, list[str]] = {}
    i = 0
    while i < len(lines) and (levels is None or description is None):
        line = lines[i].lstrip()
        i += 1
        if not line.startswith("#"):
            continue
        body = line[1:].lstrip()
        key = re.match(r"(processname|pidfile|config):\s*(\S.*)$", body)
        if key:
            fields.setdefault(key.group(1), []).append(key.group(2))
        if body.startswith("chkconfig:"):
            match = re.fullmatch(r"\s*(\S+)\s+([+-]?\d+)\s+([+-]?\d+)", body[10:])
            if match is None or i >= len(lines):
                raise ChkconfigError(f"line {i}: bad chkconfig line {body!r}")
            levels = match.group(1)
            if levels != "-" and not re.fullmatch(r"[0-6]+", levels):
                raise ChkconfigError(f"line {i}: bad run levels {levels!r}")
            start, stop = int(match.group(2)), int(match.group(3))
            if not (0 <= start <= 99 and 0 <= stop <= 99):
                raise ChkconfigError(f"line {i}: priorities must be 00-99")
        elif body.startswith("description:"):
            desc = body[12:].lstrip()
            if not desc:
                raise ChkconfigError(f"line {i}: empty description")
            while desc.endswith("\\"):
                nxt = lines[i].lstrip() if i < len(lines) else ""
                i += 1
                if not nxt.startswith("#") or not nxt[1:].strip():
                    raise ChkconfigError(f"line {i}: description continues on no comment")
                desc = desc[:-1] + nxt[1:].lstrip()
            description = desc
    if levels is None or description is None:
        raise ChkconfigError("no chkconfig or description line: "
                             "service does not support chkconfig")
    for line in lines[i:]:
        key = re.match(r"#\s*(processname|pidfile|config):\s*(\S.*)$", line.lstrip())
        if key:
            fields.setdefault(key.group(1), []).append(key.group(2))
    return ChkconfigHeader(levels, start, stop, description, fields)


def test_chkconfig_parser_is_as_strict_as_chkconfig() -> None:
    good = "#!/bin/sh\n# chkconfig: 345 10 90\n# description: a \\\n#   b\n"
    assert parse_chkconfig(good).description == "a b"
    for bad in ("#!/bin/sh\n# chkconfig: 345 10 90 \n# description: x\n",  # trailing blank
                "#!/bin/sh\n# chkconfig: 2378 10 90\n# description: x\n",  # level 7, 8
                "#!/bin/sh\n# chkconfig: 345 10\n# description: x\n",
                "#!/bin/sh\n# chkconfig: 345 10 90\n",  # no description
                "#!/bin/sh\n# chkconfig: 345 10 90\n# description: x \\\necho\n"):
        with pytest.raises(ChkconfigError):
            parse_chkconfig(bad)


def test_rhel_script_header_by_chkconfig_rules() -> None:
    text = RHEL_SCRIPT.read_text()
    header = parse_chkconfig(text)
    assert (header.levels, header.start, header.stop) == ("2345", 75, 5)
    assert header.description.startswith("hbd watches the other cluster node")
    assert header.fields["processname"] == ["hbd"]
    default_pidfile = re.search(r"^PIDFILE=(\S+)$", text, re.M)
    assert default_pidfile and header.fields["pidfile"] == [default_pidfile.group(1)]
    assert "/etc/ha.d/ha.cf" in header.fields["config"]
    assert "/etc/sysconfig/hbd" in header.fields["config"]
    # functions only when present, plain shell otherwise
    assert re.search(r"if \[ -r /etc/rc.d/init.d/functions \]; then\n\s+(# .*\n\s+)?\. "
                     r"/etc/rc.d/init.d/functions\nelse", text)


def _lsb_header(text: str) -> dict[str, str]:
    block = text.split("### BEGIN INIT INFO\n", 1)[1].split("### END INIT INFO", 1)[0]
    header: dict[str, str] = {}
    key = ""
    for line in block.splitlines():
        match = re.match(r"# ([A-Za-z-]+):\s*(.*)$", line)
        if match:
            key = match.group(1)
            header[key] = match.group(2)
        else:  # "#<tab or 2+ blanks>" continues the previous field
            assert re.match(r"#(\t|  )", line), line
            header[key] += " " + line[1:].strip()
    return header


def test_debian_script_lsb_header() -> None:
    header = _lsb_header(DEBIAN_SCRIPT.read_text())
    assert header["Provides"] == "hbd"
    for facility in ("$remote_fs", "$network", "$syslog"):
        assert facility in header["Required-Start"].split()
        assert facility in header["Required-Stop"].split()
    assert header["Default-Start"].split() == ["2", "3", "4", "5"]
    assert header["Default-Stop"].split() == ["0", "1", "6"]
    assert header["Short-Description"] and header["Description"]
    text = DEBIAN_SCRIPT.read_text()
    assert ". /lib/lsb/init-functions" in text and "start-stop-daemon" in text


@pytest.mark.parametrize("script", [DEBIAN_SCRIPT, RHEL_SCRIPT], ids=["debian", "rhel"])
def test_init_script_syntax(script: Path) -> None:
    for shell in ("bash", "dash"):
        if shutil.which(shell, path=SYSTEM_PATH):
            res = _run([shell, "-n", str(script)])
            assert res.returncode == 0, res.stderr
    if shutil.which("checkbashisms", path=SYSTEM_PATH):  # /bin/sh is dash on Debian
        res = _run(["checkbashisms", str(script)])
        assert res.returncode == 0, res.stdout + res.stderr


def test_update_rc_d_defaults_on_a_scratch_root(tmp_path: Path) -> None:
    """`update-rc.d hbd defaults` (what Debian 12 does instead of the numeric form).

    Without insserv it links the script by its LSB header; enabling hbd.service is
    deb-systemd-helper's job (checked in the systemd machine below).
    """
    _require("update-rc.d")
    root = tmp_path / "root"
    (root / "etc/init.d").mkdir(parents=True)
    shutil.copy(DEBIAN_SCRIPT, root / "etc/init.d/hbd")
    env = {"PATH": SYSTEM_PATH, "DPKG_ROOT": str(root)}
    res = commands.run(["update-rc.d", "hbd", "defaults"], env=env, capture_output=True,
                       text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    for level, link in (("2", "S01hbd"), ("3", "S01hbd"), ("4", "S01hbd"), ("5", "S01hbd"),
                        ("0", "K01hbd"), ("1", "K01hbd"), ("6", "K01hbd")):
        assert os.readlink(root / f"etc/rc{level}.d" / link) == "../init.d/hbd"
    res = commands.run(["update-rc.d", "hbd", "remove"], env=env, capture_output=True,
                       text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert not list(root.glob("etc/rc?.d/*hbd"))


def test_man_pages_render_without_warnings() -> None:
    _require("groff")
    for page in sorted((PACKAGING / "man").iterdir()):
        res = _run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)])
        assert res.returncode == 0 and not res.stderr, f"{page.name}: {res.stderr}"
        text = page.read_text()
        assert re.search(r"^\.SH NAME\n\S+ \\- ", text, re.M), page.name
        assert ".SH SEE ALSO" in text


def test_example_configs_are_valid(tmp_path: Path) -> None:
    for name in ("ha.cf", "haresources", "authkeys"):
        shutil.copy(PACKAGING / "examples" / name, tmp_path / name)
    (tmp_path / "authkeys").chmod(0o600)
    res = commands.run([HBD, "--check-config", "--config-dir", str(tmp_path), "--node",
                          "node1"], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert "WARN" not in res.stderr and "warning" not in res.stderr.lower(), res.stderr


# --- the init scripts, run by hand in a network namespace -----------------------------


@pytest.fixture(scope="module")
def lab(module_make_lab: LabFactory) -> Lab:
    """One node, n1 (10.77.0.1 on eth0): its peer n2 never answers."""
    return module_make_lab(("n1",), networks=1)


class InitScript:
    """A copy of an init script whose settings file points at a scratch directory.

    The copy differs from the shipped script only in the path of its settings
    file (/etc/default/hbd or /etc/sysconfig/hbd); everything else (DAEMON,
    PIDFILE, CONFIG_DIR...) is set there, as an admin would.  It runs in node
    n1 with the clean environment init gives scripts.  Every daemon it starts
    is recorded in the lab's pid ledger and stopped at teardown.
    """

    def __init__(self, lab: Lab, source: Path, settings_path: str, work: Path) -> None:
        self.lab = lab
        self.work = work
        self.config_dir = work / "ha.d"
        self.config_dir.mkdir(parents=True)
        self.pidfile = work / "hbd.pid"
        self.logfile = work / "ha-log"
        self.settings = work / "settings"
        self.write_config()
        self.set()
        sourcing = f"[ -r {settings_path} ] && . {settings_path}\n"
        text = source.read_text()
        assert text.count(sourcing) == 1, "the settings file is sourced in one place"
        self.path = work / source.name
        self.path.write_text(text.replace(sourcing, f". {self.settings}\n"))
        self.path.chmod(0o755)
        self.pids: list[int] = []

    def write_config(self, hacf: str = HACF) -> None:
        (self.config_dir / "ha.cf").write_text(
            f"logfacility none\nlogfile {self.logfile}\n{hacf}")
        (self.config_dir / "haresources").write_text(HARESOURCES)
        (self.config_dir / "authkeys").write_text(AUTHKEYS)
        (self.config_dir / "authkeys").chmod(0o600)

    def set(self, **overrides: str) -> None:
        values = {"DAEMON": HBD, "CONFIG_DIR": str(self.config_dir),
                  "STATE_DIR": str(self.work / "state"), "RUNTIME_DIR": str(self.work / "run"),
                  "PIDFILE": str(self.pidfile), "LOCKFILE": str(self.work / "lock"),
                  "HEARTBEAT_PIDFILE": str(self.work / "heartbeat.pid"), "STOP_TIMEOUT": "30",
                  "HBD_OPTS": "--no-dbus --node n1", **overrides}
        self.settings.write_text("".join(f'{k}="{v}"\n' for k, v in values.items()))

    def __call__(self, action: str) -> subprocess.CompletedProcess[str]:
        res = self.lab.run("n1", ["env", "-i", f"PATH={SYSTEM_PATH}", "LANG=C.UTF-8",
                                  str(self.path), action], check=False, timeout=60)
        pid = self.pid()
        if pid is not None and pid not in self.pids and _is_hbd(pid):
            self.pids.append(pid)
            self.lab.ledger.record(pid)
        return res

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text())
        except (OSError, ValueError):
            return None

    def log(self) -> str:
        return self.logfile.read_text() if self.logfile.exists() else ""

    def wait_log(self, text: str, timeout: float = 15.0) -> None:
        wait_for(lambda: text in self.log(), timeout, f"{text!r} in {self.logfile}")

    def cleanup(self) -> None:
        for pid in self.pids:
            if pid_running(pid) and _is_hbd(pid):
                os.kill(pid, signal.SIGTERM)
                try:
                    wait_for(partial(_gone, pid), 10, f"hbd {pid} to stop")
                except TimeoutError:
                    os.kill(pid, signal.SIGKILL)
            self.lab.ledger.forget(pid)
        self.lab.run("n1", ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)


@pytest.fixture(params=["debian", "rhel"])
def script(request: pytest.FixtureRequest, lab: Lab, tmp_path: Path) -> Iterator[InitScript]:
    source, settings = ((DEBIAN_SCRIPT, "/etc/default/hbd") if request.param == "debian"
                        else (RHEL_SCRIPT, "/etc/sysconfig/hbd"))
    if request.param == "debian" and shutil.which("start-stop-daemon", path=SYSTEM_PATH) is None:
        pytest.skip("start-stop-daemon is not installed")
    made = InitScript(lab, source, settings, tmp_path)
    yield made
    made.cleanup()


def _is_hbd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "hbd"
    except OSError:
        return False


def _gone(pid: int) -> bool:
    return not pid_running(pid)


def _has_vip(lab: Lab) -> bool:
    return lab.has_address("n1", VIP)


def _expect(res: subprocess.CompletedProcess[str], code: int, text: str = "") -> None:
    out = res.stdout + res.stderr
    assert res.returncode == code, f"exit {res.returncode}, expected {code}:\n{out}"
    assert text in out, f"{text!r} not in:\n{out}"


@pytest.mark.netns
def test_init_script_lifecycle(script: InitScript, lab: Lab) -> None:
    _expect(script("status"), 3)
    _expect(script("start"), 0)
    pid = script.pid()
    assert pid is not None and pid_running(pid), "the pid file is there when start returns"
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "hbd"
    script.wait_log("ready: 1 of 1 link(s) open")
    wait_for(lambda: _has_vip(lab), 15, "n1 to take its group (n2 is dead)")
    _expect(script("status"), 0, "running")
    _expect(script("start"), 0)  # already running: success, nothing started
    assert script.pid() == pid
    _expect(script("reload"), 0)
    script.wait_log(f"configuration reloaded from {script.config_dir}")
    _expect(script("force-reload"), 0)
    # a bad configuration is reported and not sent: hbd keeps the running one
    script.write_config(HACF + "bogus yes\n")
    _expect(script("reload"), 6, "unknown directive 'bogus'")
    script.write_config()
    _expect(script("status"), 0)
    _expect(script("stop"), 0)
    assert not pid_running(pid) and not script.pidfile.exists()
    assert not _has_vip(lab), "stop waits until hbd released its group"
    assert "hbd stopped" in script.log()
    _expect(script("status"), 3)
    _expect(script("stop"), 0)  # stopping a stopped service succeeds (LSB)
    _expect(script("reload"), 7)
    _expect(script("restart"), 0)
    _expect(script("status"), 0)
    _expect(script("try-restart"), 0)
    _expect(script("stop"), 0)
    _expect(script("bogus"), 2, "Usage:")


@pytest.mark.netns
def test_init_script_killed_daemon_leaves_a_stale_pid_file(script: InitScript,
                                                             lab: Lab) -> None:
    _expect(script("start"), 0)
    pid = script.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    # wait for the reaper: a zombie still answers kill -0
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 15, f"hbd {pid} to be reaped")
    _expect(script("status"), 1)
    assert script.pidfile.exists()
    _expect(script("reload"), 7)
    _expect(script("stop"), 0)  # clears the stale pid file
    assert not script.pidfile.exists()
    _expect(script("status"), 3)
    _expect(script("start"), 0)  # a stale pid file does not block a start
    assert script.pid() not in (None, pid)
    _expect(script("stop"), 0)
    # a pid file naming a live process that is not hbd (a reused pid): dead, and
    # stop never signals that process (it is this test)
    script.pidfile.write_text(f"{os.getpid()}\n")
    _expect(script("status"), 1)
    _expect(script("stop"), 0)
    assert not script.pidfile.exists()


@pytest.mark.netns
def test_init_script_refusals(script: InitScript, tmp_path: Path) -> None:
    # Heartbeat runs on this node: never both (this test process stands in for it)
    (tmp_path / "heartbeat.pid").write_text(f"{os.getpid()}\n")
    _expect(script("start"), 1, "Heartbeat runs on this node")
    (tmp_path / "heartbeat.pid").unlink()
    # a configuration with errors: LSB 6, with the problems
    script.write_config(HACF.replace("deadtime 500ms", "deadtime 150ms"))
    _expect(script("start"), 6, "must be more than twice keepalive")
    assert script.pid() is None
    # not configured at all
    script.set(CONFIG_DIR=str(tmp_path / "nowhere"))
    res = script("start")
    if script.path.name == "hbd.debian":  # Debian: a package not configured yet is no error
        _expect(res, 0, "ha.cf is missing")
    else:
        _expect(res, 6, "is missing")
    assert script.pid() is None


@pytest.mark.netns
def test_rhel_script_status_dead_but_subsys_locked(lab: Lab, tmp_path: Path) -> None:
    script = InitScript(lab, RHEL_SCRIPT, "/etc/sysconfig/hbd", tmp_path)
    try:
        _expect(script("start"), 0)
        assert (tmp_path / "lock").exists(), "Red Hat's rc stops only services with a lock"
        pid = script.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 15, f"hbd {pid} to be reaped")
        script.pidfile.unlink()
        _expect(script("status"), 2, "dead but subsys locked")
        _expect(script("condrestart"), 0)  # not running: nothing to do
        _expect(script("stop"), 0)
        assert not (tmp_path / "lock").exists()
    finally:
        script.cleanup()


# --- the .deb in a throwaway systemd machine --------------------------------------------

BUS = ("org.linuxha.hbd1", "/org/linuxha/hbd1", "org.linuxha.hbd1.Manager")


def _poll(cond: Callable[[], bool], timeout: float, what: str) -> None:
    wait_for(cond, timeout, what, interval=0.1)


def _etc_ha_d(c: Container) -> dict[str, tuple[bytes, int]]:
    """Every file under the machine's /etc/ha.d with its content and mode."""
    top = c.path("/etc/ha.d")
    return {str(p.relative_to(top)): (p.read_bytes(), p.stat().st_mode)
            for p in sorted(top.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def machine(systemd_container: ContainerFactory, deb: Built) -> Container:
    c = systemd_container("hbdpkg", "n1")
    for cmd in (["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"],
                ["ip", "addr", "add", "10.77.0.1/24", "dev", "eth0"],
                ["ip", "link", "set", "eth0p", "up"], ["ip", "link", "set", "eth0", "up"]):
        c.run(cmd)
    # The host may keep a policy-rc.d that forbids starting and stopping services
    # (.ci/bootstrap uses one while it installs); this machine's maintainer scripts
    # must run as on a real system.  The overlay takes the removal, not the host.
    c.run(["rm", "-f", "/usr/sbin/policy-rc.d", "/etc/ha.d/ha.cf", "/etc/ha.d/haresources",
           "/etc/ha.d/authkeys"])
    c.install_file("/root/hbd.deb", deb.deb.read_bytes())
    return c


@pytest.mark.slow
def test_deb_in_a_systemd_machine(machine: Container) -> None:
    c = machine
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    c.run(["dpkg", "-i", "/root/hbd.deb"], env=env, timeout=180)  # no file clash, deps met
    assert c.systemctl("is-enabled", "hbd.service").stdout.strip() == "enabled"
    assert c.systemctl("is-active", "hbd.service", check=False).stdout.strip() == "inactive"
    for level, link in (("2", "S01hbd"), ("5", "S01hbd"), ("0", "K01hbd"), ("6", "K01hbd")):
        assert c.path(f"/etc/rc{level}.d/{link}").is_symlink()  # update-rc.d hbd defaults
    # Heartbeat's registration command: Debian 12 warns and falls back to defaults
    res = c.run(["update-rc.d", "hbd", "start", "75", "2", "3", "4", "5", ".", "stop", "05",
                 "0", "1", "6", "."])
    assert "falling back to defaults" in res.stderr
    c.run(["update-rc.d", "hbd", "defaults"])

    # the admin's configuration, then the Debian way of starting a service
    c.install_file("/etc/ha.d/ha.cf", "logfacility local0\n" + HACF)
    c.install_file("/etc/ha.d/haresources", HARESOURCES)
    c.install_file("/etc/ha.d/authkeys", AUTHKEYS, mode=0o600)
    before = _etc_ha_d(c)
    c.systemctl("enable", "--now", "hbd")
    assert c.systemctl("is-active", "hbd.service").stdout.strip() == "active"
    main_pid = c.systemctl("show", "-p", "MainPID", "--value", "hbd").stdout.strip()
    cmdline = c.read_file(f"/proc/{main_pid}/cmdline").split(b"\0")
    assert b"/usr/sbin/hbd" in cmdline, cmdline  # the packaged daemon, Debian's python3

    # root may call the bus service: Takeover (the peer is dead, so it starts what is missing)
    _poll(lambda: c.run(["busctl", "get-property", *BUS, "NodeName"],
                        check=False).returncode == 0, 30, "hbd to own org.linuxha.hbd1")
    c.run(["busctl", "call", *BUS, "Takeover", "s", "all"], timeout=60)
    _poll(lambda: f" {VIP}/24 " in c.run(["ip", "-4", "-o", "addr", "show", "eth0"]).stdout,
          20, "the VIP on eth0")
    _poll(lambda: c.run(["busctl", "get-property", *BUS, "ResourcesHeld"]).stdout.strip()
          in ('s "local"', 's "all"'), 20, "ResourcesHeld to say the group is held")
    status = c.run(["hbctl", "status"])
    assert "n1" in status.stdout and VIP in status.stdout, status.stdout
    messages = [e.get("MESSAGE", "") for e in c.journal("-u", "hbd.service")]
    assert any("ready: " in m for m in messages), messages
    assert any(e.get("SYSLOG_IDENTIFIER") == "hbd" for e in c.journal("-u", "hbd.service"))

    # the seed's commands, handed to systemctl by /lib/lsb/init-functions
    assert c.run(["/etc/init.d/hbd", "status"], check=False).returncode == 0
    c.run(["/etc/init.d/hbd", "reload"])
    c.run(["/etc/init.d/hbd", "stop"], timeout=120)
    assert c.run(["/etc/init.d/hbd", "status"], check=False).returncode == 3
    c.run(["/etc/init.d/hbd", "start"])
    assert c.systemctl("is-active", "hbd.service").stdout.strip() == "active"
    _poll(lambda: f" {VIP}/24 " in c.run(["ip", "-4", "-o", "addr", "show", "eth0"]).stdout,
          20, "the VIP back on eth0")

    # removal stops hbd (which releases the VIP first) and leaves /etc/ha.d alone
    c.run(["apt-get", "remove", "-y", "hbd"], env=env, timeout=180)
    assert c.systemctl("is-active", "hbd.service", check=False).stdout.strip() != "active"
    assert f" {VIP}/24 " not in c.run(["ip", "-4", "-o", "addr", "show", "eth0"]).stdout
    assert not c.path("/usr/sbin/hbd").exists()
    assert _etc_ha_d(c) == before
    c.run(["dpkg", "--purge", "hbd"], env=env, timeout=180)
    assert _etc_ha_d(c) == before
    assert not c.path("/etc/init.d/hbd").exists() and not c.path("/var/lib/hbd").exists()
    assert not [p for p in c.path("/etc").glob("rc?.d/*hbd")]
