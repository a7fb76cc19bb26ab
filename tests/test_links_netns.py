"""Real hbd processes in network namespaces joined by bridges, plus a serial pty pair.

Proves the adapters: bcast, mcast and ucast links and a serial link carry
heartbeats; cutting one link changes no membership, cutting all declares
the peer dead; a restart is seen as a higher generation and a replay of
earlier packets is refused; a link that cannot open is reported and
retried while the others work.
"""

from __future__ import annotations

import ipaddress
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hbdproc import HbdNode, ha_cf
from tests.infra import commands
from tests.infra.fixtures import LabFactory
from tests.infra.netns import Lab
from tests.infra.serialpair import SerialPair

pytestmark = [pytest.mark.netns]


@pytest.fixture(scope="module")
def lab2(module_make_lab: LabFactory) -> Lab:
    """n1, n2 and a client/attacker on two independent networks (eth0, eth1)."""
    return module_make_lab(("n1", "n2", "client"), networks=2)


@pytest.fixture
def nodes(lab2: Lab) -> Iterator[list[HbdNode]]:
    made: list[HbdNode] = []
    yield made
    for node in made:
        node.kill()
    for name in ("n1", "n2"):
        for ifname in ("eth0", "eth1"):
            lab2.restore(name, ifname)


@pytest.fixture
def serial() -> Iterator[SerialPair]:
    with SerialPair() as pair:
        yield pair


def both_active(n1: HbdNode, n2: HbdNode, timeout: float = 10) -> None:
    n1.wait_log(r"Status update for node n2: status active", timeout)
    n2.wait_log(r"Status update for node n1: status active", timeout)


def test_bcast_mcast_serial_cut_one_then_all(lab2: Lab, nodes: list[HbdNode],
                                             serial: SerialPair) -> None:
    for i, name in enumerate(("n1", "n2")):
        media = f"bcast eth0\nmcast eth1 225.0.0.7 694 1 0\nserial {serial.paths[i]}"
        nodes.append(HbdNode(lab2, name, ha_cf(media)).start())
    n1, n2 = nodes
    both_active(n1, n2)
    for link in ("eth0", "eth1", serial.paths[1]):  # n2 names the link by its own tty
        n2.wait_log(rf"Link n1:{link} up\.")
    mark = n2.mark()
    lab2.cut("n1", "eth0")
    n2.wait_log(r"Link n1:eth0 dead\.", since=mark)
    time.sleep(1.0)
    assert "n1: is dead" not in n2.log()[mark:], "one link of three down must not kill n1"
    lab2.cut("n1", "eth1")
    serial.cut()
    cut_at = time.monotonic()
    n2.wait_log(r"node n1: is dead", 5, since=mark)
    assert time.monotonic() - cut_at < 0.5 + 0.1 + 0.5  # deadtime + keepalive + slack
    mark = n2.mark()
    lab2.restore("n1", "eth0")
    n2.wait_log(r"Cluster node n1 returning after partition|Status update for node n1",
                10, since=mark)
    n2.wait_log(r"Link n1:eth0 up\.", since=mark)


def test_ucast_skips_own_address(lab2: Lab, nodes: list[HbdNode]) -> None:
    media = (f"ucast eth0 {lab2.ip('n1')}\nucast eth0 {lab2.ip('n2')}\n"
             f"ucast eth1 {lab2.ip('n1', 'eth1')}\nucast eth1 {lab2.ip('n2', 'eth1')}")
    for name in ("n1", "n2"):
        nodes.append(HbdNode(lab2, name, ha_cf(media)).start())
    n1, n2 = nodes
    both_active(n1, n2)
    n1.wait_log(r"Link n2:eth0 up\.")
    n1.wait_log(r"Link n2:eth1 up\.")
    # only the peer's address is a link: one ucast endpoint per interface
    assert n1.log().count("link ucast eth0 udp/694 open") == 1


SNIFFER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", 694))
s.settimeout(0.2)
end = time.time() + float(sys.argv[2])
with open(sys.argv[1], "wb") as out:
    while time.time() < end:
        try:
            data, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        if b"(0)src=n1," in data:
            out.write(len(data).to_bytes(4, "big") + data)
