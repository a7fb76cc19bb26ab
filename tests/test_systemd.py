"""hbd under a real systemd: two throwaway systemd machines joined by a veth.

Proves units/hbd.service end to end: active only after READY=1, the STATUS
line, reload with a good and a bad configuration, structured journal
entries, rsyslog writing hbd's lines to /var/log/messages via local0, the
watchdog killing and systemd restarting a frozen engine, `systemctl stop`
releasing the VIP, and the VIP moving to the other machine.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hbdproc import ha_cf
from tests.infra.fixtures_sysd import ContainerFactory
from tests.infra.sysd import Container

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
HBD = str(Path(sys.prefix) / "bin" / "hbd")
VIP = "10.77.0.240"
MESSAGE_ID_NODE_UP = "99db8876527046bb8aa68054baa752e0"
MESSAGE_ID_LOOP_STALL = "5b0a4d5e2f6c4e0f9d3a7c1e8b2f6a41"
SYSTEMD_STARTED = "39f53479d3a045ac8e11786248231fbf"  # systemd's "Started unit" message

HACF = ha_cf("bcast eth0", extra="logfacility local0\nauto_failback off\n")


KEY = "sd-key-7f3a9c0b"  # unique, so finding it anywhere in the journal means it leaked
AUTHKEYS = f"auth 1\n1 sha1 {KEY}\n"


def poll(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def install_hbd(c: Container) -> None:
    unit = (ROOT / "units" / "hbd.service").read_text().replace("/usr/sbin/hbd", HBD)
    c.install_file("/etc/systemd/system/hbd.service", unit)
    # short watchdog for the test (the shipped unit uses 10 s)
    c.install_file("/etc/systemd/system/hbd.service.d/test.conf",
                   "[Service]\nWatchdogSec=2s\nRestartSec=500ms\n")
    c.install_file("/etc/ha.d/ha.cf", HACF)
    c.install_file("/etc/ha.d/haresources", f"n1 {VIP}/24/eth0\n")
    c.install_file("/etc/ha.d/authkeys", AUTHKEYS, mode=0o600)
    c.install_file("/etc/dbus-1/system.d/org.linuxha.hbd1.conf",
                   (ROOT / "dbus" / "org.linuxha.hbd1.conf").read_text())
    c.install_file("/etc/rsyslog.d/50-hbd.conf", "local0.*  /var/log/messages\n")
    c.systemctl("reload", "dbus.service", check=False)
    c.systemctl("restart", "rsyslog.service")
    c.systemctl("daemon-reload")


@pytest.fixture(scope="module")
def pair(systemd_container: ContainerFactory) -> tuple[Container, Container]:
    n1 = systemd_container("hbdsd1", "n1")
    n2 = systemd_container("hbdsd2", "n2")
    n1.link_to(n2, "10.77.0.1", "10.77.0.2", ifname_self="eth0", ifname_other="eth0")
    for c in (n1, n2):
        c.wait_booted(60)
        install_hbd(c)
    return n1, n2


def has_vip(c: Container) -> bool:
    out = c.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
    return f" {VIP}/" in out


def show(c: Container, prop: str) -> str:
    return c.systemctl("show", "-p", prop, "--value", "hbd.service").stdout.strip()


def test_enable_now_active_only_after_ready(pair: tuple[Container, Container]) -> None:
    n1, n2 = pair
    n1.systemctl("enable", "--now", "hbd.service")
    n2.systemctl("enable", "--now", "hbd.service")
    assert show(n1, "ActiveState") == "active"
    assert show(n1, "UnitFileState") == "enabled"
    ready = [e for e in n1.journal("-u", "hbd.service")
             if "ready: " in e.get("MESSAGE", "")]
    started = [e for e in n1.journal("-u", "hbd.service")
               if e.get("MESSAGE_ID") == SYSTEMD_STARTED]
    assert ready and started
    # systemd entered "active" only after hbd said READY=1 (hbd logs the monotonic
    # time just before sending READY=1; both sides use CLOCK_MONOTONIC)
    assert int(show(n1, "ActiveEnterTimestampMonotonic")) >= int(
        ready[0]["HBD_MONOTONIC_USEC"])
    assert int(show(n1, "ExecMainStartTimestampMonotonic")) < int(
        ready[0]["HBD_MONOTONIC_USEC"])
    poll(lambda: has_vip(n1), what="n1 to hold the VIP")
    assert not has_vip(n2)


def test_status_line_and_journal_fields(pair: tuple[Container, Container]) -> None:
    n1, _ = pair
    poll(lambda: "holding: local" in show(n1, "StatusText"), what="STATUS line")
    status = n1.systemctl("status", "hbd.service", check=False).stdout
    assert re.search(r"Status: \"active; peers: n2 active; holding: local\"", status), status
    entries = n1.journal("-u", "hbd.service", "SYSLOG_IDENTIFIER=hbd")
    up = [e for e in entries if e.get("MESSAGE_ID") == MESSAGE_ID_NODE_UP]
    assert up and up[0]["HBD_NODE"] == "n2"
    assert up[0]["SYSLOG_FACILITY"] == "16"  # local0
    links = [e for e in entries if e.get("HBD_LINK") == "eth0"]
    assert links and all("MESSAGE_ID" in e for e in links)
    groups = [e for e in entries if e.get("HBD_GROUP") == f"{VIP}/24/eth0"]
    assert groups


def test_shipped_unit_lets_hbd_go_realtime(pair: tuple[Container, Container]) -> None:
    """ha.cf has no realtime line: Heartbeat's default, SCHED_RR 1 and memory locked."""
    n1, _ = pair
    pid = show(n1, "MainPID")
    out = n1.run(["chrt", "-p", pid]).stdout
    assert "SCHED_RR|SCHED_RESET_ON_FORK" in out and "priority: 1" in out, out
    locked = n1.run(["grep", "VmLck", f"/proc/{pid}/status"]).stdout
    assert int(locked.split()[1]) > 1000, locked
    assert any("realtime: SCHED_RR 1, memory locked" in e.get("MESSAGE", "")
               for e in n1.journal("-u", "hbd.service"))


