"""Prove the real-peer helpers: two genuine Heartbeat 3.0.6 nodes and two keepalived.

Heartbeat timers are the fast test profile of :func:`render_ha_cf`
(keepalive 100ms, deadtime 500ms, initdead 1000ms).  Heartbeat's resource
hand-shake after two nodes meet has a hard-coded 10 s delay (RQSTDELAY), so
the simultaneous-start test necessarily takes ~12 s.
"""

from __future__ import annotations

import pytest

from tests.infra.fixtures import HbPeerFactory, KaPeerFactory, LabFactory
from tests.infra.hbpeer import render_ha_cf
from tests.infra.kapeer import render_keepalived_conf
from tests.infra.netns import Lab, pid_running, wait_for
from tests.infra.serialpair import PtyCable, SerialPair

pytestmark = [pytest.mark.netns, pytest.mark.slow]

VIP = "10.77.0.240"
HARESOURCES = f"n1 IPaddr2::{VIP}/24/eth0\n"


def _vip_on(lab: Lab, node: str) -> bool:
    return lab.has_address(node, VIP)


def test_two_heartbeats_bcast_and_serial(lab: Lab, serial_pair: SerialPair,
                                         hb_peer_factory: HbPeerFactory) -> None:
    """Simultaneous start; n1 runs in the foreground (-f), n2 forks like init."""
    tty = dict(zip(("n1", "n2"), serial_pair.paths, strict=True))
    peers = {
        n: hb_peer_factory(lab, n, render_ha_cf(["n1", "n2"],
                                                media=["bcast eth0", f"serial {tty[n]}"]),
                           HARESOURCES, daemon=(n == "n2"))
        for n in ("n1", "n2")
    }
    n1, n2 = peers["n1"], peers["n2"]
    n1.wait_status("n2", "active", timeout=10)
    n2.wait_status("n1", "active", timeout=10)
    assert "is running" in n1.cl_status("hbstatus")
    assert set(n1.cl_status("listnodes").split()) == {"n1", "n2"}
    # "active" comes with the first link that hears the peer: the other may follow a beat later
    wait_for(lambda: n1.link_status("n2", "eth0") == "up", 5, "bcast link")
    wait_for(lambda: n2.link_status("n1", tty["n2"]) == "up", 5, "serial link")

    # n1 owns the VIP once the (hard-wired 10 s) initial resource hand-shake ends
    wait_for(lambda: _vip_on(lab, "n1"), 20, "VIP on n1")
    assert f"{VIP}/24" in lab.addresses("n1")
    assert not _vip_on(lab, "n2")
    lab.flush_arp("client")
    assert lab.ping("client", VIP)
    assert lab.arp_entry("client", VIP) == lab.mac("n1")

    # hb_standby hands everything to n2; hb_takeover takes it back
    wait_for(lambda: "transition" not in (n1.rsc_status(), n2.rsc_status()), 15, "rsc settle")
    n1.hb_standby("all")
    wait_for(lambda: _vip_on(lab, "n2") and not _vip_on(lab, "n1"), 10, "VIP on n2")
    wait_for(lambda: lab.arp_entry("client", VIP) == lab.mac("n2"), 5, "client ARP -> n2")
    n1.hb_takeover("all")
    wait_for(lambda: _vip_on(lab, "n1") and not _vip_on(lab, "n2"), 10, "VIP back on n1")

    # graceful stop (init-script semantics) releases the VIP and n2 takes it
    assert n1.stop() == 0
    assert not _vip_on(lab, "n1")
    wait_for(lambda: _vip_on(lab, "n2"), 10, "VIP on n2 after n1 stop")
    n2.wait_status("n1", "dead", timeout=5)
    assert lab.ping("client", VIP)
    master = n2.master_pid                       # resolved from the private pid file
    assert master != n2.iso.inner_pid()          # type: ignore[union-attr]
    n2.stop()
    assert not pid_running(master)
    assert not _vip_on(lab, "n2")


