"""`hbctl status --watch` in a pty, against two real hbds on their own private buses.

Topology as in test_bus_cluster: lab namespaces n1, n2 and client, haresources
`n1 10.77.0.240/24/eth0`, auto_failback off; each node has its own private
system bus with polkitd.  hbctl runs with a pty as its stdout and stderr (as a
person's terminal), read by a thread that stamps every chunk with the time it
arrived.

In order on one cluster: the view on n2 shows n2 running the group within a
second of the address arriving there (and redraws in place, ANSI, on a
terminal with a TERM); with TERM=dumb there is no escape sequence and each
screen follows a dated line; Ctrl-C (SIGINT) ends it with exit 0 and no
traceback; stopping n1's hbd ends n1's view with exit 3 and says why.
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
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

pytestmark = [pytest.mark.netns]

ROOT = Path(__file__).resolve().parent.parent
VIP = "10.77.0.240"
GROUP = f"{VIP}/24/eth0"
OWNING = r"owning org\.linuxha\.hbd1 on the system bus"


def group_row(owner: str, state: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(GROUP)}\s+n1\s+{owner}\s+{state}\s*$", re.M)


class PtyWatch:
    """`hbctl status --watch` on a pty; `output` grows as the program writes."""

    def __init__(self, bus: PrivateBus, term: str, *options: str) -> None:
        master, slave = pty.openpty()
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus.address, "TERM": term,
               "PYTHONPATH": commands.pythonpath(str(ROOT))}
        self.proc = commands.popen([sys.executable, "-m", "hbd.cli.hbctl", "status", "--watch",
                                    *options],
                                   stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                                   env=env, start_new_session=True)
        os.close(slave)
        self.master = master
        self.chunks: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed its side
                return
            if not data:
                return
            with self._lock:
                self.chunks.append((time.monotonic(), data.decode(errors="replace")))

    @property
    def output(self) -> str:
        with self._lock:
            return "".join(text for _, text in self.chunks)

    def seen_at(self, pattern: re.Pattern[str], after: float = 0.0) -> float | None:
        """When the output first held `pattern` in what arrived after `after`."""
        with self._lock:
            chunks = list(self.chunks)
        text = ""
        for at, chunk in chunks:
            if at < after:
                continue
            text += chunk
            if pattern.search(text):
                return at
        return None

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 10.0,
                 after: float = 0.0) -> float:
        return wait_for(lambda: self.seen_at(pattern, after), timeout,
                        f"{pattern.pattern!r} in the watch's output")

    def wait_exit(self, timeout: float = 10.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        os.close(self.master)


class Cluster:
    def __init__(self, lab: Lab, buses: dict[str, PrivateBus], nodes: dict[str, HbdNode]):
        self.lab = lab
        self.buses = buses
        self.nodes = nodes


@pytest.fixture(scope="module")
def cluster(module_make_lab: LabFactory, private_bus: PrivateBus,
            second_bus: PrivateBus) -> Iterator[Cluster]:
    lab = module_make_lab(("n1", "n2", "client"))
    buses = {"n1": private_bus, "n2": second_bus}
    nodes: dict[str, HbdNode] = {}
    hacf = ha_cf("bcast eth0", extra="auto_failback off\n")
    try:
        for name, bus in buses.items():
            install_hbd_files(bus)
            nodes[name] = HbdNode(lab, name, hacf, f"n1 {GROUP}\n", extra_args=(),
                                  env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address}).start()
        for node in nodes.values():
            node.wait_log(OWNING)
        wait_for(lambda: lab.has_address("n1", VIP), 15, "the VIP on n1")
        yield Cluster(lab, buses, nodes)
    finally:
        for node in nodes.values():
            node.stop()


@pytest.fixture
def watch_factory() -> Iterator[list[PtyWatch]]:
    made: list[PtyWatch] = []
    yield made
    for watch in made:
        watch.close()


def test_watch_shows_a_takeover_within_a_second(cluster: Cluster,
                                                watch_factory: list[PtyWatch]) -> None:
    watch = PtyWatch(cluster.buses["n2"], "xterm")
    watch_factory.append(watch)
    watch.wait_for(group_row("n1", "stopped"))
    assert "\x1b[H\x1b[2J" in watch.output  # a terminal: redrawn in place
    assert " on n2: holding " in watch.output
    start = time.monotonic()
    vip_at: list[float] = []

    def vip_moved() -> bool:
        if cluster.lab.has_address("n2", VIP):
            vip_at.append(time.monotonic())
            return True
        return False

    cluster.buses["n2"].busctl("call", "org.linuxha.hbd1", "/org/linuxha/hbd1",
                               "org.linuxha.hbd1.Manager", "Takeover", "s", "all")
    wait_for(vip_moved, 10, "the VIP on n2", interval=0.02)
    shown = watch.wait_for(group_row("n2", "running"), 5, after=start)
    print(f"takeover shown {1000 * (shown - vip_at[0]):.0f} ms after the VIP was seen on n2")
    assert shown - vip_at[0] < 1.0
    assert watch.proc.poll() is None  # still watching


def test_dumb_terminal_and_ctrl_c(cluster: Cluster, watch_factory: list[PtyWatch]) -> None:
    watch = PtyWatch(cluster.buses["n1"], "dumb")
    watch_factory.append(watch)
    watch.wait_for(group_row("n2", "stopped"))  # n1's side of the group n2 runs
    time.sleep(0.3)  # nothing changes: nothing more is drawn (no polling)
    screens = watch.output.count("--- ")
    assert screens == 1, watch.output
    assert "\x1b" not in watch.output
    assert re.search(r"^--- \d{4}-\d\d-\d\d \d\d:\d\d:\d\d ---", watch.output, re.M)
    watch.proc.send_signal(signal.SIGINT)
    assert watch.wait_exit() == 0
    assert "Traceback" not in watch.output and "KeyboardInterrupt" not in watch.output


def test_watch_says_when_hbd_goes_away(cluster: Cluster, watch_factory: list[PtyWatch]) -> None:
    """In JSON lines this time (a terminal changes nothing there): one object per change."""
    watch = PtyWatch(cluster.buses["n1"], "xterm", "--json")
    watch_factory.append(watch)
    watch.wait_for(re.compile(r'^\{"node_name": "n1"', re.M))
    cluster.nodes["n1"].stop()  # it releases nothing (n2 runs the group), then leaves
    assert watch.wait_exit(15) == 3
    assert "hbctl: hbd went away" in watch.output, watch.output
    assert "Traceback" not in watch.output and "\x1b" not in watch.output
    views = [json.loads(line) for line in watch.output.splitlines() if line.startswith("{")]
    assert views[0]["node_name"] == "n1"
    assert [g["owner"] for g in views[0]["groups"]] == ["n2"]
