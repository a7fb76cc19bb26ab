"""STONITH in the sans-I/O core, on the simulated network (issue 18).

A simulated power switch (tests/simnet.py) powers a node off when a reset
succeeds.  Shown here: no takeover before the reset, retries while the
device fails and a manual confirmation that releases the takeover, a
graceful stop that fences nobody, the fence race won by the node that held
the groups (repeated with different seeds), a peer never heard from at
start-up fenced before its groups are taken, the device status check, and
the state machine refusing illegal moves.
"""

from __future__ import annotations

import pytest

from hbd.core.actions import (
    CancelFence,
    CheckFenceDevices,
    FenceDeviceStatus,
    FenceNode,
    FenceStateChanged,
    StartGroup,
    Transmit,
)
from hbd.core.config import FenceSettings
from hbd.core.fencing import TRANSITIONS, FenceState, race_delay
from hbd.core.fsm import StateMachine
from hbd.errors import NotFencing, TransitionError
from tests.simnet import SimNet, make_config

G1 = "10.0.0.1"  # n1's group; n2 holds nothing
STONITH = "stonith_host * external/nsnode hostlist=n1,n2 secretpw\n"


def cluster(*, stonith: str = STONITH, hbdconf: str = "", seed: int = 1,
            haresources: str = f"n1 {G1}\n", run: float = 1.5) -> SimNet:
    from dataclasses import replace

    from hbd.core.hbdconf import parse_hbdconf

    hbd, problems = parse_hbdconf(hbdconf)
    assert not problems.errors
    configs = {}
    for node in ("n1", "n2"):
        cfg = make_config(node, haresources=haresources, extra="auto_failback off\n" + stonith)
        configs[node] = replace(cfg, hbd=hbd)
    net = SimNet(configs, seed=seed)
    net.run_for(run)
    return net


def started(net: SimNet, node: str, group: str, since: float = 0.0) -> list[float]:
    return [t for t, a in net.nodes[node].actions
            if isinstance(a, StartGroup) and a.group == group and t >= since]


def fence_states(net: SimNet, node: str) -> list[str]:
    return [a.new for _, a in net.nodes[node].actions if isinstance(a, FenceStateChanged)]


def test_config_picks_the_last_applicable_device() -> None:
    cfg = make_config("n1", extra="stonith_host n2 null n1\nstonith_host * meatware n1 n2\n"
                      "stonith_host n1 external/x a b\n")
    assert cfg.hacf.stonith_for("n1") is not None
    assert cfg.hacf.stonith_for("n1").type == "external/x"  # type: ignore[union-attr]
    assert cfg.hacf.stonith_for("n2").type == "meatware"  # type: ignore[union-attr]
    assert "a b" not in repr(cfg.hacf)  # parameters may hold a password: never in a repr


def test_dead_peer_is_fenced_then_and_only_then_taken_over() -> None:
    net = cluster(hbdconf="fence_race_delay 0\n")
    assert net.holders(G1) == ["n1"]
    net.fence_delay = 0.4
    net.nodes["n1"].alive = False  # hard loss: n1 crashed (a cut is the race, below)
    cut_at = net.now
    net.run_for(2.0)
    assert [(by, target) for _, by, target in net.fenced] == [("n2", "n1")]
    reset_at = net.fenced[0][0]
    took = started(net, "n2", G1, cut_at)
    assert took and took[0] >= reset_at  # never before the reset
    assert took[0] - cut_at <= 0.5 + 0.1 + 0.4 + 0.05  # deadtime + device + slack
    assert net.holders(G1) == ["n2"]
    assert fence_states(net, "n2") == ["fencing", "fenced"]
    results = [a for _, a in net.nodes["n2"].actions if isinstance(a, Transmit)
               and a.msgtype == "stonith"]
    assert len(results) == 1 and b"result=OK" in results[0].netstring


