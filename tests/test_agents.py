"""hbd.agents with real processes: resource.d, LSB and OCF scripts in temp dirs, plus
Debian's own resource agents (Dummy; IPaddr2 inside a network namespace)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hbd.agents import OUTPUT_LIMIT, AgentResult, AgentRunner
from hbd.core.config import Resource
from hbd.errors import ResourceError
from tests.infra.netns import Lab, pid_running, wait_for
from tests.infra.netns import in_netns as in_ns

_T = TypeVar("_T")
OCF_ROOT = Path("/usr/lib/ocf")
OCF_HEARTBEAT = OCF_ROOT / "resource.d" / "heartbeat"

META_DATA = """<?xml version="1.0"?>
<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">
<resource-agent name="ocfagent" version="1.0">
<version>1.0</version>
<parameters>
<parameter name="alpha" unique="1" required="1"><content type="string"/></parameter>
<parameter name="beta"><content type="string"/></parameter>
<parameter name="gamma"><content type="string" default="g"/></parameter>
</parameters>
<actions><action name="start" timeout="20s"/><action name="monitor" timeout="20s"/></actions>
</resource-agent>
"""


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    return asyncio.run(coro)


class Dirs:
    """resource.d, init.d and an OCF provider dir under tmp, and a runner over them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.resource_d = tmp / "resource.d"
        self.init_d = tmp / "init.d"
        self.ocf = tmp / "ocf" / "heartbeat"
        for d in (self.resource_d, self.init_d, self.ocf):
            d.mkdir(parents=True)
        self.runner = AgentRunner(resource_dir=self.resource_d, init_dir=self.init_d,
                                  ocf_dir=self.ocf, ha_dir=tmp, rsctmp=tmp / "rsctmp",
                                  node_name="n1")

    def script(self, where: Path, name: str, body: str, mode: int = 0o755) -> Path:
        path = where / name
        path.write_text("#!/bin/sh\n" + body.replace("@T@", str(self.tmp)))
        path.chmod(mode)
        return path

    def do(self, resource: Resource, op: Any, **kw: Any) -> AgentResult:
        return run(self.runner.run(resource, op, **kw))


@pytest.fixture
def dirs(tmp_path: Path) -> Dirs:
    return Dirs(tmp_path)


HBRES = """
for a in "$@"; do printf '%s\\n' "$a"; last=$a; done > @T@/hbres.args
case $last in
  start) touch @T@/hbres.state ;;
  stop) rm -f @T@/hbres.state ;;
  status) if [ -f @T@/hbres.state ]; then echo "hbres is running"; exit 1
          else echo "hbres is not running"; exit 0; fi ;;
esac
"""

LSB = """
case "$1" in
  start) touch @T@/lsb.state ;;
  stop) rm -f @T@/lsb.state ;;
  status) [ -f @T@/lsb.state ] && { echo "lsbsvc is running"; exit 0; }
          echo "lsbsvc is stopped"; exit 3 ;;
  *) exit 2 ;;
esac
"""

OCF = f"""
case "$1" in
  meta-data) echo call >> @T@/metadata.calls; cat <<'XML'
{META_DATA}XML
    exit 0 ;;
  start) env > @T@/ocf.env; touch @T@/ocf.state; exit 0 ;;
  stop) [ -f @T@/ocf.state ] || exit 7; rm @T@/ocf.state; exit 0 ;;
  monitor) [ -f @T@/ocf.state ] && exit 0; exit 7 ;;
esac
exit 3
"""


# -- each kind: start / stop / status ---------------------------------------

def test_resource_d_script_args_and_status_by_output(dirs: Dirs) -> None:
    dirs.script(dirs.resource_d, "hbres", HBRES)
    args = ("a b", f"$(touch {dirs.tmp}/pwned)", "x;y|z&&`id`", "*", "'\"")
    res = Resource("hbres", args, "hbres::...")
    result = dirs.do(res, "start")
    assert (result.ok, result.running, result.rc, result.kind) == (True, True, 0, "heartbeat")
    assert result.path == str(dirs.resource_d / "hbres")
    # argv reaches the script exactly, one item each, no shell ever saw it
    assert (dirs.tmp / "hbres.args").read_text().splitlines() == [*args, "start"]
    assert not (dirs.tmp / "pwned").exists()
    # Heartbeat judges status by the words, not the exit code (inverted here on purpose)
    status = dirs.do(res, "status")
    assert (status.ok, status.running, status.rc) == (True, True, 1)
    assert dirs.do(res, "stop").ok
    status = dirs.do(res, "status")
    assert (status.ok, status.running, status.rc) == (True, False, 0)