"""

# Replays a capture with n1's source address (argv[3]): from the client's own address
# the peers' socket filters would drop it before the engine's replay check saw it.
REPLAYER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_IP, 19, 1)  # IP_TRANSPARENT: send from an address not ours
s.bind((sys.argv[3], 0))
blob = open(sys.argv[1], "rb").read()
i = n = 0
while i < len(blob):
    size = int.from_bytes(blob[i:i + 4], "big")
    s.sendto(blob[i + 4:i + 4 + size], (sys.argv[2], 694))
    i += 4 + size
    n += 1
print(n)
"""


def test_restart_higher_generation_and_replay_refused(lab2: Lab, nodes: list[HbdNode],
                                                      tmp_path: Path) -> None:
    for name in ("n1", "n2"):
        nodes.append(HbdNode(lab2, name, ha_cf("bcast eth0")).start())
    n1, n2 = nodes
    both_active(n1, n2)
    capture = tmp_path / "n1-old.bin"
    sniff = lab2.popen("client", [sys.executable, "-c", SNIFFER, str(capture), "2"])
    sniff.wait(10)
    assert capture.stat().st_size > 1000
    first_gen = int(n1.wait_log(r"generation (\d+)").group(1))
    n1.stop()
    mark = n2.mark()
    n1.start()
    second_gen = int(n1.wait_log(r"starting as node n1 \(generation (\d+)\)").group(1))
    assert second_gen > first_gen
    n2.wait_log(rf"Heartbeat restart on node n1 \(generation {second_gen}\)", since=mark)
    n2.wait_log(r"Status update for node n1: status active", since=mark)
    mark = n2.mark()
    broadcast = str(ipaddress.IPv4Interface(lab2.iface("client").cidr).network.broadcast_address)
    sent = lab2.run("client", [sys.executable, "-c", REPLAYER, str(capture), broadcast,
                                         lab2.ip("n1")])
    assert int(sent.stdout) > 10
    n2.wait_log(r"dropped \d+ packet\(s\) on eth0: old generation \(replay\?\)", since=mark)
    time.sleep(0.7)
    tail = n2.log()[mark:]
    assert "n1: is dead" not in tail and "Status update for node n1" not in tail
    # the peer generation is persisted: a restarted n2 still refuses the old packets
    n2.stop()
    n2.start()
    n2.wait_log(r"link bcast eth0 udp/694 open")
    lab2.run("client", [sys.executable, "-c", REPLAYER, str(capture), broadcast,
                                         lab2.ip("n1")])
    n2.wait_log(r"old generation \(replay\?\)")


def test_missing_interface_and_tty_reported_and_retried(lab2: Lab,
                                                        nodes: list[HbdNode]) -> None:
    media = "bcast eth0\nbcast eth7\nserial /dev/ttyHBDmissing"
    for name in ("n1", "n2"):
        nodes.append(HbdNode(lab2, name, ha_cf(media)).start())
    n1, n2 = nodes
    n1.wait_log(r"cannot open link bcast eth7 udp/694: no such interface; retrying")
    n1.wait_log(r"cannot open link serial /dev/ttyHBDmissing: .*; retrying")
    both_active(n1, n2)
    mark = n1.mark()
    lab2.run("n1", ["ip", "link", "add", "eth7", "type", "veth", "peer", "name", "eth7p"])
    lab2.run("n1", ["ip", "addr", "add", "10.79.0.1/24", "dev", "eth7"])
    lab2.run("n1", ["ip", "link", "set", "eth7", "up"])
    try:
        n1.wait_log(r"link bcast eth7 udp/694 opened", 8, since=mark)
    finally:
        lab2.run("n1", ["ip", "link", "del", "eth7"], check=False)
    assert n1.log().count("cannot open link bcast eth7") == 1  # reported once, not every retry


