"""A reload that removes a running group still lets the engine's StopGroup stop it.

stack_heartbeat calls runner.update(new) and then dispatches the engine's
StopGroup for the removed group; on corosync the stop task also runs after
update.  The runner must keep the old definition until the stop succeeds,
else the stop fails ('no such group'), the engine blocks the group and its
resources keep running.  The agent is a resource.d `sh` script that logs
what it is asked.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from hbd import grouprunner
from hbd.agents import AgentRunner
from hbd.core.assemble import ConfigTexts, assemble
from hbd.core.config import ClusterConfig
from hbd.grouprunner import GroupRunner

HACF = "keepalive 100ms\ndeadtime 500ms\ninitdead 1\nbcast eth0\nnode n1 n2\n"

# resource.d calling convention: dummy <arg> <action>; a stop fails while `stuck` exists
DUMMY = """#!/bin/sh
echo "$1 $2" >> {log}
case "$2" in
  stop) [ -e {stuck} ] && exit 1; exit 0;;
  status) echo running;;
esac
exit 0
"""

Result = tuple[str, str, bool, str]


def _config(haresources: str) -> ClusterConfig:
    return assemble(ConfigTexts("ha.cf", HACF, "haresources", haresources, "authkeys",
                                "auth 1\n1 sha1 x\n", 0o100600), node_name="n1")


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        resource_d, init_d = tmp_path / "resource.d", tmp_path / "init.d"
        resource_d.mkdir()
        init_d.mkdir()
        self.log = tmp_path / "agent.log"
        self.stuck = tmp_path / "stuck"
        script = resource_d / "dummy"
        script.write_text(DUMMY.format(log=self.log, stuck=self.stuck))
        os.chmod(script, 0o755)
        agents = AgentRunner(resource_dir=resource_d, init_dir=init_d,
                             rsctmp=tmp_path / "rsctmp")
        self.results: list[Result] = []
        self.runner = GroupRunner(_config("n1 dummy::a\nn1 dummy::b\n"), agents,
                                  lambda *r: self.results.append(r))

    async def do(self, action: str, key: str) -> Result:
        before = len(self.results)
        getattr(self.runner, action)(key)
        while len(self.results) == before:
            await asyncio.sleep(0.01)
        return self.results[-1]

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grouprunner, "STOP_RETRY_DELAY", 0.0)


def test_a_group_removed_by_a_reload_is_still_stopped(tmp_path: Path) -> None:
    rig = Rig(tmp_path)

    async def go() -> tuple[Result, Result, Result]:
        started = await rig.do("start", "dummy::a")
        await rig.do("start", "dummy::b")
        rig.runner.update(_config("n1 dummy::b\n"))  # the reload, then the engine's StopGroup
        stopped = await rig.do("stop", "dummy::a")
        # the kept group is untouched and still follows the new table
        other = await rig.do("stop", "dummy::b")
        return started, stopped, other

    started, stopped, other = asyncio.run(go())
    assert started == ("dummy::a", "start", True, "")
    assert stopped == ("dummy::a", "stop", True, "")
    assert other == ("dummy::b", "stop", True, "")
    assert rig.calls() == ["a start", "b start", "a stop", "b stop"]


def test_a_removed_group_survives_further_reloads_and_failed_stops(tmp_path: Path) -> None:
    rig = Rig(tmp_path)

    async def go() -> tuple[Result, Result, Result]:
        await rig.do("start", "dummy::a")
        rig.runner.update(_config("n1 dummy::b\n"))
        rig.runner.update(_config("n1 dummy::b\nn1 dummy::c\n"))  # a second reload before it
        rig.stuck.touch()
        failed = await rig.do("stop", "dummy::a")  # retried, then reported: engine BLOCKs
        rig.stuck.unlink()
        retried = await rig.do("stop", "dummy::a")  # the operator's cleanup succeeds
        # stopped: the old definition is gone now, a later reload does not bring it back
        rig.runner.update(_config("n1 dummy::b\n"))
        gone = await rig.do("stop", "dummy::a")
        return failed, retried, gone

    failed, retried, gone = asyncio.run(go())
    assert failed[:3] == ("dummy::a", "stop", False) and "gave up" in failed[3]
    assert retried == ("dummy::a", "stop", True, "")
    assert gone == ("dummy::a", "stop", False, "no such group in haresources")
    assert rig.calls() == ["a start"] + ["a stop"] * (grouprunner.STOP_ATTEMPTS + 1)


def test_a_group_added_back_uses_its_new_definition(tmp_path: Path) -> None:
    rig = Rig(tmp_path)

    async def go() -> Result:
        await rig.do("start", "dummy::a")
        rig.runner.update(_config("n1 dummy::b\n"))
        rig.runner.update(_config("n1 dummy::a\nn1 dummy::b\n"))
        return await rig.do("stop", "dummy::a")

    assert asyncio.run(go()) == ("dummy::a", "stop", True, "")
    assert rig.calls() == ["a start", "a stop"]
