"""The loop-lag figure and its stall line (hbd/looplag.py), on a fake clock."""

from __future__ import annotations

import logging
import math

import pytest

from hbd.eventlog import MessageId
from hbd.looplag import BUCKETS, LoopLag, StallLog, stall_threshold


def test_observe_fills_one_bucket_each_upper_bound_inclusive() -> None:
    lag = LoopLag()
    for value in (-0.0001, 0.0005, 0.0007, 0.3, 7.0):
        lag.observe(value)
    by_bound = dict(lag.histogram())
    assert by_bound[0.0005] == 2  # early counts as on time; a bound is inclusive
    assert by_bound[0.001] == 1 and by_bound[0.5] == 1 and by_bound[math.inf] == 1
    assert sum(lag.counts) == lag.count == 5
    assert lag.max_s == 7.0 and lag.sum_s == pytest.approx(0.0005 + 0.0007 + 0.3 + 7.0)
    assert lag.late() == 3
    assert lag.buckets == BUCKETS and len(lag.counts) == len(BUCKETS)


def test_buckets_must_ascend_to_infinity() -> None:
    with pytest.raises(ValueError):
        LoopLag((0.1, 0.05, math.inf))
    with pytest.raises(ValueError):
        LoopLag((0.1, 1.0))


def test_stall_threshold_is_half_a_keepalive_at_least_20ms() -> None:
    assert stall_threshold(100) == 0.05
    assert stall_threshold(2000) == 1.0
    assert stall_threshold(20) == 0.02


def test_stall_line_once_a_minute_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hbd.looplag")
    stalls = StallLog(0.05)
    stalls.observe(0.01, 100.0)  # on time: nothing
    stalls.observe(0.2, 101.0)
    assert [r.getMessage() for r in caplog.records] == [
        "event loop stalled: hbd's timer ran 200 ms late (stall threshold 50 ms): "
        "heartbeats and deadtime checks were late"]
    record = caplog.records[0]
    assert record.MESSAGE_ID == MessageId.LOOP_STALL  # type: ignore[attr-defined]
    assert record.HBD_LAG_USEC == "200000"  # type: ignore[attr-defined]
    caplog.clear()
    stalls.observe(0.3, 120.0)
    stalls.observe(0.1, 150.0)
    stalls.observe(0.0, 160.0)
    assert not caplog.records  # held back: the minute is not over
    stalls.observe(0.0, 161.0)  # an ordinary firing after the minute reports them
    assert [r.getMessage() for r in caplog.records] == [
        "event loop stalled 2 times in the last minute, the worst 300 ms late "
        "(stall threshold 50 ms)"]
    caplog.clear()
    stalls.observe(0.0, 500.0)
    assert not caplog.records  # nothing held: nothing to say
