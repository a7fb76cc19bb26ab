"""Debian's unmodified cl_status against an hbd node and a Heartbeat 3.0.6 node of one cluster.

Every subcommand (and the interesting arguments of each) runs on both nodes
of a mixed cluster; output and exit code must be the same on both, except
for the one thing that is each node's own view (rscstatus), which must match
what Heartbeat itself says in that place.  Both placements: hbd as n1
(the primary) and as n2.  The cluster has a ping node (the client) so ping
node rows and links are compared too.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.hbdproc import HbdNode, ha_cf
from tests.infra import commands
from tests.infra.fixtures import HbPeerFactory, LabFactory
from tests.infra.hbpeer import HeartbeatPeer
from tests.infra.netns import Lab, wait_for
from tests.vipclient import start_responders, wait_answer

pytestmark = [pytest.mark.netns, pytest.mark.slow]

VIP = "10.77.0.240"
HARESOURCES = f"n1 IPaddr2::{VIP}/24/eth0\n"
AUTHKEYS = "auth 1\n1 sha1 cl-status\n"
PLACEMENTS = ["hbd-n1", "hbd-n2"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Pair:
    lab: Lab
    hbd: HbdNode
    heartbeat: HeartbeatPeer
    ping: str

    def on_hbd(self, *args: str) -> tuple[int, str]:
        result = commands.run(self.lab.argv(self.hbd.node, self.hbd.cl_status_argv(*args)),
                                capture_output=True, text=True, timeout=30,
                                env={**os.environ, "HA_LOGFACILITY": "none"})
        return result.returncode, result.stdout

    def ours_on_hbd(self, *args: str) -> tuple[int, str]:
        """hbd's own Python cl_status (hbd.cli.clstatus), for machines without heartbeat."""
        script = 'mount --bind "$0" /run && exec "$@"'
        argv = ["unshare", "-m", "sh", "-c", script, str(self.hbd.api_run), sys.executable,
                "-m", "hbd.cli.clstatus", *args]
        result = commands.run(self.lab.argv(self.hbd.node, argv), capture_output=True,
                                text=True, timeout=30, env={**os.environ, "PYTHONPATH": ROOT})
        return result.returncode, result.stdout

    def on_heartbeat(self, *args: str) -> tuple[int, str]:
        result = self.heartbeat.exec(["cl_status", *args], check=False, timeout=30)
        return result.returncode, result.stdout


@pytest.fixture(scope="module")
def lab(module_make_lab: LabFactory) -> Lab:
    lab = module_make_lab(("n1", "n2", "client"))
    start_responders(lab)
    return lab


@pytest.fixture
def pair(request: pytest.FixtureRequest, lab: Lab,
         hb_peer_factory: HbPeerFactory) -> Iterator[Pair]:
    hbd_name, hb_name = ("n1", "n2") if request.param == "hbd-n1" else ("n2", "n1")
    ping = lab.ip("client")
    conf = ha_cf("bcast eth0", deadtime="1", warntime="500ms", initdead="3",
                 extra=f"auto_failback on\ncrm no\nping {ping}\nlogfile /var/log/ha-log\n")
    heartbeat = hb_peer_factory(lab, hb_name, conf, HARESOURCES, AUTHKEYS, daemon=True)
    hbd = HbdNode(lab, hbd_name, conf, HARESOURCES, AUTHKEYS).start()
    try:
        heartbeat.wait_status(hbd_name, "active", timeout=30)
        hbd.wait_log(rf"Status update for node {hb_name}: status active", 30)
        wait_answer(lab, VIP, "n1", timeout=30)
        found = Pair(lab, hbd, heartbeat, ping)
        wait_for(lambda: found.on_heartbeat("nodestatus", ping)[1] == "ping\n"
                 and found.on_hbd("nodestatus", ping)[1] == "ping\n", 15, "ping node up")
        # Heartbeat says "transition" until its resource hand-shake settles
        wait_for(lambda: found.on_heartbeat("rscstatus")[1] != "transition\n", 30,
                 "heartbeat's resources settled")
        yield found
    finally:
        hbd.kill()
        heartbeat.kill()
        for node in ("n1", "n2"):
            lab.run(node, ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)


