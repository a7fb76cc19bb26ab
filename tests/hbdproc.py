"""Run real hbd daemons inside lab namespaces, and read what they log.

Each node gets its own /etc/ha.d-like config dir, state dir and runtime dir
under the lab's work dir; the daemon is started with the venv's Python in
the node's network namespace and stopped by its recorded PID.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.infra import commands
from tests.infra.netns import Lab

ROOT = Path(__file__).resolve().parent.parent
AUTHKEYS = "auth 1\n1 sha1 hbd-test-secret\n"


def ha_cf(media: str, *, nodes: str = "n1 n2", keepalive: str = "100ms",
          deadtime: str = "500ms", warntime: str = "300ms", initdead: str = "1",
          extra: str = "") -> str:
    return (f"keepalive {keepalive}\ndeadtime {deadtime}\nwarntime {warntime}\n"
            f"initdead {initdead}\nudpport 694\n{media}\nnode {nodes}\n{extra}")


class HbdNode:
    _serial = 0

    def __init__(self, lab: Lab, node: str, hacf: str, haresources: str = "",
                 authkeys: str = AUTHKEYS, *, name: str | None = None,
                 extra_args: tuple[str, ...] = ("--no-dbus",),
                 env: dict[str, str] | None = None) -> None:
        self.lab = lab
        self.node = node
        self.name = name or node
        HbdNode._serial += 1
        self.dir = lab.workdir / f"hbd-{self.name}-{HbdNode._serial}"  # fresh per instance
        self.config_dir = self.dir / "ha.d"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.write_config(hacf, haresources, authkeys)
        self.log_path = self.dir / "hbd.log"
        self.extra_args = extra_args
        self.env = env
        self.proc: subprocess.Popen[Any] | None = None
        self._log_offset = 0

    def write_config(self, hacf: str | None = None, haresources: str | None = None,
                     authkeys: str | None = None) -> None:
        if hacf is not None:
            (self.config_dir / "ha.cf").write_text(hacf)
        if haresources is not None:
            (self.config_dir / "haresources").write_text(haresources)
        if authkeys is not None:
            path = self.config_dir / "authkeys"
            path.write_text(authkeys)
            os.chmod(path, 0o600)

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "hbd.daemon", "--config-dir", str(self.config_dir),
                "--state-dir", str(self.dir / "state"), "--runtime-dir", str(self.dir / "run"),
                "--node", self.name, *self.extra_args]

    def start(self) -> HbdNode:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        env.pop("JOURNAL_STREAM", None)
        env.pop("INVOCATION_ID", None)
        env["PYTHONPATH"] = commands.pythonpath()
        if self.env:
            env.update(self.env)
        with open(self.log_path, "ab") as out:
            self.proc = self.lab.popen(self.node, self.argv(), stdout=out, env=env)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait (graceful)."""
        if self.proc is None:
            return None
        rc = self.lab.stop(self.proc, timeout=timeout, sig=signal.SIGTERM)
        self.proc = None
        return rc

    def kill(self) -> None:
        if self.proc is None:
            return
        self.lab.stop(self.proc, timeout=5, sig=signal.SIGKILL)
        self.proc = None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def log(self, *, since_start: bool = False) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return text[self._log_offset:] if since_start else text

    def wait_log(self, pattern: str, timeout: float = 15.0, *,
                 since: int | None = None) -> re.Match[str]:
        """Wait until the log matches `pattern`, from offset `since` (default: the last start)."""
        if since is None:
            since = self._log_offset
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            match = regex.search(self.log(), since)
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: /{pattern}/ not logged in {timeout}s; log tail:\n"
                    + self.log()[-4000:])
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name}: hbd exited ({self.proc.returncode}) "
                                     f"before /{pattern}/; log:\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def mark(self) -> int:
        """An offset into the log for later `wait_log(..., since=mark)`."""
        return len(self.log())
