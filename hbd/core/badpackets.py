"""Counting dropped packets without one log line per packet.

The first drop for a reason is reported at once; later ones are summed and
reported at most once per interval, so a flood costs a few lines a minute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hbd.core.actions import Action, BadPackets

SHOWN_SOURCE = 64  # characters of a claimed sender shown in the log


def _shown(source: str) -> str:
    """A claimed sender as one short printable word: it is attacker-chosen text.

    A newline in it would forge log lines; 200 KB of it would be a 200 KB line.
    """
    cut = source[:SHOWN_SOURCE]
    cleaned = "".join(c if c.isprintable() and not c.isspace() else "?" for c in cut)
    return cleaned + "..." if len(source) > SHOWN_SOURCE else cleaned


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
        pending.last_source = _shown(source)
        pending.link = link
        if now >= pending.next_report:
            return self._report(reason, pending, now)
        return []

    def _report(self, reason: str, pending: _Pending, now: float) -> list[Action]:
        report = BadPackets(reason, pending.count, pending.last_source, pending.link)
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
