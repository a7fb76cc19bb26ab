"""Failover with real hbd daemons, a real VIP and a client, in network namespaces.

Each scenario is checked from the client namespace: which node answers on
the VIP (a UDP responder on each node replies with its name) and which MAC
the client's ARP entry holds.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hbdproc import HbdNode, ha_cf
from tests.infra.fixtures import LabFactory
from tests.infra.netns import Lab, wait_for
from tests.vipclient import owner_by_arp, start_responders, wait_answer, who_answers

pytestmark = [pytest.mark.netns]

VIP = "10.77.0.240"
HARESOURCES = f"n1 {VIP}/24/eth0\n"


@pytest.fixture(scope="module")
def lab(module_make_lab: LabFactory) -> Lab:
    lab = module_make_lab(("n1", "n2", "client"), networks=1)
    start_responders(lab)
    return lab


@pytest.fixture
def cluster(lab: Lab) -> Iterator[list[HbdNode]]:
    made: list[HbdNode] = []
    yield made
    for node in made:
        node.kill()
    lab.restore("n1")
    lab.heal("n1", "n2")
    for node in ("n1", "n2"):
        lab.run(node, ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)
        lab.run(node, ["nft", "flush", "ruleset"], check=False)


def start(lab: Lab, cluster: list[HbdNode], failback: str = "off",
          haresources: str = HARESOURCES, extra: str = "",
          scripts: dict[str, dict[str, str]] | None = None) -> tuple[HbdNode, HbdNode]:
    for name in ("n1", "n2"):
        node = HbdNode(lab, name, ha_cf("bcast eth0", extra=f"auto_failback {failback}\n{extra}"),
                       haresources)
        for script, text in (scripts or {}).get(name, {}).items():
            directory = node.config_dir / "resource.d"
            directory.mkdir(exist_ok=True)
            path = directory / script
            path.write_text(text)
            os.chmod(path, 0o755)
        cluster.append(node.start())
    n1, n2 = cluster
    n1.wait_log(r"Status update for node n2: status active")
    return n1, n2


def test_hard_failover_on_link_cut(lab: Lab, cluster: list[HbdNode]) -> None:
    _, n2 = start(lab, cluster)
    wait_answer(lab, VIP, "n1")
    assert owner_by_arp(lab, VIP) == "n1"
    lab.cut("n1")
    took = wait_answer(lab, VIP, "n2", timeout=5)
    assert took < 3.0
    assert owner_by_arp(lab, VIP) == "n2"  # gratuitous ARP moved the client's entry
    n2.wait_log(r"node n1: is dead")


@pytest.mark.parametrize("failback,final", [("on", "n1"), ("off", "n2")])
def test_failback_only_with_auto_failback_on(lab: Lab, cluster: list[HbdNode], failback: str,
                                             final: str) -> None:
    n1, n2 = start(lab, cluster, failback)
    wait_answer(lab, VIP, "n1")
    n1.kill()  # power loss: the address stays configured on n1 ...
    lab.run("n1", ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)  # ... reboot
    wait_answer(lab, VIP, "n2", timeout=5)
    mark = n2.mark()
    n1.start()
    n2.wait_log(r"Heartbeat restart on node n1", since=mark)
    time.sleep(2.0)
    wait_answer(lab, VIP, final, timeout=5)
    assert owner_by_arp(lab, VIP) == final
    assert lab.has_address("n1", VIP) == (final == "n1")
    assert lab.has_address("n2", VIP) == (final == "n2")


def test_graceful_stop_hands_over_at_once(lab: Lab, cluster: list[HbdNode]) -> None:
    n1, n2 = start(lab, cluster)
    wait_answer(lab, VIP, "n1")
    t0 = time.monotonic()
    assert n1.stop() == 0
    took = wait_answer(lab, VIP, "n2", timeout=5)
    assert time.monotonic() - t0 < 2.0, "no deadtime wait: the peer takes over on shutdone"
    n2.wait_log(r"Received shutdown notice from 'n1'")
    assert not lab.has_address("n1", VIP)
    assert took < 2.0


def test_ping_node_loss_moves_service_to_better_connected_node(lab: Lab,
                                                              cluster: list[HbdNode]) -> None:
    client = lab.ip("client")
    n1, _ = start(lab, cluster, extra=f"ping {client}\ndeadping 500ms\n")
    wait_answer(lab, VIP, "n1")
    n1.wait_log(rf"Status update for node {re.escape(client)}: status ping", 5)
    time.sleep(1.0)
    mark = n1.mark()
    # n1 can no longer reach the ping node (its heartbeat link to n2 still works)
    lab.run("n1", ["nft", "add table inet hbdt; add chain inet hbdt out "
                          "{ type filter hook output priority 0; }; "
                          f"add rule inet hbdt out ip daddr {client} icmp type echo-request drop"])
    n1.wait_log(rf"node {re.escape(client)}: is dead \(ping node", 5, since=mark)
    n1.wait_log(r"ping nodes: we reach 0 of 1, n2 reaches 1", 10, since=mark)
    wait_answer(lab, VIP, "n2", timeout=5)
    assert owner_by_arp(lab, VIP) == "n2"


FAILING_START = """#!/bin/sh
case "$1" in start) echo "cannot start on this node" >&2; exit 1;; esac
exit 0
"""

OK_SCRIPT = """#!/bin/sh
exit 0
"""


def test_start_failure_gives_the_group_to_the_peer(lab: Lab, cluster: list[HbdNode]) -> None:
    scripts = {"n1": {"svc": FAILING_START}, "n2": {"svc": OK_SCRIPT}}
    n1, _ = start(lab, cluster, haresources=f"n1 {VIP}/24/eth0 svc\n", scripts=scripts)
    n1.wait_log(r"group \S+ start FAILED: svc: start failed")
    wait_answer(lab, VIP, "n2", timeout=10)
    assert not lab.has_address("n1", VIP)


def blocking_stop(flag: Path) -> str:
    return f"""#!/bin/sh
