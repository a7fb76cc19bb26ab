"""The README's demo as CI runs it: non-interactively, twice in a row.

Each run must pass (exit 0) and say so: the cluster forms, n2 takes over
when n1's cable is pulled (with the client's outage), n1 serves again once
the cable is back, and the D-Bus and auto_failback steps hold.  Afterwards
nothing of the run may be left: no `hbd-demo-<pid>-*` namespace, no work
directory, no process whose command line carries the run's tag.  The second
run right after the first proves that the first cleaned up well enough for
the same names and addresses to be used again.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.infra import commands

pytestmark = [pytest.mark.netns, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


def _leftovers(tag: str) -> list[str]:
    found = [f"netns {p.name}" for p in Path("/run/netns").glob(f"{tag}-*")]
    if (Path(tempfile.gettempdir()) / tag).exists():
        found.append(f"directory {Path(tempfile.gettempdir()) / tag}")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if tag + "/" in cmdline or cmdline.rstrip().endswith(tag):
            found.append(f"process {entry.name}: {cmdline.strip()}")
    return found


def _run_demo() -> tuple[int, str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = commands.pythonpath()
    # the demo, and every hbd, hbctl and probe it starts, may run only what the
    # demo's table declares: .ci/demo installs nothing else
    env[commands.CHILD_TABLE_ENV] = "demo"
    env.pop("TERM", None)
    proc = commands.popen([sys.executable, "-m", "hbd.demo", "--non-interactive"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, stdin=subprocess.DEVNULL)
    try:
        out, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the demo cleans up on SIGTERM
        out, _ = proc.communicate(timeout=30)
        pytest.fail(f"the demo did not finish within 90 s:\n{out}")
    return proc.returncode, out, f"hbd-demo-{proc.pid}"


@pytest.mark.timeout(240)
def test_demo_twice_in_a_row() -> None:
    if os.geteuid() != 0:
        pytest.skip("the demo needs root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 is not installed")
    started = time.monotonic()
    for run in (1, 2):
        code, out, tag = _run_demo()
        assert code == 0, f"run {run} failed:\n{out}"
        assert re.search(r"^  >>> CLUSTER OK: ", out, re.M), out
        assert re.search(r"^  >>> TAKEOVER OK: n2 answered after \d+\.\d\d s outage", out,
                         re.M), out
        assert re.search(r"^  >>> FAILBACK OK: n1 serves ", out, re.M), out
        assert re.search(r"^  >>> HANDOVER OK: ", out, re.M), out
        assert re.search(r"^  >>> AUTO_FAILBACK OK: ", out, re.M), out
        # the history read back from n1's journal entries, with the takeovers' durations
        assert re.search(r"^  >>> HISTORY OK: n1's history lists \d+ takeovers", out, re.M), out
        assert re.search(r"^ +\S+ \S+ +node-dead +n2 ", out, re.M), out
        if shutil.which("dbus-daemon"):
            assert re.search(r"^  >>> DBUS TAKEOVER OK: ", out, re.M), out
            assert re.search(r"^  >>> HBCTL TAKEOVER OK: ", out, re.M), out
        assert "FAILED" not in out, out
        assert "done: nothing of this run is left" in out, out
        assert tag in out, f"the run's namespaces are not named {tag}-*:\n{out}"
        assert _leftovers(tag) == [], f"run {run} left things behind"
    assert time.monotonic() - started < 60, "two demo runs should take well under a minute"