def test_heartbeat_kill_is_a_crash(lab: Lab, hb_peer_factory: HbPeerFactory) -> None:
    """A lone n1 grabs the VIP in ~1.5 s; a SIGKILLed n1 is declared dead by n2.

    Detection takes deadtime + 2 s here: Heartbeat advertises a 2 s longer
    deadtime during its first 5 s (hb_add_deadtime(2000) in heartbeat.c).
    """
    cf = render_ha_cf(["n1", "n2"])
    n1 = hb_peer_factory(lab, "n1", cf, HARESOURCES)
    wait_for(lambda: _vip_on(lab, "n1"), 10, "VIP on lone n1")
    n2 = hb_peer_factory(lab, "n2", cf, HARESOURCES)
    n2.wait_status("n1", "active", timeout=10)

    master = n1.master_pid
    n1.kill()
    assert not pid_running(master)
    assert not n1.running
    n2.wait_status("n1", "dead", timeout=5)
    wait_for(lambda: _vip_on(lab, "n2"), 10, "VIP on n2 after n1 crash")
    assert _vip_on(lab, "n1")          # a crash does not release the address
    assert "is dead" in n2.log()
    n2.kill()
    assert not n2.running


def test_two_keepalived_elect_master_and_fail_over_on_cut(
        lab: Lab, ka_peer_factory: KaPeerFactory) -> None:
    vip = "10.77.0.250"
    k1 = ka_peer_factory(lab, "n1", render_keepalived_conf(priority=150, vips=[f"{vip}/24"]))
    k2 = ka_peer_factory(lab, "n2", render_keepalived_conf(priority=100, vips=[f"{vip}/24"]))
    k1.wait_state("MASTER")
    k2.wait_state("BACKUP")
    wait_for(lambda: lab.has_address("n1", vip), 5, "VIP on n1")
    assert not lab.has_address("n2", vip)
    assert lab.ping("client", vip)
    assert lab.arp_entry("client", vip) == lab.mac("n1")

    lab.cut("n1")
    k1.wait_state("FAULT")
    k2.wait_state("MASTER")
    wait_for(lambda: lab.has_address("n2", vip), 5, "VIP on n2")
    assert not lab.has_address("n1", vip)
    assert lab.ping("client", vip)
    assert lab.arp_entry("client", vip) == lab.mac("n2")

    lab.restore("n1")               # higher priority preempts back
    k1.wait_state("MASTER")
    wait_for(lambda: lab.has_address("n1", vip) and not lab.has_address("n2", vip), 5,
             "VIP back on n1")
    assert k1.stop() == 0 and k2.stop() == 0


def test_heartbeat_redundant_media_survive_cuts(make_lab: LabFactory, pty_cable: PtyCable,
                                                hb_peer_factory: HbPeerFactory) -> None:
    """eth0, eth1 and a serial cable are independent media: a cut is a link event.

    PtyCable (not the socat pair) is used because a running Heartbeat
    survives its cut: the tty stays open, bytes just stop flowing.
    """
    lab = make_lab(["n1", "n2"], networks=2)
    tty = dict(zip(("n1", "n2"), pty_cable.paths, strict=True))
    n1, n2 = (hb_peer_factory(lab, n, render_ha_cf(
        ["n1", "n2"], media=["bcast eth0", "ucast eth1 10.78.0.1", "ucast eth1 10.78.0.2",
                             f"serial {tty[n]}"])) for n in ("n1", "n2"))
    n1.wait_status("n2", "active", timeout=10)
    n2.wait_status("n1", "active", timeout=10)
    links = ("eth0", "eth1", tty["n1"])
    wait_for(lambda: all(n1.link_status("n2", x) == "up" for x in links), 5, "all links up")

    lab.cut("n2", "eth0")
    pty_cable.cut()
    wait_for(lambda: n1.link_status("n2", "eth0") == "dead", 5, "eth0 dead")
    wait_for(lambda: n1.link_status("n2", tty["n1"]) == "dead", 5, "serial dead")
    assert n1.node_status("n2") == "active"
    assert n1.link_status("n2", "eth1") == "up"

    lab.restore("n2", "eth0")
    pty_cable.restore()
    wait_for(lambda: n1.link_status("n2", "eth0") == "up", 5, "eth0 back")
    wait_for(lambda: n1.link_status("n2", tty["n1"]) == "up", 5, "serial back")
    lab.cut("n2", "eth0")
    lab.cut("n2", "eth1")
    pty_cable.cut()
    n1.wait_status("n2", "dead", timeout=5)
    n2.wait_status("n1", "dead", timeout=5)
