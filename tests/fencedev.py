"""The test power switch: a cluster-glue external/ STONITH plugin for lab namespaces.

`tests/data/hbdtest-fence` is installed as /usr/lib/stonith/plugins/external/
hbdtest-<pid> (a name of this run's own, so parallel runs never share it) and
removed afterwards, even when a test fails.  Its "power off" kills the daemon
whose PID the test recorded for a node and takes that node's links down; it
acts only on namespaces named `hbdt-...` (tests/infra/netns.py FAMILY) and on
PIDs inside them.  The device checks a password, so tests can see a secret
travel through hbd and check it leaks nowhere.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import threading
import time
from pathlib import Path

from tests.infra.netns import Lab, children_of

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_SOURCE = ROOT / "tests" / "data" / "hbdtest-fence"
PLUGIN_DIR = Path("/usr/lib/stonith/plugins/external")


def _descendants(pid: int) -> list[int]:
    found = []
    for child in children_of(pid):
        found += [child, *_descendants(child)]
    return found


class FenceDevice:
    """One installed test plugin and its lab directory (PIDs, namespaces, log, password)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.type = f"external/hbdtest-{os.getpid()}"
        self.path = PLUGIN_DIR / self.type.split("/", 1)[1]
        self.dir = lab.workdir / "fence"
        self.dir.mkdir(exist_ok=True)
        self.password = "pw-" + secrets.token_hex(8)
        (self.dir / "password").write_text(self.password + "\n")
        for node in lab.ifaces:
            (self.dir / f"{node}.ns").write_text(lab.nsname(node) + "\n")

    def install(self) -> FenceDevice:
        if not PLUGIN_DIR.is_dir():
            raise RuntimeError(f"{PLUGIN_DIR} missing: install cluster-glue")
        shutil.copyfile(PLUGIN_SOURCE, self.path)
        os.chmod(self.path, 0o755)
        return self

    def remove(self) -> None:
        self.stop_switch()
        self.path.unlink(missing_ok=True)

    # --- the switch process: powering done from the host ------------------------------

    _switch: threading.Thread | None = None
    _switch_stop: threading.Event | None = None

    def start_switch(self) -> None:
        """Serve the plugin's requests from here (needed when Heartbeat runs the plugin)."""
        (self.dir / "switch").mkdir(exist_ok=True)
        self._switch_stop = threading.Event()
        self._switch = threading.Thread(target=self._serve, daemon=True)
        self._switch.start()

    def stop_switch(self) -> None:
        if self._switch_stop is not None and self._switch is not None:
            self._switch_stop.set()
            self._switch.join(5)
        shutil.rmtree(self.dir / "switch", ignore_errors=True)
        self._switch = self._switch_stop = None

    def _serve(self) -> None:
        assert self._switch_stop is not None
        requests = self.dir / "switch"
        while not self._switch_stop.is_set():
            for req in sorted(requests.glob("req.*")):
                if req.name.endswith((".tmp", ".done")) or req.with_name(
                        req.name + ".done").exists():
                    continue
                try:
                    op, node = req.read_text().split()
                    ok = self._power(op, node)
                except (OSError, ValueError):
                    ok = False
                req.with_name(req.name + ".done").write_text("ok\n" if ok else "failed\n")
            time.sleep(0.005)

    def _power(self, op: str, node: str) -> bool:
        if node not in self.lab.ifaces:
            return False
        netns = os.stat(f"/run/netns/{self.lab.nsname(node)}").st_ino
        if op == "off":
            for pidfile in self.dir.glob(f"{node}.pid*"):
                try:
                    pid = int(pidfile.read_text().split()[0])
                    # only a process inside this lab node's namespace, and all below it
                    # (its own fence device run dies with it, as with a real power cut)
                    if os.stat(f"/proc/{pid}/ns/net").st_ino == netns:
                        for victim in (pid, *_descendants(pid)):
                            with contextlib.suppress(OSError):
                                os.kill(victim, signal.SIGKILL)
                except (OSError, ValueError, IndexError):
                    continue
            for ifname in self.lab.ifaces[node]:
                self.lab.run(node, ["ip", "link", "set", ifname, "down"], check=False)
            return True
        if op == "on":
            self.power_on(node)
            return True
        return False

    def params(self, hosts: str = "n1,n2") -> str:
        """The stonith_host parameters in the plugin's order: hostlist labdir password."""
        return f"{hosts} {self.dir} {self.password}"

    def line(self, hostfrom: str) -> str:
        return f"stonith_host {hostfrom} {self.type} {self.params()}\n"

    def record(self, node: str, pid: int) -> None:
        """The PID this node's "power off" kills (a PID namespace's init takes all of it)."""
        (self.dir / f"{node}.pid").write_text(f"{pid}\n")

    def set_failing(self, failing: bool) -> None:
        path = self.dir / "fail"
        if failing:
            path.touch()
        else:
            path.unlink(missing_ok=True)

    def set_delay(self, seconds: float | None) -> None:
        path = self.dir / "delay"
        if seconds is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(f"{seconds}\n")

    def log(self) -> list[str]:
        path = self.dir / "fence.log"
        return path.read_text().splitlines() if path.exists() else []

    def resets(self) -> list[str]:
        """Nodes powered off so far, in order."""
        return [line.split()[-1] for line in self.log() if " off " in line]

    def power_on(self, node: str) -> None:
        for ifname in self.lab.ifaces[node]:
            self.lab.run(node, ["ip", "link", "set", ifname, "up"])