def test_failing_device_retries_and_blocks_takeover_until_confirmed() -> None:
    net = cluster(hbdconf="fence_race_delay 0\nfence_retry_interval 1\n")
    net.fence_fail.add("n1")
    net.nodes["n1"].alive = False
    cut_at = net.now
    net.run_for(3.8)
    attempts = [a for _, a in net.nodes["n2"].actions if isinstance(a, FenceNode)]
    assert len(attempts) == 4  # at the loss, then every second
    assert not started(net, "n2", G1, cut_at)
    assert net.nodes["n2"].failover.fencing.state_of("n1") is FenceState.FAILED
    with pytest.raises(NotFencing):
        net.command("n2", "fencing_confirm", "n9")
    net.command("n2", "fencing_confirm", "n1")
    net.run_for(0.5)
    assert started(net, "n2", G1, cut_at)
    assert fence_states(net, "n2")[-1] == "fenced"
    late = len([a for _, a in net.nodes["n2"].actions if isinstance(a, FenceNode)])
    net.run_for(3.0)
    assert len([a for _, a in net.nodes["n2"].actions if isinstance(a, FenceNode)]) == late


def test_confirm_cancels_a_running_attempt_and_ignores_its_late_result() -> None:
    net = cluster(hbdconf="fence_race_delay 0\n")
    net.fence_delay = 5.0
    net.nodes["n1"].alive = False
    net.run_for(1.0)
    assert net.nodes["n2"].failover.fencing.state_of("n1") is FenceState.FENCING
    actions = net.command("n2", "fencing_confirm", "n1")
    assert CancelFence("n1") in actions
    net.run_for(6.0)  # the cancelled attempt's result arrives: changes nothing
    assert fence_states(net, "n2") == ["fencing", "fenced"]


def test_graceful_stop_fences_nobody() -> None:
    net = cluster()
    net.command("n1", "shutdown")
    net.run_for(0.5)
    net.nodes["n1"].alive = False
    net.run_for(2.0)
    assert net.holders(G1) == ["n2"]
    assert not net.fenced
    assert not [a for _, a in net.nodes["n2"].actions if isinstance(a, FenceNode)]


@pytest.mark.parametrize("seed", range(1, 6))
def test_fence_race_is_won_by_the_node_that_held_the_group(seed: int) -> None:
    net = cluster(seed=seed, hbdconf="fence_race_delay 1\n")
    net.fence_delay = 0.2 + seed / 50
    net.cut("n1")
    net.cut("n2")
    net.run_for(4.0)
    assert [target for _, _, target in net.fenced] == ["n2"]
    assert net.nodes["n1"].alive and net.holders(G1) == ["n1"]


def test_fence_race_tie_goes_to_the_first_node() -> None:
    net = cluster(hbdconf="fence_race_delay 1\n", haresources="")
    net.cut("n1")
    net.cut("n2")
    net.run_for(4.0)
    assert [target for _, _, target in net.fenced] == ["n2"]


def test_race_delay_rule() -> None:
    settings = FenceSettings(race_delay_ms=2500)
    assert race_delay(1, 0, False, settings) == 0
    assert race_delay(0, 1, True, settings) == 2.5
    assert race_delay(1, 1, True, settings) == 0
    assert race_delay(1, 1, False, settings) == 2.5


def test_peer_never_heard_is_fenced_before_taking_everything() -> None:
    configs = {"n2": make_config("n2", haresources=f"n1 {G1}\n", extra=STONITH)}
    net = SimNet(configs)
    net.run_for(5.0)  # initdead 1 s, then n2 (second in ha.cf) waits the race delay, 3 s
    assert [a.node for _, a in net.nodes["n2"].actions if isinstance(a, FenceNode)] == ["n1"]
    fenced_at = next(t for t, a in net.nodes["n2"].actions
                     if isinstance(a, FenceStateChanged) and a.new == "fenced")
    assert started(net, "n2", G1) and started(net, "n2", G1)[0] >= fenced_at


