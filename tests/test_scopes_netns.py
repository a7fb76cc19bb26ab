"""Standby (Release) and Takeover with every scope, on real daemons, seen by a client.

Two groups: A homed on n1 (10.77.0.240) and B homed on n2 (10.77.0.241);
auto_failback off so nothing moves back by itself.  Each node has its own
private system bus; commands go through hbctl as root.  After each command
the client checks which node answers on each VIP.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from tests.hbdproc import HbdNode, ha_cf
from tests.infra import commands
from tests.infra.fixtures import LabFactory
from tests.infra.netns import Lab
from tests.infra.privbus import PrivateBus
from tests.test_bus import install_hbd_files
from tests.vipclient import start_responders, wait_answer

pytestmark = [pytest.mark.netns]

A, B = "10.77.0.240", "10.77.0.241"
HARESOURCES = f"n1 {A}/24/eth0\nn2 {B}/24/eth0\n"


class Pair:
    def __init__(self, lab: Lab, buses: dict[str, PrivateBus]) -> None:
        self.lab, self.buses = lab, buses
        self.nodes: dict[str, HbdNode] = {}

    def start(self) -> None:
        for name, bus in self.buses.items():
            self.nodes[name] = HbdNode(
                self.lab, name, ha_cf("bcast eth0", extra="auto_failback off\n"), HARESOURCES,
                extra_args=(), env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address}).start()
        self.nodes["n1"].wait_log(r"Status update for node n2: status active")
        self.expect("n1", "n2")

    def stop(self) -> None:
        for node in self.nodes.values():
            node.kill()
        for name in ("n1", "n2"):
            for vip in (A, B):
                self.lab.run(name, ["ip", "addr", "del", f"{vip}/24", "dev", "eth0"], check=False)

    def hbctl(self, node: str, *args: str) -> None:
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.buses[node].address}
        result = commands.run([sys.executable, "-m", "hbd.cli.hbctl", *args],
                              capture_output=True, text=True, env=env, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr

    def expect(self, a: str, b: str) -> None:
        wait_answer(self.lab, A, a, timeout=10)
        wait_answer(self.lab, B, b, timeout=10)
        for vip, holder in ((A, a), (B, b)):
            other = "n2" if holder == "n1" else "n1"
            assert not self.lab.has_address(other, vip), f"{vip} on both nodes"


@pytest.fixture(scope="module")
def lab(module_make_lab: LabFactory) -> Lab:
    lab = module_make_lab(("n1", "n2", "client"))
    start_responders(lab)
    return lab


@pytest.fixture
def pair(lab: Lab, private_bus: PrivateBus, second_bus: PrivateBus) -> Iterator[Pair]:
    buses = {"n1": private_bus, "n2": second_bus}
    for bus in buses.values():
        install_hbd_files(bus)
    found = Pair(lab, buses)
    found.start()
    try:
        yield found
    finally:
        found.stop()


# (node, command, scope) -> who then answers on A and on B
CASES = [
    ("n1", "standby", "all", "n2", "n2"),
    ("n1", "standby", "local", "n2", "n2"),
    ("n1", "standby", "foreign", "n1", "n2"),  # n1 holds no foreign group: nothing moves
    ("n2", "standby", "local", "n1", "n1"),
    ("n1", "takeover", "all", "n1", "n1"),
    ("n1", "takeover", "local", "n1", "n2"),  # A is already n1's: nothing moves
    ("n1", "takeover", "foreign", "n1", "n1"),
    ("n2", "takeover", "foreign", "n2", "n2"),
    ("n2", "takeover", "failback", "n2", "n2"),  # as hb_takeover failback: the peer's all
]


@pytest.mark.parametrize("node,command,scope,on_a,on_b", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_scope(pair: Pair, node: str, command: str, scope: str, on_a: str, on_b: str) -> None:
    pair.hbctl(node, command, scope)
    pair.expect(on_a, on_b)


def test_standby_foreign_hands_back_what_was_taken(pair: Pair) -> None:
    pair.hbctl("n1", "standby", "all")
    pair.expect("n2", "n2")
    pair.hbctl("n2", "standby", "foreign")  # A is foreign on n2
    pair.expect("n1", "n2")
    pair.hbctl("n1", "standby", "all")
    pair.expect("n2", "n2")
    pair.hbctl("n2", "standby", "failback")  # hb_standby maps failback to foreign
    pair.expect("n1", "n2")
