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

import os
import secrets
import shutil
from pathlib import Path

from tests.infra.netns import Lab

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_SOURCE = ROOT / "tests" / "data" / "hbdtest-fence"
PLUGIN_DIR = Path("/usr/lib/stonith/plugins/external")


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
        self.path.unlink(missing_ok=True)

    def params(self, hosts: str = "n1,n2") -> str:
        """The stonith_host parameters in the plugin's order: hostlist labdir password."""
        return f"{hosts} {self.dir} {self.password}"

    def line(self, hostfrom: str) -> str:
        return f"stonith_host {hostfrom} {self.type} {self.params()}\n"

    def record(self, node: str, pid: int) -> None:
        """The PID this node's "power off" kills."""
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
