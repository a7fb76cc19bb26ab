"""STONITH with real hbd daemons, a real VIP, a client and the test power switch (issue 18).

Topology: lab namespaces n1, n2 and client; haresources `n1 VIP`, auto_failback
off, bcast heartbeats at keepalive 100 ms / deadtime 500 ms.  The fence device
is tests/data/hbdtest-fence run through cluster-glue's real `stonith` command
(see tests/fencedev.py); n2 has its own private system bus with polkitd, so
`hbctl fence confirm` goes through D-Bus and polkit as in production.

Shown: a cut (n1 and n2 partitioned, the client reaches both) fences n1 and
only then n2 takes over, the client never hears two answers and its ARP entry
ends on n2; a failing device retries, blocks the takeover and says so loudly
until `hbctl fence confirm`; meatware waits for `meatclient -c`; the fence
race after a cut is won by the node that held the group, every time; a
graceful stop fences nobody; the device's password reaches no log line, no
D-Bus property and no process's argv.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hbd.bus.names import BUS_NAME, MANAGER_IFACE, OBJECT_PATH
from tests.fencedev import FenceDevice
from tests.hbdproc import HbdNode, ha_cf
from tests.infra import commands
from tests.infra.fixtures import LabFactory
from tests.infra.netns import Lab, proc_pids, wait_for
from tests.infra.privbus import PrivateBus
from tests.test_bus import install_hbd_files
from tests.vipclient import owner_by_arp, start_responders, who_answers

pytestmark = [pytest.mark.netns]

ROOT = Path(__file__).resolve().parent.parent
VIP = "10.77.0.240"
HARESOURCES = f"n1 {VIP}/24/eth0\n"


class Env:
    def __init__(self, lab: Lab, device: FenceDevice, bus: PrivateBus) -> None:
        self.lab = lab
        self.device = device
        self.bus = bus
        self.nodes: dict[str, HbdNode] = {}

    def start(self, stonith: str, hbdconf: str = "", names: tuple[str, ...] = ("n1", "n2"),
              ) -> dict[str, HbdNode]:
        for name in names:
            dbus = name == "n2"
            node = HbdNode(self.lab, name, ha_cf("bcast eth0",
                                                 extra=f"auto_failback off\n{stonith}"),
                           HARESOURCES, extra_args=() if dbus else ("--no-dbus",),
                           env={"DBUS_SYSTEM_BUS_ADDRESS": self.bus.address} if dbus else None)
            (node.config_dir / "hbd.conf").write_text(hbdconf)
            self.nodes[name] = node.start()
            self.device.record(name, node.pid)
        if "n1" in names and "n2" in names:
            self.nodes["n1"].wait_log(r"Status update for node n2: status active")
        wait_for(lambda: who_answers(self.lab, VIP) == "n1", 15, "n1 answers on the VIP")
        return self.nodes

    def hbctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return commands.run([sys.executable, "-m", "hbd.cli.hbctl", *args],
                              env=self.bus.env({"PYTHONPATH": str(ROOT)}), capture_output=True,
                              text=True, timeout=30, check=False)


@pytest.fixture(scope="module")
def env(module_make_lab: LabFactory, private_bus: PrivateBus) -> Iterator[Env]:
    lab = module_make_lab(("n1", "n2", "client"), networks=1)
    start_responders(lab)
    install_hbd_files(private_bus)
    device = FenceDevice(lab).install()
    try:
        yield Env(lab, device, private_bus)
    finally:
        device.remove()


@pytest.fixture
def fenv(env: Env) -> Iterator[Env]:
    yield env
    for node in env.nodes.values():
        node.kill()
    env.nodes.clear()
    env.lab.heal("n1", "n2")
    env.lab.restore("n1")
    env.device.set_failing(False)
    env.device.set_delay(None)
    (env.device.dir / "fence.log").unlink(missing_ok=True)
    for name in ("n1", "n2"):
        env.device.power_on(name)
        env.lab.run(name, ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)


def watch_answers(lab: Lab, timeout: float, settle: float = 1.0) -> list[str]:
    """Who answers on the VIP, as changes, until `settle` s after n2 first answered."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = who_answers(lab, VIP, timeout=0.2)
        if not seen or seen[-1] != answer:
            seen.append(answer)
            if answer == "n2":
                deadline = min(deadline, time.monotonic() + settle)
        time.sleep(0.03)
    return seen


