"""Notify hooks and the gratuitous-ARP refresh with real hbd daemons in network namespaces.

* hooks see every event, in order, with the documented arguments and
  environment, through a graceful handover, a restart and a hard failover;
* a hook that sleeps 30 s never delays a heartbeat (keepalive 100 ms,
  deadtime 300 ms) and is killed at its timeout; a failing hook is logged;
* with `garp_refresh`, the holder re-announces the VIP, seen by a raw
  socket in the client namespace, and stops the moment it lets go.

Both daemons run at nice -10 (the CPU of this shared 2-CPU machine must not
turn into late heartbeats); the hooks report their own nice value, which
must be 0: hooks run at normal priority whatever hbd's own.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hbdproc import HbdNode, ha_cf
from tests.infra import commands
from tests.infra.fixtures import LabFactory
from tests.infra.netns import Lab, wait_for
from tests.vipclient import start_responders, wait_answer

pytestmark = [pytest.mark.netns]

VIP = "10.77.0.240"
KEY = f"{VIP}/24/eth0"
HARESOURCES = f"n1 {KEY}\n"
BAD = re.compile(r"Late heartbeat|is dead|taking over group|releasing group|Traceback")

RECORD = """#!/bin/sh
echo "$1 $2 $3 old=$HBD_OLD_STATE owner=$HBD_OWNER seq=$HBD_SEQ local=$HBD_LOCAL_NODE \
nice=$(cut -d' ' -f19 /proc/$$/stat)" >> {out}
env | sort > {out}.env
"""


class NiceNode(HbdNode):
    def argv(self) -> list[str]:
        return ["nice", "-n", "-10", *super().argv()]


def _hook(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def lab(module_make_lab: LabFactory) -> Lab:
    lab = module_make_lab(("n1", "n2", "client"), networks=1)
    start_responders(lab)
    return lab


@pytest.fixture
def nodes(lab: Lab) -> Iterator[list[HbdNode]]:
    made: list[HbdNode] = []
    yield made
    for node in made:
        node.kill()
    for name in ("n1", "n2"):
        lab.run(name, ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)


def _node(lab: Lab, made: list[HbdNode], name: str, hbdconf: str, *, deadtime: str = "500ms",
          warntime: str = "300ms") -> HbdNode:
    hacf = ha_cf("bcast eth0", deadtime=deadtime, warntime=warntime, initdead="3",
                 extra="auto_failback off\n")
    node = NiceNode(lab, name, hacf, HARESOURCES)
    (node.config_dir / "hbd.conf").write_text(hbdconf)
    made.append(node)
    return node


def _events(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _wait_events(path: Path, count: int, timeout: float = 15.0) -> list[str]:
    wait_for(lambda: len(_events(path)) >= count, timeout,
             f"{count} events in {path}: {_events(path)}")
    time.sleep(0.3)  # nothing more should come
    return _events(path)


def test_hooks_see_every_event_in_order(lab: Lab, nodes: list[HbdNode]) -> None:
    out = {name: lab.workdir / f"events-{name}" for name in ("n1", "n2")}
    for path in out.values():
        path.unlink(missing_ok=True)
    n1 = _node(lab, nodes, "n1", "notify_timeout 5\n")  # the default notify.d directory
    n2 = _node(lab, nodes, "n2", "")
    for node in (n1, n2):
        _hook(node.config_dir / "notify.d" / "10-record", RECORD.format(out=out[node.name]))
        _hook(node.config_dir / "notify.d" / "10-record~", "#!/bin/sh\nexit 9\n")  # a backup
    n1.start()
    n2.start()
    wait_answer(lab, VIP, "n1", timeout=20)
    e1 = _wait_events(out["n1"], 3)
    assert e1 == [
        "node n2 up old=init owner= seq=1 local=n1 nice=0",
        f"group {KEY} starting old=stopped owner=n1 seq=2 local=n1 nice=0",
        f"group {KEY} running old=starting owner=n1 seq=3 local=n1 nice=0",
    ]
    assert _wait_events(out["n2"], 1) == ["node n1 up old=init owner= seq=1 local=n2 nice=0"]
    env = dict(line.split("=", 1) for line in Path(f"{out['n1']}.env").read_text().splitlines())
    assert {k: v for k, v in env.items() if k.startswith("HBD_")} == {
        "HBD_EVENT": "group", "HBD_GROUP": KEY, "HBD_STATE": "running",
        "HBD_OLD_STATE": "starting", "HBD_OWNER": "n1", "HBD_LOCAL_NODE": "n1",
        "HBD_SEQ": "3", "HBD_DROPPED": "0", "HBD_TIME": env["HBD_TIME"],
        "HBD_REASON": env["HBD_REASON"]}
    assert env["HBD_REASON"] and abs(float(env["HBD_TIME"]) - time.time()) < 60
    assert env["PATH"] == "/usr/sbin:/usr/bin:/sbin:/bin"
    assert "PYTHONPATH" not in env  # hbd's own environment stays hbd's

    # graceful stop of n1: its hooks still see the group stopped before hbd exits
    assert n1.stop() == 0
    assert _events(out["n1"])[3:] == [
        f"group {KEY} stopping old=running owner=n1 seq=4 local=n1 nice=0",
        f"group {KEY} stopped old=stopping owner= seq=5 local=n1 nice=0",
    ]
    wait_answer(lab, VIP, "n2", timeout=10)
    # n2 takes over on n1's `shutdone`, before n1's silence makes it dead
    assert _wait_events(out["n2"], 4)[1:] == [
        f"group {KEY} starting old=stopped owner=n2 seq=2 local=n2 nice=0",
        f"group {KEY} running old=starting owner=n2 seq=3 local=n2 nice=0",
        "node n1 dead old=active owner= seq=4 local=n2 nice=0",
    ]

    # n1 comes back (auto_failback off: the VIP stays), then n2 dies hard
    n1.start()
    n1.wait_log(r"Status update for node n2: status active", 20)
    assert _wait_events(out["n2"], 5)[4:] == ["node n1 up old=dead owner= seq=5 local=n2 nice=0"]
    n2.kill()
    wait_answer(lab, VIP, "n1", timeout=10)
    assert _wait_events(out["n1"], 9)[5:] == [
        "node n2 up old=init owner= seq=1 local=n1 nice=0",
        "node n2 dead old=active owner= seq=2 local=n1 nice=0",
        f"group {KEY} starting old=stopped owner=n1 seq=3 local=n1 nice=0",
        f"group {KEY} running old=starting owner=n1 seq=4 local=n1 nice=0",
    ]
    assert "exit 9" not in n1.log() and "10-record~" not in n1.log()


def test_a_slow_hook_never_delays_a_heartbeat(lab: Lab, nodes: list[HbdNode]) -> None:
    pids = lab.workdir / "slow-hook-pids"
    pids.unlink(missing_ok=True)
    slow = _hook(lab.workdir / "hooks" / "slow", f"#!/bin/sh\necho $$ >> {pids}\nsleep 30\n")
    fails = _hook(lab.workdir / "hooks" / "fails", "#!/bin/sh\necho 'db down' >&2\nexit 3\n")
    conf = f"notify {slow}\nnotify {fails}\nnotify_timeout 2\nnotify_dir off\n"
    n1 = _node(lab, nodes, "n1", conf, deadtime="300ms", warntime="250ms")
    n2 = _node(lab, nodes, "n2", conf, deadtime="300ms", warntime="250ms")
    n1.start()
    n2.start()
    wait_answer(lab, VIP, "n1", timeout=20)
    marks = (n1.mark(), n2.mark())
    # n1 queued three events (n2 up, starting, running): 3 x 2 s of a hook that hangs
    n1.wait_log(rf"notify hook {slow} \(node n2 up\) timed out after 2 s: its process group "
                "was killed", 10)
    n1.wait_log(rf"notify hook {fails} \(node n2 up\) failed: exit code 3", 5)
    n1.wait_log(rf"notify hook {fails}: db down", 1, since=0)
    n1.wait_log(rf"notify hook {fails} \(group {re.escape(KEY)} running\) failed", 10)
    first = int(pids.read_text().split()[0])
    assert not Path(f"/proc/{first}").exists(), "the timed-out hook is still running"
    for node, mark in zip((n1, n2), marks, strict=True):
        tail = node.log()[mark:]
        found = BAD.search(tail)
        assert found is None, f"{node.name}: {found.group(0)!r}\n{tail[-3000:]}"
        assert node.running()
    assert lab.has_address("n1", VIP) and not lab.has_address("n2", VIP)


CAPTURE = r"""
import socket, struct, sys, time
vip, seconds = socket.inet_aton(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.settimeout(0.2)
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        frame = s.recv(128)
    except TimeoutError:
        continue
    op, sha, spa, tha, tpa = struct.unpack("!6xH6s4s6s4s", frame[14:42])
    if spa == vip and tpa == vip:  # gratuitous: sender and target are the address
        print(f"{time.monotonic():.3f} {op} {sha.hex(':')}", flush=True)
"""


def _capture(lab: Lab, seconds: float) -> subprocess.Popen[bytes]:
    return commands.popen(lab.argv("client", [sys.executable, "-c", CAPTURE, VIP,
                                              str(seconds)]), stdout=subprocess.PIPE)


def test_garp_refresh_seen_from_the_client(lab: Lab, nodes: list[HbdNode]) -> None:
    conf = "arp_count 1\ngarp_refresh 500ms\nnotify_dir off\n"
    n1 = _node(lab, nodes, "n1", conf)
    n2 = _node(lab, nodes, "n2", conf)
    n1.start()
    n2.start()
    wait_answer(lab, VIP, "n1", timeout=20)
    time.sleep(0.6)  # past the first refresh, whose timing depends on the start
    capture = _capture(lab, 2.6)
    out, _ = capture.communicate(timeout=20)
    n1_mac = lab.mac("n1").lower()
    frames = out.decode().splitlines()
    rounds: list[float] = []  # a round: frames sent back to back
    for at in sorted(float(line.split()[0]) for line in frames):
        if not rounds or at - rounds[-1] > 0.15:
            rounds.append(at)
    # every 0.5 s a round (an ARP request and a reply), from n1 alone
    assert 4 <= len(rounds) <= 6, frames
    gaps = [b - a for a, b in itertools.pairwise(rounds)]
    assert all(0.3 <= gap <= 0.8 for gap in gaps), (gaps, frames)
    assert {line.split()[1] for line in frames} == {"1", "2"}
    assert all(line.split()[2] == n1_mac for line in frames)
    # a reload turning it off stops the refresh of the running group
    mark = n1.mark()
    (n1.config_dir / "hbd.conf").write_text("arp_count 1\ngarp_refresh off\n")
    n1.signal(signal.SIGHUP)
    n1.wait_log(r"configuration reloaded from", 10, since=mark)
    capture = _capture(lab, 1.6)
    out, _ = capture.communicate(timeout=20)
    assert out.decode() == ""
    (n1.config_dir / "hbd.conf").write_text(conf)
    mark = n1.mark()
    n1.signal(signal.SIGHUP)
    n1.wait_log(r"configuration reloaded from", 10, since=mark)
    # a graceful stop hands over: n2 announces (and refreshes) the VIP, n1 never again
    assert n1.stop() == 0
    wait_answer(lab, VIP, "n2", timeout=10)
    capture = _capture(lab, 1.6)
    out, _ = capture.communicate(timeout=20)
    senders = {line.split()[2] for line in out.decode().splitlines()}
    assert senders == {lab.mac("n2").lower()}, out.decode()


def test_hooks_and_refresh_off_by_default_cost_nothing(lab: Lab, nodes: list[HbdNode]) -> None:
    n1 = _node(lab, nodes, "n1", "")
    n1.start()
    n1.wait_log(r"ready:", 20)
    result = commands.run([sys.executable, "-m", "hbd.daemon", "--check-config",
                             "--config-dir", str(n1.config_dir), "--node", "n1"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert "gratuitous ARP refresh: off" in result.stdout
    assert "notify hooks: notify.d in the configuration directory (if it exists); timeout " \
           "10000 ms each" in result.stdout