def queries(ping: str) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [
        ("hbstatus",), ("hbstatus", "-v"),
        ("listnodes",), ("listnodes", "-n"), ("listnodes", "-p"), ("listnodes", "-v"),
        ("nodestatus", "nosuchnode"), ("nodetype", "nosuchnode"),
        ("hblinkstatus", "n1", "eth9"), ("hblinkstatus", "nosuchnode", "eth0"),
        ("clientstatus", "n1", "ipfail"), ("clientstatus", "n2", "ipfail"),
        ("clientstatus", "nosuchnode", "ipfail"),
        ("hbparameter", "-p", "deadtime"), ("hbparameter", "-p", "keepalive"),
        ("hbparameter", "-p", "hbversion"), ("hbparameter", "-p", "auto_failback"),
        ("hbparameter", "-p", "crm"), ("hbparameter", "-p", "udpport"),
        ("hbparameter", "-p", "nosuchparameter"),
        ("nodeweight", "n1"), ("nosuchcommand",),
    ]
    for node in ("n1", "n2", ping):
        out += [("nodestatus", node), ("nodestatus", "-m", node), ("nodetype", node),
                ("listhblinks", node), ("listhblinks", "-v", node),
                ("hblinkstatus", node, ping if node == ping else "eth0")]
    return out


@pytest.mark.parametrize("pair", PLACEMENTS, indirect=True)
def test_every_subcommand_answers_as_on_heartbeat(pair: Pair) -> None:
    differences = []
    for args in queries(pair.ping):
        hbd, heartbeat = pair.on_hbd(*args), pair.on_heartbeat(*args)
        # the version's build note differs: "3.0.6 (node: <changeset>)" / "3.0.6 (hbd X)"
        hbd = hbd[0], re.sub(r"3\.0\.6 \(hbd [^)]*\)", "3.0.6 (build)", hbd[1])
        heartbeat = heartbeat[0], re.sub(r"3\.0\.6 \(node: [0-9a-f]+\)", "3.0.6 (build)",
                                         heartbeat[1])
        if hbd != heartbeat:
            differences.append(f"cl_status {' '.join(args)}: hbd {hbd!r}, heartbeat {heartbeat!r}")
    assert differences == [], "\n".join(differences)


@pytest.mark.parametrize("pair", ["hbd-n2"], indirect=True)
def test_our_cl_status_says_what_debians_says(pair: Pair) -> None:
    """The Python cl_status shipped for machines without heartbeat, against the same node."""
    differences = []
    for args in [*queries(pair.ping), ("rscstatus",), ("rscstatus", "-m"), ("listnodes", "-m"),
                 ("nodestatus",), ("listhblinks",), ("listnodes", "-x"), ()]:
        ours, debians = pair.ours_on_hbd(*args), pair.on_hbd(*args)
        if ours != debians:
            differences.append(f"cl_status {' '.join(args)}: ours {ours!r}, Debian's {debians!r}")
    assert differences == [], "\n".join(differences)


@pytest.mark.parametrize("pair", PLACEMENTS, indirect=True)
def test_rscstatus_in_each_place(pair: Pair) -> None:
    """Each node reports its own holding, as Heartbeat does in the same place: n1 holds
    its group (local), n2 none (Heartbeat's quirk: local too); the survivor of a graceful
    stop holds all, whichever daemon survives and whether or not the peer had a group."""
    assert pair.on_hbd("rscstatus") == (0, "local\n")
    assert pair.on_heartbeat("rscstatus") == (0, "local\n")
    pair.heartbeat.stop()
    wait_answer(pair.lab, VIP, pair.hbd.node, timeout=15)
    # Heartbeat counts resource classes, not groups: the survivor took the peer's class
    # (test_heartbeat_survivor_says_the_same: `all` there too), even with no group in it
    wait_for(lambda: pair.on_hbd("rscstatus") == (0, "all\n"), 10,
             f"hbd holds all (says {pair.on_hbd('rscstatus')})")
    other = "n2" if pair.hbd.node == "n1" else "n1"
    wait_for(lambda: pair.on_hbd("nodestatus", other) == (1, "dead\n"), 10, "peer dead")
    wait_for(lambda: pair.on_hbd("hblinkstatus", other, "eth0") == (1, "dead\n"), 10,
             "link dead")


@pytest.mark.parametrize("pair", PLACEMENTS, indirect=True)
def test_heartbeat_survivor_says_the_same(pair: Pair) -> None:
    assert pair.hbd.stop() == 0
    wait_answer(pair.lab, VIP, pair.heartbeat.node, timeout=15)
    wait_for(lambda: pair.on_heartbeat("rscstatus") == (0, "all\n"), 10,
             f"heartbeat holds all (says {pair.on_heartbeat('rscstatus')})")
    wait_for(lambda: pair.on_heartbeat("nodestatus", pair.hbd.node) == (1, "dead\n"), 10,
             "peer dead")
    wait_for(lambda: pair.on_heartbeat("hblinkstatus", pair.hbd.node, "eth0") == (1, "dead\n"),
             10, "link dead")


