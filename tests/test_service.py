"""What both stacks' daemons share: one dispatch, one timer, one snapshot builder.

The dispatch and the timer run on a real asyncio loop with a minimal stack
(only the hooks a stack provides); nothing waits on the clock: the timers
are far in the future, and the tests read what was armed.  The snapshots
are built from the simulated cores of both stacks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import pytest

from hbd import snapshot
from hbd.control import GroupInfo, LinkInfo, NodeInfo, Snapshot
from hbd.core.actions import (
    Action,
    AnnounceGroup,
    CpgSend,
    GroupStateChanged,
    Notice,
    StartGroup,
    StopGroup,
    Transmit,
)
from hbd.corosync.quorum import VoteInfo
from hbd.service import Options, ServiceBase
from tests import cpgsim
from tests.simnet import SimNet, make_config

FAR = 1e6  # seconds ahead: a timer that never fires during a test


class FakeRunner:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def start(self, group: str) -> None:
        self.calls.append(("start", group))

    def stop(self, group: str) -> None:
        self.calls.append(("stop", group))

    def announce(self, group: str) -> None:
        self.calls.append(("announce", group))


class Stack(ServiceBase):
    """A stack whose own action is CpgSend, and whose deadlines the test sets."""

    _ROUTINE = (CpgSend,)

    def __init__(self) -> None:
        options = Options(config_dir="/nonexistent", state_dir="/nonexistent",
                          runtime_dir="/nonexistent", node="n1", dbus=False, debug=False)
        super().__init__(options, make_config("n1"))
        self.runner = FakeRunner()  # type: ignore[assignment]
        self.due: list[float | None] = []
        self.carried: list[Action] = []
        self.published = 0
        self.notified = 0  # snapshots for subscribers (D-Bus) alone
        self.timer_work: list[float] = []

    def _carry_out(self, action: Action) -> bool:
        if isinstance(action, CpgSend):
            self.carried.append(action)
            return True
        return False

    def _deadlines(self) -> Iterable[float | None]:
        return self.due

    def _timer_work(self, now: float, wall: float) -> list[Action]:
        self.timer_work.append(now)
        return [CpgSend(b"from the timer", "test")]

    def _publish(self) -> None:
        self.published += 1

    def _notify_subscribers(self) -> None:
        self.notified += 1


def on_loop(test: object) -> None:
    async def run() -> None:
        stack = Stack()
        stack._loop = asyncio.get_running_loop()
        await test(stack)  # type: ignore[operator]
    asyncio.run(run())


def test_dispatch_does_group_work_and_hands_the_rest_to_the_stack(
        caplog: pytest.LogCaptureFixture) -> None:
    async def test(stack: Stack) -> None:
        send = CpgSend(b"x", "test")
        with caplog.at_level(logging.INFO, logger="hbd.cluster"):
            stack._dispatch([StartGroup("g1", "takeover"), send, StopGroup("g2", "release"),
                             AnnounceGroup("g3"), Notice("info", "a notice for the journal")])
        assert stack.runner.calls == [  # type: ignore[union-attr]
            ("start", "g1"), ("stop", "g2"), ("announce", "g3")]
        assert stack.carried == [send]
        assert "a notice for the journal" in caplog.text
        await asyncio.sleep(0)  # the publishing is scheduled, once per dispatch
        assert stack.published == 1

    on_loop(test)


def test_routine_traffic_alone_publishes_nothing() -> None:
    async def test(stack: Stack) -> None:
        stack._dispatch([CpgSend(b"x", "test"), CpgSend(b"y", "test")])
        await asyncio.sleep(0)
        assert stack.published == 0 and len(stack.carried) == 2
        stack._dispatch([CpgSend(b"z", "test"),
                         GroupStateChanged("g1", "stopped", "starting", "n1")])
        await asyncio.sleep(0)
        assert stack.published == 1

    on_loop(test)


def test_an_action_nobody_carries_out_is_logged_not_lost(
        caplog: pytest.LogCaptureFixture) -> None:
    async def test(stack: Stack) -> None:
        transmit = Transmit(b"netstring", b"classic", "status")  # not this stack's
        with caplog.at_level(logging.DEBUG, logger="hbd.service"):
            stack._dispatch([transmit])
        assert "unhandled action" in caplog.text

    on_loop(test)


def test_one_timer_at_the_earliest_deadline_kept_when_it_fires_barely_early() -> None:
    async def test(stack: Stack) -> None:
        now = asyncio.get_running_loop().time()
        stack.due = [None, now + FAR]
        stack._arm()
        assert stack._timer_at == now + FAR
        first = stack._timer
        stack.due = [now + FAR + 0.001]  # a hair later: the armed timer stays (it re-arms
        stack._arm()  # when it fires): no cancel and re-arm per packet
        assert stack._timer is first and stack._timer_at == now + FAR
        stack.due = [now + 2 * FAR]  # much later: moved, not a wake-up for nothing
        stack._arm()
        assert stack._timer is not first and stack._timer_at == now + 2 * FAR
        assert first is not None and first.cancelled()
        first = stack._timer
        stack.due = [now + FAR / 2, None]  # earlier: replaced
        stack._arm()
        assert stack._timer is not first and stack._timer_at == now + FAR / 2
        assert first is not None and first.cancelled()
        stack._watchdog_at = now + FAR / 4  # the watchdog is one more deadline
        stack._arm()
        assert stack._timer_at == now + FAR / 4
        stack._cancel_timer()
        assert stack._timer is None

    on_loop(test)


def test_no_deadline_arms_nothing() -> None:
    async def test(stack: Stack) -> None:
        stack.due = [None]
        stack._arm()
        assert stack._timer is None

    on_loop(test)


def test_the_timer_runs_the_stacks_work_dispatches_and_rearms() -> None:
    async def test(stack: Stack) -> None:
        now = asyncio.get_running_loop().time()
        stack.due = [now + FAR]
        stack._on_timer()  # as the loop would call it
        assert len(stack.timer_work) == 1
        assert stack.carried == [CpgSend(b"from the timer", "test")]
        assert stack._timer_at == now + FAR
        stack._cancel_timer()

    on_loop(test)


def test_an_adapter_failure_loses_neither_the_batch_nor_the_timer(
        caplog: pytest.LogCaptureFixture) -> None:
    class Failing(Stack):
        def _carry_out(self, action: Action) -> bool:
            if isinstance(action, CpgSend) and action.payload == b"bad":
                raise OSError("the adapter failed")
            return super()._carry_out(action)

        def _timer_work(self, now: float, wall: float) -> list[Action]:
            self.timer_work.append(now)
            raise RuntimeError("a bug in the timer's work")

    async def test(stack: Stack) -> None:
        stack._dispatch([CpgSend(b"bad", "test"), CpgSend(b"good", "test"),
                         StartGroup("g", "test")])
        assert stack.carried == [CpgSend(b"good", "test")]  # the rest of the batch went
        assert stack.runner.calls == [("start", "g")]  # type: ignore[union-attr]
        now = asyncio.get_running_loop().time()
        stack.due = [now + FAR]
        stack._on_timer()
        assert stack._timer_at == now + FAR  # re-armed: heartbeats and watchdog go on
        stack._cancel_timer()

    with caplog.at_level(logging.ERROR):
        run = Failing()

        async def main() -> None:
            run._loop = asyncio.get_running_loop()
            await test(run)

        asyncio.run(main())
    assert "could not carry out CpgSend" in caplog.text
    assert "the timer's work failed" in caplog.text


# --- snapshots -------------------------------------------------------------------------------

def test_heartbeat_snapshot_nodes_links_and_who_runs_each_group() -> None:
    resources = "n1 10.0.0.1\nn2 10.0.0.2\n"
    net = SimNet({n: make_config(n, haresources=resources, extra="auto_failback on\n")
                  for n in ("n1", "n2")})
    net.run_for(15.0)
    snap = snapshot.heartbeat(net.nodes["n1"].failover, {"eth0": True, "eth1": False})
    assert snap == Snapshot(
        "n1",
        (NodeInfo("n1", "active", True), NodeInfo("n2", "active")),
        (LinkInfo("n1", "eth0", "up"), LinkInfo("n1", "eth1", "dead"),
         LinkInfo("n2", "eth0", "up"), LinkInfo("n2", "eth1", "up")),
        "local",
        (GroupInfo("10.0.0.1", "n1", "n1", "running"),
         GroupInfo("10.0.0.2", "n2", "n2", "stopped")))
    assert snap.quorum == "none"


def test_corosync_snapshot_nodes_quorum_votes_and_placement() -> None:
    names = ("n1", "n2", "n3")
    resources = "".join(f"{n} 10.0.0.{i}\n" for i, n in enumerate(names, start=1))
    sim = cpgsim.SimCorosync(names, resources)
    for name in names:
        sim.start_hbd(name)
    sim.settle()
    sim.kill_hbd("n3")  # corosync stays up there: "up", not "active"
    sim.settle()
    sim.advance(30.0)  # its group is in doubt for deadtime, then taken over
    sim.settle()
    placement = sim.nodes["n1"].placement
    assert placement is not None
    votes = VoteInfo(votes=1, expected=4, total=3, quorum=3, quorate=True)
    snap = snapshot.corosync(placement, "n1", names, {"n1": 1, "n2": 2, "n3": 3, "n4": 4},
                             votes)
    assert snap.nodes == (NodeInfo("n1", "active", True), NodeInfo("n2", "active"),
                          NodeInfo("n3", "up"), NodeInfo("n4", "dead"))
    assert snap.links == () and snap.stack == "corosync" and snap.quorum == "quorate"
    assert (snap.votes, snap.expected_votes, snap.quorum_votes) == (3, 4, 3)
    owners = {g.key: (g.owner, g.state) for g in snap.groups}
    assert owners["10.0.0.1"] == ("n1", "running")
    assert owners["10.0.0.2"] == ("n2", "stopped")
    assert owners["10.0.0.3"] == ("n1", "running")  # the next in its order: n3 n1 n2
    assert dict(snap.placement)["10.0.0.3"] == ("n3", "n1", "n2")
    placement.disconnect("corosync went away", sim.now, sim.now)
    gone = snapshot.corosync(placement, "n1", names, {"n1": 1}, votes)
    assert (gone.votes, gone.expected_votes, gone.quorum_votes) == (0, 0, 0)


def test_a_late_timer_is_measured_and_announced_at_most_once_a_second() -> None:
    async def test(stack: Stack) -> None:
        loop = asyncio.get_running_loop()
        stack.subscribe(lambda snapshot: None)  # a D-Bus front end listens
        stack.due = [loop.time() + FAR]
        stack._timer_at = loop.time() - 0.2  # due 200 ms ago: the loop was held up
        stack._on_timer()
        await asyncio.sleep(0)
        assert stack.loop_lag.count == 1 and 0.2 <= stack.loop_lag.max_s < 0.3
        assert stack.notified == 1
        stack._timer_at = loop.time() - 0.3  # late twice more within the second
        stack._on_timer()
        stack._timer_at = loop.time() - 0.1
        stack._on_timer()
        await asyncio.sleep(0.5)
        assert stack.loop_lag.count == 3 and stack.loop_lag.max_s >= 0.3
        assert stack.notified == 1  # not yet
        await asyncio.sleep(0.6)
        assert stack.notified == 2  # both, in one announcement once the second is over
        # the lag is not on the STATUS= line nor does it wake the metrics: no publish
        assert stack.published == 0
        stack._cancel_timer()

    on_loop(test)


def test_a_late_timer_nobody_listens_to_is_measured_not_announced() -> None:
    """Without subscribers (no D-Bus) a late firing builds no snapshot: at idle on a
    loaded machine that was one snapshot a second (issue 20's idle CPU)."""
    async def test(stack: Stack) -> None:
        loop = asyncio.get_running_loop()
        stack.due = [loop.time() + FAR]
        stack._timer_at = loop.time() - 0.2
        stack._on_timer()
        await asyncio.sleep(0)
        assert stack.loop_lag.count == 1 and stack.loop_lag.late() == 1
        assert stack.notified == 0 and stack.published == 0
        unsubscribe = stack.subscribe(lambda snapshot: None)  # D-Bus arrives later
        stack._timer_at = loop.time() - 0.1
        stack._on_timer()
        await asyncio.sleep(0)
        assert stack.loop_lag.late() == 2 and stack.notified == 1
        unsubscribe()
        stack._cancel_timer()

    on_loop(test)


def test_an_on_time_timer_announces_nothing() -> None:
    async def test(stack: Stack) -> None:
        loop = asyncio.get_running_loop()
        stack.due = [loop.time() + FAR]
        stack._timer_at = loop.time()
        stack._on_timer()
        await asyncio.sleep(0)
        assert stack.loop_lag.count == 1 and stack.loop_lag.late() == 0
        assert stack.published == 0 and stack.notified == 0
        stack._cancel_timer()

    on_loop(test)


def test_after_the_shutdown_cancel_nothing_rearms_the_timer() -> None:
    async def test(stack: Stack) -> None:
        loop = asyncio.get_running_loop()
        stack.due = [loop.time() - 1.0]  # a stopped engine's heartbeat stays due
        stack._cancel_timer()
        stack._arm()  # as a packet arriving during the shutdown would
        assert stack._timer is None

    on_loop(test)