def never_both(seen: list[str]) -> None:
    """Once n2 answered, n1 never did again: never two nodes serving."""
    assert "n2" in seen, seen
    first = seen.index("n2")
    assert "n1" not in seen[first:], f"n1 answered after n2 took over: {seen}"


def test_cut_fences_the_peer_then_and_only_then_takes_over(fenv: Env) -> None:
    lab, device = fenv.lab, fenv.device
    nodes = fenv.start(device.line("n2"), "fence_race_delay 0\n")  # only n2 can fence
    n2 = nodes["n2"]
    mark = n2.mark()
    lab.partition("n1", "n2")  # the client still reaches both
    seen = watch_answers(lab, 10)
    never_both(seen)
    assert device.resets() == ["n1"]
    log = n2.log()[mark:]
    order = [log.find(x) for x in ("node n1: is dead", f"Resetting node n1 with [{device.type}]",
                                   "node n1 now reset.", "taking over group")]
    assert -1 not in order and order == sorted(order), log[-3000:]
    wait_for(lambda: owner_by_arp(lab, VIP) == "n2", 5, "client ARP entry on n2")
    assert not nodes["n1"].running()  # "powered off"
    res = fenv.hbctl("status")
    assert res.returncode == 0 and re.search(r"n1\s+fenced", res.stdout), res


def test_failing_device_blocks_takeover_until_confirmed(fenv: Env) -> None:
    lab, device = fenv.lab, fenv.device
    device.set_failing(True)
    nodes = fenv.start(device.line("n2"), "fence_race_delay 0\nfence_retry_interval 500ms\n")
    n1, n2 = nodes["n1"], nodes["n2"]
    mark = n2.mark()
    lab.partition("n1", "n2")
    for _ in range(2):
        n2.wait_log(r"STONITH of n1 failed\.  Retrying\.\.\.", 10, since=mark)
        mark = n2.mark()
    assert not lab.has_address("n2", VIP)  # no takeover while the device fails
    assert who_answers(lab, VIP) == "n1"
    res = fenv.hbctl("status")
    assert res.returncode == 0 and re.search(r"n1\s+failed", res.stdout), res
    out = fenv.bus.busctl("get-property", BUS_NAME, OBJECT_PATH, MANAGER_IFACE, "Fencing")
    assert "failed" in out and device.password not in out
    # the operator powers n1 off by hand, then confirms
    n1.kill()
    lab.run("n1", ["ip", "link", "set", "eth0", "down"])
    res = fenv.hbctl("fence", "confirm", "n1", "--no-ask-password")
    assert res.returncode == 0, res
    wait_for(lambda: lab.has_address("n2", VIP), 5, "n2 takes over after the confirmation")
    wait_for(lambda: who_answers(lab, VIP) == "n2", 5, "n2 answers")
    n2.wait_log(r"node n1 confirmed down by an admin")
    res = fenv.hbctl("fence", "confirm", "n1", "--no-ask-password")
    assert res.returncode != 0 and "NotFencing" in res.stderr + res.stdout


def test_meatware_waits_for_meatclient(fenv: Env) -> None:
    lab = fenv.lab
    nodes = fenv.start("stonith_host n2 meatware n1\n", "fence_race_delay 0\n")
    n1, n2 = nodes["n1"], nodes["n2"]
    lab.partition("n1", "n2")
    n2.wait_log(r"waiting for manual confirmation", 10)
    time.sleep(1.0)
    assert not lab.has_address("n2", VIP)
    res = fenv.hbctl("status")
    assert re.search(r"n1\s+waiting-confirmation", res.stdout), res
    n1.kill()  # the operator pulls n1's plug ...
    lab.run("n1", ["ip", "link", "set", "eth0", "down"])
    commands.run(["meatclient", "-c", "n1"], input="yes\n", text=True, timeout=30,
                   check=True, capture_output=True)  # ... and says so
    wait_for(lambda: lab.has_address("n2", VIP), 10, "n2 takes over after meatclient -c")
    n2.wait_log(r"node n1 now reset\.")


