"""Network and process faults with real daemons: failover when it must, never when not.

Topology: n1, n2, a client and a relay namespace on two independent
networks (eth0 10.77.0.0/24, eth1 10.78.0.0/24); haresources
`n1 10.77.0.240/24/eth0`, auto_failback off unless stated.  Everything is
checked from the client: who answers on the VIP, and whose MAC its ARP
entry holds.

Impairments are real, in the kernel or on the wire:
* loss: nftables `numgen random` drops on the bridge port, per direction
  (lab.netem's fallback: this VM's kernel has no sch_netem);
* jitter: without netem, the heartbeats are routed through a userspace
  relay (RELAY below) in the relay namespace: both nodes use ucast links
  that point at the relay, which forwards each datagram to the other node
  after a uniformly random delay of up to half the deadtime, reordering
  them; it reports what it did so the test can check the jitter was real;
* flapping: the node's switch port goes down and up (carrier), as a bad
  cable or switch port does;
* partition: nftables drops frames between n1 and n2 on both bridges while
  the client still reaches both (a true split brain).

The no-failover scenarios run with deadtime 1 s (keepalive 100 ms), so a
2-core machine shared with other test runs does not turn scheduling delays
into deaths; the failover scenarios use the fast 500 ms deadtime.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hbd.core.actions import NodeStatusChanged
from tests.hbdproc import HbdNode, ha_cf
from tests.infra.fixtures import LabFactory
from tests.infra.netns import Lab, pid_running, wait_for
from tests.simnet import SimNet, make_config
from tests.vipclient import owner_by_arp, start_responders, wait_answer, who_answers

netns = pytest.mark.netns  # every test but the simulated one needs root and namespaces

VIP = "10.77.0.240"
HARESOURCES = f"n1 {VIP}/24/eth0\n"
LOSS_SECONDS = float(os.environ.get("HBD_LOSS_SECONDS", "60"))
JITTER_SECONDS = float(os.environ.get("HBD_JITTER_SECONDS", "20"))
CALM = dict(keepalive="100ms", deadtime="1", warntime="500ms", initdead="2")
DEADTIME_CALM = 1.0
DIED = re.compile(r"node n[12]: is dead|starting group|split brain|Traceback")

RELAY = r"""
import asyncio, json, random, sys, time
# argv: stats-file max-delay relay_ip,a_ip,b_ip [relay_ip,a_ip,b_ip ...]
stats_path, max_delay = sys.argv[1], float(sys.argv[2])
stats = {"forwarded": 0, "max_delay": 0.0, "total_delay": 0.0, "reordered": 0}
last_sent = {}  # direction -> arrival order of the last datagram delivered

class Relay(asyncio.DatagramProtocol):
    def __init__(self, a, b):
        self.peer = {a: b, b: a}
        self.arrivals = 0
    def connection_made(self, transport):
        self.transport = transport
    def datagram_received(self, data, addr):
        target = self.peer.get(addr[0])
        if target is None:
            return
        self.arrivals += 1
        order = self.arrivals
        delay = random.uniform(0, max_delay)
        asyncio.get_running_loop().call_later(delay, self.forward, data, target, order, delay)
    def forward(self, data, target, order, delay):
        self.transport.sendto(data, (target, 694))
        stats["forwarded"] += 1
        stats["total_delay"] += delay
        stats["max_delay"] = max(stats["max_delay"], delay)
        if order < last_sent.get(target, 0):
            stats["reordered"] += 1
        last_sent[target] = max(order, last_sent.get(target, 0))

async def main():
    loop = asyncio.get_running_loop()
    for spec in sys.argv[3:]:
        relay, a, b = spec.split(",")
        await loop.create_datagram_endpoint(lambda: Relay(a, b), local_addr=(relay, 694))
    while True:
        await asyncio.sleep(0.5)
        with open(stats_path + ".tmp", "w") as f:
            json.dump(stats, f)
        import os
        os.replace(stats_path + ".tmp", stats_path)