def test_fenced_node_rejoins_cleanly() -> None:
    net = cluster(hbdconf="fence_race_delay 5\n")
    net.cut("n1")  # n1 held the group: it fences n2 at once
    net.run_for(2.0)
    assert not net.nodes["n2"].alive and net.holders(G1) == ["n1"]
    net.cut("n1", cut=False)
    net.add_node("n2", make_config("n2", haresources=f"n1 {G1}\n",
                                   extra="auto_failback off\n" + STONITH), generation=300)
    net.run_for(3.0)
    assert net.status_of("n1", "n2") == "active"
    assert net.nodes["n1"].failover.fencing.state_of("n2") is FenceState.NONE
    assert net.holders(G1) == ["n1"]
    assert len(net.fenced) == 1


def test_peer_back_during_the_race_delay_cancels_fencing() -> None:
    net = cluster(hbdconf="fence_race_delay 5\n")
    net.freeze("n1")  # n2 held nothing: it waits 5 s
    net.run_for(1.0)
    assert net.nodes["n2"].failover.fencing.state_of("n1") is FenceState.DELAYED
    net.thaw("n1")
    net.run_for(6.0)
    assert net.nodes["n2"].failover.fencing.state_of("n1") is FenceState.NONE
    assert not [a for _, a in net.nodes["n2"].actions if isinstance(a, FenceNode)]


def test_device_status_checked_at_start_and_periodically() -> None:
    net = cluster(hbdconf="fence_status_interval 2\n", run=5.3)
    checks = [t for t, a in net.nodes["n1"].actions if isinstance(a, CheckFenceDevices)]
    assert len(checks) == 3 and checks[1] - checks[0] == pytest.approx(2.0, abs=0.01)
    fencing = net.nodes["n1"].failover.fencing
    assert fencing.device_ok is True
    failed = fencing.devices_checked(False, "plugin missing", net.now)
    assert failed[0] == FenceDeviceStatus(False, "plugin missing") and len(failed) == 3
    assert fencing.devices_checked(True, "ok", net.now) == [FenceDeviceStatus(True, "ok")]
    assert fencing.devices_checked(True, "ok", net.now) == []  # unchanged: no event


def test_no_device_keeps_heartbeats_behaviour() -> None:
    net = cluster(stonith="", hbdconf="")
    net.cut("n1")
    net.run_for(1.5)
    assert not net.fenced and net.holders(G1) == ["n1", "n2"]


def test_fence_state_machine_refuses_illegal_moves_and_stays_put() -> None:
    fsm = StateMachine("fencing n1", FenceState.NONE, TRANSITIONS)
    with pytest.raises(TransitionError):
        fsm.move(FenceState.FENCED)
    assert fsm.state is FenceState.NONE
    fsm.move(FenceState.FENCING)
    with pytest.raises(TransitionError):
        fsm.move(FenceState.DELAYED)
    assert fsm.state is FenceState.FENCING


def test_a_reload_removing_every_device_waits_for_confirmation_not_a_crash() -> None:
    net = cluster(hbdconf="fence_race_delay 0\nfence_retry_interval 1\n")
    net.fence_fail.add("n1")
    net.nodes["n1"].alive = False
    cut_at = net.now
    net.run_for(0.5)
    fencing = net.nodes["n2"].failover.fencing
    assert fencing.state_of("n1") is FenceState.FAILED
    # the admin removes the stonith_host line and reloads while the retry is pending
    fencing.reconfigure(make_config("n2", haresources=f"n1 {G1}\n",
                                    extra="auto_failback off\n"))
    net.run_for(2.0)
    assert fencing.state_of("n1") is FenceState.CONFIRM  # no IndexError, no silent stall
    assert not net.nodes["n2"].failover.engine.internal_errors
    assert not started(net, "n2", G1, cut_at)
    net.command("n2", "fencing_confirm", "n1")
    net.run_for(0.5)
    assert started(net, "n2", G1, cut_at)
