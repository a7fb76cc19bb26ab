"""The control interface end to end: two real hbd daemons, a VIP, real buses and polkitd.

Topology: lab namespaces n1, n2 and client on 10.77.0.0/24; haresources
`n1 10.77.0.240/24/eth0`, auto_failback off, bcast heartbeats.

Each node gets its own private system bus (dbus-daemon + polkitd from the
stock system.conf, with hbd's shipped policy files): on a real cluster every
node has its own system bus, and two hbds on one bus would fight over the
name org.linuxha.hbd1.  n1 uses the module's `private_bus` fixture, n2 a
second PrivateBus.  The bus socket lives under /tmp, which `ip netns exec`
leaves shared (network namespaces isolate the network, and the buses'
private mount namespaces only cover /etc/passwd, /etc/group and polkit's
directories), so hbd inside a node namespace reaches it by path.

The tests run in order on one cluster: root's busctl moves the VIP to n2;
an unprivileged user is refused and nothing moves; a haclient member let
in by the rules.d example moves it back; an invalid scope is refused;
PropertiesChanged reaches a second connection when the VIP moves; and
after dbus-daemon restarts hbd owns its name again while the VIP stays.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dbus_next.message import Message

from hbd.bus.names import BUS_NAME, GROUP_IFACE, MANAGER_IFACE, OBJECT_PATH, group_path
from tests.hbdproc import HbdNode, ha_cf
from tests.infra.fixtures import LabFactory
from tests.infra.netns import Lab, wait_for
from tests.infra.privbus import PrivateBus
from tests.test_bus import SignalWatcher, dbus_send, install_hbd_files, properties_changed

pytestmark = [pytest.mark.netns]

ROOT = Path(__file__).resolve().parent.parent
VIP = "10.77.0.240"
GROUP = f"{VIP}/24/eth0"
OWNING = r"owning org\.linuxha\.hbd1 on the system bus"


class Cluster:
    def __init__(self, lab: Lab, buses: dict[str, PrivateBus], nodes: dict[str, HbdNode]):
        self.lab = lab
        self.buses = buses
        self.nodes = nodes

    def holder(self) -> str | None:
        having = [n for n in ("n1", "n2") if self.lab.has_address(n, VIP)]
        assert len(having) <= 1, f"VIP on both nodes: {having}"
        return having[0] if having else None

    def wait_holder(self, node: str, timeout: float = 10.0) -> None:
        wait_for(lambda: self.holder() == node, timeout, f"VIP on {node}")
        mac = self.lab.mac(node)
        # the new holder's gratuitous ARP updates the client's cache, no ping needed
        wait_for(lambda: self.lab.arp_entry("client", VIP) == mac, 5,
                 f"client ARP for {VIP} -> {node} ({mac})")

    def busctl(self, node: str, *args: str) -> str:
        return self.buses[node].busctl(*args)

    def owner_seen_by(self, node: str) -> str:
        out = self.busctl(node, "get-property", BUS_NAME, group_path(GROUP), GROUP_IFACE,
                          "Owner")
        return out.split()[1].strip('"')


@pytest.fixture(scope="module")
def cluster(module_make_lab: LabFactory, private_bus: PrivateBus,
            second_bus: PrivateBus) -> Iterator[Cluster]:
    lab = module_make_lab(("n1", "n2", "client"))
    buses = {"n1": private_bus, "n2": second_bus}
    nodes: dict[str, HbdNode] = {}
    # a ping node both reach (the client): shown by PingNodes and hbctl, moves nothing
    hacf = ha_cf("bcast eth0", extra=f"auto_failback off\nping {lab.ip('client')}\n")
    try:
        for name, bus in buses.items():
            install_hbd_files(bus)
            nodes[name] = HbdNode(lab, name, hacf, f"n1 {GROUP}\n", extra_args=(),
                                  env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address}).start()
        for node in nodes.values():
            node.wait_log(OWNING)
        found = Cluster(lab, buses, nodes)
        assert lab.ping("client", VIP, count=1, timeout=10), "VIP never answered"
        found.wait_holder("n1", 15)
        yield found
    finally:
        for node in nodes.values():
            node.stop()


def groups_changed_to(owner: str) -> Callable[[Message], bool]:
    """PropertiesChanged of the Manager saying the VIP group now runs on `owner`."""
    changed = properties_changed(OBJECT_PATH, MANAGER_IFACE, "Groups")

    def match(msg: Message) -> bool:
        return changed(msg) and msg.body[1]["Groups"].value == [[GROUP, "n1", owner, "running"]]

    return match


def test_root_takeover_moves_the_vip(cluster: Cluster) -> None:
    watcher = SignalWatcher(cluster.buses["n2"].address)  # a second connection on n2's bus
    try:
        cluster.busctl("n2", "call", BUS_NAME, OBJECT_PATH, MANAGER_IFACE, "Takeover", "s",
                       "all")
        cluster.wait_holder("n2")
        watcher.wait(groups_changed_to("n2"))
        watcher.wait(lambda m: m.member == "GroupStateChanged"
                     and m.body == [GROUP, "n2", "running"])
        watcher.wait(properties_changed(group_path(GROUP), GROUP_IFACE, "Owner"))
    finally:
        watcher.close()
    assert cluster.owner_seen_by("n1") == "n2"  # the old holder knows where it went
    cluster.nodes["n2"].wait_log(r"takeover \[all\] requested")


def test_unprivileged_refused_nothing_moves(cluster: Cluster) -> None:
    bus = cluster.buses["n1"]
    mark = cluster.nodes["n1"].mark()
    res = dbus_send(bus, "hbdtest", "Takeover", "string:all")
    assert res.returncode != 0 and "org.linuxha.hbd1.Error.NotAuthorized" in res.stderr, res
    res = bus.run_as("hbdtest", ["busctl", "--system", "call", BUS_NAME, OBJECT_PATH,
                                 MANAGER_IFACE, "Takeover", "s", "all"])
    assert res.returncode != 0
    # so is hbctl, with its "not authorized" exit status
    res = bus.run_as("hbdtest", [sys.executable, "-m", "hbd.cli.hbctl", "takeover"],
                     env={"PYTHONPATH": str(ROOT)})
    assert res.returncode == 4, res
    time.sleep(1.0)  # 10 heartbeats: long enough for a takeover to have shown
    assert cluster.holder() == "n2"
    assert "takeover" not in cluster.nodes["n1"].log()[mark:]


def test_invalid_scope_refused(cluster: Cluster) -> None:
    res = dbus_send(cluster.buses["n1"], "root", "Takeover", "string:everything")
    assert res.returncode != 0 and "org.linuxha.hbd1.Error.InvalidScope" in res.stderr
    with pytest.raises(Exception, match="scope must be one of"):
        cluster.busctl("n1", "call", BUS_NAME, OBJECT_PATH, MANAGER_IFACE, "Release", "s", "")
    assert cluster.holder() == "n2"


def test_haclient_member_allowed_by_rule(cluster: Cluster) -> None:
    bus = cluster.buses["n1"]
    bus.install_polkit_rule("50-hbd-haclient.rules",
                            (ROOT / "polkit" / "50-hbd-haclient.rules.example").read_text())
    watcher = SignalWatcher(bus.address)
    try:
        res = bus.run_as("hbdadmin", ["busctl", "--system", "call", BUS_NAME, OBJECT_PATH,
                                      MANAGER_IFACE, "Takeover", "s", "all"])
        assert res.returncode == 0, res
        cluster.wait_holder("n1")
        watcher.wait(groups_changed_to("n1"))
        watcher.wait(lambda m: m.member == "GroupStateChanged"
                     and m.body == [GROUP, "n1", "running"])
    finally:
        watcher.close()


def test_hbctl_reads_the_real_daemon(cluster: Cluster) -> None:
    env = {"PYTHONPATH": str(ROOT)}
    res = cluster.buses["n1"].run_as("hbdtest", [sys.executable, "-m", "hbd.cli.hbctl",
                                                 "status"], env=env)
    assert res.returncode == 0, res
    lines = res.stdout.splitlines()
    # `all` once an earlier test's Takeover all took n2's (empty) class too: Heartbeat's
    # rscstatus counts classes, not groups (test_clstatus_netns compares it)
    assert re.search(r"on n1: holding (local|all) resources$", lines[0]), lines[0]
    assert any(line.split()[:4] == [GROUP, "n1", "n1", "running"] for line in lines)
    run: Callable[..., subprocess.CompletedProcess[str]] = cluster.buses["n2"].run_as
    res = run("hbdtest", [sys.executable, "-m", "hbd.cli.hbctl", "nodestatus", "n1"], env=env)
    assert (res.returncode, res.stdout) == (0, "active\n")
    res = run("hbdtest", [sys.executable, "-m", "hbd.cli.hbctl", "rscstatus"], env=env)
    assert (res.returncode, res.stdout) == (0, "none\n")
    client = cluster.lab.ip("client")
    res = run("hbdtest", [sys.executable, "-m", "hbd.cli.hbctl", "listnodes", "-p"], env=env)
    assert (res.returncode, res.stdout) == (0, f"{client}\n")
    res = run("hbdtest", [sys.executable, "-m", "hbd.cli.hbctl", "nodestatus", client], env=env)
    assert (res.returncode, res.stdout) == (0, "ping\n")


def test_bus_restart_reregisters_vip_stays(cluster: Cluster) -> None:
    node = cluster.nodes["n1"]
    mark = node.mark()
    cluster.buses["n1"].restart_dbus()
    assert cluster.holder() == "n1"
    node.wait_log(r"lost the system bus", 10, since=mark)
    node.wait_log(OWNING, 10, since=mark)
    out = cluster.busctl("n1", "get-property", BUS_NAME, OBJECT_PATH, MANAGER_IFACE,
                         "NodeName")
    assert out.strip() == 's "n1"'
    assert cluster.owner_seen_by("n1") == "n1"
    time.sleep(0.5)
    assert cluster.holder() == "n1"
    assert node.running() and cluster.nodes["n2"].running()
