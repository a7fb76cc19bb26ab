"""How late the event loop runs hbd's timer: the pauses of hbd's own making.

hbd has one timer (hbd.service `_arm`/`_on_timer`): heartbeat sends,
deadtime checks, retransmissions, the watchdog all come out of it.  When it
fires, the time since it was due is the loop's lag: the work that ran
before it (a packet burst, a status build, a garbage collection, a lazy
import, a slow log handler) or the machine not giving hbd a CPU (load, a
SIGSTOP).  Measuring there costs no extra wake-up.

`LoopLag` is the figure (the shared contract: `buckets` are upper bounds in
seconds, ascending, the last +inf; `counts` one per bucket, not cumulative;
`count`, `sum_s`, `max_s` since start), shown by D-Bus (LoopLagMax,
LoopLagHistogram), `hbctl status` and the metrics.  `StallLog` writes the
journal line for a bad stall (lag beyond half the keepalive), at most one a
minute with a count of those it left out.  `GcPauses` times the garbage
collector's runs (gc.callbacks): after start-up hbd freezes what it built
(gc.freeze, hbd.service `_ready`) so that an oldest-generation run walks only
what was made since, not every module, config and D-Bus object.
"""

from __future__ import annotations

import bisect
import gc
import logging
import math
import time
from typing import Any

from hbd.eventlog import MessageId

log = logging.getLogger(__name__)

BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
                              1.0, 2.0, 5.0, math.inf)
STALL_FLOOR_S = 0.02  # never call less than this a stall, whatever the keepalive
STALL_LOG_INTERVAL_S = 60.0


class LoopLag:
    """A histogram of how late the timer fired, in seconds."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        if not buckets or buckets[-1] != math.inf or list(buckets) != sorted(set(buckets)):
            raise ValueError("buckets must ascend and end with +inf")
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.count = 0
        self.sum_s = 0.0
        self.max_s = 0.0

    def observe(self, lag_s: float) -> None:
        """One firing, `lag_s` after it was due (asyncio may fire a hair early: 0)."""
        lag_s = max(lag_s, 0.0)
        self.counts[bisect.bisect_left(self.buckets, lag_s)] += 1
        self.count += 1
        self.sum_s += lag_s
        if lag_s > self.max_s:
            self.max_s = lag_s

    def histogram(self) -> tuple[tuple[float, int], ...]:
        """(upper bound in seconds, count) for each bucket."""
        return tuple(zip(self.buckets, self.counts, strict=True))

    def late(self) -> int:
        """Firings later than the first bucket (what is worth announcing)."""
        return self.count - self.counts[0]


def stall_threshold(keepalive_ms: int) -> float:
    """A stall worth a journal line: half a keepalive late (a heartbeat visibly late)."""
    return max(keepalive_ms / 2000.0, STALL_FLOOR_S)


class StallLog:
    """The rate-limited warning for a bad stall (MESSAGE_ID LOOP_STALL)."""

    def __init__(self, threshold_s: float) -> None:
        self.threshold_s = threshold_s
        self._next_at = -math.inf  # when the next line may be written
        self._held = 0  # stalls not logged since the last line
        self._held_worst = 0.0

    def observe(self, lag_s: float, now: float) -> None:
        if lag_s >= self.threshold_s:
            self._held += 1
            self._held_worst = max(self._held_worst, lag_s)
        if self._held and now >= self._next_at:
            self._write(lag_s if lag_s >= self.threshold_s else None, now)

    def _write(self, lag_s: float | None, now: float) -> None:
        extra = {"MESSAGE_ID": MessageId.LOOP_STALL,
                 "HBD_LAG_USEC": str(int(self._held_worst * 1e6))}
        if lag_s is not None and self._held == 1:
            log.warning("event loop stalled: hbd's timer ran %.0f ms late (stall threshold "
                        "%.0f ms): heartbeats and deadtime checks were late", lag_s * 1000,
                        self.threshold_s * 1000, extra=extra)
        else:
            log.warning("event loop stalled %d times in the last minute, the worst %.0f ms "
                        "late (stall threshold %.0f ms)", self._held, self._held_worst * 1000,
                        self.threshold_s * 1000, extra=extra)
        self._held, self._held_worst = 0, 0.0
        self._next_at = now + STALL_LOG_INTERVAL_S


class GcPauses:
    """How long the garbage collector held the loop, per generation (gc.callbacks)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.max_s = [0.0, 0.0, 0.0]
        self._started = 0.0

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = int(info.get("generation", 0))
        if 0 <= generation <= 2:
            pause = time.perf_counter() - self._started
            self.count[generation] += 1
            self.max_s[generation] = max(self.max_s[generation], pause)


def summary(lag: LoopLag, pauses: GcPauses | None = None) -> str:
    """One line for the log at stop: what the soak benchmarks read."""
    late = sum(n for b, n in lag.histogram() if b > 0.005)
    text = (f"loop lag since start: worst {lag.max_s * 1000:.1f} ms, {lag.count} timer "
            f"firings, {late} later than 5 ms")
    text += " (" + ", ".join(f"<={b * 1000:g}ms {n}" for b, n in lag.histogram()
                             if n and not math.isinf(b)) + ")"
    if pauses is not None:
        text += "; garbage collection: " + ", ".join(
            f"gen{g} {pauses.count[g]} runs, worst {pauses.max_s[g] * 1000:.2f} ms"
            for g in range(3))
    return text
