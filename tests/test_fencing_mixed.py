"""A mixed cluster fences: one Heartbeat 3.0.6 node and one hbd node, both with stonith_host.

Both nodes read the same ha.cf with `stonith_host * external/hbdtest-PID
n1,n2 LABDIR PASSWORD` (tests/fencedev.py): Heartbeat runs the plugin through
its own libstonith, hbd through cluster-glue's `stonith` command.  The plugin
asks the test's power switch to power a node off (Heartbeat runs it in
private PID and mount namespaces, from where it could reach nothing).

In both placements the primary n1 freezes (SIGSTOP: it still holds the VIP
and a client still reaches it); n2 declares it dead, resets it through the
device and only then takes the VIP: the client never hears two nodes, and its
ARP entry ends on n2.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.fencedev import FenceDevice
from tests.hbdproc import HbdNode, ha_cf
from tests.infra.fixtures import HbPeerFactory, LabFactory
from tests.infra.hbpeer import HeartbeatPeer
from tests.infra.netns import Lab, wait_for
from tests.test_fencing_netns import never_both, watch_answers
from tests.vipclient import owner_by_arp, start_responders, who_answers

pytestmark = [pytest.mark.netns, pytest.mark.slow]

VIP = "10.77.0.240"
HARESOURCES = f"n1 IPaddr2::{VIP}/24/eth0\n"
AUTHKEYS = "auth 1\n1 sha1 rolling-migration\n"
PLACEMENTS = ["hbd-primary", "heartbeat-primary"]


@dataclass
class Mixed:
    lab: Lab
    device: FenceDevice
    hbd: HbdNode
    heartbeat: HeartbeatPeer
    hbd_name: str
    hb_name: str


@pytest.fixture(scope="module")
def lab(module_make_lab: LabFactory) -> Iterator[Lab]:
    lab = module_make_lab(("n1", "n2", "client"))
    start_responders(lab)
    yield lab


@pytest.fixture
def mixed(request: pytest.FixtureRequest, lab: Lab,
          hb_peer_factory: HbPeerFactory) -> Iterator[Mixed]:
    hbd_name, hb_name = ("n1", "n2") if request.param == "hbd-primary" else ("n2", "n1")
    device = FenceDevice(lab).install()
    device.start_switch()
    conf = ha_cf("bcast eth0", deadtime="1", warntime="500ms", initdead="3",
                 extra="auto_failback off\ncrm no\nlogfile /var/log/ha-log\n"
                 + device.line("*"))
    hbd = heartbeat = None
    try:
        heartbeat = hb_peer_factory(lab, hb_name, conf, HARESOURCES, AUTHKEYS)
        hbd = HbdNode(lab, hbd_name, conf, HARESOURCES, AUTHKEYS)
        (hbd.config_dir / "hbd.conf").write_text("fence_race_delay 0\n")
        hbd.start()
        device.record(hbd_name, hbd.pid)
        heartbeat.wait_status(hbd_name, "active", timeout=30)
        device.record(hb_name, heartbeat.master_pid)  # the init of its PID namespace
        hbd.wait_log(rf"Status update for node {hb_name}: status active", 30)
        wait_for(lambda: lab.has_address("n1", VIP) and who_answers(lab, VIP) == "n1", 40,
                 "n1 serves the VIP")
        yield Mixed(lab, device, hbd, heartbeat, hbd_name, hb_name)
    finally:
        if hbd is not None:
            hbd.kill()
        if heartbeat is not None:
            heartbeat.kill()
        device.remove()
        for node in ("n1", "n2"):
            device.power_on(node)
            lab.run(node, ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)
        (device.dir / "fence.log").unlink(missing_ok=True)


@pytest.mark.parametrize("mixed", PLACEMENTS, indirect=True)
def test_frozen_primary_is_fenced_by_the_other_implementation(mixed: Mixed) -> None:
    lab = mixed.lab
    frozen = mixed.hbd.pid if mixed.hbd_name == "n1" else mixed.heartbeat.master_pid
    os.kill(frozen, signal.SIGSTOP)  # n1 hangs: it keeps its VIP, nobody hears from it
    started = time.monotonic()
    seen = watch_answers(lab, 30)
    never_both(seen)
    assert mixed.device.resets() == ["n1"], mixed.device.log()
    assert lab.has_address("n2", VIP)
    wait_for(lambda: owner_by_arp(lab, VIP) == "n2", 5, "client ARP entry on n2")
    if mixed.hbd_name == "n2":
        log = mixed.hbd.log()
        order = [log.find(x) for x in ("node n1: is dead", "Resetting node n1 with [",
                                       "node n1 now reset.", "taking over group")]
        assert -1 not in order and order == sorted(order), log[-3000:]
    else:
        hb_log = mixed.heartbeat.log()
        assert "Resetting node n1 with [" in hb_log and "node n1 now reset." in hb_log, \
            hb_log[-3000:]
    assert time.monotonic() - started < 30
