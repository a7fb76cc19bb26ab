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

from hbd.core.config import DEFAULT_NOTIFY_TIMEOUT_MS, HbdConf
from hbd.core.parsing import Problems, content_lines, is_decimal, one_value, parse_time_ms

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


def _int(name: str, low: int, high: int) -> Handler:
    def handle(st: _State, line: int, args: list[str]) -> None:
        value = one_value(st.problems, line, name, args)
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
        value = one_value(st.problems, line, name, args)
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


def _path_problem(value: str) -> str | None:
    if not value.startswith("/"):
        return "is not an absolute path"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "holds a control character"
    if len(value) > 4096:
        return "is longer than 4096 characters"
    return None


def _notify(st: _State, line: int, args: list[str]) -> None:
    """`notify PATH`, repeatable: whether PATH exists is the run time's business (logged)."""
    value = one_value(st.problems, line, "notify", args)
    if value is None:
        return
    problem = _path_problem(value)
    if problem is not None:
        st.problems.error(line, f"notify: '{value}' {problem}")
        return
    hooks = st.values.setdefault("notify", {})
    assert isinstance(hooks, dict)
    if value in hooks:
        st.problems.error(line, f"notify: {value} already listed at line {hooks[value]}")
        return
    hooks[value] = line
    st.lines.setdefault("notify", line)


def _notify_dir(st: _State, line: int, args: list[str]) -> None:
    value = one_value(st.problems, line, "notify_dir", args)
    if value is None or not _once(st, line, "notify_dir"):
        return
    if value.lower() in ("off", "none"):
        st.values["notify_dir"] = ""
        return
    problem = _path_problem(value)
    if problem is not None:
        st.problems.error(line, f"notify_dir: '{value}' {problem} (or 'off')")
        return
    st.values["notify_dir"] = value


def _garp_refresh(st: _State, line: int, args: list[str]) -> None:
    value = one_value(st.problems, line, "garp_refresh", args)
    if value is None or not _once(st, line, "garp_refresh"):
        return
    ms = 0 if value.lower() == "off" else parse_time_ms(value)
    if ms is None or not (ms == 0 or 100 <= ms <= 86_400_000):
        st.problems.error(line, f"garp_refresh: bad time '{value}' (0 or off, or from 100 ms "
                          "to 86400 s: seconds like 60, or milliseconds like 500ms)")
        return
    st.values["garp_refresh"] = ms


HANDLERS: dict[str, Handler] = {
    # gratuitous ARPs (unsolicited NAs) sent for each address a group brings up
    "arp_count": _int("arp_count", 0, 100),
    "arp_interval": _time("arp_interval", 1, 10_000),
    # re-announce the addresses of running groups (keepalived's garp_master_refresh)
    "garp_refresh": _garp_refresh,
    # notify hooks (hbd/hooks.py)
    "notify": _notify,
    "notify_dir": _notify_dir,
    "notify_timeout": _time("notify_timeout", 10, 3_600_000),
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
    hooks = st.values.get("notify", {})
    notify_dir = st.values.get("notify_dir")
    timeout = st.values.get("notify_timeout", DEFAULT_NOTIFY_TIMEOUT_MS)
    refresh = st.values.get("garp_refresh", 0)
    assert isinstance(hooks, dict) and isinstance(timeout, int) and isinstance(refresh, int)
    assert notify_dir is None or isinstance(notify_dir, str)
    return HbdConf(present=True, lines=dict(st.lines), arp_count=count,
                   arp_interval_ms=interval, notify=tuple(hooks), notify_dir=notify_dir,
                   notify_timeout_ms=timeout, garp_refresh_ms=refresh)
