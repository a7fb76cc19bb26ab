"""journald frozen under a real systemd: heartbeats go on, the lines arrive afterwards.

Two throwaway systemd machines (tests/infra/sysd.py, never the real root)
joined by a veth, hbd running as hbd.service in each, keepalive 100 ms,
deadtime 300 ms, WatchdogSec=2s.  Under systemd hbd's only sink is the
journal (sd_journal_send: a datagram to journald's socket, which blocks once
its queue is full).  systemd-journald of n1 is frozen with SIGSTOP (by its
MainPID) for 30 s while n1 keeps logging: every SIGHUP makes it reload and
log one warning per `use_logd` line plus "configuration reloaded", far
more than the socket queues.  Before hbd logged through a thread, its event
loop blocked there: no heartbeats (n2 took over) and no watchdog pings.

Only `kill` runs in n1 during the freeze (systemctl would wait on PID 1, which
may itself be waiting to log); the VIP is checked with `ip`.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.hbdproc import ha_cf
from tests.infra.fixtures_sysd import ContainerFactory
from tests.infra.sysd import Container

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
HBD = str(Path(sys.prefix) / "bin" / "hbd")
VIP = "10.77.0.240"
FREEZE_SECONDS = float(os.environ.get("HBD_STALL_SECONDS", "30"))
HUP_EVERY = 0.5
CHATTY = 30
HACF = ha_cf("bcast eth0", keepalive="100ms", deadtime="300ms", warntime="250ms",
             initdead="1", extra="auto_failback off\n" + "use_logd no\n" * CHATTY)
BAD = re.compile(r"Late heartbeat|is dead|taking over group|releasing group|split brain|"
                 r"Traceback|[Ww]atchdog timeout")
RELOADED = "configuration reloaded from"


def poll(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def install_hbd(c: Container) -> None:
    unit = (ROOT / "units" / "hbd.service").read_text().replace("/usr/sbin/hbd", HBD)
    c.install_file("/etc/systemd/system/hbd.service", unit)
    # a stalled loop stops the watchdog pings: 2 s makes systemd notice quickly.  Nice:
    # the other test runs on this 2-CPU machine must not pass for a stall.
    c.install_file("/etc/systemd/system/hbd.service.d/test.conf",
                   "[Service]\nWatchdogSec=2s\nRestartSec=500ms\nNice=-10\n")
    c.install_file("/etc/ha.d/ha.cf", HACF)
    c.install_file("/etc/ha.d/haresources", f"n1 {VIP}/24/eth0\n")
    c.install_file("/etc/ha.d/authkeys", "auth 1\n1 sha1 stall-test\n", mode=0o600)
    c.systemctl("daemon-reload")


def has_vip(c: Container) -> bool:
    return f" {VIP}/" in c.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout


def show(c: Container, unit: str, prop: str) -> str:
    return c.systemctl("show", "-p", prop, "--value", unit).stdout.strip()


def messages(c: Container, since_us: int) -> list[str]:
    return [str(e.get("MESSAGE", "")) for e in c.journal("-u", "hbd.service")
            if int(e.get("__REALTIME_TIMESTAMP", 0)) >= since_us]


@pytest.fixture(scope="module")
def pair(systemd_container: ContainerFactory) -> tuple[Container, Container]:
    n1 = systemd_container("hbdst1", "n1")
    n2 = systemd_container("hbdst2", "n2")
    n1.link_to(n2, "10.77.0.1", "10.77.0.2", ifname_self="eth0", ifname_other="eth0")
    for c in (n1, n2):
        c.wait_booted(60)
        install_hbd(c)
    n1.systemctl("start", "hbd.service")
    n2.systemctl("start", "hbd.service")
    poll(lambda: has_vip(n1), what="n1 to hold the VIP")
    poll(lambda: any("Status update for node n1: status active" in m
                     for m in messages(n2, 0)), what="n2 to see n1")
    return n1, n2


def test_journald_frozen_30s(pair: tuple[Container, Container]) -> None:
    n1, n2 = pair
    hbd_pid = show(n1, "hbd.service", "MainPID")
    journald = show(n1, "systemd-journald.service", "MainPID")
    restarts = show(n1, "hbd.service", "NRestarts")
    assert hbd_pid != "0" and journald != "0"
    mark_us = int(time.time() * 1e6)
    n1.run(["kill", "-STOP", journald])
    sent = 0
    try:
        end = time.monotonic() + FREEZE_SECONDS
        while time.monotonic() < end:
            n1.run(["kill", "-HUP", hbd_pid])
            sent += 1
            assert has_vip(n1) and not has_vip(n2), "the VIP moved during the freeze"
            time.sleep(HUP_EVERY)
    finally:
        n1.run(["kill", "-CONT", journald])
    # what n1 logged meanwhile arrives (or the dropped lines are counted)
    lines = poll(lambda: (m := messages(n1, mark_us)) and (
        sum(RELOADED in x for x in m) >= sent or any("log lines dropped" in x for x in m))
        and m, what="n1's lines from the freeze in the journal")
    dropped = [x for x in lines if "log lines dropped" in x]
    print(f"journald frozen {FREEZE_SECONDS:.0f} s: {sent} reloads, "
          f"{sum(RELOADED in x for x in lines)} in the journal, {dropped or 'none dropped'}")
    assert sum("use_logd: not implemented" in x for x in lines) >= CHATTY
    for node, text in (("n1", lines), ("n2", messages(n2, mark_us))):
        bad = [x for x in text if BAD.search(x)]
        assert not bad, f"{node}: {bad}"
    assert show(n1, "hbd.service", "MainPID") == hbd_pid  # never killed by the watchdog
    assert show(n1, "hbd.service", "NRestarts") == restarts
    assert has_vip(n1) and not has_vip(n2)
