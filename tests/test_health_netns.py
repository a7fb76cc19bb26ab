"""Resource monitoring with real daemons, real agents and a client, in network namespaces.

Topology: n1, n2 and client on one bridge; haresources `n1 VIP udpsvc`.
`udpsvc` is a real LSB init script written by the test: it runs the UDP
responder the client probes (it answers with its node's name).  It is
installed for each hbd only: the daemon runs behind a bind mount of a
private directory over /etc/init.d inside its own mount namespace (the one
`ip netns exec` gives it).  n1 has a private system bus with polkitd, so
`hbctl status` and `hbctl cleanup` go the way an admin's do.

In order, on one cluster: killing the service makes the monitor restart it
in place; killing it again (restart max=1) hands the group to n2, where it
stays (auto_failback on); `hbctl status` shows the failure; `hbctl cleanup`
lets it come back.  Then a hanging status times out and moves the group;
OCF Dummy (Debian's resource-agents) with a broken state file fails its
monitor; bad hbd.conf lines give file:line errors and a reload with them
keeps the running monitors.
"""

from __future__ import annotations

import contextlib
import os
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
from tests.infra.privbus import PrivateBus
from tests.test_bus import install_hbd_files
from tests.vipclient import PORT, RESPONDER, wait_answer, who_answers

pytestmark = [pytest.mark.netns]

ROOT = Path(__file__).resolve().parent.parent
VIP = "10.77.0.240"
GROUP = f"{VIP}/24/eth0"

LSB_SCRIPT = """#!/bin/sh
### BEGIN INIT INFO
# Provides:          udpsvc
# Required-Start:
# Required-Stop:
# Default-Start:
# Default-Stop:
# Short-Description: UDP responder for hbd's monitoring tests
### END INIT INFO
PIDFILE={pidfile}
HANG={hang}
running() {{ [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }}
case "$1" in
start)
    running && exit 0
    {python} -c '{responder}' {name} {port} </dev/null >/dev/null 2>&1 &
    echo $! > "$PIDFILE"
    exit 0;;
stop)
    if running; then kill "$(cat "$PIDFILE")"; fi
    rm -f "$PIDFILE"
    exit 0;;
status)
    [ -f "$HANG" ] && sleep 300
    if running; then echo "udpsvc is running"; exit 0; fi
    if [ -f "$PIDFILE" ]; then echo "udpsvc is dead"; exit 1; fi
    echo "udpsvc is stopped"; exit 3;;
*)
    echo "usage: $0 start|stop|status" >&2; exit 2;;
esac
"""


class LsbNode(HbdNode):
    """hbd with its own /etc/init.d (a bind mount in its private mount namespace)."""

    def __init__(self, lab: Lab, node: str, hacf: str, haresources: str, **kw: object) -> None:
        super().__init__(lab, node, hacf, haresources, **kw)  # type: ignore[arg-type]
        self.init_dir = self.dir / "init.d"
        self.init_dir.mkdir(exist_ok=True)
        self.pidfile = self.dir / "udpsvc.pid"
        self.hang = self.dir / "hang-status"
        script = self.init_dir / "udpsvc"
        script.write_text(LSB_SCRIPT.format(pidfile=self.pidfile, hang=self.hang,
                                            python=sys.executable, name=node, port=PORT,
                                            responder=RESPONDER.strip().replace("'", '"')))
        os.chmod(script, 0o755)

    def argv(self) -> list[str]:
        return ["sh", "-c", 'mount --bind "$0" /etc/init.d && exec "$@"', str(self.init_dir),
                *super().argv()]

    def kill_service(self) -> None:
        os.kill(int(self.pidfile.read_text()), signal.SIGKILL)


HBDCONF = (f"monitor {GROUP} interval=1s timeout=2s\n"
           f"restart {GROUP} max=1 window=10min\n")


@pytest.fixture(scope="module")
def cluster(module_make_lab: LabFactory, private_bus: PrivateBus) -> Iterator[
        tuple[Lab, PrivateBus, dict[str, LsbNode]]]:
    lab = module_make_lab(("n1", "n2", "client"), networks=1)
    install_hbd_files(private_bus)
    hacf = ha_cf("bcast eth0", extra="auto_failback on\n")
    nodes: dict[str, LsbNode] = {}
    try:
        for name in ("n1", "n2"):
            args = () if name == "n1" else ("--no-dbus",)
            env = {"DBUS_SYSTEM_BUS_ADDRESS": private_bus.address} if name == "n1" else None
            node = LsbNode(lab, name, hacf, f"n1 {GROUP} udpsvc\n", extra_args=args, env=env)
            (node.config_dir / "hbd.conf").write_text(HBDCONF)
            nodes[name] = node.start()
        nodes["n1"].wait_log(r"Status update for node n2: status active")
        wait_answer(lab, VIP, "n1", timeout=15)
        yield lab, private_bus, nodes
    finally:
        for node in nodes.values():
            node.stop()
        for node in nodes.values():  # a responder left by a failed test
            if node.pidfile.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(node.pidfile.read_text()), signal.SIGKILL)


def hbctl(bus: PrivateBus, *args: str) -> subprocess.CompletedProcess[str]:
    return commands.run([sys.executable, "-m", "hbd.cli.hbctl", *args],
                          env=bus.env({"PYTHONPATH": str(ROOT), "PATH": os.environ["PATH"]}),
                          capture_output=True, text=True, timeout=30, check=False)


