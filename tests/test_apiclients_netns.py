"""Heartbeat's named API clients on hbd nodes: Debian's unmodified ipfail and api_test.

* ipfail, respawned by ha.cf's `respawn` on every node, in a mixed cluster (hbd and
  Heartbeat 3.0.6, each running ipfail) and in an hbd-only cluster: the active node
  loses its ping node, the ipfails compare counts over the cluster (num_ping_nodes,
  you_are_dead), the active node's ipfail gives up (ask_resources) and the group
  moves to the better-connected node, once (hbd's built-in rule stays aside).
* api_test on both nodes of a mixed cluster: each one's `ping` cluster message
  reaches the other, whose `pingreply` node messages come back, both directions;
  each hears of the other's signon (client status callback).
* a named client that never reads: hbd disconnects it and keeps heartbeating.
* a named client that floods: the peer gets its budget's worth, the refusals are logged
  once, and hbd keeps heartbeating.

The hbd node's clients reach its socket through a private mount namespace whose
/run is the node's (libhbclient only knows /var/run/heartbeat/register), then run
as hacluster, as ipfail's default apiauth wants.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hbdproc import HbdNode, ha_cf
from tests.infra import commands
from tests.infra.fixtures import HbPeerFactory, LabFactory
from tests.infra.hbpeer import HeartbeatPeer
from tests.infra.netns import Lab, children_of, pid_running, wait_for
from tests.vipclient import start_responders, wait_answer

pytestmark = [pytest.mark.netns, pytest.mark.slow]

VIP = "10.77.0.240"
HARESOURCES = f"n1 {VIP}/24/eth0\n"
AUTHKEYS = "auth 1\n1 sha1 api-clients\n"
IPFAIL = "/usr/libexec/heartbeat/ipfail"
API_TEST = "/usr/libexec/heartbeat/api_test"
AS_HACLUSTER = ["setpriv", "--reuid=hacluster", "--regid=haclient", "--init-groups"]
# run a client against the hbd node's socket: /run replaced by the node's, then hacluster
VIA_RUN = 'mount --bind "$0" /run && exec ' + " ".join(AS_HACLUSTER) + ' "$@"'


def conf(ping: str, respawn: str, extra: str = "") -> str:
    return ha_cf("bcast eth0", deadtime="1", warntime="500ms", initdead="3",
                 extra=f"auto_failback off\ncrm no\nping {ping}\ndeadping 1\n"
                 f"{respawn}{extra}")


def hbd_respawn(node: HbdNode, program: str) -> str:
    return (f"respawn root /usr/bin/unshare -m sh -c '{VIA_RUN}' {node.api_run} "
            f"{program}\n")


def new_hbd(lab: Lab, name: str, ping: str, extra: str = "") -> HbdNode:
    """An hbd node whose ha.cf respawns ipfail through the /run wrapper."""
    node = HbdNode(lab, name, "", HARESOURCES, AUTHKEYS)
    node.write_config(conf(ping, hbd_respawn(node, IPFAIL), extra), HARESOURCES, AUTHKEYS)
    return node


def cut_pings(lab: Lab, node: str, ping: str) -> None:
    lab.run(node, ["nft", "add table inet hbdapi; add chain inet hbdapi out "
                          "{ type filter hook output priority 0; }; "
                          f"add rule inet hbdapi out ip daddr {ping} icmp type echo-request drop"])


def hbd_cl_status(lab: Lab, node: HbdNode, *args: str) -> str:
    result = commands.run(lab.argv(node.node, node.cl_status_argv(*args)), capture_output=True,
                          text=True, timeout=30, env={**os.environ, "HA_LOGFACILITY": "none"})
    return str(result.stdout).strip()


@pytest.fixture(scope="module")
def lab(module_make_lab: LabFactory) -> Iterator[Lab]:
    lab = module_make_lab(("n1", "n2", "client"))
    start_responders(lab)
    yield lab


@pytest.fixture
def clean(lab: Lab) -> Iterator[None]:
    yield
    for node in ("n1", "n2"):
        lab.run(node, ["nft", "flush", "ruleset"], check=False)
        lab.run(node, ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)


def stop_and_check_ipfail_stopped(node: HbdNode) -> None:
    """A graceful stop ends the respawned ipfail first (SIGTERM), and nothing is left."""
    mark = node.mark()
    assert node.stop() == 0
    found = re.search(r'stopping client ".*ipfail" \(pid (\d+)\)', node.log()[mark:])
    assert found, node.log()[-3000:]
    wait_for(lambda: not pid_running(int(found.group(1))), 5, "ipfail gone")


def kill_respawned(node: HbdNode) -> None:
    """After a test that failed with hbd killed: its respawned clients, by recorded pid."""
    for pid in {int(p) for p in re.findall(r'runs as pid (\d+)', node.log())}:
        with contextlib.suppress(OSError):
            if b"ipfail" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)


def still_holds(lab: Lab, holder: str, seconds: float) -> None:
    """The group stays where it is (nothing moves twice)."""
    other = "n2" if holder == "n1" else "n1"
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert lab.has_address(holder, VIP), f"{VIP} left {holder}"
        assert not lab.has_address(other, VIP), f"{VIP} came back to {other}"
        time.sleep(0.2)


def test_ipfail_mixed_cluster(lab: Lab, clean: None, hb_peer_factory: HbPeerFactory) -> None:
    """hbd (n1, active) and Heartbeat (n2), each respawning Debian's ipfail."""
    ping = lab.ip("client")
    heartbeat = hb_peer_factory(lab, "n2", conf(ping, f"respawn hacluster {IPFAIL}\n"),
                                HARESOURCES, AUTHKEYS, daemon=True)
    hbd = new_hbd(lab, "n1", ping).start()
    try:
        heartbeat.wait_status("n1", "active", timeout=30)
        wait_answer(lab, VIP, "n1", timeout=30)
        # each ipfail signed on, and each node sees the other's (clientstatus asks it)
        wait_for(lambda: hbd_cl_status(lab, hbd, "clientstatus", "n2", "ipfail")
                 == "online", 30, "hbd sees ipfail online on n2")
        wait_for(lambda: heartbeat.cl_status("clientstatus", "n1", "ipfail", check=False)
                 == "online", 30, "heartbeat sees ipfail online on n1")
        wait_for(lambda: hbd_cl_status(lab, hbd, "nodestatus", ping) == "ping", 15, "ping up")
        wait_for(lambda: heartbeat.node_status(ping) == "ping", 15, "ping up on n2")
        wait_for(lambda: heartbeat.rsc_status() not in ("transition", ""), 30, "settled")
        time.sleep(2)  # the ipfails' start-up exchange (join, num_ping_nodes) settles
        mark = hbd.mark()
        cut_pings(lab, "n1", ping)
        hbd.wait_log(r"API client ipfail asks for standby \[all\]", 30, since=mark)
        wait_answer(lab, VIP, "n2", timeout=20)
        still_holds(lab, "n2", 6)
        assert "ping nodes: we reach" not in hbd.log()[mark:], "the built-in rule moved too"
        assert hbd.running()
        stop_and_check_ipfail_stopped(hbd)
    finally:
        hbd.kill()
        kill_respawned(hbd)
        heartbeat.kill()


