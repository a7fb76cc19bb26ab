"""Notify hooks without a cluster: the events, the queue, running one hook, listing them.

The queue's order and overflow are checked with a fake `execute` that waits on
futures the test resolves (no real clock); running a real hook (exit code,
signal, timeout, output, environment) uses short real processes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

import pytest

from hbd.core.actions import (
    Action,
    GroupFailed,
    GroupStateChanged,
    MembershipChanged,
    NodeStatusChanged,
    StartGroup,
    StopGroup,
    Transmit,
)
from hbd.core.config import HbdConf
from hbd.core.hookevents import HookEvent, HookEvents
from hbd.core.refresh import RefreshSchedule
from hbd.hooks import HookResult, HookRunner, HookSettings, execute, list_hooks

VIP = "10.0.0.1/24/eth0"


def _moves(*states: str, owner: str = "n1") -> list[Action]:
    out: list[Action] = []
    for old, new in itertools.pairwise(states):
        out.append(GroupStateChanged(VIP, old, new, "" if new == "stopped" else owner))
    return out


# --- which events, with what ----------------------------------------------------------

def test_a_takeover_and_a_release_as_hooks_see_them() -> None:
    events = HookEvents("n1")
    got = events.translate([
        NodeStatusChanged("n2", "active", "dead"),
        Transmit(b"", b"", "status"),
        *_moves("stopped", "starting"), StartGroup(VIP, "takeover: n2 is dead"),
    ], wall=100.0)
    got += events.translate(_moves("starting", "running"), wall=101.0)
    got += events.translate([*_moves("running", "stopping"), StopGroup(VIP, "shutdown")], 102.0)
    got += events.translate(_moves("stopping", "stopped"), wall=103.0)
    assert [(e.seq, *e.argv, e.old_state, e.owner, e.reason) for e in got] == [
        (1, "node", "n2", "dead", "active", "", ""),
        # the reason of a StartGroup reaches the move it follows, and the move it leads to
        (2, "group", VIP, "starting", "stopped", "n1", "takeover: n2 is dead"),
        (3, "group", VIP, "running", "starting", "n1", "takeover: n2 is dead"),
        (4, "group", VIP, "stopping", "running", "n1", "shutdown"),
        (5, "group", VIP, "stopped", "stopping", "", "shutdown"),
    ]
    assert got[0].wall == 100.0 and got[-1].wall == 103.0


def test_failed_comes_before_the_move_it_causes_with_its_operation() -> None:
    events = HookEvents("n1")
    events.translate(_moves("stopped", "starting"), 1.0)
    got = events.translate([GroupFailed(VIP, "start", "IPaddr2: rc=1"),
                            *_moves("starting", "stopping"),
                            StopGroup(VIP, "clean up after a failed start")], 2.0)
    assert [(e.state, e.old_state, e.operation, e.reason) for e in got] == [
        ("failed", "starting", "start", "IPaddr2: rc=1"),
        ("stopping", "starting", "", "clean up after a failed start"),
    ]
    env = got[0].environment("n1", dropped=0)
    assert env["HBD_OPERATION"] == "start" and env["HBD_GROUP"] == VIP
    assert "HBD_NODE" not in env and "HBD_OPERATION" not in got[1].environment("n1", 0)


def test_nodes_are_up_or_dead_once_each_and_never_this_node() -> None:
    events = HookEvents("n1")
    got = events.translate([
        NodeStatusChanged("n1", "init", "up", local=True),
        NodeStatusChanged("n2", "init", "up"),
        NodeStatusChanged("n2", "up", "active"),  # still up: nothing new
        NodeStatusChanged("n2", "active", "init"),  # a restart announcing itself
        NodeStatusChanged("n2", "init", "active"),
        NodeStatusChanged("n2", "active", "dead"),
        NodeStatusChanged("n2", "dead", "active"),
        # the corosync stack's membership; this node's own join is no event
        MembershipChanged(("n1", "n3"), ("n1", "n3"), ()),
        MembershipChanged(("n1",), (), ("n3",)),
        # joining a group that has members: only we are in `joined`
        MembershipChanged(("n1", "n4", "n5"), ("n1",), ()),
        # members that vanish without a `left` (our own reconnect) are dead too
        MembershipChanged(("n1", "n5"), (), ()),
    ], wall=5.0)
    assert [(*e.argv, e.old_state, e.status) for e in got] == [
        ("node", "n2", "up", "init", "up"),
        ("node", "n2", "dead", "active", "dead"),
        ("node", "n2", "up", "dead", "active"),
        ("node", "n3", "up", "left", "member"),
        ("node", "n3", "dead", "member", "left"),
        ("node", "n4", "up", "left", "member"),
        ("node", "n5", "up", "left", "member"),
        ("node", "n4", "dead", "member", "left"),
    ]
    env = got[0].environment("n1", dropped=3)
    assert env == {
        "HBD_EVENT": "node", "HBD_NODE": "n2", "HBD_STATE": "up", "HBD_OLD_STATE": "init",
        "HBD_NODE_STATUS": "up", "HBD_REASON": "", "HBD_LOCAL_NODE": "n1", "HBD_SEQ": "1",
        "HBD_DROPPED": "3", "HBD_TIME": "5.000000"}


# --- the queue ----------------------------------------------------------------------------

class FakeHooks:
    """`execute` that records each call and finishes when the test says so."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...], dict[str, str]]] = []
        self.gates: list[asyncio.Future[HookResult]] = []
        self.wait = False

    async def __call__(self, path: str, argv: tuple[str, ...], env: Mapping[str, str],
                       timeout: float) -> HookResult:
        self.calls.append((path, argv, dict(env)))
        if not self.wait:
            return HookResult(0, 0.0)
        gate: asyncio.Future[HookResult] = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        return await gate


