"""hbd on real Corosync 3 daemons: three and five nodes in network namespaces.

Each lab node runs Debian's corosync (from hbd's exported corosync.conf, knet
with aes256/sha256) and a real hbd in the same private mount namespace (see
tests/infra/corosync.py).  Every node's haresources group is one VIP,
10.77.0.10<i> homed on n<i>.  A watcher thread samples which live nodes hold
each VIP all through a test and fails it if a VIP is ever seen on two nodes in
two consecutive samples (a sample takes ~20 ms, one `ip` call per node).

Shown: kill nodes one by one (cable cut, then SIGKILL of hbd and corosync:
a power loss) and each group moves to the next node of its documented order
until quorum goes, when the survivors stop everything at once; a 2 | 3
partition where only the majority holds groups and the minority released
them, then a heal with no double owner; corosync restarted (SIGTERM) and
killed (SIGKILL) under the active node, whose hbd stops its groups, waits
and rejoins; the stack, quorum, votes and placement over D-Bus and hbctl;
an idle hbd that uses (almost) no CPU; and a failing monitor (the VIP removed
behind hbd's back) that moves the group to the next node of its order, where
it stays until `hbctl cleanup` on the failed node.  Token: 1000 ms with
token_coefficient 0, so losing a node takes about token + consensus (2.2 s).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra import commands
from tests.infra.corosync import (
    CorosyncCluster,
    CorosyncHbd,
    corosync_unavailable,
    hacf_text,
)
from tests.infra.fixtures import LabFactory
from tests.infra.netns import Lab, wait_for
from tests.infra.privbus import PrivateBus, missing_prerequisites

pytestmark = [pytest.mark.netns, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
MOVE_TIMEOUT = 15.0  # token 1 s + consensus 1.2 s + a loaded CI machine


def vip(i: int) -> str:
    return f"10.77.0.{100 + i}"


class VipWatch(threading.Thread):
    """Samples the VIPs held by every live node; remembers every double owner."""

    def __init__(self, lab: Lab, nodes: tuple[str, ...]) -> None:
        super().__init__(daemon=True)
        self.lab = lab
        self.live = set(nodes)
        self.vips = [vip(i) for i in range(1, len(nodes) + 1)]
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.doubles: list[tuple[float, str, list[str]]] = []
        self.rounds = 0
        self._previous: dict[str, list[str]] = {}

    def holders(self) -> dict[str, list[str]]:
        with self.lock:
            live = sorted(self.live)
        held: dict[str, list[str]] = {v: [] for v in self.vips}
        for node in live:
            try:
                addresses = {a.split("/")[0] for a in self.lab.addresses(node)}
            except Exception:  # a node torn down under us
                continue
            for v in self.vips:
                if v in addresses:
                    held[v].append(node)
        return held

    def run(self) -> None:
        while not self.halt.is_set():
            held = self.holders()
            self.rounds += 1
            for v, nodes in held.items():
                if len(nodes) > 1 and len(self._previous.get(v, [])) > 1:
                    self.doubles.append((time.time(), v, nodes))
            self._previous = held

    def gone(self, node: str) -> None:
        with self.lock:
            self.live.discard(node)

    def back(self, node: str) -> None:
        with self.lock:
            self.live.add(node)

    def stop(self) -> None:
        self.halt.set()
        self.join(5)


class Cluster:
    def __init__(self, lab: Lab, nodes: tuple[str, ...], *, env: dict[str, str] | None = None,
                 dbus_node: str | None = None, hbdconf: str | None = None) -> None:
        self.lab, self.names = lab, nodes
        self.haresources = "".join(f"{n} {vip(i)}/24/eth0\n" for i, n in enumerate(nodes, 1))
        self.hacf = hacf_text(nodes, extra="initdead 4\n")
        self.corosync = CorosyncCluster(lab, nodes, hacf=self.hacf, haresources=self.haresources,
                                        token_coefficient_ms=0)
        self.corosync.start()
        self.hbd = {}
        for n in nodes:
            args: tuple[str, ...] = () if n == dbus_node else ("--no-dbus",)
            self.hbd[n] = CorosyncHbd(self.corosync.nodes[n], self.hacf, self.haresources,
                                      extra_args=args, env=env if n == dbus_node else None)
            if hbdconf is not None:
                (self.hbd[n].config_dir / "hbd.conf").write_text(hbdconf)
        for node in self.hbd.values():
            node.start()
        self.watch = VipWatch(lab, nodes)
        self.wait({vip(i): n for i, n in enumerate(nodes, 1)})
        self.watch.start()

    def placement(self) -> dict[str, list[str]]:
        return self.watch.holders()

    def wait(self, want: dict[str, str | None], timeout: float = MOVE_TIMEOUT) -> float:
        """Until each VIP is on exactly the given node (None: on none); returns seconds."""
        start = time.monotonic()
        expected = {v: [n] if n else [] for v, n in want.items()}
        try:
            wait_for(lambda: all(self.placement()[v] == nodes for v, nodes in expected.items()),
                     timeout, f"placement {want}", interval=0.05)
        except TimeoutError as err:
            raise AssertionError(f"{err}; now {self.placement()}\n{self.logs()}") from None
        return time.monotonic() - start

    def power_off(self, node: str) -> None:
        """Cable out, then hbd and corosync killed: as a node losing power."""
        self.watch.gone(node)
        self.lab.cut(node)
        self.hbd[node].kill()
        self.corosync.nodes[node].stop(signal.SIGKILL)

    def partition(self, left: set[str], right: set[str]) -> None:
        for a in sorted(left):
            for b in sorted(right):
                self.lab.partition(a, b)

    def heal(self, left: set[str], right: set[str]) -> None:
        for a in sorted(left):
            for b in sorted(right):
                self.lab.heal(a, b)

    def logs(self) -> str:
        return "\n".join(f"--- hbd {n} ---\n{h.log()[-2500:]}" for n, h in self.hbd.items()) \
            + "\n" + self.corosync.logs()

    def check_no_double_owner(self) -> None:
        assert self.watch.rounds > 10, "the VIP watcher did not run"
        assert not self.watch.doubles, f"VIP on two nodes: {self.watch.doubles[:5]}\n{self.logs()}"

    def close(self) -> None:
        self.watch.stop()
        for node in self.hbd.values():
            node.kill()  # the lab goes next; graceful stops are shown in test_placement


@pytest.fixture(scope="module", autouse=True)
def _prerequisites() -> None:
    reason = corosync_unavailable()
    if reason:
        print(f"SKIP tests/test_corosync.py: {reason}")
        pytest.skip(reason)


@pytest.fixture
def cluster_of(make_lab: LabFactory) -> Iterator[type[Cluster]]:
    made: list[Cluster] = []

    class Made(Cluster):
        def __init__(self, nodes: tuple[str, ...], **kwargs: object) -> None:
            super().__init__(make_lab(nodes), nodes, **kwargs)  # type: ignore[arg-type]
            made.append(self)

    yield Made
    for cluster in made:
        cluster.close()


def test_three_nodes_lose_nodes_one_by_one(cluster_of: type[Cluster]) -> None:
    c = cluster_of(("n1", "n2", "n3"))  # type: ignore[call-arg]
    c.power_off("n3")  # n3's order: n3 n1 n2
    c.wait({vip(1): "n1", vip(2): "n2", vip(3): "n1"})
    c.hbd["n1"].wait_log(r"hbd members: n1 n2; left: n3")
    c.power_off("n2")  # 1 of 3 votes: no quorum, n1 stops everything at once
    c.wait({vip(1): None, vip(2): None, vip(3): None})
    c.hbd["n1"].wait_log(r"quorum: NOT quorate")
    assert c.hbd["n1"].running()
    c.check_no_double_owner()


def test_five_nodes_lose_nodes_one_by_one(cluster_of: type[Cluster]) -> None:
    c = cluster_of(("n1", "n2", "n3", "n4", "n5"))  # type: ignore[call-arg]
    c.power_off("n2")  # n2's order: n2 n3 n4 n5 n1
    took = c.wait({vip(1): "n1", vip(2): "n3", vip(3): "n3", vip(4): "n4", vip(5): "n5"})
    c.power_off("n3")  # n2's group and n3's both go to n4, next in their orders
    c.wait({vip(1): "n1", vip(2): "n4", vip(3): "n4", vip(4): "n4", vip(5): "n5"})
    c.power_off("n4")  # 2 of 5 votes left
    c.wait({vip(i): None for i in range(1, 6)})
    for node in ("n1", "n5"):
        c.hbd[node].wait_log(r"quorum: NOT quorate")
    c.check_no_double_owner()
    print(f"first re-placement took {took:.2f} s after the loss (token {c.corosync.token_ms} ms)")


def test_partition_two_three_then_heal(cluster_of: type[Cluster]) -> None:
    nodes = ("n1", "n2", "n3", "n4", "n5")
    c = cluster_of(nodes)  # type: ignore[call-arg]
    minority, majority = {"n1", "n2"}, {"n3", "n4", "n5"}
    c.partition(minority, majority)
    # the majority runs every group, in order; the minority released its own
    c.wait({vip(1): "n3", vip(2): "n3", vip(3): "n3", vip(4): "n4", vip(5): "n5"})
    for node in minority:
        c.hbd[node].wait_log(r"quorum: NOT quorate")
    c.heal(minority, majority)
    c.wait({vip(i): f"n{i}" for i in range(1, 6)}, timeout=30)  # auto_failback on
    c.check_no_double_owner()
    for node in nodes:
        assert "split brain" not in c.hbd[node].log()


def test_corosync_restart_and_kill_under_the_active_node(cluster_of: type[Cluster]) -> None:
    c = cluster_of(("n1", "n2", "n3"))  # type: ignore[call-arg]
    hbd, corosync = c.hbd["n1"], c.corosync.nodes["n1"]
    pid = hbd.pid
    time.sleep(4.5)  # past the start-up wait (initdead 4)
    for how in (signal.SIGTERM, signal.SIGKILL):
        mark = hbd.mark()
        corosync.stop(how)  # systemctl restart corosync / a crash
        c.wait({vip(1): "n2", vip(2): "n2", vip(3): "n3"})
        hbd.wait_log(r"lost corosync .*stopping every group", since=mark)
        corosync.start()
        hbd.wait_log(r"joined CPG group", timeout=30, since=mark)
        c.wait({vip(1): "n1", vip(2): "n2", vip(3): "n3"}, timeout=30)
    assert hbd.pid == pid and hbd.running()  # the same hbd all along
    c.check_no_double_owner()


def _hbctl(bus: PrivateBus, *argv: str) -> subprocess.CompletedProcess[str]:
    return commands.run([sys.executable, "-m", "hbd.cli.hbctl", *argv],
                        env={**os.environ, **bus.env(), "PYTHONPATH": commands.pythonpath()},
                        capture_output=True, text=True, timeout=30, check=False)


def test_state_over_dbus_and_hbctl(cluster_of: type[Cluster]) -> None:
    if missing_prerequisites():
        pytest.skip("private bus unavailable: " + "; ".join(missing_prerequisites()))
    from tests.test_bus import install_hbd_files

    with PrivateBus() as bus:
        install_hbd_files(bus)
        c = cluster_of(("n1", "n2", "n3"), dbus_node="n1",  # type: ignore[call-arg]
                       env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address})
        c.hbd["n1"].wait_log(r"owning org\.linuxha\.hbd1")
        status = json.loads(_hbctl(bus, "status", "--json").stdout)
        assert (status["stack"], status["quorum"]) == ("corosync", "quorate")
        assert (status["votes"], status["expected_votes"], status["quorum_votes"]) == (3, 3, 2)
        assert status["placement"][f"{vip(3)}/24/eth0"] == ["n3", "n1", "n2"]
        assert [(n["name"], n["status"]) for n in status["nodes"]] == [
            ("n1", "active"), ("n2", "active"), ("n3", "active")]
        c.power_off("n3")
        c.wait({vip(1): "n1", vip(2): "n2", vip(3): "n1"})
        text = _hbctl(bus, "status").stdout
        assert "stack corosync: quorate, votes 2 of 3 (quorum 2)" in text, text
        assert any(line.split()[:5] == [f"{vip(3)}/24/eth0", "n3", "n1", "running", "n3"]
                   for line in text.splitlines()), text
        out = bus.busctl("get-property", "org.linuxha.hbd1", "/org/linuxha/hbd1",
                         "org.linuxha.hbd1.Manager", "Stack", "Quorum", "Votes")
        assert out.split("\n")[:3] == ['s "corosync"', 's "quorate"', "(uuu) 2 3 2"], out
        c.power_off("n2")
        c.wait({vip(1): None, vip(2): None, vip(3): None})
        status = json.loads(_hbctl(bus, "status", "--json").stdout)
        assert status["quorum"] == "inquorate" and status["votes"] == 1
        nodes = {n["name"]: n["status"] for n in status["nodes"]}
        assert nodes == {"n1": "active", "n2": "dead", "n3": "dead"}
        c.close()


def test_a_failing_monitor_moves_the_group_until_cleanup(cluster_of: type[Cluster]) -> None:
    if missing_prerequisites():
        pytest.skip("private bus unavailable: " + "; ".join(missing_prerequisites()))
    from tests.test_bus import install_hbd_files

    group = f"{vip(1)}/24/eth0"
    with PrivateBus() as bus:
        install_hbd_files(bus)
        c = cluster_of(("n1", "n2", "n3"), dbus_node="n1",  # type: ignore[call-arg]
                       env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address},
                       # link tracking off: the monitor, not the address's removal, says it
                       hbdconf=f"monitor {group} interval=1s timeout=2s\nlink_tracking off\n")
        c.hbd["n1"].wait_log(r"owning org\.linuxha\.hbd1")
        mark = c.hbd["n1"].mark()
        # the address disappears behind hbd's back: n1's check fails, no restart is allowed,
        # and the group goes to the next node of its order (n1 n2 n3)
        c.lab.run("n1", ["ip", "addr", "del", f"{vip(1)}/24", "dev", "eth0"])
        c.wait({vip(1): "n2", vip(2): "n2", vip(3): "n3"})
        c.hbd["n1"].wait_log(r"group \S+: unfit on this node \(monitor: monitor failed", since=mark)
        c.hbd["n1"].wait_log(r"handing it to the peer, unfit here .*next in its order: n2",
                             since=mark)
        time.sleep(4.0)  # auto_failback is on, n1 is first in the order: still it stays away
        assert c.placement()[vip(1)] == ["n2"]
        status = _hbctl(bus, "status")
        assert status.returncode == 0, status.stderr
        row = next(line.split() for line in status.stdout.splitlines()
                   if line.startswith(group))
        assert row[:5] == [group, "n1", "n2", "stopped", "1"], status.stdout
        assert f"{group}: not on this node: monitor failed" in status.stdout, status.stdout
        health = bus.busctl("get-property", "org.linuxha.hbd1", "/org/linuxha/hbd1",
                            "org.linuxha.hbd1.Manager", "GroupHealth")
        assert f'"{group}" 1 "failed: ' in health and '"monitor failed: ' in health, health
        # the admin's cleanup on n1: a candidate again, first in the order, so it comes back
        res = _hbctl(bus, "cleanup", group)
        assert res.returncode == 0, res.stderr
        c.wait({vip(1): "n1", vip(2): "n2", vip(3): "n3"})
        c.hbd["n1"].wait_log(r"failures cleaned up by the admin", since=mark)
        c.check_no_double_owner()
        c.close()


def test_link_tracking_moves_a_group_whose_address_was_removed(
        cluster_of: type[Cluster]) -> None:
    if missing_prerequisites():
        pytest.skip("private bus unavailable: " + "; ".join(missing_prerequisites()))
    from tests.test_bus import install_hbd_files

    group = f"{vip(1)}/24/eth0"
    with PrivateBus() as bus:
        install_hbd_files(bus)
        c = cluster_of(("n1", "n2", "n3"), dbus_node="n1",  # type: ignore[call-arg]
                       env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address})
        c.hbd["n1"].wait_log(r"owning org\.linuxha\.hbd1")
        mark = c.hbd["n1"].mark()
        # no monitor lines: link tracking (on by default) notices the removal itself
        c.lab.run("n1", ["ip", "addr", "del", f"{vip(1)}/24", "dev", "eth0"])
        c.wait({vip(1): "n2", vip(2): "n2", vip(3): "n3"})
        c.hbd["n1"].wait_log(r"unfit on this node \(address:" + re.escape(vip(1)), since=mark)
        c.hbd["n1"].wait_log(r"handing it to the peer, unfit here .*next in its order: n2",
                             since=mark)
        status = _hbctl(bus, "status")
        assert status.returncode == 0, status.stderr
        tracked = [line.split() for line in status.stdout.splitlines()
                   if line.startswith("eth0 ")]
        assert tracked and tracked[0][1] == "up", status.stdout
        assert f"{group}: not on this node: {vip(1)} was removed" in status.stdout, status.stdout
        res = _hbctl(bus, "cleanup", group)
        assert res.returncode == 0, res.stderr
        c.wait({vip(1): "n1", vip(2): "n2", vip(3): "n3"})
        c.check_no_double_owner()
        c.close()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_an_idle_hbd_sleeps(cluster_of: type[Cluster]) -> None:
    """Once the start-up wait is over and nothing moves, hbd wakes for nothing.

    (The wait's end used to stay among the placement's deadlines as a time in the
    past: the timer fired again at once, for ever, and each hbd spun a CPU.)
    """
    c = cluster_of(("n1", "n2", "n3"))  # type: ignore[call-arg]
    hbd = c.hbd["n1"]
    hbd.wait_log(r"quorum: quorate")
    time.sleep(5.0)  # past the start-up wait (initdead 4)
    before, start = _cpu_seconds(hbd.pid), time.monotonic()
    time.sleep(3.0)
    used, elapsed = _cpu_seconds(hbd.pid) - before, time.monotonic() - start
    assert used < 0.1 * elapsed, f"{used:.2f} CPU-s in {elapsed:.1f} s idle"
    c.check_no_double_owner()