def test_brief_stop_logs_a_loop_stall(pair: tuple[Container, Container]) -> None:
    n1, _ = pair
    pid = show(n1, "MainPID")
    n1.run(["kill", "-STOP", pid])
    time.sleep(0.25)  # below deadtime (500 ms): n2 must not notice
    n1.run(["kill", "-CONT", pid])
    poll(lambda: any(e.get("MESSAGE_ID") == MESSAGE_ID_LOOP_STALL
                     for e in n1.journal("-u", "hbd.service")), what="the stall line")
    stall = next(e for e in n1.journal("-u", "hbd.service")
                 if e.get("MESSAGE_ID") == MESSAGE_ID_LOOP_STALL)
    assert int(stall["HBD_LAG_USEC"]) >= 100_000, stall


def test_rsyslog_gets_every_line_once_via_local0(pair: tuple[Container, Container]) -> None:
    n1, _ = pair
    poll(lambda: b"Link n2:eth0 up." in n1.read_file("/var/log/messages"), what="syslog line")
    text = n1.read_file("/var/log/messages").decode(errors="replace")
    lines = [line for line in text.splitlines() if " hbd" in line]
    assert any(re.search(r" hbd\[\d+\]: info: Link n2:eth0 up\.$", line) for line in lines), lines
    bodies = [line.split(": ", 1)[1] for line in lines if ": " in line]
    assert len(bodies) == len(set(bodies)), "a line reached syslog twice"
    journal = [e["MESSAGE"] for e in n1.journal("-u", "hbd.service", "SYSLOG_IDENTIFIER=hbd")]
    assert len(journal) == len(set(journal)), "a line reached the journal twice"


def test_reload_good_and_bad(pair: tuple[Container, Container]) -> None:
    n1, _ = pair
    n1.install_file("/etc/ha.d/ha.cf", HACF.replace("warntime 300ms", "warntime 250ms"))
    n1.systemctl("reload", "hbd.service")
    poll(lambda: any("configuration reloaded" in e.get("MESSAGE", "")
                     for e in n1.journal("-u", "hbd.service")), what="reload")
    n1.install_file("/etc/ha.d/ha.cf", HACF + "bogus yes\n")
    n1.systemctl("reload", "hbd.service")
    poll(lambda: any("/etc/ha.d/ha.cf:10: unknown directive 'bogus'" in e.get("MESSAGE", "")
                     for e in n1.journal("-u", "hbd.service")), what="refused reload")
    poll(lambda: show(n1, "SubState") == "running", what="back to running")
    assert show(n1, "ActiveState") == "active"
    assert has_vip(n1), "a refused reload must not touch the running groups"
    n1.install_file("/etc/ha.d/ha.cf", HACF)
    n1.systemctl("reload", "hbd.service")



def test_key_never_reaches_the_real_journal(pair: tuple[Container, Container]) -> None:
    """journald itself (every field of every entry, all units), not a stand-in."""
    n1, _ = pair
    # refused reloads with the key where a parser might echo it
    for bad in (f"auth 1\n1 {KEY}\n", f"auth 1\n1 sha1\n{KEY}\n", f"auth 1\n1 sha9 {KEY}\n"):
        n1.install_file("/etc/ha.d/authkeys", bad, mode=0o600)
        n1.systemctl("reload", "hbd.service")
        poll(lambda: show(n1, "SubState") == "running", what="running after a refused reload")
    n1.install_file("/etc/ha.d/authkeys", AUTHKEYS, mode=0o600)
    n1.systemctl("reload", "hbd.service")
    poll(lambda: sum("/etc/ha.d/authkeys:" in e.get("MESSAGE", "")
                     for e in n1.journal("-u", "hbd.service")) >= 3,
         what="the three refusals in the journal")
    assert has_vip(n1)
    everything = json.dumps(n1.journal())  # all units, every field
    assert KEY not in everything


def test_frozen_engine_killed_by_watchdog_and_restarted(pair: tuple[Container, Container]) -> None:
    n1, _ = pair
    pid = show(n1, "MainPID")
    restarts = int(show(n1, "NRestarts"))
    n1.run(["kill", "-STOP", pid])
    poll(lambda: show(n1, "MainPID") not in (pid, "0") and show(n1, "ActiveState") == "active",
         timeout=30, what="watchdog restart")
    assert int(show(n1, "NRestarts")) == restarts + 1
    assert any("watchdog timeout" in e.get("MESSAGE", "").lower()
               for e in n1.journal("-u", "hbd.service"))


def test_stop_releases_the_vip_and_peer_takes_it(pair: tuple[Container, Container]) -> None:
    n1, n2 = pair
    poll(lambda: has_vip(n1) != has_vip(n2), what="exactly one VIP holder")
    holder, other = (n1, n2) if has_vip(n1) else (n2, n1)
    holder.systemctl("stop", "hbd.service")
    assert show(holder, "ActiveState") == "inactive"
    assert not has_vip(holder)
    poll(lambda: has_vip(other), timeout=5, what="the other machine to take the VIP")
    assert any("Received shutdown notice" in e.get("MESSAGE", "")
               for e in other.journal("-u", "hbd.service"))
