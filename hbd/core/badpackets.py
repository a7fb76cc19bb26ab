"""Counting dropped packets without one log line per packet.

The first drop for a reason is reported at once; later ones are summed and
reported at most once per interval, so a flood costs a few lines a minute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hbd.core.actions import Action, BadPackets
from hbd.core.fields import shown


@dataclass
class _Pending:
    count: int = 0
    last_source: str = "?"
    link: str = "?"
    next_report: float = 0.0


@dataclass
class BadPacketLog:
    interval: float = 10.0
    totals: dict[str, int] = field(default_factory=dict)
    _pending: dict[str, _Pending] = field(default_factory=dict)

    def record(self, reason: str, source: str, link: str, now: float) -> list[Action]:
        self.totals[reason] = self.totals.get(reason, 0) + 1
        pending = self._pending.setdefault(reason, _Pending())
        pending.count += 1
        pending.last_source = source  # attacker-chosen: escaped when reported, not per packet
        pending.link = link
        if now >= pending.next_report:
            return self._report(reason, pending, now)
        return []

    def _report(self, reason: str, pending: _Pending, now: float) -> list[Action]:
        report = BadPackets(reason, pending.count, shown(pending.last_source), pending.link)
        pending.count = 0
        pending.next_report = now + self.interval
        return [report]

    def flush(self, now: float) -> list[Action]:
        out: list[Action] = []
        for reason, pending in self._pending.items():
            if pending.count and now >= pending.next_report:
                out += self._report(reason, pending, now)
        return out

    def next_timer(self) -> float | None:
        due = [p.next_report for p in self._pending.values() if p.count]
        return min(due) if due else None


def claimed_sender(data: bytes) -> str:
    """The `src` a datagram claims, for the log only (it failed authentication)."""
    start = data.find(b")src=")
    if start < 0:
        return "?"
    end = data.find(b",", start, start + 80)
    return data[start + 5:end].decode("ascii", errors="replace") if end > 0 else "?"