def _lister(settings: HookSettings) -> tuple[list[str], list[str]]:
    return ["/hooks/a", "/hooks/b"], []


async def _settle() -> None:
    for _ in range(20):  # the worker hops through a thread for the listing
        await asyncio.sleep(0.01)


def test_every_hook_runs_for_each_event_in_order() -> None:
    async def main() -> FakeHooks:
        fake = FakeHooks()
        runner = HookRunner("n1", HookSettings(), execute=fake, lister=_lister)
        runner.feed([*_moves("stopped", "starting", "running")], 1.0)
        runner.feed([NodeStatusChanged("n2", "init", "active")], 2.0)
        await runner.stop(5.0)
        return fake

    fake = asyncio.run(main())
    assert [(path, argv) for path, argv, _ in fake.calls] == [
        ("/hooks/a", ("group", VIP, "starting")), ("/hooks/b", ("group", VIP, "starting")),
        ("/hooks/a", ("group", VIP, "running")), ("/hooks/b", ("group", VIP, "running")),
        ("/hooks/a", ("node", "n2", "up")), ("/hooks/b", ("node", "n2", "up")),
    ]
    env = fake.calls[0][2]
    assert env["PATH"] == "/usr/sbin:/usr/bin:/sbin:/bin" and env["HBD_SEQ"] == "1"
    assert "HOME" not in env and "PYTHONPATH" not in env  # nothing of hbd's own


