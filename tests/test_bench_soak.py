"""What benchmarks/soak.py counts: a false failover must show, a quiet soak must not.

The soak's figures come from `ip -ts monitor address` output and the daemons'
logs; these tests feed it the lines the real tools print (iproute2 6.1,
hbd's eventlog, Heartbeat 3.0.6, keepalived 2.2) so a parser that stopped
matching would be caught here rather than by a soak reporting zero.
"""

from __future__ import annotations

import os

import pytest

from benchmarks.soak import (
    LOOP_STALL,
    VIP,
    both_held,
    false_failovers,
    lag_cell,
    log_figures,
    mem_available,
    plan_load,
    vip_events,
    worst_bucket_ms,
)

ADD = f"[2026-12-07T11:40:00.250000] 2: eth0    inet {VIP}/24 scope global secondary eth0"
DEL = f"[2026-12-07T11:40:01.000000] Deleted 2: eth0    inet {VIP}/24 scope global secondary eth0"
OTHER = "[2026-12-07T11:40:00.500000] 2: eth0    inet 10.77.0.2/24 scope global eth0"


def test_monitor_lines_become_vip_events() -> None:
    events = vip_events("\n".join([ADD, OTHER, "       valid_lft forever", DEL]), "n2")
    assert [(node, added) for _, node, added in events] == [("n2", True), ("n2", False)]
    assert events[1][0] - events[0][0] == pytest.approx(0.75)


def test_both_held_counts_a_split_brain_and_its_length() -> None:
    # n2 takes the VIP while n1 keeps it, n2 gives it back 750 ms later
    events = vip_events(ADD, "n2") + vip_events(DEL, "n2")
    count, seconds = both_held(events, end=events[-1][0] + 10)
    assert (count, seconds) == (1, pytest.approx(0.75))
    # n1 lost it first: a move, not both at once
    n1_del = [(events[0][0] - 0.1, "n1", False)]
    assert both_held(n1_del + events, end=events[-1][0] + 10) == (0, 0.0)
    # still both holding at the end: counted to the end
    count, seconds = both_held(vip_events(ADD, "n2"), end=events[0][0] + 2)
    assert (count, seconds) == (1, pytest.approx(2.0))


def test_quiet_soak_counts_nothing() -> None:
    assert both_held([], end=1e9) == (0, 0.0)
    figures = log_figures("hbd", {"n1": "2026-12-07 11:40:00,000 INFO group x start done\n",
                                  "n2": ""})
    assert figures["late_heartbeats"] == figures["dead"] == 0
    assert figures["loop_stalls"] == 0
    assert false_failovers({"vip_moves": 0, "both_held": 0}) == 0


def test_log_figures_of_hbd_and_heartbeat() -> None:
    hbd = ("2026-12-07 11:40:00,000 WARNING Late heartbeat: Node n1: interval 230 ms\n"
           "2026-12-07 11:40:01,000 CRITICAL Late heartbeat: Node n1: interval 410 ms "
           "(> deadtime)\n2026-12-07 11:40:01,000 WARNING node n1: is dead\n")
    figures = log_figures("hbd", {"n2": hbd})
    assert (figures["late_heartbeats"], figures["late_max_ms"], figures["dead"]) == (2, 410, 1)
    heartbeat = ("Dec 07 11:40:00 n2 heartbeat: [77]: WARN: Late heartbeat: Node n1: "
                 "interval 520 ms\nDec 07 11:40:02 n2 heartbeat: [77]: WARN: node n1: is dead\n")
    figures = log_figures("heartbeat", {"n2": heartbeat})
    assert (figures["late_heartbeats"], figures["late_max_ms"], figures["dead"]) == (1, 520, 1)


def test_keepalived_state_changes() -> None:
    text = ("Mon Dec  7 11:40:00 2026: (VI_1) Entering MASTER STATE\n"
            "Mon Dec  7 11:40:03 2026: (VI_1) Entering BACKUP STATE\n")
    assert log_figures("keepalived", {"n2": text})["state_changes"] == [
        "n2: MASTER", "n2: BACKUP"]


def test_loop_stall_lines() -> None:
    text = ("2026-12-07 11:40:00,000 WARNING event loop stalled: hbd's timer ran 61 ms late "
            "(stall threshold 50 ms): heartbeats and deadtime checks were late\n"
            "2026-12-07 11:41:00,000 WARNING event loop stalled 3 times in the last minute, "
            "the worst 87 ms late (stall threshold 50 ms)\n"
            "2026-12-07 11:41:00,000 WARNING Late heartbeat: Node n1: interval 230 ms\n")
    figures = log_figures("hbd", {"n1": text})
    assert (figures["loop_stalls"], figures["loop_stall_max_ms"]) == (4, 87.0)
    assert LOOP_STALL.search("Late heartbeat: Node n1: interval 230 ms late") is None


def test_load_is_sized_from_the_machine(tmp_path: os.PathLike[str]) -> None:
    margin = 1 << 30
    load = plan_load(60, margin, tmp_path)  # type: ignore[arg-type]
    assert load.cpu == 2 * (os.cpu_count() or 1)
    assert load.limit <= mem_available() - margin + (64 << 20)  # MemAvailable moves a little
    assert load.vm_bytes < load.limit
    argv = load.argv()
    assert argv[:3] == ["stress-ng", "--cpu", str(load.cpu)]
    assert "--vm-keep" in argv and "--hdd" in argv and f"{load.seconds}s" in argv
    with pytest.raises(RuntimeError, match="MemAvailable"):
        plan_load(60, mem_available() + (1 << 30), tmp_path)  # type: ignore[arg-type]


def test_loop_lag_during_the_load_from_the_histogram() -> None:
    inf = float("inf")
    before = [(0.0005, 100), (0.005, 2), (0.05, 0), (inf, 0)]
    after = [(0.0005, 900), (0.005, 2), (0.05, 1), (inf, 0)]
    assert worst_bucket_ms(before, after) == 50.0
    assert worst_bucket_ms(before, before) == 0.0
    assert worst_bucket_ms(None, after) is None  # an hbd without LoopLagHistogram
    r = {"loop_lag_max_ms": 61.25, "loop_lag_soak_bucket_ms": 50.0}
    assert lag_cell(r) == "61.2 ms (soak: ≤ 50 ms)"
    assert lag_cell({"loop_lag_max_ms": None}) == "-"
