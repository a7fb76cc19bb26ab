"""hbd beside a real Heartbeat 3.0.6 node (Debian's `heartbeat`).

Each Heartbeat node runs in its own network, mount, UTS and PID namespaces
with private /etc/ha.d, /var/lib/heartbeat and /run (tests/infra/hbpeer.py).
Over bcast and a serial pty pair, with sha1 and with md5 keys, each side
sees the other active (cl_status on the Heartbeat side, hbd's own log on
ours); with a wrong key, each side refuses the other.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hbdproc import HbdNode, ha_cf
from tests.infra.fixtures import HbPeerFactory, LabFactory
from tests.infra.netns import Lab, wait_for
from tests.infra.serialpair import SerialPair

pytestmark = [pytest.mark.netns, pytest.mark.slow]

HEARTBEAT_LOG = "logfile /var/log/ha-log\ndebugfile /var/log/ha-debug\n"


@pytest.fixture(scope="module")
def lab(module_make_lab: LabFactory) -> Lab:
    return module_make_lab(("n1", "n2"), networks=1)


@pytest.fixture
def serial() -> Iterator[SerialPair]:
    with SerialPair() as pair:
        yield pair


@pytest.fixture
def hbd_nodes() -> Iterator[list[HbdNode]]:
    made: list[HbdNode] = []
    yield made
    for node in made:
        node.kill()


def _config(tty: str) -> str:
    return ha_cf(f"bcast eth0\nserial {tty}", deadtime="1", warntime="500ms", initdead="2",
                 extra="auto_failback on\ncrm no\n" + HEARTBEAT_LOG)


@pytest.mark.parametrize("method", ["sha1", "md5"])
def test_each_side_sees_the_other_active(lab: Lab, serial: SerialPair,
                                         hb_peer_factory: HbPeerFactory,
                                         hbd_nodes: list[HbdNode], method: str) -> None:
    keys = f"auth 3\n3 {method} interop-{method}-key\n"
    peer = hb_peer_factory(lab, "n2", _config(serial.paths[1]), "", keys)
    hbd = HbdNode(lab, "n1", _config(serial.paths[0]), "", keys)
    hbd_nodes.append(hbd.start())
    peer.wait_status("n1", "active", timeout=20)
    hbd.wait_log(r"Status update for node n2: status active", 20)
    hbd.wait_log(r"Link n2:eth0 up\.")
    hbd.wait_log(rf"Link n2:{serial.paths[0]} up\.")
    for link in ("eth0", serial.paths[1]):
        wait_for(lambda link=link: peer.cl_status("hblinkstatus", "n1", link, check=False)
                 == "up", 10, f"heartbeat to see link n1:{link} up")
    assert "n2: is dead" not in hbd.log()
    assert "dropped" not in hbd.log(), "hbd must accept every packet of a correct peer"
    log = peer.log()
    assert "authentication failed" not in log and "bad node" not in log
    # a graceful hbd stop is seen by Heartbeat as n1 dead, with no errors on either side
    hbd.stop()
    peer.wait_status("n1", "dead", timeout=10)


def test_wrong_key_each_side_refuses_the_other(lab: Lab, serial: SerialPair,
                                               hb_peer_factory: HbPeerFactory,
                                               hbd_nodes: list[HbdNode]) -> None:
    peer = hb_peer_factory(lab, "n2", _config(serial.paths[1]), "",
                           "auth 1\n1 sha1 heartbeat-side-key\n")
    hbd = HbdNode(lab, "n1", _config(serial.paths[0]), "", "auth 1\n1 sha1 hbd-side-key\n")
    hbd_nodes.append(hbd.start())
    hbd.wait_log(r"dropped \d+ packet\(s\) on (eth0|\S+tty\S*): bad MAC under key 1 "
                 r"\(last claimed sender: n2\)", 20)
    hbd.wait_log(r"node n2: is dead", 20)
    assert "Status update for node n2" not in hbd.log()
    peer.wait_status("n1", "dead", timeout=20)
    assert "heartbeat-side-key" not in hbd.log() and "hbd-side-key" not in hbd.log()
