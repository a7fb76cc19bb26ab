"""When the addresses of a running group are announced again (hbd.conf `garp_refresh`).

keepalived's `garp_master_refresh`: switches and routers that age out their
tables forget a virtual address whose holder never speaks first, so the
holder re-announces it every N seconds.  hbd does it per group, N seconds
after the group reached `running` here and every N seconds after that, and
stops the moment the group leaves `running` (a stop must never race a late
announcement of an address the peer is taking over).

This module only keeps the deadlines; the daemon feeds it the group state
changes it dispatches, arms its one timer at `next_timer()` and sends one
announcement round for each key `due()` returns.
"""

from __future__ import annotations

RUNNING = "running"  # GroupState.RUNNING's value, as GroupStateChanged carries it


class RefreshSchedule:
    """Deadlines of the gratuitous-ARP refresh, one per group running here."""

    def __init__(self, interval: float = 0.0) -> None:
        self.interval = interval  # seconds; 0: off
        self._next: dict[str, float] = {}  # group key -> when it is due
        self._running: set[str] = set()  # running here, whether refreshing or not

    def configure(self, interval: float, now: float) -> None:
        """A reload: a new interval applies from now on to every running group."""
        if interval == self.interval:
            return
        self.interval = interval
        self._next = ({key: now + interval for key in self._running} if interval > 0 else {})

    def group_state(self, key: str, state: str, now: float) -> None:
        """A group of ours moved to `state` (GroupStateChanged.new)."""
        if state == RUNNING:
            self._running.add(key)
            if self.interval > 0:
                self._next[key] = now + self.interval
        else:
            self._running.discard(key)
            self._next.pop(key, None)

    def next_timer(self) -> float | None:
        return min(self._next.values()) if self._next else None

    def due(self, now: float) -> list[str]:
        """The groups to announce now, in key order; each is due again an interval later.

        Counted from its own deadline, so that a late timer does not make the
        refresh drift; a timer late by more than an interval sends one round.
        """
        keys = sorted(key for key, at in self._next.items() if at <= now)
        for key in keys:
            at = self._next[key] + self.interval
            self._next[key] = at if at > now else now + self.interval
        return keys
