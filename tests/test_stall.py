"""A stalled log sink must not stall heartbeats: real rsyslog frozen, real full tmpfs.

Two hbd nodes in network namespaces, keepalive 100 ms, deadtime 300 ms; n1
holds the VIP.  n1 runs outside systemd (SysV mode, `logfacility local0`)
in a private mount namespace where /dev/log is the socket of an rsyslogd
this module starts (its own configuration, writing to a file here) and where
`logfile` lies on a 4 MiB tmpfs.  The mount namespace is n1's alone: /dev
there is an overlay of the host's /dev with one extra symlink, so the host's
/dev is never touched.  (The journald case needs a systemd: test_stall_systemd.py.)

While a sink is stalled, n1 keeps logging: every SIGHUP makes it reload and
log one warning per `use_logd` line of its ha.cf plus "configuration
reloaded", far more datagrams than a frozen syslog socket queues (its
max_dgram_qlen is 10 in a fresh network namespace): before hbd logged
through a thread, the event loop blocked in send() and n2 declared n1 dead.

What must hold: neither node logs a late heartbeat or a death, nobody takes
over, the VIP stays on n1; and the lines n1 logged meanwhile arrive afterwards
or are counted as dropped.  Both daemons run at nice -10 so that the other
test runs sharing this 2-CPU machine do not turn CPU starvation into late
heartbeats: what is tested is blocking on I/O, which no priority helps.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hbdproc import HbdNode, ha_cf
from tests.infra import commands
from tests.infra.fixtures import LabFactory
from tests.infra.netns import Lab, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow]

VIP = "10.77.0.240"
FREEZE_SECONDS = float(os.environ.get("HBD_STALL_SECONDS", "30"))
HUP_EVERY = 0.5  # seconds between reloads while a sink is stalled
CHATTY = 30  # `use_logd no` lines: 30 warnings per reload
BAD = re.compile(r"Late heartbeat|is dead|taking over group|releasing group|split brain|"
                 r"Traceback")
RELOADED = "configuration reloaded from"

RSYSLOG_CONF = """\
global(workDirectory="{dir}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{dir}/log" RateLimit.Interval="0")
local0.* action(type="omfile" file="{dir}/messages")
"""

# n1's private mount namespace; "$@" is the hbd command line
PRIVATE_MOUNTS = """\
set -e
mount -t overlay hbd-test-dev -o lowerdir=/dev,upperdir={up},workdir={work} /dev
ln -s {sock} /dev/log
mount -t tmpfs -o size=4m,mode=0755 hbd-test-log {logdir}
exec nice -n -10 "$@"
"""


def hacf(logfile: str = "") -> str:
    extra = "logfacility local0\nauto_failback off\n" + (f"logfile {logfile}\n" if logfile
                                                         else "")
    return ha_cf("bcast eth0", keepalive="100ms", deadtime="300ms", warntime="250ms",
                 initdead="1", extra=extra + "use_logd no\n" * CHATTY)


class PrivateMountNode(HbdNode):
    """An hbd whose /dev/log and log directory are its own (see PRIVATE_MOUNTS)."""

    def __init__(self, lab: Lab, *args: Any, sock: Path, logdir: Path, **kwargs: Any) -> None:
        super().__init__(lab, *args, **kwargs)
        self.sock, self.logdir = sock, logdir
        for sub in ("dev-up", "dev-work"):
            (self.dir / sub).mkdir()
        logdir.mkdir()

    def argv(self) -> list[str]:
        script = PRIVATE_MOUNTS.format(up=self.dir / "dev-up", work=self.dir / "dev-work",
                                       sock=self.sock, logdir=self.logdir)
        return ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", script, "sh", *super().argv()]

    def in_ns(self, path: Path) -> Path:
        """`path` as n1 sees it (the tmpfs exists only in its mount namespace)."""
        return Path(f"/proc/{self.pid}/root") / path.relative_to("/")


class NiceNode(HbdNode):
    def argv(self) -> list[str]:
        return ["nice", "-n", "-10", *super().argv()]


class Cluster:
    def __init__(self, lab: Lab, n1: PrivateMountNode, n2: HbdNode,
                 rsyslog: subprocess.Popen[Any], messages: Path) -> None:
        self.lab, self.n1, self.n2 = lab, n1, n2
        self.rsyslog, self.messages = rsyslog, messages

    def syslog_text(self) -> str:
        return self.messages.read_text(errors="replace") if self.messages.exists() else ""

    def check_calm(self, marks: tuple[int, int]) -> None:
        for node, mark in ((self.n1, marks[0]), (self.n2, marks[1])):
            assert node.running(), f"{node.name} exited:\n{node.log()[-3000:]}"
            tail = node.log()[mark:]
            found = BAD.search(tail)
            assert found is None, f"{node.name}: {found.group(0)!r}\n{tail[-3000:]}"
        assert self.holders() == ["n1"], f"VIP held by {self.holders()}"

    def holders(self) -> list[str]:
        return [n for n in ("n1", "n2") if self.lab.has_address(n, VIP)]

    def keep_logging(self, seconds: float, marks: tuple[int, int]) -> int:
        """SIGHUP n1 every HUP_EVERY s for `seconds`, checking all along; return the count."""
        sent = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.n1.signal(signal.SIGHUP)
            sent += 1
            self.check_calm(marks)
            time.sleep(HUP_EVERY)
        return sent


def start_rsyslog(lab: Lab, directory: Path) -> subprocess.Popen[Any]:
    rsyslogd = shutil.which("rsyslogd")
    if rsyslogd is None:
        pytest.skip("rsyslogd not installed")
    conf = directory / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(dir=directory))
    proc = lab.popen("n1", [rsyslogd, "-n", "-f", str(conf), "-i", str(directory / "pid")],
                     stdout=open(directory / "rsyslogd.out", "ab"))  # noqa: SIM115
    wait_for(lambda: (directory / "log").exists() or proc.poll() is not None, 10,
             "rsyslog's socket")
    assert proc.poll() is None, (directory / "rsyslogd.out").read_text()
    return proc


@pytest.fixture(scope="module")
def cluster(module_make_lab: LabFactory) -> Iterator[Cluster]:
    lab = module_make_lab(("n1", "n2"))
    syslog_dir = lab.workdir / "rsyslog"
    syslog_dir.mkdir()
    rsyslog = start_rsyslog(lab, syslog_dir)
    logdir = lab.workdir / "n1-log"
    n1 = PrivateMountNode(lab, "n1", hacf(str(logdir / "ha-log")), f"n1 {VIP}/24/eth0\n",
                          sock=syslog_dir / "log", logdir=logdir)
    n2 = NiceNode(lab, "n2", hacf(), f"n1 {VIP}/24/eth0\n")
    try:
        n1.start()
        n2.start()
        n1.wait_log(r"Status update for node n2: status active")
        n2.wait_log(r"Status update for node n1: status active")
        wait_for(lambda: lab.has_address("n1", VIP), 15, "n1 to hold the VIP")
        messages = syslog_dir / "messages"
        wait_for(lambda: messages.exists() and "Status update for node n2" in
                 messages.read_text(errors="replace"), 15, "hbd's lines in rsyslog's file")
        yield Cluster(lab, n1, n2, rsyslog, messages)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(rsyslog.pid, signal.SIGCONT)
        n1.kill()
        n2.kill()


def test_rsyslog_frozen_30s(cluster: Cluster) -> None:
    n1 = cluster.n1
    marks = (n1.mark(), cluster.n2.mark())
    syslog_mark = len(cluster.syslog_text())
    os.kill(cluster.rsyslog.pid, signal.SIGSTOP)  # by its recorded PID
    try:
        sent = cluster.keep_logging(FREEZE_SECONDS, marks)
        # The stall was real: hbd's one drainer thread is stuck in send() to the frozen
        # socket, so even its stderr got only the lines before the socket queue filled.
        during = n1.log()[marks[0]:].count(RELOADED)
        assert during < sent // 2, f"{during} of {sent} reloads logged: syslog never stalled"
    finally:
        os.kill(cluster.rsyslog.pid, signal.SIGCONT)
    # Afterwards every reload's line arrives, or the dropped ones are counted.
    wait_for(lambda: n1.log()[marks[0]:].count(RELOADED) >= sent
             or "log lines dropped (log sink stalled)" in n1.log()[marks[0]:], 30,
             "the lines logged during the freeze")
    wait_for(lambda: RELOADED in cluster.syslog_text()[syslog_mark:], 30,
             "rsyslog to write the lines it was sent while frozen")
    tail = n1.log()[marks[0]:]
    dropped = re.search(r"(\d+) log lines dropped \(log sink stalled\)", tail)
    print(f"rsyslog frozen {FREEZE_SECONDS:.0f} s: {sent} reloads, "
          f"{tail.count(RELOADED)} logged, dropped: {dropped.group(1) if dropped else 0}")
    assert tail.count(RELOADED) >= sent or dropped
    cluster.check_calm(marks)
    assert "use_logd: not implemented" in cluster.syslog_text()[syslog_mark:]


def test_logfile_on_a_full_tmpfs(cluster: Cluster) -> None:
    n1 = cluster.n1
    logfile = cluster.n1.logdir / "ha-log"
    filler = n1.in_ns(cluster.n1.logdir / "filler")
    marks = (n1.mark(), cluster.n2.mark())
    # fill every byte the tmpfs has left
    commands.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True,
                 check=False)
    try:
        assert os.statvfs(filler.parent).f_bavail == 0
        sent = cluster.keep_logging(5.0, marks)
        n1.wait_log(r"log sink \S+ha-log failing \(\[Errno 28\] No space left on device\)",
                    since=marks[0])
        cluster.check_calm(marks)
    finally:
        filler.unlink()
    before_free = n1.mark()
    n1.signal(signal.SIGHUP)  # one more line, which now fits
    match = n1.wait_log(r"log sink \S+ha-log works again; (\d+) line\(s\) were lost",
                        since=before_free)
    print(f"full tmpfs: {sent} reloads, {match.group(1)} lines lost by the log file")
    assert int(match.group(1)) > 0
    wait_for(lambda: RELOADED in n1.in_ns(logfile).read_text(errors="replace")[-2000:], 10,
             "the log file to take lines again")
    cluster.check_calm(marks)
    assert n1.log()[marks[0]:].count("failing (") == 1  # reported once, not per line