def test_daemon_survives_garbage_on_the_wire(lab2: Lab, nodes: list[HbdNode]) -> None:
    for name in ("n1", "n2"):
        nodes.append(HbdNode(lab2, name, ha_cf("bcast eth0")).start())
    n1, n2 = nodes
    both_active(n1, n2)
    mark = n2.mark()
    target = lab2.ip("n2")
    junk = [b"", b"###\n", b">>>\nt=status\n", b"\xff" * 2000, b"###\n5:(0)t=x,%%%\n",
            b">>>\n(9)x=y\n<<<\n"]
    # sent with n1's address (IP_TRANSPARENT): the client's own would stop at the filter
    script = ("import socket,sys\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              f"s.setsockopt(socket.SOL_IP, 19, 1)\ns.bind(({lab2.ip('n1')!r}, 0))\n"
              f"for d in {junk!r}:\n    s.sendto(d, ({target!r}, 694))\n")
    commands.run(lab2.argv("client", [sys.executable, "-c", script]), check=True)
    n2.wait_log(r"dropped \d+ packet\(s\) on eth0: malformed", since=mark)
    time.sleep(0.5)
    assert n2.running() and "Traceback" not in n2.log()
    assert "n1: is dead" not in n2.log()[mark:]


def test_udp_socket_gets_a_large_receive_buffer() -> None:
    """A burst must not crowd real heartbeats out of a default (~200 KiB) buffer.

    Root may exceed net.core.rmem_max; the kernel reports twice what was set.
    No packet is sent: the socket is opened on loopback and closed.
    """
    import asyncio
    import os
    import socket

    from hbd.core.config import UcastLink
    from hbd.links.udp import RECEIVE_BUFFER, UdpEndpoint

    if os.geteuid() != 0:
        pytest.skip("needs root: SO_BINDTODEVICE and SO_RCVBUFFORCE")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = UdpEndpoint("lo", port, {1: UcastLink("lo", "127.0.0.2", port)},
                           lambda *args: None)
    loop = asyncio.new_event_loop()
    try:
        endpoint.open(loop)
        assert endpoint.sock is not None
        granted = endpoint.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
        assert granted >= 2 * RECEIVE_BUFFER > 2 * min(rmem_max, 212992)
    finally:
        if endpoint.sock is not None:
            endpoint.sock.close()
        loop.close()


def test_peer_changing_address_readmitted_within_deadtime(lab2: Lab,
                                                          nodes: list[HbdNode]) -> None:
    """n1's socket filter admits only n2's learned address; n2 moves to another one.

    The filter opens again once n2 has gone unheard for half a deadtime, learns
    the new address, and n1 never misses n2 for a whole deadtime (500 ms).
    """
    from tests.test_hostile import socket_drops

    for name in ("n1", "n2"):
        nodes.append(HbdNode(lab2, name, ha_cf("bcast eth0")).start())
    n1, n2 = nodes
    both_active(n1, n2)
    time.sleep(0.5)
    # the filter is enforcing: the client's datagrams stop in n1's kernel
    before = socket_drops(n1.pid)
    script = ("import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
              f"for _ in range(20):\n    s.sendto(b'x' * 100, ({lab2.ip('n1')!r}, 694))\n")
    commands.run(lab2.argv("client", [sys.executable, "-c", script]), check=True)
    assert socket_drops(n1.pid) - before >= 20
    old = lab2.iface("n2").cidr
    new = str(ipaddress.IPv4Interface(old).network.network_address + 77) + "/24"
    mark = n1.mark()
    lab2.run("n2", ["ip", "addr", "del", old, "dev", "eth0"])
    try:
        lab2.run("n2", ["ip", "addr", "add", new, "brd", "+", "dev", "eth0"])
        time.sleep(3.0)
        tail = n1.log()[mark:]
        # were n2's new address never admitted, n1 would declare it dead after 500 ms
        assert "dead" not in tail, tail
    finally:
        lab2.run("n2", ["ip", "addr", "flush", "dev", "eth0"], check=False)
        lab2.run("n2", ["ip", "addr", "add", old, "brd", "+", "dev", "eth0"], check=False)
