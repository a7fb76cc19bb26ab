"""Resource health bookkeeping: monitor schedules, fail counts, restarts, "unfit here".

Pure state, no protocol: hbd.core.recovery decides what to do with it
(restart in place, hand the group to the peer, refuse to take it back).

* A `_Watch` is one hbd.conf `monitor` line bound to its group.  It is due
  `interval` after the group became RUNNING here and after each check
  ended; a group that is starting or stopping has no schedule (its check
  waits for the next RUNNING).  Each check carries a token: a result whose
  token is not the one in flight (the group was stopped and started again
  meanwhile, or the config was reloaded) is stale and ignored.
* `failures` consecutive failed checks make one failure of the group; its
  fail count grows by one and the group is restarted in place while the
  `restart` policy allows (max restarts within a sliding window), else it
  becomes unfit here.
* Unfit here: a per-group set of named reasons (`monitor` for a failure
  beyond its limit; later `link:IFACE` from link tracking).  While a group
  has any, this node neither runs nor takes it.  A reason may expire
  (failure_expiry) and may be cleared by `hbctl cleanup` (admin_clears).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hbd.core.actions import RunMonitor
from hbd.core.config import ClusterConfig, MonitorConf

MONITOR_REASON = "monitor"


@dataclass(frozen=True)
class UnfitReason:
    """Why a group must not run on this node."""

    name: str  # "monitor", "link:eth0", ...
    detail: str  # for logs, hbctl status and D-Bus
    since: float  # wall clock
    expires_at: float | None = None  # monotonic; None: until cleared
    stop_when_stranded: bool = False  # nobody can take it: stop it (else it keeps running)
    admin_clears: bool = False  # `hbctl cleanup GROUP` removes it


@dataclass
class _Watch:
    conf: MonitorConf
    group: str
    resources: tuple[str, ...]
    next_at: float | None = None
    token: int | None = None  # the check in flight
    consecutive: int = 0


@dataclass
class GroupHealth:
    """What an admin sees of one group's health on this node."""

    fail_count: int = 0  # failures (after `failures` consecutive bad checks) since cleanup
    last_result: str = ""  # "", "ok" or "failed"
    last_detail: str = ""
    last_at: float = 0.0  # wall clock of the last check's end
    restarts: list[float] = field(default_factory=list)  # monotonic, within the window
    unfit: dict[str, UnfitReason] = field(default_factory=dict)