def test_fence_race_is_won_by_the_node_that_held_the_group(fenv: Env) -> None:
    lab, device = fenv.lab, fenv.device
    nodes = fenv.start(device.line("*"), "fence_race_delay 1\n")
    for round_ in range(3):
        lab.partition("n1", "n2")
        wait_for(lambda: "n2" in device.resets(), 10, "n1 fences n2")
        time.sleep(2.0)  # past n2's race delay: had it survived, it would fence n1 now
        assert device.resets() == ["n2"] * (round_ + 1)
        assert nodes["n1"].running() and not nodes["n2"].running()
        assert lab.has_address("n1", VIP) and not lab.has_address("n2", VIP)
        assert who_answers(lab, VIP) == "n1"
        # n2 comes back: links up, a fresh hbd
        lab.heal("n1", "n2")
        device.power_on("n2")
        mark = nodes["n1"].mark()
        nodes["n2"] = nodes["n2"].start()
        device.record("n2", nodes["n2"].pid)
        nodes["n1"].wait_log(r"Status update for node n2: status active", 10, since=mark)
        time.sleep(0.5)


def test_graceful_stop_fences_nobody(fenv: Env) -> None:
    lab, device = fenv.lab, fenv.device
    nodes = fenv.start(device.line("*"), "fence_race_delay 0\n")
    assert nodes["n1"].stop() == 0
    wait_for(lambda: who_answers(lab, VIP) == "n2", 5, "n2 answers")
    time.sleep(1.5)
    assert device.resets() == []
    assert nodes["n2"].running()


def test_device_password_leaks_nowhere(fenv: Env) -> None:
    lab, device = fenv.lab, fenv.device
    device.set_delay(1.0)  # each run lasts a second: long enough to read every argv
    nodes = fenv.start(device.line("*"), "fence_race_delay 0\nfence_status_interval 1\n")
    argvs: set[str] = set()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        for pid in proc_pids():
            try:
                argvs.add(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                          .decode(errors="replace"))
            except OSError:
                continue
        time.sleep(0.05)
    assert any(device.type in a for a in argvs), "no device ran: the check proves nothing"
    assert not [a for a in argvs if device.password in a]
    out = fenv.bus.busctl("introspect", BUS_NAME, OBJECT_PATH)
    assert device.password not in out
    check = commands.run([sys.executable, "-m", "hbd.daemon", "--check-config",
                            "--config-dir", str(nodes["n2"].config_dir), "--node", "n2"],
                           capture_output=True, text=True, timeout=30, check=False,
                           env={"PYTHONPATH": str(ROOT), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert device.type in check.stdout and device.password not in check.stdout + check.stderr
    for node in nodes.values():
        assert device.password not in node.log()
    assert lab  # the lab stays for the fixture's cleanup


def test_fence_agent_on_stdin(fenv: Env) -> None:
    """hbd.conf's fence_agent: fence-agents' fence_dummy (it only writes a file) fences n1.

    fence_dummy echoes options it does not know, password included, in a warning:
    hbd keeps that out of its log.
    """
    lab, device = fenv.lab, fenv.device
    status = device.dir / "dummy-status"
    secret = "agent-" + device.password
    nodes = fenv.start("", f"fence_race_delay 0\nfence_agent fence_dummy type=file "
                       f"status_file={status} password={secret}\n")
    n2 = nodes["n2"]
    n2.wait_log(r"STONITH device status: OK", 10)
    mark = n2.mark()
    lab.cut("n1")  # n1 crashes: cable out, daemon gone
    nodes["n1"].kill()
    n2.wait_log(r"node n1 now reset\.", 10, since=mark)
    wait_for(lambda: lab.has_address("n2", VIP), 5, "n2 takes over")
    log = n2.log()[mark:]
    assert log.find("Resetting node n1 with [fence_dummy]") < log.find("taking over group")
    assert status.read_text().strip() == "on"  # fence_dummy's reboot: off, then on
    assert secret not in n2.log()