def test_restart_in_place_then_move_stay_and_cleanup(
        cluster: tuple[Lab, PrivateBus, dict[str, LsbNode]]) -> None:
    lab, bus, nodes = cluster
    n1, n2 = nodes["n1"], nodes["n2"]
    mark = n1.mark()
    n1.kill_service()
    n1.wait_log(r"group \S+: monitor failed: .*udpsvc: status: dead", since=mark)
    n1.wait_log(r"restarting in place after a monitor failure", since=mark)
    wait_answer(lab, VIP, "n1", timeout=10)  # back, on the same node
    assert not lab.has_address("n2", VIP)
    # again: beyond `restart max=1`, the group goes to n2 and stays there
    wait_for(lambda: n1.pidfile.exists(), 5, "udpsvc restarted")
    time.sleep(1.5)  # let a good check reset the consecutive count
    mark = n1.mark()
    n1.kill_service()
    n1.wait_log(r"handing it to the peer, unfit here", since=mark)
    wait_answer(lab, VIP, "n2", timeout=10)
    time.sleep(3.0)  # auto_failback is on: nothing brings it back by itself
    assert who_answers(lab, VIP) == "n2"
    assert not lab.has_address("n1", VIP)
    status = hbctl(bus, "status")
    assert status.returncode == 0, status.stderr
    row = next(line.split() for line in status.stdout.splitlines() if line.startswith(GROUP))
    assert row[:5] == [GROUP, "n1", "n2", "stopped", "2"], status.stdout
    assert f"{GROUP}: not on this node: monitor failed" in status.stdout
    # the admin repaired it: cleanup lets it return home
    res = hbctl(bus, "cleanup", GROUP)
    assert res.returncode == 0, res.stderr
    wait_answer(lab, VIP, "n1", timeout=10)
    assert not lab.has_address("n2", VIP)
    n1.wait_log(r"failures cleaned up by the admin")
    assert n2.running()


def test_a_hanging_status_times_out_and_moves_the_group(
        cluster: tuple[Lab, PrivateBus, dict[str, LsbNode]]) -> None:
    lab, bus, nodes = cluster
    n1 = nodes["n1"]
    wait_answer(lab, VIP, "n1", timeout=10)
    mark = n1.mark()
    n1.hang.write_text("")
    try:
        t0 = time.monotonic()
        n1.wait_log(r"monitor failed: .*timed out after 2s", since=mark, timeout=10)
        # the hang counts as a failure; after the restart budget the group moves
        wait_answer(lab, VIP, "n2", timeout=15)
        assert time.monotonic() - t0 < 15
        # the killed status left no sleeper behind
        left = commands.run(["pgrep", "-f", f"{n1.hang}"], capture_output=True, text=True,
                              check=False)
        assert left.stdout.strip() == ""
    finally:
        n1.hang.unlink()
    res = hbctl(bus, "cleanup", GROUP)
    assert res.returncode == 0, res.stderr
    wait_answer(lab, VIP, "n1", timeout=10)


def test_bad_hbdconf_reload_keeps_the_running_monitors(
        cluster: tuple[Lab, PrivateBus, dict[str, LsbNode]]) -> None:
    lab, _, nodes = cluster
    n1 = nodes["n1"]
    conf = n1.config_dir / "hbd.conf"
    good = conf.read_text()
    mark = n1.mark()
    conf.write_text(good + f"monitor web interval=1s\nfailure_expiry {GROUP} soon\n")
    try:
        n1.signal(signal.SIGHUP)
        text = n1.wait_log(r"failure_expiry: 'soon'", since=mark).string[mark:]
        assert "reload refused, keeping the running configuration" in text
        assert f"{conf}:3: monitor: no group or resource 'web' in haresources" in text
        assert f"{conf}:4: failure_expiry: 'soon' is not never or a time" in text
    finally:
        conf.write_text(good)
    # the running monitors still work
    mark = n1.mark()
    n1.kill_service()
    n1.wait_log(r"restarting in place after a monitor failure", since=mark)
    wait_answer(lab, VIP, "n1", timeout=10)


def test_ocf_dummy_with_a_broken_state_file_fails_its_monitor(
        module_make_lab: LabFactory, cluster: tuple[Lab, PrivateBus, dict[str, LsbNode]],
        tmp_path: Path) -> None:
    lab = cluster[0]
    for node in cluster[2].values():  # this test runs its own pair
        node.stop()
    made: list[HbdNode] = []
    try:
        for name in ("n1", "n2"):
            state = tmp_path / f"dummy-{name}.state"
            resource = f"Dummy::state={state}"
            node = HbdNode(lab, name, ha_cf("bcast eth0", extra="auto_failback off\n"),
                           f"n1 {GROUP} {resource}\n")
            (node.config_dir / "hbd.conf").write_text(
                f"monitor {resource} interval=500ms timeout=5s failures=2\n")
            made.append(node.start())
        n1, _n2 = made
        n1.wait_log(r"Status update for node n2: status active")
        wait_for(lambda: (tmp_path / "dummy-n1.state").exists(), 15, "Dummy started on n1")
        mark = n1.mark()
        (tmp_path / "dummy-n1.state").unlink()  # the service "died"
        n1.wait_log(r"monitor failed: .*not running \(rc=7\)", since=mark)
        n1.wait_log(r"handing it to the peer", since=mark)
        wait_for(lambda: lab.has_address("n2", VIP), 10, "VIP on n2")
        wait_for(lambda: (tmp_path / "dummy-n2.state").exists(), 10, "Dummy started on n2")
        assert not lab.has_address("n1", VIP)
    finally:
        for node in made:
            node.stop()
