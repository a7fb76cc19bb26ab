"""A mixed cluster with hbd.conf: Heartbeat 3.0.6 never reads it, so the cluster still forms.

hbd (n1) and Heartbeat 3.0.6 (n2) share one ha.cf; hbd's own settings for
issue 17 (notify hooks, their timeout, the gratuitous-ARP refresh, ARP
rounds) live in hbd.conf, which is also dropped into Heartbeat's /etc/ha.d
to show it is harmless there.  The cluster must form, hbd's hooks must see
it, and a hard failover must still hand the VIP to Heartbeat.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.hbdproc import HbdNode, ha_cf
from tests.infra.fixtures import HbPeerFactory, LabFactory
from tests.infra.netns import Lab, wait_for
from tests.vipclient import owner_by_arp, start_responders, wait_answer

pytestmark = [pytest.mark.netns, pytest.mark.slow]

VIP = "10.77.0.240"
KEY = f"IPaddr2::{VIP}/24/eth0"
HARESOURCES = f"n1 {KEY}\n"
AUTHKEYS = "auth 1\n1 sha1 rolling-migration\n"
RECORD = '#!/bin/sh\necho "$1 $2 $3" >> {out}\n'


@pytest.fixture(scope="module")
def lab(module_make_lab: LabFactory) -> Lab:
    lab = module_make_lab(("n1", "n2", "client"))
    start_responders(lab)
    return lab


def _events(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_mixed_cluster_forms_and_fails_over_with_hbd_conf(
        lab: Lab, hb_peer_factory: HbPeerFactory) -> None:
    out = lab.workdir / "mixed-events"
    hook = lab.workdir / "mixed-hook"
    hook.write_text(RECORD.format(out=out))
    hook.chmod(0o755)
    hbdconf = (f"notify {hook}\nnotify_timeout 5\ngarp_refresh 1\narp_count 2\n"
               "arp_interval 100ms\n")
    hacf = ha_cf("bcast eth0", deadtime="1", warntime="500ms", initdead="3",
                 extra="auto_failback on\ncrm no\nlogfile /var/log/ha-log\n")
    heartbeat = hb_peer_factory(lab, "n2", hacf, HARESOURCES, AUTHKEYS, start=False)
    (heartbeat.etc / "hbd.conf").write_text(hbdconf)
    heartbeat.start(daemon=True)
    hbd = HbdNode(lab, "n1", hacf, HARESOURCES, AUTHKEYS)
    (hbd.config_dir / "hbd.conf").write_text(hbdconf)
    hbd.start()
    try:
        heartbeat.wait_status("n1", "active", timeout=30)
        hbd.wait_log(r"Status update for node n2: status active", 30)
        wait_answer(lab, VIP, "n1", timeout=30)
        assert "hbd.conf" not in heartbeat.log()  # never read, never complained about
        wait_for(lambda: len(_events(out)) >= 3, 15, f"hbd's hooks: {_events(out)}")
        assert _events(out) == ["node n2 up", f"group {KEY} starting", f"group {KEY} running"]
        # a hard failover: hbd's node loses its cable, Heartbeat takes the VIP
        lab.cut("n1")
        wait_answer(lab, VIP, "n2", timeout=15)
        assert owner_by_arp(lab, VIP) == "n2"
        wait_for(lambda: "node n2 dead" in _events(out), 10, f"node n2 dead: {_events(out)}")
        assert hbd.running() and heartbeat.running
        time.sleep(0.5)
        assert _events(out)[3:] == ["node n2 dead"]  # n1 keeps its group, cut off
    finally:
        hbd.kill()
        heartbeat.kill()
        lab.restore("n1")
        for node in ("n1", "n2"):
            lab.run(node, ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)
