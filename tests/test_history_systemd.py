"""`hbctl history` reads a scripted failover sequence back from a real journal.

Two throwaway systemd machines (tests/infra/sysd.py, never the real root)
joined by a veth, hbd running as hbd.service in each (keepalive 100 ms,
deadtime 300 ms, auto_failback off), logging to its machine's journald.  The
script, on n1's side: n1 takes the VIP at start-up; `hbctl standby` on n1
hands it to n2; n2's hbd is killed (SIGKILL, no restart), n1 declares n2 dead
and takes the VIP back.  Then `hbctl history` inside n1 lists these events in
order, each takeover and release with how long it took (HBD_DURATION_MS) and the
takeover after n2's death with how long the failover took from n2's last heartbeat
(HBD_FAILOVER_MS: the deadtime is in it), as
text and as JSON, and its --since, --until, --group and --node filters keep
what they should; a user outside the journal's groups gets a clear refusal.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.hbdproc import ha_cf
from tests.infra.fixtures_sysd import ContainerFactory
from tests.infra.sysd import Container
from tests.test_stall_systemd import has_vip, poll

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
HBD = str(Path(sys.prefix) / "bin" / "hbd")
VIP = "10.77.0.240"
GROUP = f"{VIP}/24/eth0"
HACF = ha_cf("bcast eth0", keepalive="100ms", deadtime="300ms", warntime="250ms",
             initdead="1", extra="auto_failback off\n")
HBCTL = [sys.executable, "-m", "hbd.cli.hbctl"]
ENV = {"PYTHONPATH": str(ROOT)}


def install_hbd(c: Container) -> None:
    unit = (ROOT / "units" / "hbd.service").read_text().replace("/usr/sbin/hbd", HBD)
    c.install_file("/etc/systemd/system/hbd.service", unit)
    c.install_file("/etc/systemd/system/hbd.service.d/test.conf",
                   "[Service]\nRestart=no\n")  # a killed hbd stays dead: its peer's death
    c.install_file("/etc/ha.d/ha.cf", HACF)
    c.install_file("/etc/ha.d/haresources", f"n1 {GROUP}\n")
    c.install_file("/etc/ha.d/authkeys", "auth 1\n1 sha1 history-test\n", mode=0o600)
    c.install_file("/etc/dbus-1/system.d/org.linuxha.hbd1.conf",  # for hbctl standby
                   (ROOT / "dbus" / "org.linuxha.hbd1.conf").read_text())
    c.install_file("/usr/share/polkit-1/actions/org.linuxha.hbd1.policy",
                   (ROOT / "polkit" / "org.linuxha.hbd1.policy").read_text())
    c.systemctl("reload", "dbus.service", check=False)
    c.systemctl("try-restart", "polkit.service", check=False)
    c.systemctl("daemon-reload")


def hbctl(c: Container, *args: str, check: bool = True) -> Any:
    return c.run([*HBCTL, *args], env=ENV, check=check)


def history(c: Container, *args: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(hbctl(c, "history", "--json", *args).stdout)
    return events


class Script:
    """The times (epoch seconds) between the steps of the sequence."""

    def __init__(self, n1: Container, n2: Container) -> None:
        self.n1, self.n2 = n1, n2
        self.after_start = 0.0
        self.after_standby = 0.0


@pytest.fixture(scope="module")
def script(systemd_container: ContainerFactory) -> Script:
    n1 = systemd_container("hbdhist1", "n1")
    n2 = systemd_container("hbdhist2", "n2")
    n1.link_to(n2, "10.77.0.1", "10.77.0.2", ifname_self="eth0", ifname_other="eth0")
    for c in (n1, n2):
        c.wait_booted(60)
        install_hbd(c)
    found = Script(n1, n2)
    n1.systemctl("start", "--no-block", "hbd.service")
    n2.systemctl("start", "--no-block", "hbd.service")
    poll(lambda: has_vip(n1), what="n1 to hold the VIP")
    # n2 must be a live peer before the standby (else: Busy, no live peer)
    poll(lambda: "active" in hbctl(n1, "nodestatus", "n2", check=False).stdout,
         what="n1 to see n2 active")
    poll(lambda: any(e["event"] == "takeover" and e["duration_ms"] is not None
                     for e in history(n1)), what="the start-up takeover to end")
    time.sleep(0.05)
    found.after_start = time.time()
    hbctl(n1, "standby")
    poll(lambda: has_vip(n2) and not has_vip(n1), what="the VIP on n2 after the standby")
    poll(lambda: any(e["event"] == "release" and e["duration_ms"] is not None
                     for e in history(n1)), what="n1's release to end")
    time.sleep(0.05)
    found.after_standby = time.time()
    n2.systemctl("kill", "--signal=KILL", "hbd.service")
    poll(lambda: has_vip(n1), what="n1 to take the VIP back from the dead n2")
    poll(lambda: sum(e["event"] == "takeover" and e["duration_ms"] is not None
                     for e in history(n1)) == 2, what="the second takeover to end")
    return found


def test_history_lists_the_sequence_in_order(script: Script) -> None:
    out = hbctl(script.n1, "history").stdout
    print(out)
    events = history(script.n1)
    # the start-up (a loaded machine may start n2 late: n1 may call it dead first), then
    # exactly the scripted steps
    scripted = ("takeover", "release", "node-dead")
    names = [e["event"] for e in events if e["event"] in scripted
             and e["timestamp_us"] >= script.after_start * 1e6]
    assert names == ["release", "node-dead", "takeover"], events
    startup = [e for e in events if e["event"] == "takeover"
               and e["timestamp_us"] < script.after_start * 1e6]
    assert startup and startup[-1]["duration_ms"] is not None, events
    moves = [startup[-1], *(e for e in events if e["event"] in ("takeover", "release")
                            and e["timestamp_us"] >= script.after_start * 1e6)]
    for e in moves:
        assert e["group"] == GROUP and e["host"] == "n1"
        assert 0 <= e["duration_ms"] < 10_000, e
        assert e["result"] == {"takeover": "running", "release": "stopped"}[e["event"]], e
        assert e["reason"], e
    dead = next(e for e in events if e["event"] == "node-dead")
    assert dead["node"] == "n2" and "n2" in dead["message"]
    assert "n2" in moves[2]["reason"], moves[2]  # taken over because n2 died
    # that takeover was a failover, timed from n2's last heartbeat: the deadtime (300 ms)
    # spent noticing the silence is in it, so it clearly exceeds the start alone
    assert moves[2]["failover_reason"] == "peer_dead", moves[2]
    assert moves[2]["failover_ms"] >= 300, moves[2]
    assert moves[2]["failover_ms"] >= moves[2]["duration_ms"] + 250, moves[2]
    assert moves[2]["failover_ms"] < 10_000, moves[2]
    # n1's start-up and its own release are no failovers here
    assert startup[-1]["failover_ms"] is None and moves[1]["failover_ms"] is None, moves
    stamps = [e["timestamp_us"] for e in events]
    assert stamps == sorted(stamps)
    # the text shows the same rows, with their durations
    rows = [line for line in out.splitlines()[1:] if line.split()[2] in scripted]
    assert [line.split()[2] for line in rows] == [e["event"] for e in events
                                                  if e["event"] in scripted]
    for e in moves:
        line = next(r for r in rows if r.startswith(e["time"][:23].replace("T", " "))
                    and r.split()[2] == e["event"])
        assert f"{e['duration_ms']} ms" in line and GROUP in line and e["reason"] in line
        if e["failover_ms"] is not None:
            assert line.split()[4:8] == [str(e["failover_ms"]), "ms",
                                         str(e["duration_ms"]), "ms"], line
    assert out.splitlines()[0].split() == ["TIME", "EVENT", "ABOUT", "FAILOVER", "TOOK",
                                           "DETAIL"]


def test_history_filters(script: Script) -> None:
    n1 = script.n1
    since = [e["event"] for e in history(n1, "--since", f"@{script.after_standby}")]
    assert "release" not in since and since.count("takeover") == 1 and "node-dead" in since
    window = history(n1, "--since", f"@{script.after_start}", "--until",
                     f"@{script.after_standby}")
    assert [e["event"] for e in window if e["event"] != "node-up"] == ["release"], window
    assert history(n1, "--group", "10.77.0.99/24/eth0") == []
    assert {e["group"] for e in history(n1, "--group", GROUP)} == {GROUP}
    about_n2 = history(n1, "--node", "n2")
    assert about_n2 and all(e["node"] == "n2" for e in about_n2)
    assert len(history(n1, "--since", "1h")) == len(history(n1))
    assert history(n1, "--since", "tomorrow") == []
    res = hbctl(n1, "history", "--since", "last tuesday", check=False)
    assert res.returncode == 2 and "not a time" in res.stderr


def test_history_file_reads_journalctl_json(script: Script) -> None:
    """`journalctl -o json` of n1 piped into --file -: the same events as from the journal."""
    dump = script.n1.run(["journalctl", "--no-pager", "-o", "json", "SYSLOG_IDENTIFIER=hbd"]
                         ).stdout
    from_file = json.loads(script.n1.run([*HBCTL, "history", "--json", "--file", "-"],
                                         env=ENV, input=dump).stdout)
    assert from_file == history(script.n1)


def _open_the_way_to_the_checkout(container: Container) -> None:
    """A checkout in root's home (/root is 0700 on Debian) is out of nobody's reach: give
    the directories on the way o+x in the container's overlay only (a copy-up there; the
    host's directories keep their modes)."""
    for parent in reversed(ROOT.parents):
        if parent != Path("/") and not parent.stat().st_mode & 0o001:
            inside = container.path(str(parent))
            inside.chmod(inside.stat().st_mode & 0o7777 | 0o001)


def test_history_needs_journal_access(script: Script) -> None:
    _open_the_way_to_the_checkout(script.n1)
    res = script.n1.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                         *HBCTL, "history"], env=ENV, check=False)
    assert res.returncode == 4, res
    assert "systemd-journal or adm group" in res.stderr
    assert "Traceback" not in res.stderr
    # a member of systemd-journal reads it, as with journalctl
    groups = script.n1.read_file("/etc/group").decode().splitlines()
    gid = next(line.split(":")[2] for line in groups if line.startswith("systemd-journal:"))
    res = script.n1.run(["setpriv", "--reuid=nobody", "--regid=nogroup", f"--groups={gid}",
                         *HBCTL, "history", "--json"], env=ENV, check=False)
    assert res.returncode == 0, res
    assert json.loads(res.stdout) == history(script.n1)