def test_lsb_script_status_codes_and_no_args(dirs: Dirs) -> None:
    dirs.script(dirs.init_d, "lsbsvc", LSB)
    res = Resource("lsbsvc")
    status = dirs.do(res, "status")
    assert (status.ok, status.running, status.rc, status.kind) == (True, False, 3, "lsb")
    assert "stopped" in status.detail
    assert dirs.do(res, "start").ok
    assert dirs.do(res, "status").running is True
    stop = dirs.do(res, "stop")
    assert (stop.ok, stop.running) == (True, False)
    with pytest.raises(ResourceError, match=r"LSB init script, which takes no arguments"):
        dirs.do(Resource("lsbsvc", ("x",), "lsbsvc::x"), "start")
    dirs.script(dirs.init_d, "odd", 'echo "confused" >&2; exit 4\n')
    status = dirs.do(Resource("odd"), "status")
    assert (status.ok, status.running, status.rc) == (False, None, 4)
    assert "status unknown: rc=4: confused" in status.detail


def test_ocf_agent_env_positional_mapping_and_exit_codes(dirs: Dirs) -> None:
    dirs.script(dirs.ocf, "ocfagent", OCF)
    os.environ["HBD_TEST_LEAK"] = "1"
    try:
        res = Resource("ocfagent", ("one/x", "gamma=three", "two"), "ocfagent::...")
        status = dirs.do(res, "status")
        assert (status.ok, status.running, status.rc, status.kind) == (True, False, 7, "ocf")
        stop = dirs.do(res, "stop")  # OCF 7 on stop: it was not running, which is success
        assert (stop.ok, stop.running, stop.rc) == (True, False, 7)
        assert dirs.do(res, "start").ok
    finally:
        del os.environ["HBD_TEST_LEAK"]
    env = dict(line.split("=", 1) for line in (dirs.tmp / "ocf.env").read_text().splitlines()
               if "=" in line)
    assert env["OCF_RESKEY_alpha"] == "one/x"
    assert env["OCF_RESKEY_beta"] == "two"
    assert env["OCF_RESKEY_gamma"] == "three"
    assert env["OCF_RESOURCE_INSTANCE"] == "ocfagent_one_x"
    assert env["OCF_ROOT"] == "/usr/lib/ocf"
    assert env["OCF_RESKEY_CRM_meta_timeout"] == "60000"
    assert (env["PATH"], env["LANG"], env["LC_ALL"]) == ("/usr/sbin:/usr/bin:/sbin:/bin", "C", "C")
    assert env["HA_RSCTMP"] == str(dirs.tmp / "rsctmp") and (dirs.tmp / "rsctmp").is_dir()
    assert env["HA_CURHOST"] == "n1"
    assert "HBD_TEST_LEAK" not in env and "HOME" not in env
    assert dirs.do(res, "status").running is True
    assert dirs.do(res, "stop").rc == 0
    assert (dirs.tmp / "metadata.calls").read_text().count("call") == 1  # parsed once
    with pytest.raises(ResourceError, match=r"4 positional argument\(s\).*only 3"):
        dirs.do(Resource("ocfagent", ("a", "b", "c", "delta=d")), "start")


def test_resolution_order_and_errors(dirs: Dirs) -> None:
    for where in (dirs.resource_d, dirs.init_d, dirs.ocf):
        dirs.script(where, "dup", "exit 0\n")
    for kind, where in (("heartbeat", dirs.resource_d), ("lsb", dirs.init_d), ("ocf", dirs.ocf)):
        assert dirs.do(Resource("dup"), "start").kind == kind
        (where / "dup").unlink()
    dirs.script(dirs.init_d, "noexec", "exit 0\n", mode=0o644)
    with pytest.raises(ResourceError) as info:
        dirs.do(Resource("noexec"), "start")
    message = str(info.value)
    assert f"{dirs.resource_d}/noexec, {dirs.init_d}/noexec (not executable)," in message
    assert f"{dirs.ocf}/noexec" in message
    with pytest.raises(ResourceError, match="not a resource agent name"):
        dirs.do(Resource("../etc/passwd"), "start")


def test_exec_failure_is_a_result(dirs: Dirs) -> None:
    path = dirs.resource_d / "broken"
    path.write_text("#!/nonexistent/interpreter\n")
    path.chmod(0o755)
    result = dirs.do(Resource("broken"), "start")
    assert (result.ok, result.rc, result.timed_out) == (False, None, False)
    assert "could not run" in result.detail


# -- processes: timeouts, cancellation, daemons, output ---------------------

HANG = """
sleep 300 &
echo $! > @T@/child.pid
echo $$ > @T@/self.pid
echo hanging
sleep 300
"""


def _gone(dirs: Dirs) -> None:
    """The hanging script and the child it forked are both dead (reaped or zombie)."""
    pids = [int((dirs.tmp / name).read_text()) for name in ("child.pid", "self.pid")]
    wait_for(lambda: not any(pid_running(pid) for pid in pids), 3.0, f"pids {pids} to be gone")