def test_ipfail_hbd_only_cluster(lab: Lab, clean: None) -> None:
    ping = lab.ip("client")
    nodes = [new_hbd(lab, name, ping).start() for name in ("n1", "n2")]
    n1, n2 = nodes
    try:
        n1.wait_log(r"Status update for node n2: status active", 30)
        wait_answer(lab, VIP, "n1", timeout=30)
        wait_for(lambda: hbd_cl_status(lab, n1, "clientstatus", "n2", "ipfail") == "online",
                 30, "n1 sees ipfail online on n2")
        wait_for(lambda: hbd_cl_status(lab, n2, "clientstatus", "n1", "ipfail") == "online",
                 30, "n2 sees ipfail online on n1")
        wait_for(lambda: hbd_cl_status(lab, n1, "nodestatus", ping) == "ping", 15, "ping up")
        wait_for(lambda: hbd_cl_status(lab, n2, "nodestatus", ping) == "ping", 15, "ping up")
        # respawn: n2's ipfail killed is started again, and n1 hears it leave and rejoin
        (first,) = re.findall(r"runs as pid (\d+)", n2.log())
        mark = n2.mark()
        os.kill(int(first), signal.SIGKILL)
        n2.wait_log(r'Client .*ipfail \(pid=\d+\) killed by signal 9', 10, since=mark)
        n2.wait_log(r'Respawning client ".*ipfail"', 10, since=mark)
        n2.wait_log(r"runs as pid \d+", 10, since=mark)
        wait_for(lambda: hbd_cl_status(lab, n1, "clientstatus", "n2", "ipfail") == "online",
                 30, "n2's ipfail back")
        time.sleep(2)
        mark = n1.mark()
        cut_pings(lab, "n1", ping)
        n1.wait_log(r"API client ipfail asks for standby \[all\]", 30, since=mark)
        wait_answer(lab, VIP, "n2", timeout=20)
        still_holds(lab, "n2", 6)
        for node in nodes:
            assert "ping nodes: we reach" not in node.log(), "the built-in rule moved too"
        for node in nodes:
            stop_and_check_ipfail_stopped(node)
    finally:
        for node in nodes:
            node.kill()
            kill_respawned(node)