@pytest.mark.parametrize("pair", PLACEMENTS, indirect=True)
def test_rscstatus_after_the_peer_dies(pair: Pair) -> None:
    """A peer killed without a word (no shutdone): Heartbeat's survivor takes the dead
    node's class and says `all`; hbd, surviving the other way round in the same place,
    says the same.  (Heartbeat first: it is killed second.)"""
    hb_node, hbd_node = pair.heartbeat.node, pair.hbd.node
    pair.hbd.kill()
    wait_for(lambda: pair.on_heartbeat("nodestatus", hbd_node) == (1, "dead\n"), 15,
             "heartbeat sees hbd dead")
    wait_for(lambda: pair.on_heartbeat("rscstatus") == (0, "all\n"), 15,
             f"heartbeat holds all (says {pair.on_heartbeat('rscstatus')})")
    heartbeat_says = pair.on_heartbeat("rscstatus")
    # now the other way round: hbd alone with a Heartbeat peer that dies under it
    pair.heartbeat.stop()
    pair.hbd.start()
    pair.heartbeat.start(daemon=True)
    pair.heartbeat.wait_status(hbd_node, "active", timeout=30)
    wait_for(lambda: pair.on_heartbeat("rscstatus")[1] != "transition\n", 30, "settled")
    pair.heartbeat.kill()
    wait_for(lambda: pair.on_hbd("nodestatus", hb_node) == (1, "dead\n"), 15,
             "hbd sees heartbeat dead")
    wait_for(lambda: pair.on_hbd("rscstatus") == heartbeat_says, 15,
             f"hbd says {heartbeat_says} (says {pair.on_hbd('rscstatus')})")


@pytest.mark.parametrize("pair", PLACEMENTS, indirect=True)
def test_rscstatus_after_standby_both_ways(pair: Pair) -> None:
    """hb_standby all on the Heartbeat node, then on the hbd node: in each role (the node
    that went standby, the node that took everything) hbd answers what Heartbeat
    answered in that role."""
    settled = ("transition\n",)
    pair.heartbeat.hb_standby("all")
    wait_answer(pair.lab, VIP, pair.hbd.node, timeout=30)
    wait_for(lambda: pair.on_heartbeat("rscstatus")[1] not in settled
             and pair.on_hbd("rscstatus")[1] not in settled, 30, "standby settled")
    gave, took = pair.on_heartbeat("rscstatus"), pair.on_hbd("rscstatus")
    assert (gave, took) == ((0, "none\n"), (0, "all\n"))
    fifo = str(pair.hbd.heartbeat_dir / "fifo")
    result = pair.lab.run(pair.hbd.node, ["env", f"HA_FIFO={fifo}",
                                          "/usr/share/heartbeat/hb_standby", "all"], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    wait_answer(pair.lab, VIP, pair.heartbeat.node, timeout=30)
    wait_for(lambda: pair.on_heartbeat("rscstatus") == took
             and pair.on_hbd("rscstatus") == gave, 30,
             f"roles swapped (heartbeat {pair.on_heartbeat('rscstatus')}, "
             f"hbd {pair.on_hbd('rscstatus')})")


@pytest.mark.parametrize("pair", ["hbd-n1"], indirect=True)
def test_junk_and_strangers_on_the_api_socket(pair: Pair) -> None:
    """Bad framing, a lying signon and a refused user change nothing and crash nothing."""
    sock_path = str(pair.hbd.api_socket)
    import socket as socketmod
    import struct

    for junk in (b"\x00" * 64, struct.pack("=iI", 10**7, 0xABCD),
                 struct.pack("=iI", 5, 0xABCD) + b"hello",
                 struct.pack("=iI", 30, 0xABCD) + b">>>\nt=hbapi-req\nreqtype=signon\n<<<\n\0"
                 + b"x" * 4):
        with socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(sock_path)
            s.sendall(junk)
            s.shutdown(socketmod.SHUT_WR)
            s.recv(4096)  # whatever it says, it then closes
    # a signon claiming another pid / uid is refused with a reason, as Heartbeat does
    from hbd.core.hbapi import FrameReader, decode, encode
    with socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(sock_path)
        s.sendall(encode([("t", "hbapi-req"), ("reqtype", "signon"), ("dest", "n1"),
                          ("pid", "1"), ("from_id", "1"), ("uid", "0"), ("gid", "0")]))
        (body,) = FrameReader().feed(s.recv(4096))
        reply = dict(decode(body))
        assert reply["result"] == "badreq" and reply["info"] == "bad pid"
    # cl_status is setgid haclient: any user may run it, as with Heartbeat
    result = commands.run(pair.lab.argv(pair.hbd.node, [
        "unshare", "-m", "sh", "-c", 'mount --bind "$0" /run && exec "$@"', str(pair.hbd.api_run),
        "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
        "cl_status", "nodestatus", "n2"]),
        capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout) == (0, "active\n"), result
    assert pair.hbd.running()
    assert pair.on_hbd("nodestatus", "n2") == (0, "active\n")
