"""What the metrics count that no snapshot holds: events summed over time.

A snapshot (hbd.control) says how the cluster is now; Prometheus also wants
how often things happened: late heartbeats, split brains, fence results,
monitor results, and failovers with how long each took.  The service feeds
every dispatched batch of actions here (`feed`), plus the admin commands and
monitor results that are not actions (`command`, `monitor_result`), always
with `now`; `counters()` hands back an immutable copy for the metrics view.

A failover is timed from its trigger to the group running here.  Triggers
are the events that make a group move here: a peer's death (timed from its
last heartbeat, so the deadtime it took to notice is part of the failover), a
peer leaving the corosync membership, a takeover request here, a monitor
failure (for its own group's restart), a tracked link lost (for the groups
tracking it, until it is back).  The latest one within TRIGGER_WINDOW is the trigger of a
StartGroup that follows, and of the others started with it (within
SAME_FAILOVER), never of a later one; a start with none (the peer's own
standby, seen here only as its release) is timed from the start itself.  Starts at
start-up or after a configuration change are not failovers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hbd.core.actions import (
    Action,
    FenceStateChanged,
    GroupFailed,
    GroupStateChanged,
    LateHeartbeat,
    MembershipChanged,
    NodeStatusChanged,
    SplitBrain,
    StartGroup,
    TrackedLinkChanged,
)

# Upper bounds (seconds) of the failover-duration histogram: deadtime-scale
# takeovers land in the first buckets, slow resource agents in the last.
FAILOVER_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                                       float("inf"))
TRIGGER_WINDOW = 300.0  # seconds: an older trigger is not what made a group start
SAME_FAILOVER = 1.0  # seconds: starts this close to the trigger's first start share it
# StartGroup reasons that are not failovers (hbd.core.failover, placement, recovery)
_NOT_FAILOVER = ("our own groups at start-up", "added to haresources")
# why a failover happened: the label values of hbd_failovers_total{reason}
REASONS = ("peer_dead", "request", "monitor", "link", "other")


@dataclass(frozen=True)
class Histogram:
    buckets: tuple[float, ...]  # upper bounds, ascending, the last +inf
    counts: tuple[int, ...]  # per bucket, not cumulative
    count: int
    sum_s: float


@dataclass(frozen=True)
class Failover:
    """One failover that ended with the group running here: the figure the
    histogram observed, handed to the journal entry that ends the start."""

    group: str
    reason: str  # one of REASONS
    seconds: float  # from its trigger to the group running


@dataclass(frozen=True)
class Counters:
    """An immutable copy of everything counted, for one metrics view."""

    late_heartbeats: tuple[tuple[str, int], ...] = ()  # (node, count)
    split_brains: tuple[tuple[str, int], ...] = ()  # (group, count)
    fence_results: tuple[tuple[tuple[str, str], int], ...] = ()  # ((node, result), count)
    monitor_results: tuple[tuple[tuple[str, str], int], ...] = ()  # ((group, ok|failed), n)
    failovers: tuple[tuple[tuple[str, str], int], ...] = ()  # ((group, reason), count)
    failover_seconds: Histogram = field(default_factory=lambda: _empty_histogram())
    group_failures: tuple[tuple[tuple[str, str], int], ...] = ()  # ((group, operation), n)


def _empty_histogram() -> Histogram:
    return Histogram(FAILOVER_BUCKETS, (0,) * len(FAILOVER_BUCKETS), 0, 0.0)


def _bump(table: dict[str, int], key: str, by: int = 1) -> None:
    table[key] = table.get(key, 0) + by


class Telemetry:
    """Counts events as they are dispatched; pure (no clock, no I/O)."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._late: dict[str, int] = {}
        self._split: dict[str, int] = {}
        self._fence: dict[tuple[str, str], int] = {}
        self._monitor: dict[tuple[str, str], int] = {}
        self._failovers: dict[tuple[str, str], int] = {}
        self._failures: dict[tuple[str, str], int] = {}
        self._hist = [0] * len(FAILOVER_BUCKETS)
        self._hist_count = 0
        self._hist_sum = 0.0
        self._trigger: tuple[str, float] | None = None  # (reason, when)
        self._trigger_used: float | None = None  # when a start first took it
        self._trigger_groups: tuple[str, ...] | None = None  # the only groups it moves
        self._starting: dict[str, tuple[str, float]] = {}  # group -> (reason, since)
        self._ended: dict[str, Failover] = {}  # group -> its failover that just ended
        self.changes = 0  # bumped whenever anything counted changed

    # --- feeding ------------------------------------------------------------------------

    def feed(self, actions: list[Action], now: float) -> None:
        for action in actions:
            self._one(action, now)

    def command(self, method: str, now: float) -> None:
        """An admin's takeover or standby (D-Bus, hbctl, Heartbeat's FIFO).  Only a
        takeover starts groups here: a standby here starts them on the peer (timed
        there from the start, as its trigger is not seen there), and taken as a
        trigger here it would time a later, unrelated start from it."""
        if method == "takeover":
            self._set_trigger("request", now)

    def _set_trigger(self, reason: str, now: float,
                     groups: tuple[str, ...] | None = None) -> None:
        self._trigger = (reason, now)
        self._trigger_used = None
        self._trigger_groups = groups

    def monitor_result(self, group: str, ok: bool) -> None:
        key = (group, "ok" if ok else "failed")
        self._monitor[key] = self._monitor.get(key, 0) + 1
        self.changes += 1

    def _one(self, action: Action, now: float) -> None:
        if isinstance(action, LateHeartbeat):
            _bump(self._late, action.node)
        elif isinstance(action, NodeStatusChanged):
            if action.new == "dead" and not action.local:
                heard = action.last_heard
                self._set_trigger("peer_dead", heard if heard is not None and heard <= now
                                  else now)
            return
        elif isinstance(action, MembershipChanged):
            if action.left:
                self._set_trigger("peer_dead", now)
            return
        elif isinstance(action, TrackedLinkChanged):
            if action.new != "up":
                self._set_trigger("link", now, action.groups)
            elif self._trigger is not None and self._trigger[0] == "link":
                self._trigger = None  # back: what it moved may come home, not its failover
            return
        elif isinstance(action, GroupFailed):
            key = (action.group, action.operation)
            self._failures[key] = self._failures.get(key, 0) + 1
            if action.operation == "monitor":  # restarts that group, no other
                self._set_trigger("monitor", now, (action.group,))
        elif isinstance(action, SplitBrain):
            _bump(self._split, action.group)
        elif isinstance(action, FenceStateChanged):
            if action.new in ("fenced", "failed"):
                key = (action.node, "ok" if action.new == "fenced" else "failed")
                self._fence[key] = self._fence.get(key, 0) + 1
            else:
                return
        elif isinstance(action, StartGroup):
            self._started(action, now)
            return
        elif isinstance(action, GroupStateChanged):
            self._group_moved(action, now)
        else:
            return
        self.changes += 1

    def _started(self, action: StartGroup, now: float) -> None:
        if action.reason.startswith(_NOT_FAILOVER):
            return
        trigger, used = self._trigger, self._trigger_used
        if self._trigger_groups is not None and action.group not in self._trigger_groups:
            trigger = None
        if trigger is not None and (now - trigger[1] <= TRIGGER_WINDOW if used is None
                                    else now - used <= SAME_FAILOVER):
            self._starting[action.group] = trigger
            if used is None:
                self._trigger_used = now
        else:
            self._starting[action.group] = (_reason_of(action.reason), now)

    def _group_moved(self, action: GroupStateChanged, now: float) -> None:
        self._ended.pop(action.group, None)  # ended by an earlier change: not this one's
        pending = self._starting.get(action.group)
        if pending is None or action.new == "starting":
            return
        del self._starting[action.group]
        if action.new != "running":
            return  # the start failed or was abandoned: not a failover that happened
        reason, since = pending
        key = (action.group, reason)
        self._failovers[key] = self._failovers.get(key, 0) + 1
        took = max(0.0, now - since)
        self._ended[action.group] = Failover(action.group, reason, took)
        self._hist_count += 1
        self._hist_sum += took
        for index, bound in enumerate(FAILOVER_BUCKETS):
            if took <= bound:
                self._hist[index] += 1
                break

    # --- reading ------------------------------------------------------------------------

    def take_failover(self, group: str) -> Failover | None:
        """The failover that `group`'s latest GroupStateChanged ended, once (the
        journal entry of that change carries it); None: that change ended none."""
        return self._ended.pop(group, None)

    def counters(self) -> Counters:
        return Counters(
            late_heartbeats=tuple(sorted(self._late.items())),
            split_brains=tuple(sorted(self._split.items())),
            fence_results=tuple(sorted(self._fence.items())),
            monitor_results=tuple(sorted(self._monitor.items())),
            failovers=tuple(sorted(self._failovers.items())),
            failover_seconds=Histogram(FAILOVER_BUCKETS, tuple(self._hist), self._hist_count,
                                       self._hist_sum),
            group_failures=tuple(sorted(self._failures.items())),
        )


def _reason_of(text: str) -> str:
    """A StartGroup reason with no trigger seen here, as one of REASONS."""
    lowered = text.lower()
    if "died" in lowered or "dead" in lowered:
        return "peer_dead"
    if "released" in lowered or "takeover" in lowered or "standby" in lowered:
        return "request"
    if "monitor" in lowered:
        return "monitor"
    return "other"