def test_timeout_kills_the_whole_process_group(dirs: Dirs) -> None:
    dirs.script(dirs.resource_d, "hang", HANG)
    result = dirs.do(Resource("hang"), "start", timeout=0.5)
    assert (result.ok, result.running, result.rc, result.timed_out) == (False, None, None, True)
    assert "timed out after 0.5s" in result.detail
    assert result.stdout == "hanging\n"
    assert 0.5 <= result.elapsed < 3
    _gone(dirs)


def test_cancel_kills_the_process_group(dirs: Dirs) -> None:
    dirs.script(dirs.resource_d, "hang", HANG)

    async def go() -> None:
        task = asyncio.create_task(dirs.runner.run(Resource("hang"), "stop"))
        await asyncio.to_thread(wait_for, lambda: (dirs.tmp / "self.pid").exists(), 5.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(go())
    _gone(dirs)


def test_a_started_daemon_holding_stdout_does_not_block(dirs: Dirs) -> None:
    dirs.script(dirs.resource_d, "daemonish",
                'sleep 30 &\necho $! > @T@/daemon.pid\necho started\nexit 0\n')
    try:
        result = dirs.do(Resource("daemonish"), "start")
        assert result.ok and result.stdout == "started\n"
        assert result.elapsed < 2.0  # not 30 s: we stop reading soon after the exit
        pid = int((dirs.tmp / "daemon.pid").read_text())
        assert pid_running(pid)  # success leaves what the agent started alone
    finally:
        if (dirs.tmp / "daemon.pid").exists():
            pid = int((dirs.tmp / "daemon.pid").read_text())
            if pid_running(pid):
                os.kill(pid, signal.SIGKILL)


def test_output_is_bounded_to_its_tail(dirs: Dirs) -> None:
    dirs.script(dirs.resource_d, "chatty",
                "head -c 200000 /dev/zero | tr '\\0' x\necho\necho the-end\necho oops >&2\n")
    result = dirs.do(Resource("chatty"), "start")
    assert result.ok
    assert result.stdout.endswith("x\nthe-end\n")
    assert result.stdout.startswith("[134473 bytes dropped]\n")
    assert len(result.stdout.encode()) < OUTPUT_LIMIT + 40
    assert result.stderr == "oops\n"


# -- Debian's real resource agents ------------------------------------------

def _need(agent: str) -> None:
    if not os.access(OCF_HEARTBEAT / agent, os.X_OK):
        pytest.skip(f"{OCF_HEARTBEAT / agent} not installed (Debian package resource-agents)")


def test_real_ocf_dummy_with_a_positional_state_file(tmp_path: Path) -> None:
    _need("Dummy")
    empty = tmp_path / "empty"
    empty.mkdir()
    runner = AgentRunner(resource_dir=empty, init_dir=empty, rsctmp=tmp_path / "rsctmp")
    state = tmp_path / "dummy.state"
    res = Resource("Dummy", (str(state),), f"Dummy::{state}")  # positional -> state

    async def go() -> list[AgentResult]:
        return [await runner.run(res, op) for op in ("status", "start", "status", "stop",
                                                     "status", "stop")]

    results = run(go())
    assert [r.kind for r in results] == ["ocf"] * 6
    assert [(r.ok, r.running, r.rc) for r in results] == [
        (True, False, 7), (True, True, 0), (True, True, 0), (True, False, 0),
        (True, False, 7), (True, False, 0)]
    assert not state.exists()




@pytest.mark.netns
def test_real_ocf_ipaddr2_positional_ip_nic_netmask(make_lab: Any, tmp_path: Path) -> None:
    """IPaddr2 itself, through the OCF path: positional args map to ip, nic, cidr_netmask."""
    _need("IPaddr2")
    lab: Lab = make_lab(["n1", "client"], networks=["10.79.1.0/24"])
    empty = tmp_path / "empty"
    empty.mkdir()
    runner = AgentRunner(resource_dir=empty, init_dir=empty, rsctmp=tmp_path / "rsctmp")
    res = Resource("IPaddr2", ("10.79.1.60", "eth0", "24"), "IPaddr2::10.79.1.60::eth0::24")

    def do(op: Any) -> AgentResult:
        return in_ns(lab, "n1", lambda: run(runner.run(res, op)))

    assert do("status").running is False
    start = do("start")
    assert (start.ok, start.kind, start.path) == (True, "ocf", str(OCF_HEARTBEAT / "IPaddr2"))
    assert "10.79.1.60/24" in lab.addresses("n1")
    assert lab.ping("client", "10.79.1.60")
    assert do("status").running is True
    assert do("stop").ok
    assert not lab.has_address("n1", "10.79.1.60")
    assert do("status").running is False