def _api_test_on_hbd(lab: Lab, node: HbdNode, out: Path) -> subprocess.Popen[bytes]:
    with open(out, "wb") as f:
        return lab.popen(node.node, ["unshare", "-m", "sh", "-c", VIA_RUN, str(node.api_run),
                                     API_TEST], stdout=f, stderr=subprocess.STDOUT)


def _api_test_on_heartbeat(peer: HeartbeatPeer, out: Path) -> subprocess.Popen[bytes]:
    assert peer.iso is not None
    with open(out, "wb") as f:
        return commands.popen(peer.iso.nsenter_argv([*AS_HACLUSTER, API_TEST]), stdout=f,
                              stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for pid in [proc.pid, *children_of(proc.pid)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    proc.wait(10)


def test_api_test_both_ways(lab: Lab, clean: None, hb_peer_factory: HbPeerFactory,
                            tmp_path: Path) -> None:
    """api_test (signs on as `ping`) on both nodes: a cluster message and node replies
    cross between hbd and Heartbeat in both directions."""
    ping = lab.ip("client")
    heartbeat = hb_peer_factory(lab, "n2", conf(ping, ""), HARESOURCES, AUTHKEYS, daemon=True)
    hbd = HbdNode(lab, "n1", conf(ping, ""), HARESOURCES, AUTHKEYS).start()
    procs = []
    try:
        heartbeat.wait_status("n1", "active", timeout=30)
        on_hbd, on_hb = tmp_path / "api_test-hbd.log", tmp_path / "api_test-hb.log"
        procs.append(_api_test_on_hbd(lab, hbd, on_hbd))
        time.sleep(1)  # the Heartbeat side signs on second: the hbd side hears its join
        procs.append(_api_test_on_heartbeat(heartbeat, on_hb))

        def text(path: Path) -> str:
            return path.read_text(errors="replace") if path.exists() else ""

        for path, other in ((on_hbd, "n2"), (on_hb, "n1")):
            wait_for(lambda p=path, o=other: re.search(  # type: ignore[misc]
                rf"Got message \d+ of type \[ping\] from \[{o}\]", text(p)), 30,
                f"{path.name}: ping from {other}")
            wait_for(lambda p=path, o=other: re.search(  # type: ignore[misc]
                rf"Got message \d+ of type \[pingreply\] from \[{o}\]", text(p)), 15,
                f"{path.name}: pingreply from {other}")
        assert "Client n2/ping now has status [join]" in text(on_hbd), text(on_hbd)
        assert "Signing in with heartbeat" in text(on_hbd)
        assert "Cannot sign on" not in text(on_hbd)
        assert "Cannot set filter mode" not in text(on_hbd)
    finally:
        for proc in procs:
            _stop(proc)
        hbd.kill()
        heartbeat.kill()


def _frame(fields: list[tuple[str, str]]) -> bytes:
    body = (">>>\n" + "".join(f"{k}={v}\n" for k, v in fields) + "<<<\n").encode() + b"\0"
    return struct.pack("=iI", len(body), 0xABCD) + body


def test_a_client_that_never_reads_does_not_stall_hbd(lab: Lab, clean: None) -> None:
    """A named client sends itself messages (each delivered back to it) and reads none:
    hbd drops it once its unread messages pass the bound, and keeps serving."""
    ping = lab.ip("client")
    extra = "apiauth sink uid=root\n"
    nodes = [HbdNode(lab, name, conf(ping, "", extra), HARESOURCES, AUTHKEYS)
             for name in ("n1", "n2")]
    # the wire's rate limit would hold the sink's own messages back long before they
    # filled its socket: raised, so that its deliveries pile up within the test
    (nodes[0].config_dir / "hbd.conf").write_text("api_client_rate 100000\n"
                                                  "api_clients_rate 1000000\n")
    for node in nodes:
        node.start()
    n1, n2 = nodes
    try:
        n1.wait_log(r"Status update for node n2: status active", 30)
        mark2 = n2.mark()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(n1.api_socket))
            s.sendall(_frame([("t", "hbapi-req"), ("reqtype", "signon"), ("dest", "n1"),
                              ("pid", str(os.getpid())), ("from_id", "sink"),
                              ("uid", str(os.getuid())), ("gid", str(os.getgid()))]))
            s.settimeout(5)
            assert b"result=OK" in s.recv(4096)
            s.settimeout(0.5)
            junk = "x" * 1000
            began = time.monotonic()
            sent = 0
            try:
                for i in range(2000):  # 2 MB for itself, none of it read
                    s.sendall(_frame([("t", "sinkmsg"), ("dest", "n1"), ("n", str(i)),
                                      ("junk", junk)]))
                    sent += 1
            except OSError:
                pass  # dropped by hbd
            n1.wait_log(r"client sink \(pid \d+\) leaves its messages unread", 15)
            assert sent > 200
            # meanwhile hbd answered cl_status at once and its peer never missed it
            t0 = time.monotonic()
            assert hbd_cl_status(lab, n1, "nodestatus", "n2") == "active"
            assert time.monotonic() - t0 < 5
            assert time.monotonic() - began < 30
        assert "node n1: is dead" not in n2.log()[mark2:]
        assert not re.search(r"Late heartbeat: Node n1", n2.log())
        assert n1.running()
    finally:
        for node in nodes:
            node.kill()


def _signon(path: Path, name: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(path))
    s.sendall(_frame([("t", "hbapi-req"), ("reqtype", "signon"), ("pid", str(os.getpid())),
                      ("from_id", name), ("uid", str(os.getuid())),
                      ("gid", str(os.getgid()))]))
    s.settimeout(5)
    assert b"result=OK" in s.recv(4096)
    return s


def test_a_flooding_client_reaches_the_peer_at_its_rate_only(lab: Lab, clean: None) -> None:
    """A named client sends a thousand messages at once: the peer's client of that name
    gets the bucket's worth, hbd logs the refusals once and keeps heartbeating."""
    ping = lab.ip("client")
    nodes = [HbdNode(lab, name, conf(ping, "", "apiauth flood uid=root\n"), HARESOURCES,
                     AUTHKEYS).start() for name in ("n1", "n2")]
    n1, n2 = nodes
    try:
        n1.wait_log(r"Status update for node n2: status active", 30)
        mark1, mark2 = n1.mark(), n2.mark()
        with _signon(n2.api_socket, "flood") as reader, \
                _signon(n1.api_socket, "flood") as flooder:
            began = time.monotonic()
            for i in range(1000):
                flooder.sendall(_frame([("t", "floodmsg"), ("dest", "n2"), ("n", str(i))]))
            sending = time.monotonic() - began
            got = bytearray()
            reader.settimeout(0.2)
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                with contextlib.suppress(TimeoutError):
                    got += reader.recv(65536)
            count = got.count(b"t=floodmsg")
        # the burst (64 one-KiB tokens) and what 20 KiB/s earned while it was sent
        assert 32 <= count <= 64 + 20 * sending + 2, (count, sending)
        n1.wait_log(r"message from client flood not relayed: over its rate limit", 10)
        assert n1.log()[mark1:].count("over its rate limit") == 1  # once a minute
        assert "node n1: is dead" not in n2.log()[mark2:]
        assert n1.running() and n2.running()
    finally:
        for node in nodes:
            node.kill()