def test_a_full_queue_drops_and_counts_never_waits(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> tuple[FakeHooks, HookRunner]:
        fake = FakeHooks()
        fake.wait = True
        runner = HookRunner("n1", HookSettings(), execute=fake,
                            lister=lambda s: (["/hooks/slow"], []), max_pending=3)
        states = ["stopped", "starting", "running", "stopping", "stopped"] * 2
        for old, new in itertools.pairwise(states):
            runner.feed([GroupStateChanged(VIP, old, new, "n1")], 0.0)  # returns at once
        await _settle()
        # three were queued before the worker ran (it now runs the first); six dropped
        assert len(fake.gates) == 1 and runner.pending() == 3 and runner.dropped == 6
        for n in range(3):  # one at a time: the next hook starts when this one ends
            assert len(fake.gates) == n + 1
            fake.gates[n].set_result(HookResult(0, 0.0))
            await _settle()
        assert runner.pending() == 0
        runner.feed([NodeStatusChanged("n2", "init", "up")], 0.0)  # room again
        await _settle()
        fake.gates[-1].set_result(HookResult(0, 0.0))
        await runner.stop(5.0)
        return fake, runner

    with caplog.at_level(logging.WARNING, logger="hbd.hooks"):
        fake, _ = asyncio.run(main())
    seqs = [int(env["HBD_SEQ"]) for _, _, env in fake.calls]
    assert seqs == [1, 2, 3, 10]  # the gap shows what was dropped
    assert [env["HBD_DROPPED"] for _, _, env in fake.calls] == ["0", "0", "0", "6"]
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert lines == ["6 notify hook event(s) dropped: the hooks are too slow (3 waiting at "
                     "most); HBD_SEQ 10 is the first after the gap"]


def test_stop_waits_only_so_long(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> FakeHooks:
        fake = FakeHooks()
        fake.wait = True
        runner = HookRunner("n1", HookSettings(), execute=fake, lister=_lister)
        runner.feed(_moves("running", "stopping", "stopped"), 0.0)
        await _settle()
        await runner.stop(0.05)  # the hook never finishes: the worker is ended anyway
        return fake

    with caplog.at_level(logging.WARNING, logger="hbd.hooks"):
        fake = asyncio.run(main())
    assert len(fake.calls) == 1 and fake.gates[0].cancelled()
    assert "notify hooks: stopping with 2 event(s) not done after waiting 0.05 s" in caplog.text


# --- running one hook for real --------------------------------------------------------

def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_a_hook_gets_argv_and_only_the_given_environment(tmp_path: Path) -> None:
    hook = _script(tmp_path / "show", 'echo "$# $1 $2 $3"; env | sort; echo err >&2\n')
    result = asyncio.run(execute(hook, ("group", VIP, "running"),
                                 {"PATH": "/usr/bin:/bin", "HBD_STATE": "running"}, 5.0))
    assert result.rc == 0 and not result.timed_out
    lines = result.output.decode().splitlines()
    assert lines[0] == f"3 group {VIP} running"
    assert "HBD_STATE=running" in lines and "PATH=/usr/bin:/bin" in lines
    assert not [line for line in lines if line.startswith(("HOME=", "PYTHONPATH="))]
    assert "err" in lines


def test_exit_code_and_signal_are_reported(tmp_path: Path) -> None:
    assert asyncio.run(execute(_script(tmp_path / "x", "exit 3\n"), (), {}, 5.0)).rc == 3
    assert asyncio.run(execute(_script(tmp_path / "k", "kill -TERM $$\n"), (), {}, 5.0)).rc == -15
    missing = asyncio.run(execute(str(tmp_path / "none"), (), {}, 5.0))
    assert missing.rc is None and missing.error


def test_a_hook_past_its_timeout_loses_its_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hook = _script(tmp_path / "slow", f"sleep 30 & echo $! > {pids}; sleep 30\n")
    result = asyncio.run(execute(hook, (), {"PATH": "/usr/bin:/bin"}, 0.3))
    assert result.timed_out and result.rc is None
    assert result.elapsed < 5.0
    child = int(pids.read_text())
    # the background child was in the hook's session: killed with it
    for _ in range(100):
        if not Path(f"/proc/{child}").exists() or " Z " in Path(
                f"/proc/{child}/stat").read_text():
            break
        asyncio.run(asyncio.sleep(0.02))
    else:
        raise AssertionError(f"pid {child} of the hook's group survived the timeout")


def test_output_is_bounded(tmp_path: Path) -> None:
    hook = _script(tmp_path / "chatty", "head -c 100000 /dev/zero | tr '\\0' x\n")
    result = asyncio.run(execute(hook, (), {"PATH": "/usr/bin:/bin"}, 5.0))
    assert len(result.output) == 4096 and result.truncated == 100000 - 4096


def test_failures_are_logged_never_raised(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    bad = _script(tmp_path / "bad", "echo 'no database'; exit 2\n")
    slow = _script(tmp_path / "slow", "sleep 5\n")

    async def main() -> HookRunner:
        runner = HookRunner("n1", HookSettings(paths=(bad, slow), timeout=0.2))
        runner.feed([NodeStatusChanged("n2", "active", "dead")], 0.0)
        await runner.stop(10.0)
        return runner

    with caplog.at_level(logging.INFO, logger="hbd.hooks"):
        runner = asyncio.run(main())
    assert runner.failures == 2
    assert f"notify hook {bad}: no database" in caplog.text
    assert f"notify hook {bad} (node n2 dead) failed: exit code 2" in caplog.text
    assert (f"notify hook {slow} (node n2 dead) timed out after 0.2 s: its process group "
            "was killed") in caplog.text


# --- which hooks -----------------------------------------------------------------------

def test_listing_follows_run_parts_rules_and_script_security(tmp_path: Path) -> None:
    d = tmp_path / "notify.d"
    d.mkdir()
    for name in ("20-db", "10-log", "10-log~", ".hidden", "30-x.dpkg-old", "README"):
        _script(d / name, "exit 0\n")
    (d / "README").chmod(0o644)  # not executable: not a hook, silently
    _script(d / "40-open", "exit 0\n")
    (d / "40-open").chmod(0o757)  # anybody may change it: refused, loudly
    named = _script(tmp_path / "first", "exit 0\n")
    settings = HookSettings(paths=(named, str(tmp_path / "missing")), directory=str(d))
    found, problems = list_hooks(settings)
    assert found == [named, str(d / "10-log"), str(d / "20-db")]
    assert problems == [
        f"notify hook {tmp_path / 'missing'} cannot be used: No such file or directory",
        f"notify hook {d / '40-open'} is writable by group or others (mode 757): not run"]
    assert list_hooks(HookSettings(directory=str(tmp_path / "none"))) == ([], [])
    assert list_hooks(HookSettings(directory=str(tmp_path / "none"), directory_named=True)) \
        == ([], [f"notify_dir {tmp_path / 'none'} does not exist"])
    assert stat.S_IMODE(os.stat(named).st_mode) == 0o755


def test_settings_from_hbd_conf() -> None:
    assert HookSettings.from_conf(HbdConf(), "/etc/ha.d") == HookSettings(
        (), "/etc/ha.d/notify.d", False, 10.0)
    conf = HbdConf(notify=("/usr/local/bin/tell",), notify_dir="", notify_timeout_ms=2500)
    assert HookSettings.from_conf(conf, "/etc/ha.d") == HookSettings(
        ("/usr/local/bin/tell",), "", False, 2.5)
    assert HookSettings.from_conf(HbdConf(notify_dir="/srv/hooks"), "/x").directory_named


# --- the gratuitous-ARP refresh's deadlines -----------------------------------------------

def test_refresh_runs_only_while_running_and_does_not_drift() -> None:
    sched = RefreshSchedule(2.0)
    assert sched.next_timer() is None
    sched.group_state("a", "starting", 0.0)
    assert sched.next_timer() is None
    sched.group_state("a", "running", 1.0)
    sched.group_state("b", "running", 1.5)
    assert sched.next_timer() == 3.0
    assert sched.due(2.9) == []
    assert sched.due(3.2) == ["a"]  # late by 0.2 s: next one still at 5.0
    assert sched.next_timer() == 3.5
    assert sched.due(3.5) == ["b"]
    assert sched.due(20.0) == ["a", "b"]  # far behind: one round, then from now
    assert sched.next_timer() == 22.0
    sched.group_state("a", "stopping", 20.5)
    assert sched.due(22.0) == ["b"]
    sched.configure(0.0, 23.0)  # a reload turning it off
    assert sched.next_timer() is None
    sched.configure(1.0, 30.0)  # and on again: every group still running
    assert sched.next_timer() == 31.0 and sched.due(31.0) == ["b"]


def test_hook_event_str_is_its_arguments() -> None:
    event = HookEvent(1, "group", VIP, "running", "starting", 0.0, owner="n1")
    assert str(event) == f"group {VIP} running"


def test_the_packaged_example_hook_logs_each_call(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "packaging" / "examples" / "notify-log"
    _script(tmp_path / "logger", 'echo "logger $*"\n')  # stands in for the real one
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "HBD_OLD_STATE": "starting", "HBD_SEQ": "3",
           "HBD_LOCAL_NODE": "n1", "HBD_REASON": "takeover: n2 is dead", "HBD_DROPPED": "0"}
    result = asyncio.run(execute(str(example), ("group", VIP, "running"), env, 5.0))
    assert result.rc == 0, result.output
    assert result.output.decode() == (
        f"logger -t hbd-notify -p daemon.notice -- group {VIP} running (was starting; "
        "event #3 on n1): takeover: n2 is dead\n")


def test_fencing_moves_reach_the_hooks_as_fence_events() -> None:
    from hbd.core.actions import FenceStateChanged

    events = HookEvents("n1")
    got = events.translate([FenceStateChanged("n2", "none", "fencing", "attempt 1"),
                            FenceStateChanged("n2", "fencing", "fenced", "OK")], 10.0)
    assert [e.argv for e in got] == [("fence", "n2", "fencing"), ("fence", "n2", "fenced")]
    env = got[1].environment("n1", 0)
    assert (env["HBD_EVENT"], env["HBD_NODE"], env["HBD_OLD_STATE"], env["HBD_REASON"]) == (
        "fence", "n2", "fencing", "OK")