asyncio.run(main())
"""

COUNTER = r"""
import json, socket, sys, time
# Count n1's broadcasts per interface: proves the loss the bridge applies.
socks = {}
for ifname in sys.argv[3:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, 25, ifname.encode())  # SO_BINDTODEVICE
    s.bind(("", 694))
    s.setblocking(False)
    socks[ifname] = s
counts = {name: 0 for name in socks}
end = time.time() + float(sys.argv[2])
import select
while time.time() < end:
    ready, _, _ = select.select(list(socks.values()), [], [], 0.2)
    for name, s in socks.items():
        if s in ready:
            try:
                data = s.recv(65535)
            except BlockingIOError:
                continue
            if b"(0)src=n1," in data and b"(0)t=status," in data:
                counts[name] += 1
json.dump(counts, open(sys.argv[1], "w"))
"""


@pytest.fixture(scope="module")
def lab(module_make_lab: LabFactory) -> Lab:
    lab = module_make_lab(("n1", "n2", "client", "relay"), networks=2)
    start_responders(lab)
    return lab


@pytest.fixture
def nodes(lab: Lab) -> Iterator[list[HbdNode]]:
    made: list[HbdNode] = []
    yield made
    for node in made:
        if node.proc is not None:  # a stopped daemon is continued, then killed
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.proc.pid, signal.SIGCONT)
        node.kill()
    for name in ("n1", "n2"):
        for ifname in ("eth0", "eth1"):
            lab.restore(name, ifname)
            lab.clear_netem(name, ifname)
            lab.heal("n1", "n2", ifname)
        lab.run(name, ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)


def start(lab: Lab, nodes: list[HbdNode], media: str = "bcast eth0\nbcast eth1",
          failback: str = "off", haresources: str = HARESOURCES,
          scripts: dict[str, dict[str, str]] | None = None,
          hacf: dict[str, str] | None = None, args: dict[str, tuple[str, ...]] | None = None,
          **timers: str) -> tuple[HbdNode, HbdNode]:
    for name in ("n1", "n2"):
        text = (hacf or {}).get(name) or ha_cf(media, extra=f"auto_failback {failback}\n",
                                               **timers)
        node = HbdNode(lab, name, text, haresources,
                       extra_args=("--no-dbus", *(args or {}).get(name, ())))
        for script, body in (scripts or {}).get(name, {}).items():
            directory = node.config_dir / "resource.d"
            directory.mkdir(exist_ok=True)
            (directory / script).write_text(body)
            os.chmod(directory / script, 0o755)
        nodes.append(node.start())
    n1, n2 = nodes
    n1.wait_log(r"Status update for node n2: status active")
    n2.wait_log(r"Status update for node n1: status active")
    wait_answer(lab, VIP, "n1")
    return n1, n2


def holders(lab: Lab) -> list[str]:
    return [n for n in ("n1", "n2") if lab.has_address(n, VIP)]


def watch_service(lab: Lab, seconds: float, expected: str = "n1") -> list[str]:
    """Probe the VIP every half second for `seconds`; return every answer seen.

    A probe is retried a few times: on a lossy link the client's own datagrams
    are lost too, which says nothing about who holds the VIP.
    """
    answers = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        answer = "-"
        for _ in range(5):
            answer = who_answers(lab, VIP, timeout=0.5)
            if answer != "-":
                break
        answers.append(answer)
        assert holders(lab) == [expected], f"VIP held by {holders(lab)}"
        time.sleep(0.5)
    return answers


def assert_no_failover(n1: HbdNode, n2: HbdNode, marks: tuple[int, int]) -> None:
    for node, mark in ((n1, marks[0]), (n2, marks[1])):
        assert node.running()
        tail = node.log()[mark:]
        found = DIED.search(tail)
        assert found is None, f"{node.name}: {found.group(0)!r}\n{tail[-3000:]}"


# --- network faults -----------------------------------------------------------------------

@netns
@pytest.mark.slow
def test_20_percent_loss_on_one_of_two_links(lab: Lab, nodes: list[HbdNode],
                                             tmp_path: Path) -> None:
    n1, n2 = start(lab, nodes, **CALM)
    marks = (n1.mark(), n2.mark())
    for name in ("n1", "n2"):  # both directions on eth0; eth1 is clean
        lab.netem(name, "eth0", "loss 20%")
    counts_file = tmp_path / "counts.json"
    counter = lab.popen("client", [sys.executable, "-c", COUNTER, str(counts_file),
                                   str(LOSS_SECONDS), "eth0", "eth1"])
    answers = watch_service(lab, LOSS_SECONDS)
    counter.wait(20)
    counts = json.loads(counts_file.read_text())
    ratio = counts["eth0"] / counts["eth1"]
    print(f"loss: n1 status packets seen by the client: {counts}, eth0/eth1 = {ratio:.2f}")
    assert counts["eth1"] > LOSS_SECONDS / 0.1 * 0.5
    assert 0.7 < ratio < 0.9, "the bridge did not drop about 20 % on eth0"
    # The client's probes and ARP cross the lossy eth0 too: a probe whose five tries are
    # all lost is the network's doing (watch_service already checked every half second
    # that n1 alone holds the VIP).  Nobody else may ever answer, and n1 nearly always.
    assert set(answers) <= {"n1", "-"}, answers
    assert answers.count("-") <= len(answers) // 20, answers
    assert_no_failover(n1, n2, marks)


@netns
def test_jitter_up_to_half_deadtime(lab: Lab, nodes: list[HbdNode], tmp_path: Path) -> None:
    relay = {ifname: lab.ip("relay", ifname) for ifname in ("eth0", "eth1")}
    stats_file = tmp_path / "relay.json"
    max_delay = DEADTIME_CALM / 2
    specs = [f"{relay[i]},{lab.ip('n1', i)},{lab.ip('n2', i)}" for i in ("eth0", "eth1")]
    lab.popen("relay", [sys.executable, "-c", RELAY, str(stats_file), str(max_delay), *specs])
    wait_for(stats_file.exists, 5, "relay up")
    media = f"ucast eth0 {relay['eth0']}\nucast eth1 {relay['eth1']}"
    n1, n2 = start(lab, nodes, media=media, **CALM)
    marks = (n1.mark(), n2.mark())
    before = json.loads(stats_file.read_text())
    answers = watch_service(lab, JITTER_SECONDS)
    stats = json.loads(stats_file.read_text())
    forwarded = stats["forwarded"] - before["forwarded"]
    print(f"jitter: relay forwarded {forwarded} datagrams, delay up to "
          f"{stats['max_delay'] * 1000:.0f} ms (mean "
          f"{stats['total_delay'] / stats['forwarded'] * 1000:.0f} ms), "
          f"{stats['reordered']} reordered")
    # every heartbeat went through the relay: ~2 nodes x 2 links x 10/s
    assert forwarded > JITTER_SECONDS * 40 * 0.7
    assert stats["max_delay"] > 0.9 * max_delay
    assert stats["reordered"] > 10
    assert set(answers) == {"n1"}, answers
    assert_no_failover(n1, n2, marks)
    # hbd saw the reordering (gaps, later refilled), and nothing worse
    assert re.search(r"lost packet\(s\) for \[n1\]", n2.log()[marks[1]:])


@netns
def test_flapping_link_while_the_other_stays_up(lab: Lab, nodes: list[HbdNode]) -> None:
    n1, n2 = start(lab, nodes, **CALM)
    marks = (n1.mark(), n2.mark())
    # eth1, not the VIP's eth0: carrier loss on the VIP's interface moves the group on
    # purpose (link tracking, test_linktrack_netns); a heartbeat-only link must not
    for _ in range(10):  # 6 s of a link bouncing every 0.3 s
        lab.cut("n1", "eth1")
        time.sleep(0.3)
        lab.restore("n1", "eth1")
        time.sleep(0.3)
    answers = watch_service(lab, 2.0)
    assert set(answers) == {"n1"}
    assert_no_failover(n1, n2, marks)
    assert "Link n1:eth0 dead" not in n2.log()[marks[1]:]  # the other link never failed
    # and eth1 ends up: up (or never declared dead: bounces shorter than deadtime)
    tail = n2.log()[marks[1]:]
    if "Link n1:eth1 dead." in tail:
        assert tail.rindex("Link n1:eth1 up.") > tail.rindex("Link n1:eth1 dead.")


@netns
def test_partition_of_both_links_then_heal(lab: Lab, nodes: list[HbdNode]) -> None:
    n1, n2 = start(lab, nodes)
    for ifname in ("eth0", "eth1"):
        lab.partition("n1", "n2", ifname)
    n2.wait_log(r"node n1: is dead")
    n1.wait_log(r"node n2: is dead")
    wait_for(lambda: holders(lab) == ["n1", "n2"], 5, "both sides to hold the VIP")
    # the client last heard n2's gratuitous ARP: make sure of it
    lab.run("client", ["ip", "neigh", "replace", VIP, "lladdr", lab.mac("n2"), "dev", "eth0",
                       "nud", "stale"])
    for ifname in ("eth0", "eth1"):
        lab.heal("n1", "n2", ifname)
    healed = time.monotonic()
    wait_for(lambda: len(holders(lab)) == 1, 3, "one owner")
    wait_for(lambda: owner_by_arp(lab, VIP) == "n1", 3, "client ARP on the keeper")
    took = time.monotonic() - healed
    print(f"partition heal: one owner and the client's ARP on it {took:.2f} s after the heal")
    assert took < 2.0 + 0.6  # 2 s, plus deadtime-paced detection of the heal
    assert holders(lab) == ["n1"] and who_answers(lab, VIP) == "n1"
    n1.wait_log(r"split brain on group \S+: n1 keeps it")
    n2.wait_log(r"split brain on group \S+: n1 keeps it")


# --- process faults -----------------------------------------------------------------------

@netns
@pytest.mark.parametrize("failback,final", [("off", "n2"), ("on", "n1")])
def test_sigkill_of_active_daemon(lab: Lab, nodes: list[HbdNode], failback: str,
                                  final: str) -> None:
    n1, n2 = start(lab, nodes, failback=failback)
    first_gen = int(n1.wait_log(r"starting as node n1 \(generation (\d+)\)").group(1))
    n1.kill()  # SIGKILL: no goodbye; the VIP stays configured on n1's interface
    killed = time.monotonic()
    wait_answer(lab, VIP, "n2", timeout=5)
    assert time.monotonic() - killed < 0.5 + 0.1 + 1.5  # deadtime + keepalive + takeover
    assert owner_by_arp(lab, VIP) == "n2"
    assert holders(lab) == ["n1", "n2"]  # nobody is left on n1 to remove it
    mark = n2.mark()
    n1.start()
    restart = n1.wait_log(r"starting as node n1 \(generation (\d+)\)")
    assert int(restart.group(1)) > first_gen
    n1.wait_log(r"group \S+ is active but hbd has just started .*stopping it")
    n2.wait_log(rf"Heartbeat restart on node n1 \(generation {restart.group(1)}\)", since=mark)
    # from now on the VIP is never on both nodes, whichever way it goes
    end = time.monotonic() + 4.0
    seen = set()
    while time.monotonic() < end:
        now_holding = holders(lab)
        assert len(now_holding) <= 1, f"VIP on both nodes after the restart: {now_holding}"
        seen.update(now_holding)
        time.sleep(0.05)
    wait_answer(lab, VIP, final, timeout=5)
    assert holders(lab) == [final] and owner_by_arp(lab, VIP) == final
    if final == "n2":
        assert seen == {"n2"}
        assert "starting group" not in n1.log(since_start=True)


@netns
def test_sigstop_beyond_deadtime_then_sigcont(lab: Lab, nodes: list[HbdNode]) -> None:
    n1, n2 = start(lab, nodes)
    time.sleep(1.0)
    marks = (n1.mark(), n2.mark())
    n1.signal(signal.SIGSTOP)
    try:
        n2.wait_log(r"node n1: is dead", since=marks[1])
        wait_for(lambda: lab.has_address("n2", VIP), 5, "n2 to take the VIP")
        wait_answer(lab, VIP, "n2", timeout=5)
        time.sleep(1.0)  # stalled for well beyond deadtime
        assert holders(lab) == ["n1", "n2"]  # the frozen n1 still has it configured
    finally:
        n1.signal(signal.SIGCONT)
    wait_for(lambda: holders(lab) == ["n2"], 5, "the stalled node to give the VIP up")
    n1.wait_log(r"split brain on group \S+: n2 keeps it", since=marks[0])
    time.sleep(1.5)
    assert holders(lab) == ["n2"] and who_answers(lab, VIP) == "n2"
    assert owner_by_arp(lab, VIP) == "n2"
    assert n1.running() and n2.running()


HANGING_START = """#!/bin/sh
case "$1" in
start) sleep 1000 & echo $! > {pids}/child; echo $$ > {pids}/script; wait;;
esac
exit 0
"""
OK_SCRIPT = "#!/bin/sh\nexit 0\n"


@netns
@pytest.mark.slow
def test_hanging_resource_script_times_out(lab: Lab, nodes: list[HbdNode],
                                           tmp_path: Path) -> None:
    """A start that never returns is killed at its timeout; the peer takes the group.

    Heartbeats go on while it hangs: nobody is declared dead.  The timeout is
    --start-timeout (default 60 s), shortened here to keep the suite quick.
    """
    scripts = {"n1": {"svc": HANGING_START.format(pids=tmp_path)}, "n2": {"svc": OK_SCRIPT}}
    haresources = f"n1 {VIP}/24/eth0 svc\n"
    n1, n2 = start(lab, nodes, haresources=haresources, scripts=scripts,
                   args={"n1": ("--start-timeout", "9")})
    marks = (n1.mark(), n2.mark())
    began = n1.wait_log(r"svc start: running")
    wait_for((tmp_path / "child").exists, 5, "the hanging script")
    script_pid = int((tmp_path / "script").read_text())
    child_pid = int((tmp_path / "child").read_text())
    time.sleep(5.0)
    assert_no_failover(n1, n2, marks)  # hbd is not stuck behind its agent
    n1.wait_log(r"svc start: start timed out after 9s; its process group was killed", 15,
                since=began.start())
    n1.wait_log(r"group \S+ start FAILED: svc: start failed: start timed out", 5)
    for pid in (script_pid, child_pid):  # the whole process group was killed
        wait_for(lambda pid=pid: not pid_running(pid), 5, f"pid {pid} to be gone")
    wait_answer(lab, VIP, "n2", timeout=10)
    assert holders(lab) == ["n2"]


def test_stall_resumed_timer_first_simulated() -> None:
    """The SIGSTOP scenario as asyncio really resumes it, on the simulated network.

    SIGCONT makes epoll_wait fail with EINTR; Python then sees its timeout
    expired and returns no events, so the late timer runs before the datagrams
    that waited in the socket.  The stalled node must still yield.
    """
    group = f"{VIP}/24/eth0"
    net = SimNet({n: make_config(n, haresources=HARESOURCES) for n in ("n1", "n2")})
    net.run_for(3.0)
    assert net.holders(group) == ["n1"]
    net.freeze("n1")
    net.run_for(2.0)  # n2 declares n1 dead and takes the group
    assert net.holders(group) == ["n1", "n2"]
    stalled = net.nodes["n1"]
    stalled.frozen = False
    net._apply(stalled, stalled.engine.handle_timer(net.now, net.wall))  # the late timer ...
    net.thaw("n1")  # ... then the backlog
    net.run_for(2.0)
    assert net.holders(group) == ["n2"]
    deaths = [e for _, e in net.events("n1", NodeStatusChanged)
              if isinstance(e, NodeStatusChanged) and e.node == "n2" and e.new == "dead"]
    assert deaths == [], "the stalled node declared its live peer dead"
