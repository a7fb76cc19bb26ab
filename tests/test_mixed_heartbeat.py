"""A rolling migration: one Heartbeat 3.0.6 node and one hbd node in one cluster.

Both nodes share the same /etc/ha.d files (bcast eth0 + a serial link, sha1
keys, the seed's `n1 IPaddr2::10.77.0.240/24/eth0`); a client namespace checks
who answers on the VIP.  Every scenario runs in both placements: hbd as the
primary (n1) and Heartbeat as the primary.  The serial link is a pty relay
that can be cut silently (Heartbeat never reopens a tty that hangs up).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.hbdproc import HbdNode, ha_cf
from tests.infra import commands
from tests.infra.fixtures import HbPeerFactory, LabFactory
from tests.infra.hbpeer import HeartbeatPeer
from tests.infra.netns import Lab, wait_for
from tests.infra.privbus import PrivateBus
from tests.infra.serialpair import PtyCable
from tests.test_bus import install_hbd_files
from tests.vipclient import owner_by_arp, start_responders, wait_answer

pytestmark = [pytest.mark.netns, pytest.mark.slow]

VIP = "10.77.0.240"
HARESOURCES = f"n1 IPaddr2::{VIP}/24/eth0\n"
AUTHKEYS = "auth 1\n1 sha1 rolling-migration\n"
PLACEMENTS = ["hbd-primary", "heartbeat-primary"]


@dataclass
class Mixed:
    lab: Lab
    cable: PtyCable
    bus: PrivateBus
    hbd: HbdNode
    heartbeat: HeartbeatPeer
    hbd_name: str
    hb_name: str

    def holders(self) -> list[str]:
        return [n for n in ("n1", "n2") if self.lab.has_address(n, VIP)]

    def wait_holder(self, node: str, timeout: float = 20.0) -> None:
        wait_for(lambda: self.holders() == [node], timeout, f"VIP only on {node}")
        wait_answer(self.lab, VIP, node, timeout=5)

    def hbctl(self, *args: str) -> str:
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.bus.address}
        import sys
        result = commands.run([sys.executable, "-m", "hbd.cli.hbctl", *args],
                              capture_output=True, text=True, env=env, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout


@pytest.fixture(scope="module")
def lab(module_make_lab: LabFactory) -> Lab:
    lab = module_make_lab(("n1", "n2", "client"))
    start_responders(lab)
    return lab


@pytest.fixture
def mixed(request: pytest.FixtureRequest, lab: Lab, hb_peer_factory: HbPeerFactory,
          private_bus: PrivateBus) -> Iterator[Mixed]:
    placement, failback, *rest = request.param
    hbdconf = rest[0] if rest else None
    hbd_name, hb_name = ("n1", "n2") if placement == "hbd-primary" else ("n2", "n1")
    install_hbd_files(private_bus)
    with PtyCable() as cable:
        ttys = dict(zip(("n1", "n2"), cable.paths, strict=True))

        def conf(node: str) -> str:
            return ha_cf(f"bcast eth0\nserial {ttys[node]}", deadtime="1", warntime="500ms",
                         initdead="3", extra=f"auto_failback {failback}\ncrm no\n"
                         "logfile /var/log/ha-log\n")

        heartbeat = hb_peer_factory(lab, hb_name, conf(hb_name), HARESOURCES, AUTHKEYS,
                                    daemon=True)
        hbd = HbdNode(lab, hbd_name, conf(hbd_name), HARESOURCES, AUTHKEYS, extra_args=(),
                      env={"DBUS_SYSTEM_BUS_ADDRESS": private_bus.address})
        if hbdconf is not None:  # hbd's own file: Heartbeat never reads it
            (hbd.config_dir / "hbd.conf").write_text(hbdconf)
        hbd.start()
        try:
            heartbeat.wait_status(hbd_name, "active", timeout=30)
            hbd.wait_log(rf"Status update for node {hb_name}: status active", 30)
            found = Mixed(lab, cable, private_bus, hbd, heartbeat, hbd_name, hb_name)
            found.wait_holder("n1", 30)
            yield found
        finally:
            hbd.kill()
            heartbeat.kill()
            for node in ("n1", "n2"):
                lab.run(node, ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)
            lab.restore("n1")
            lab.restore("n2")


def both(failback: str = "on") -> list[tuple[str, str]]:
    return [(p, failback) for p in PLACEMENTS]


@pytest.mark.parametrize("mixed", both(), indirect=True, ids=PLACEMENTS)
def test_start_primary_takes_vip_each_sees_other_active(mixed: Mixed) -> None:
    assert mixed.holders() == ["n1"]
    assert owner_by_arp(mixed.lab, VIP) == "n1"
    assert mixed.heartbeat.node_status(mixed.hbd_name) == "active"
    assert f"{mixed.hb_name}\tactive" in mixed.hbctl("listnodes", "-v") or \
        mixed.hbctl("nodestatus", mixed.hb_name).strip() == "active"
    # Heartbeat reports `local` even on the node without local groups (its quirk)
    wait_for(lambda: mixed.heartbeat.rsc_status() == "local", 15, "heartbeat rscstatus local")
    assert mixed.hbctl("rscstatus").strip() == "local"


@pytest.mark.parametrize("mixed", both(), indirect=True, ids=PLACEMENTS)
def test_hard_failover_when_primary_loses_every_link(mixed: Mixed) -> None:
    mixed.lab.cut("n1")
    mixed.cable.cut()
    wait_answer(mixed.lab, VIP, "n2", timeout=10)
    assert owner_by_arp(mixed.lab, VIP) == "n2"


@pytest.mark.parametrize("mixed", both(), indirect=True, ids=PLACEMENTS)
def test_graceful_stop_of_primary_hands_over_at_once(mixed: Mixed) -> None:
    t0 = time.monotonic()
    if mixed.hbd_name == "n1":
        assert mixed.hbd.stop() == 0  # SIGTERM, as systemctl stop
    else:
        mixed.heartbeat.stop()  # SIGTERM to the master, as the init script does
    wait_answer(mixed.lab, VIP, "n2", timeout=10)
    took = time.monotonic() - t0
    assert mixed.holders() == ["n2"]
    assert took < 8.0, f"handover took {took:.1f} s: it must not wait for deadtime"


@pytest.mark.parametrize("mixed", both("on") + both("off"), indirect=True,
                         ids=[f"{p}-failback-{f}" for f in ("on", "off") for p in PLACEMENTS])
def test_standby_and_takeover_from_either_side(mixed: Mixed) -> None:
    # Heartbeat's own commands on the Heartbeat node
    if mixed.hb_name == "n1":
        mixed.heartbeat.hb_standby("all")
    else:
        mixed.heartbeat.hb_takeover("all")
    mixed.wait_holder("n2")
    time.sleep(2.0)  # nothing moves back by itself after a standby, failback on or off
    assert mixed.holders() == ["n2"]
    # hbd's commands (hbctl over D-Bus) on the hbd node
    if mixed.hbd_name == "n1":
        mixed.hbctl("takeover", "all")
    else:
        mixed.hbctl("standby", "all")
    mixed.wait_holder("n1")
    time.sleep(2.0)
    assert mixed.holders() == ["n1"]


@pytest.mark.parametrize("mixed", both(), indirect=True, ids=PLACEMENTS)
def test_restart_of_either_daemon_rejoins_without_a_second_owner(mixed: Mixed) -> None:
    seen: set[tuple[str, ...]] = set()

    def watch(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            holders = tuple(mixed.holders())
            seen.add(holders)
            assert len(holders) <= 1, f"VIP on both nodes: {holders}"
            time.sleep(0.05)

    # restart hbd (SIGTERM then start): it rejoins with a higher generation
    mark = mixed.heartbeat.log()
    mixed.hbd.stop()
    watch(1.0)
    mixed.hbd.start()
    mixed.hbd.wait_log(rf"Status update for node {mixed.hb_name}: status active", 30)
    watch(4.0)
    assert "restart" in mixed.heartbeat.log()[len(mark):].lower() or mixed.heartbeat.node_status(
        mixed.hbd_name) == "active"
    # restart Heartbeat the same way
    mixed.heartbeat.stop()
    watch(1.0)
    mixed.heartbeat.start(daemon=True)
    mixed.heartbeat.wait_status(mixed.hbd_name, "active", timeout=30)
    watch(12.0)  # Heartbeat's 10 s resource hand-shake
    assert len(mixed.holders()) == 1


# link tracking off: the monitor, not the removal's netlink event, is what notices here
MONITORED = (f"monitor IPaddr2::{VIP}/24/eth0 interval=500ms timeout=2s\n"
             f"failure_expiry IPaddr2::{VIP}/24/eth0 never\nlink_tracking off\n")


@pytest.mark.parametrize("mixed", [("hbd-primary", "on", MONITORED)], indirect=True,
                         ids=["hbd-primary-monitored"])
def test_monitor_failure_on_hbd_hands_the_group_to_heartbeat(mixed: Mixed) -> None:
    """hbd.conf with monitoring on the hbd node: the cluster forms as usual, and a failed
    monitor hands the group to Heartbeat through its own standby exchange."""
    assert mixed.heartbeat.node_status(mixed.hbd_name) == "active"
    mixed.hbd.wait_log(r"monitor: every 500 ms|group \S+ start done")
    mark = mixed.hbd.mark()
    # someone removes the address behind hbd's back: the native check sees it is gone
    mixed.lab.run("n1", ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"])
    mixed.hbd.wait_log(rf"monitor failed: .*{VIP} is no longer on eth0", since=mark)
    mixed.wait_holder("n2", 20)
    time.sleep(3.0)  # auto_failback on, yet it stays with Heartbeat: it failed on hbd's node
    assert mixed.holders() == ["n2"]
    assert "not on this node: monitor failed" in mixed.hbctl("status")


@pytest.mark.parametrize("mixed", [("hbd-primary", "on", "")], indirect=True,
                         ids=["hbd-primary-tracked"])
def test_carrier_loss_on_hbd_hands_the_group_to_heartbeat_over_serial(mixed: Mixed) -> None:
    """Link tracking on the hbd node: its eth0 loses carrier, and the group goes to
    Heartbeat 3.0.6 through Heartbeat's own standby exchange over the serial cable, at
    once (nobody is declared dead: the serial heartbeats continue)."""
    mark = mixed.hbd.mark()
    lost = time.monotonic()
    mixed.lab.cut("n1", "eth0")  # the switch port: no carrier on n1's eth0
    try:
        mixed.hbd.wait_log(r"tracked interface eth0: up -> no-carrier", since=mark)
        wait_for(lambda: mixed.lab.has_address("n2", VIP), 10, "Heartbeat took the VIP")
        took = time.monotonic() - lost
        wait_answer(mixed.lab, VIP, "n2", timeout=5)
        assert took < 5.0, f"Heartbeat held the VIP only after {took:.1f} s"
        assert "is dead" not in mixed.hbd.log()[mark:]
        assert mixed.heartbeat.node_status(mixed.hbd_name) == "active"
        assert not mixed.lab.has_address("n1", VIP)
    finally:
        mixed.lab.restore("n1", "eth0")
    # carrier back: auto_failback on asks Heartbeat for the group back
    mixed.hbd.wait_log(r"may run on this node again \(link:eth0 cleared\)", since=mark)
    mixed.wait_holder("n1", 30)
