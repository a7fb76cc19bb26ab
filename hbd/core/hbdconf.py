"""Parser for hbd.conf: hbd's own settings, in a file Heartbeat never reads.

Heartbeat 3.0.6 refuses an ha.cf holding a directive it does not know, and a
mixed cluster (hbd beside Heartbeat during a migration) shares one ha.cf.  So
what only hbd understands lives in `/etc/ha.d/hbd.conf` (`HBD_CONF`), written
like ha.cf: one `directive value...` per line, `#` starts a comment, every
problem reported as `file:line`, all at once.  The file is optional: without
it every setting has its default.

Directives are added to `HANDLERS`; each reads its arguments and records its
value in the parse state, and `_finish` freezes them into `HbdConf`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hbd.core.config import HbdConf
from hbd.core.parsing import Problems, content_lines, is_decimal, parse_time_ms

HBD_CONF = "hbd.conf"  # the file's name, beside ha.cf


@dataclass
class _State:
    """Mutable accumulator while walking the file; frozen into HbdConf at the end."""

    problems: Problems
    values: dict[str, object] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)  # directive -> line of its value


Handler = Callable[[_State, int, list[str]], None]


def _once(st: _State, line: int, name: str) -> bool:
    """A directive that takes one value: a second line is an error, not a silent override."""
    if name in st.lines:
        st.problems.error(line, f"{name}: already set at line {st.lines[name]}")
        return False
    st.lines[name] = line
    return True


def _one_value(st: _State, line: int, name: str, args: list[str]) -> str | None:
    if len(args) != 1:
        st.problems.error(line, f"{name}: needs exactly one value, got {len(args)}")
        return None
    return args[0]


def _int(name: str, low: int, high: int) -> Handler:
    def handle(st: _State, line: int, args: list[str]) -> None:
        value = _one_value(st, line, name, args)
        if value is None or not _once(st, line, name):
            return
        if not is_decimal(value) or not low <= int(value) <= high:
            st.problems.error(line, f"{name}: '{value}' is not a whole number "
                              f"from {low} to {high}")
            return
        st.values[name] = int(value)

    return handle


def _time(name: str, low_ms: int, high_ms: int) -> Handler:
    def handle(st: _State, line: int, args: list[str]) -> None:
        value = _one_value(st, line, name, args)
        if value is None or not _once(st, line, name):
            return
        ms = parse_time_ms(value)
        if ms is None or not low_ms <= ms <= high_ms:
            st.problems.error(line, f"{name}: bad time '{value}' (from {low_ms} ms to "
                              f"{high_ms // 1000} s: seconds like 2 or 1.5, or milliseconds "
                              "like 500ms)")
            return
        st.values[name] = ms

    return handle


HANDLERS: dict[str, Handler] = {
    # gratuitous ARPs (unsolicited NAs) sent for each address a group brings up
    "arp_count": _int("arp_count", 0, 100),
    "arp_interval": _time("arp_interval", 1, 10_000),
}


def parse_hbdconf(text: str, *, filename: str = HBD_CONF) -> tuple[HbdConf, Problems]:
    """Parse hbd.conf text.  Returns the settings and every problem found.

    Never raises on bad input: the caller decides what errors mean (refuse to
    start, keep the running configuration on reload).
    """
    st = _State(problems=Problems(filename))
    for line, content in content_lines(text):
        directive, *args = content.split()
        handler = HANDLERS.get(directive)
        if handler is None:
            st.problems.error(line, f"unknown directive '{directive}' (known: "
                              f"{', '.join(sorted(HANDLERS))})")
            continue
        handler(st, line, args)
    return _finish(st), st.problems


def _finish(st: _State) -> HbdConf:
    count = st.values.get("arp_count")
    interval = st.values.get("arp_interval")
    assert count is None or isinstance(count, int)
    assert interval is None or isinstance(interval, int)
    return HbdConf(present=True, lines=dict(st.lines), arp_count=count,
                   arp_interval_ms=interval)