case "$1" in stop) [ -e {flag} ] && exit 0; echo "device busy" >&2; exit 1;; esac
exit 0
"""


def test_stop_failure_blocks_handover_until_it_stops(lab: Lab, cluster: list[HbdNode],
                                                      tmp_path: Path) -> None:
    flag = tmp_path / "can-stop"
    scripts = {"n1": {"svc": blocking_stop(flag)}, "n2": {"svc": OK_SCRIPT}}
    n1, n2 = start(lab, cluster, haresources=f"n1 {VIP}/24/eth0 svc\n", scripts=scripts)
    wait_answer(lab, VIP, "n1")
    n1.signal(15)  # SIGTERM: release everything, then shutdone ... but svc will not stop
    n1.wait_log(r"group \S+ could not be stopped and may still be running", 15)
    n1.wait_log(r"not stopping: group\(s\) \S+ could not be stopped")
    time.sleep(1.0)
    assert n1.running(), "hbd must not exit while a group may still run"
    assert not lab.has_address("n2", VIP), "the peer must not start a group that may run"
    assert "Received shutdown notice" not in n2.log()
    flag.touch()  # the admin fixes whatever held the device
    n2.wait_log(r"Received shutdown notice from 'n1'", 20)
    wait_answer(lab, VIP, "n2", timeout=5)
    assert n1.proc is not None and n1.proc.wait(10) == 0


def test_split_brain_then_heal_one_owner_and_client_arp_on_keeper(
        lab: Lab, cluster: list[HbdNode]) -> None:
    n1, n2 = start(lab, cluster)
    wait_answer(lab, VIP, "n1")
    lab.partition("n1", "n2")  # the client still sees both
    n2.wait_log(r"node n1: is dead")
    n1.wait_log(r"node n2: is dead")
    wait_for(lambda: lab.has_address("n2", VIP), 5, "n2 to take the VIP too")
    assert lab.has_address("n1", VIP)  # both hold it: split brain
    lab.run("client", ["ip", "neigh", "replace", VIP, "lladdr", lab.mac("n2"), "dev", "eth0",
                       "nud", "stale"])
    healed = time.monotonic()
    lab.heal("n1", "n2")
    wait_for(lambda: not (lab.has_address("n1", VIP) and lab.has_address("n2", VIP)), 3,
             "one owner")
    assert time.monotonic() - healed < 2.0 + 0.6  # within 2 s of the heal being noticed
    assert lab.has_address("n1", VIP) and not lab.has_address("n2", VIP)  # home node keeps
    wait_for(lambda: owner_by_arp(lab, VIP) == "n1", 2, "client ARP entry on n1's MAC")
    assert who_answers(lab, VIP) == "n1"
    n1.wait_log(r"split brain on group \S+: n1 keeps it")
