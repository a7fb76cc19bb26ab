"""Heartbeat's own hb_standby and hb_takeover, unmodified, move groups on hbd nodes.

The same two-group cluster as test_scopes_netns (A homed on n1, B on n2,
auto_failback off), without D-Bus: every command is Debian's
/usr/share/heartbeat/hb_standby or hb_takeover run in the node's namespace,
pointed at that node's FIFO with HA_FIFO (the variable resource-agents'
shellfuncs honour).  A client namespace checks who answers on each VIP.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.hbdproc import HbdNode, ha_cf
from tests.infra.fixtures import LabFactory
from tests.infra.netns import Lab
from tests.test_scopes_netns import CASES, HARESOURCES, A, B
from tests.vipclient import start_responders, wait_answer

pytestmark = [pytest.mark.netns]

TOOLS = {"standby": "/usr/share/heartbeat/hb_standby",
         "takeover": "/usr/share/heartbeat/hb_takeover"}


class FifoPair:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.nodes: dict[str, HbdNode] = {}

    def start(self) -> None:
        for name in ("n1", "n2"):
            self.nodes[name] = HbdNode(
                self.lab, name, ha_cf("bcast eth0", extra="auto_failback off\n"),
                HARESOURCES).start()
        self.nodes["n1"].wait_log(r"Status update for node n2: status active")
        self.expect("n1", "n2")

    def stop(self) -> None:
        for node in self.nodes.values():
            node.kill()
        for name in ("n1", "n2"):
            for vip in (A, B):
                self.lab.run(name, ["ip", "addr", "del", f"{vip}/24", "dev", "eth0"], check=False)

    def fifo(self, node: str) -> str:
        return str(self.nodes[node].heartbeat_dir / "fifo")

    def tool(self, node: str, command: str, scope: str) -> None:
        result = self.lab.run(node, ["env", f"HA_FIFO={self.fifo(node)}", TOOLS[command],
                                     scope], check=False)
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
def pair(lab: Lab) -> Iterator[FifoPair]:
    found = FifoPair(lab)
    found.start()
    try:
        yield found
    finally:
        found.stop()


@pytest.mark.parametrize("node,command,scope,on_a,on_b", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_tool_scope(pair: FifoPair, node: str, command: str, scope: str, on_a: str,
                    on_b: str) -> None:
    mark = pair.nodes[node].mark()
    pair.tool(node, command, scope)
    pair.nodes[node].wait_log(r"requested through the FIFO", since=mark)
    pair.expect(on_a, on_b)


def test_hb_standby_failback(pair: FifoPair) -> None:
    pair.tool("n1", "standby", "all")
    pair.expect("n2", "n2")
    pair.tool("n2", "standby", "failback")  # the script sends foreign: A goes home
    pair.expect("n1", "n2")


def test_junk_changes_nothing(pair: FifoPair) -> None:
    n1 = pair.nodes["n1"]
    mark = n1.mark()
    junk = [
        os.urandom(20000),
        b">>>\nt=ask_resources\nrsc_hold=all\ninfo=me\n",  # never closed ...
        b">>>\nt=hb_takeover\nrsc_hold=all\nnot a field\n<<<\n",  # ... broken
        b">>>\nt=ask_resources\nrsc_hold=../../etc\ninfo=me\n<<<\n",
        b">>>\nt=hb_takeover\nrsc_hold=" + b"a" * 5000 + b"\n<<<\n",
        b">>>\nt=shutdown\n<<<\n",
        b">>>\nt=addnode\nnodelist=n3\n<<<\n",
        b"<<<\n" * 100,
    ]
    for data in junk:
        with open(pair.fifo("n1"), "ab") as f:
            f.write(data)
    n1.wait_log(r"ignored message \[t=addnode", since=mark)
    assert n1.running()
    pair.expect("n1", "n2")  # nothing moved ...
    assert "requested through the FIFO" not in n1.log()[mark:]  # ... nothing was asked
    pair.tool("n1", "standby", "all")  # and the FIFO still works
    pair.expect("n2", "n2")
