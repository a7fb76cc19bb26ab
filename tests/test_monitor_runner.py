"""The group runner's checks (RunMonitor) with real scripts: off the loop, killed at timeout.

Heartbeat resource.d scripts are judged by their `status` output as
ResourceManager did; LSB by the exit code; a check past its timeout is
killed with its process group and fails; several checks of one group may
run at once, and a stop cancels them all.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from hbd.agents import AgentRunner
from hbd.core.assemble import ConfigTexts, assemble
from hbd.grouprunner import GroupRunner
from tests.infra import commands

HACF = "keepalive 100ms\ndeadtime 500ms\ninitdead 1\nbcast eth0\nnode n1 n2\n"


def _setup(tmp_path: Path, scripts: dict[str, str], haresources: str) -> GroupRunner:
    resource_d, init_d = tmp_path / "resource.d", tmp_path / "init.d"
    resource_d.mkdir()
    init_d.mkdir()
    for name, text in scripts.items():
        path = (init_d if name.startswith("lsb") else resource_d) / name
        path.write_text(text)
        os.chmod(path, 0o755)
    config = assemble(ConfigTexts("ha.cf", HACF, "haresources", haresources, "authkeys",
                                  "auth 1\n1 sha1 x\n", 0o100600), node_name="n1")
    agents = AgentRunner(resource_dir=resource_d, init_dir=init_d, rsctmp=tmp_path / "rsctmp")
    results: list[tuple[str, int, bool, str]] = []
    runner = GroupRunner(config, agents, lambda *a: None,
                         lambda *a: results.append(a))
    runner.results = results  # type: ignore[attr-defined]
    return runner


HB_SCRIPT = """#!/bin/sh
case "$2" in status) cat {state};; esac
exit 0
"""
LSB_SCRIPT = """#!/bin/sh
[ "$1" = status ] && exit $(cat {state})
exit 0
"""
SLOW = """#!/bin/sh
[ "$1" = status ] && { sleep 30; exit 0; }
exit 0
"""


async def _check(runner: GroupRunner, key: str, ids: tuple[str, ...], timeout: float = 5.0,
                 token: int = 1) -> tuple[bool, str]:
    runner.monitor(key, ids, timeout, token)
    while not any(r[1] == token for r in runner.results):  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)
    _, _, ok, detail = next(r for r in runner.results if r[1] == token)  # type: ignore[attr-defined]
    return ok, detail


def test_resource_d_status_is_judged_by_its_output(tmp_path: Path) -> None:
    state = tmp_path / "state"
    runner = _setup(tmp_path, {"hbsvc": HB_SCRIPT.format(state=state)}, "n1 hbsvc::arg\n")

    async def go() -> list[tuple[bool, str]]:
        out = []
        for token, text in enumerate(["hbsvc is running\n", "OK\n", "hbsvc is not running\n",
                                      "who knows\n"], start=1):
            state.write_text(text)
            out.append(await _check(runner, "hbsvc::arg", ("hbsvc::arg",), token=token))
        return out

    results = asyncio.run(go())
    assert [ok for ok, _ in results] == [True, True, False, False]
    assert "not running" in results[2][1] and "neither" in results[3][1]


def test_lsb_status_exit_codes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    runner = _setup(tmp_path, {"lsbsvc": LSB_SCRIPT.format(state=state)}, "n1 lsbsvc\n")

    async def go() -> list[bool]:
        out = []
        for token, rc in enumerate([0, 1, 3, 4], start=1):
            state.write_text(str(rc))
            out.append((await _check(runner, "lsbsvc", ("lsbsvc",), token=token))[0])
        return out

    assert asyncio.run(go()) == [True, False, False, False]


def test_a_hanging_check_is_killed_at_its_timeout_and_a_stop_cancels_checks(
        tmp_path: Path) -> None:
    runner = _setup(tmp_path, {"lsbslow": SLOW}, "n1 lsbslow\n")

    async def go() -> tuple[float, bool, str, int]:
        t0 = time.monotonic()
        ok, detail = await _check(runner, "lsbslow", ("lsbslow",), timeout=0.5, token=1)
        took = time.monotonic() - t0
        # two checks of the same group at once (two monitor lines): both run
        runner.monitor("lsbslow", ("lsbslow",), 30.0, 2)
        runner.monitor("lsbslow", ("lsbslow",), 30.0, 3)
        await asyncio.sleep(0.2)
        running = len(runner.monitors)
        runner.stop("lsbslow")  # cancels both: their results would be stale
        await asyncio.sleep(0.5)
        return took, ok, detail, running

    took, ok, detail, running = asyncio.run(go())
    assert not ok and "timed out after 0.5s" in detail
    assert took < 3.0
    assert running == 2
    assert runner.monitors == {}
    assert [r[1] for r in runner.results] == [1]  # type: ignore[attr-defined]
    # every check's process group was killed: no `sleep 30` left under a shell of ours
    left = commands.run(["pgrep", "-f", "lsbslow status"], capture_output=True, text=True,
                          check=False).stdout.split()
    assert left == []