class Health:
    """Every group's monitors and health; the group states come from the caller."""

    def __init__(self, config: ClusterConfig) -> None:
        self.groups: dict[str, GroupHealth] = {}
        self.watches: list[_Watch] = []
        self.restart_max: dict[str, tuple[int, float]] = {}  # key -> (max, window s)
        self.expiry: dict[str, float] = {}  # key -> seconds (absent: never)
        self._tokens = 0
        self.handover_at: float | None = None  # when recovery tries handing over again
        self.configure(config)

    def configure(self, config: ClusterConfig) -> None:
        """(Re)bind the monitor lines; a kept group keeps its counts and reasons."""
        keys = {g.key: g for g in config.groups}
        owner = {r.id: g.key for g in config.groups for r in g.resources}
        old = {(w.group, w.conf.target): w for w in self.watches}
        self.watches = []
        for conf in config.hbd.monitors:
            key = conf.target if conf.target in keys else owner.get(conf.target)
            if key is None:  # assemble refuses such a config; a direct caller gets no watch
                continue
            resources = (tuple(r.id for r in keys[key].resources) if conf.target == key
                         else (conf.target,))
            watch = _Watch(conf, key, resources)
            kept = old.get((key, conf.target))
            if kept is not None and kept.conf == conf:
                watch.next_at, watch.token, watch.consecutive = (
                    kept.next_at, kept.token, kept.consecutive)
            self.watches.append(watch)
        self.restart_max = {r.group: (r.max, r.window_ms / 1000.0) for r in config.hbd.restarts}
        self.expiry = {e.group: e.expiry_ms / 1000.0 for e in config.hbd.expiries
                       if e.expiry_ms > 0}
        self.groups = {k: self.groups.get(k, GroupHealth()) for k in keys}

    def of(self, key: str) -> GroupHealth:
        return self.groups.setdefault(key, GroupHealth())

    def monitored(self, key: str) -> bool:
        return any(w.group == key for w in self.watches)

    # --- schedules ---------------------------------------------------------------------

    def sync(self, running: set[str], now: float) -> None:
        """Schedule the checks of groups that are RUNNING; drop those of the others."""
        for watch in self.watches:
            if watch.group not in running:
                watch.next_at = watch.token = None
                watch.consecutive = 0
            elif watch.next_at is None and watch.token is None:
                watch.next_at = now + watch.conf.interval_ms / 1000.0

    def due(self, running: set[str], now: float) -> list[RunMonitor]:
        """The checks whose time has come (only of RUNNING groups, one at a time each)."""
        out: list[RunMonitor] = []
        for watch in self.watches:
            if (watch.group in running and watch.token is None and watch.next_at is not None
                    and now >= watch.next_at):
                self._tokens += 1
                watch.token, watch.next_at = self._tokens, None
                out.append(RunMonitor(watch.group, watch.resources,
                                      watch.conf.timeout_ms / 1000.0, watch.token))
        return out

    def next_timer(self) -> float | None:
        due = [w.next_at for w in self.watches if w.next_at is not None and w.token is None]
        due += [r.expires_at for h in self.groups.values() for r in h.unfit.values()
                if r.expires_at is not None]
        if self.handover_at is not None:
            due.append(self.handover_at)
        return min(due) if due else None

    def result(self, key: str, token: int, ok: bool, detail: str, now: float,
               wall: float) -> bool | None:
        """A check ended.  None: stale (ignored); True: the group failed (the `failures`-th
        consecutive bad check); False: recorded, nothing to do."""
        watch = next((w for w in self.watches if w.group == key and w.token == token), None)
        if watch is None:
            return None
        watch.token = None
        watch.next_at = now + watch.conf.interval_ms / 1000.0
        health = self.of(key)
        health.last_result, health.last_detail, health.last_at = (
            "ok" if ok else "failed", detail, wall)
        if ok:
            watch.consecutive = 0
            return False
        watch.consecutive += 1
        if watch.consecutive < watch.conf.failures:
            return False
        watch.consecutive = 0
        health.fail_count += 1
        return True

    def may_restart(self, key: str, now: float) -> bool:
        """Whether the restart policy allows one more restart now (and records it)."""
        most, window = self.restart_max.get(key, (0, 0.0))
        health = self.of(key)
        health.restarts = [t for t in health.restarts if now - t < window]
        if len(health.restarts) >= most:
            return False
        health.restarts.append(now)
        return True

    # --- unfit here ----------------------------------------------------------------------

    def unfit(self, key: str) -> list[UnfitReason]:
        health = self.groups.get(key)
        return list(health.unfit.values()) if health is not None else []

    def expired(self, now: float) -> list[tuple[str, UnfitReason]]:
        """Remove and return the reasons whose time is up (a monitor failure's count too)."""
        out = []
        for key, health in self.groups.items():
            for name, reason in list(health.unfit.items()):
                if reason.expires_at is not None and now >= reason.expires_at:
                    del health.unfit[name]
                    if name == MONITOR_REASON:
                        health.fail_count = 0
                        health.restarts.clear()
                    out.append((key, reason))
        return out

    def clear_failures(self, key: str) -> bool:
        """`hbctl cleanup`: forget the fail count and the reasons an admin may clear."""
        health = self.groups.get(key)
        if health is None:
            return False
        cleared = [n for n, r in health.unfit.items() if r.admin_clears]
        had = bool(cleared) or health.fail_count > 0 or bool(health.restarts)
        for name in cleared:
            del health.unfit[name]
        health.fail_count = 0
        health.restarts.clear()
        for watch in self.watches:
            if watch.group == key:
                watch.consecutive = 0
        return had
