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

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from hbd.core.config import (
    DEFAULT_API_CLIENT_RATE,
    DEFAULT_API_CLIENTS_RATE,
    DEFAULT_METRICS_INTERVAL_MS,
    DEFAULT_NOTIFY_TIMEOUT_MS,
    ExpiryConf,
    FenceAgent,
    FenceSettings,
    HbdConf,
    MonitorConf,
    RestartConf,
    TrackConf,
)
from hbd.core.fields import shown
from hbd.core.parsing import Problems, content_lines, is_decimal, one_value, parse_time_ms

HBD_CONF = "hbd.conf"  # the file's name, beside ha.cf


@dataclass
class _State:
    """Mutable accumulator while walking the file; frozen into HbdConf at the end."""

    problems: Problems
    values: dict[str, object] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)  # directive -> line of its value
    agents: list[FenceAgent] = field(default_factory=list)
    monitors: list[MonitorConf] = field(default_factory=list)
    restarts: list[RestartConf] = field(default_factory=list)
    expiries: list[ExpiryConf] = field(default_factory=list)
    tracks: list[TrackConf] = field(default_factory=list)


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


_DURATION = re.compile(r"^(\d{1,9}(?:\.\d{1,3})?)(ms|s|sec|m|min|h|d)?$")
_UNIT_MS = {"ms": 1, "s": 1000, "sec": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000,
            "d": 86_400_000}
DURATION_HELP = "a number with ms, s, min, h or d (plain: seconds), like 10s, 500ms, 10min, 1h"


def parse_duration_ms(text: str) -> int | None:
    """`10s`, `500ms`, `10min`, `1h`, `2d`, or plain seconds; None when not one of those."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        return None
    return int(float(match.group(1)) * _UNIT_MS[match.group(2) or "s"] + 0.5)


def _options(st: _State, line: int, name: str, args: list[str],
             known: tuple[str, ...]) -> dict[str, str] | None:
    """`key=value` arguments; an unknown or repeated key is an error (None)."""
    out: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in known:
            st.problems.error(line, f"{name}: '{arg}' is not one of "
                              f"{', '.join(k + '=' for k in known)}")
            return None
        if key in out:
            st.problems.error(line, f"{name}: {key}= given twice")
            return None
        out[key] = value
    return out


def _duration_opt(st: _State, line: int, name: str, opts: dict[str, str], key: str,
                  default: int, low: int, high: int) -> int | None:
    if key not in opts:
        return default
    ms = parse_duration_ms(opts[key])
    if ms is None or not low <= ms <= high:
        st.problems.error(line, f"{name}: {key}='{opts[key]}' is not a time from "
                          f"{_shown_ms(low)} to {_shown_ms(high)} ({DURATION_HELP})")
        return None
    return ms


def _shown_ms(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _target(st: _State, line: int, name: str, args: list[str], usage: str) -> str | None:
    if not args:
        st.problems.error(line, f"{name}: needs a group or resource first ({usage})")
        return None
    return args[0]


def _monitor(st: _State, line: int, args: list[str]) -> None:
    usage = "monitor GROUP|RESOURCE [interval=10s] [timeout=20s] [failures=1]"
    target = _target(st, line, "monitor", args, usage)
    opts = None if target is None else _options(st, line, "monitor", args[1:],
                                                  ("interval", "timeout", "failures"))
    if target is None or opts is None:
        return
    earlier = next((m.line for m in st.monitors if m.target == target), None)
    if earlier is not None:
        st.problems.error(line, f"monitor: {target} is already monitored at line {earlier}")
        return
    interval = _duration_opt(st, line, "monitor", opts, "interval", 10_000, 100, 86_400_000)
    timeout = _duration_opt(st, line, "monitor", opts, "timeout", 20_000, 100, 3_600_000)
    failures = opts.get("failures", "1")
    if not is_decimal(failures) or not 1 <= int(failures) <= 100:
        st.problems.error(line, f"monitor: failures='{failures}' is not a whole number "
                          "from 1 to 100")
        return
    if interval is None or timeout is None:
        return
    st.monitors.append(MonitorConf(target, interval, timeout, int(failures), line))


def _restart(st: _State, line: int, args: list[str]) -> None:
    usage = "restart GROUP max=N [window=10min]"
    group = _target(st, line, "restart", args, usage)
    opts = None if group is None else _options(st, line, "restart", args[1:],
                                                 ("max", "window"))
    if group is None or opts is None:
        return
    earlier = next((r.line for r in st.restarts if r.group == group), None)
    if earlier is not None:
        st.problems.error(line, f"restart: {group} already has a policy at line {earlier}")
        return
    if "max" not in opts:
        st.problems.error(line, f"restart: max= is missing ({usage})")
        return
    count = opts["max"]
    if not is_decimal(count) or not 0 <= int(count) <= 1000:
        st.problems.error(line, f"restart: max='{count}' is not a whole number from 0 to 1000")
        return
    window = _duration_opt(st, line, "restart", opts, "window", 600_000, 1000, 30 * 86_400_000)
    if window is not None:
        st.restarts.append(RestartConf(group, int(count), window, line))


def _failure_expiry(st: _State, line: int, args: list[str]) -> None:
    if len(args) != 2:
        st.problems.error(line, "failure_expiry: needs a group and a time or never "
                          f"(failure_expiry GROUP 1h), got {len(args)} value(s)")
        return
    group, value = args
    earlier = next((e.line for e in st.expiries if e.group == group), None)
    if earlier is not None:
        st.problems.error(line, f"failure_expiry: {group} already set at line {earlier}")
        return
    ms = 0 if value.lower() in ("never", "0") else parse_duration_ms(value)
    if ms is None or not 0 <= ms <= 365 * 86_400_000:
        st.problems.error(line, f"failure_expiry: '{value}' is not never or a time up to "
                          f"365d ({DURATION_HELP})")
        return
    st.expiries.append(ExpiryConf(group, ms, line))


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


# Linux's IFNAMSIZ is 16 with the NUL: 15 characters, none of them '/', ':' or blank
_IFNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")


def _track_interface(st: _State, line: int, args: list[str]) -> None:
    """`track_interface GROUP|* IFACE...`: the group is unfit here while one is down."""
    if len(args) < 2:
        st.problems.error(line, "track_interface: needs a group (or *) and at least one "
                          "interface (track_interface GROUP|* IFACE...)")
        return
    group, names = args[0], args[1:]
    bad = [n for n in names if not _IFNAME.match(n) or n in (".", "..")]
    if bad:
        st.problems.error(line, f"track_interface: '{bad[0]}' is not an interface name (1 to "
                          "15 letters, digits, '_', '.', '@' or '-')")
        return
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        st.problems.error(line, f"track_interface: {repeated[0]} listed twice")
        return
    earlier = next((t.line for t in st.tracks if t.group == group), None)
    if earlier is not None:
        st.problems.error(line, f"track_interface: {group} already has a line at line "
                          f"{earlier} (list every interface on one line)")
        return
    st.tracks.append(TrackConf(group, tuple(names), line))


def _link_tracking(st: _State, line: int, args: list[str]) -> None:
    value = one_value(st.problems, line, "link_tracking", args)
    if value is None or not _once(st, line, "link_tracking"):
        return
    if value.lower() not in ("on", "off", "yes", "no", "true", "false"):
        st.problems.error(line, f"link_tracking: '{value}' is not on or off")
        return
    st.values["link_tracking"] = value.lower() in ("on", "yes", "true")


_HOSTPORT = re.compile(r"^(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)):(\d{1,5})$")


def parse_listen(value: str) -> tuple[str, int] | None:
    """`ADDR:PORT` or `[IPV6]:PORT` as (address, port); None when not one of those."""
    match = _HOSTPORT.match(value)
    if match is None:
        return None
    host = match.group(1) or match.group(2)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if (match.group(1) is not None) != (address.version == 6):
        return None  # an IPv6 address needs its brackets, an IPv4 one has none
    port = int(match.group(3))
    if not 1 <= port <= 65535:
        return None
    return str(address), port


def _metrics_listen(st: _State, line: int, args: list[str]) -> None:
    value = one_value(st.problems, line, "metrics_listen", args)
    if value is None or not _once(st, line, "metrics_listen"):
        return
    if value.lower() == "off":
        return
    listen = parse_listen(value)
    if listen is None:
        st.problems.error(line, f"metrics_listen: '{shown(value, 80)}' is not ADDRESS:PORT "
                          "(like 127.0.0.1:9817, [::1]:9817 or 0.0.0.0:9817; port 1 to 65535) "
                          "or off")
        return
    st.values["metrics_listen"] = listen


def _metrics_textfile(st: _State, line: int, args: list[str]) -> None:
    value = one_value(st.problems, line, "metrics_textfile", args)
    if value is None or not _once(st, line, "metrics_textfile"):
        return
    if value.lower() == "off":
        return
    problem = _path_problem(value)
    if problem is None and not value.endswith(".prom"):
        problem = "does not end in .prom (node_exporter reads only those)"
    if problem is None and value.endswith("/.prom"):
        problem = "has no name before .prom"
    if problem is not None:
        st.problems.error(line, f"metrics_textfile: '{shown(value, 80)}' {problem}")
        return
    st.values["metrics_textfile"] = value


_AGENT = re.compile(r"fence_[a-z0-9_]{1,60}")
_OPTION = re.compile(r"[a-z][a-z0-9_-]{0,63}")
# What hbd itself says to the agent: the admin may not set these.
_RESERVED = frozenset({"action", "plug", "port", "nodename"})


def _fence_agent(st: _State, line: int, args: list[str]) -> None:
    """`fence_agent fence_NAME key=value...`: repeatable; tried in file order."""
    if not args:
        st.problems.error(line, "fence_agent: needs an agent name (fence_ipmilan...) and its "
                          "options as key=value")
        return
    agent, *pairs = args
    if not _AGENT.fullmatch(agent):
        st.problems.error(line, f"fence_agent: '{agent[:70]}' is not a fence-agents name "
                          "(fence_ipmilan, fence_virsh...)")
        return
    options: list[tuple[str, str]] = []
    for index, pair in enumerate(pairs, start=1):
        key, sep, value = pair.partition("=")
        # the option's position, never its text: values hold passwords
        if not sep or not _OPTION.fullmatch(key) or not value:
            st.problems.error(line, f"fence_agent: option {index} is not key=value")
            return
        if key in _RESERVED:
            st.problems.error(line, f"fence_agent: '{key}' is set by hbd (the node to fence "
                              "and the action)")
            return
        if "\n" in value or "\0" in value:
            st.problems.error(line, f"fence_agent: option {index} holds a control character")
            return
        options.append((key, value))
    st.agents.append(FenceAgent(agent, tuple(options), line))


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
    # fencing (ha.cf's stonith/stonith_host is the first device; these are hbd's own)
    "fence_agent": _fence_agent,
    "fence_race_delay": _time("fence_race_delay", 0, 600_000),
    "fence_retry_interval": _time("fence_retry_interval", 100, 600_000),
    "fence_timeout": _time("fence_timeout", 1000, 3600_000),
    "fence_status_interval": _time("fence_status_interval", 0, 86400_000),
    # resource monitoring: a check, restarts in place, when a failure is forgotten
    "monitor": _monitor,
    "restart": _restart,
    "failure_expiry": _failure_expiry,
    # link tracking: the interfaces of the groups' addresses, and others named here
    "link_tracking": _link_tracking,
    "track_interface": _track_interface,
    # Prometheus metrics (hbd/metrics.py): an HTTP endpoint, a node_exporter textfile
    "metrics_listen": _metrics_listen,
    "metrics_textfile": _metrics_textfile,
    "metrics_interval": _time("metrics_interval", 100, 60_000),
    # Heartbeat's API clients (ipfail...): KiB/s they may put on the wire
    "api_client_rate": _int("api_client_rate", 1, 100_000),
    "api_clients_rate": _int("api_clients_rate", 1, 1_000_000),
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
    times: dict[str, int] = {}
    for key, attr in (("fence_race_delay", "race_delay_ms"), ("fence_retry_interval", "retry_ms"),
                      ("fence_timeout", "timeout_ms"),
                      ("fence_status_interval", "status_interval_ms")):
        if isinstance(value := st.values.get(key), int):
            times[attr] = value
    fencing = replace(FenceSettings(agents=tuple(st.agents)), **times)  # type: ignore[arg-type]
    hooks = st.values.get("notify", {})
    notify_dir = st.values.get("notify_dir")
    timeout = st.values.get("notify_timeout", DEFAULT_NOTIFY_TIMEOUT_MS)
    refresh = st.values.get("garp_refresh", 0)
    listen = st.values.get("metrics_listen")
    textfile = st.values.get("metrics_textfile", "")
    metrics_ms = st.values.get("metrics_interval", DEFAULT_METRICS_INTERVAL_MS)
    assert isinstance(textfile, str) and isinstance(metrics_ms, int)
    client_rate = st.values.get("api_client_rate", DEFAULT_API_CLIENT_RATE)
    clients_rate = st.values.get("api_clients_rate", DEFAULT_API_CLIENTS_RATE)
    assert isinstance(client_rate, int) and isinstance(clients_rate, int)
    assert listen is None or isinstance(listen, tuple)
    assert isinstance(hooks, dict) and isinstance(timeout, int) and isinstance(refresh, int)
    assert notify_dir is None or isinstance(notify_dir, str)
    return HbdConf(present=True, lines=dict(st.lines), arp_count=count,
                   arp_interval_ms=interval, notify=tuple(hooks), notify_dir=notify_dir,
                   notify_timeout_ms=timeout, garp_refresh_ms=refresh, fencing=fencing,
                   monitors=tuple(st.monitors), restarts=tuple(st.restarts),
                   expiries=tuple(st.expiries),
                   link_tracking=bool(st.values.get("link_tracking", True)),
                   tracks=tuple(st.tracks), metrics_listen=listen,
                   metrics_textfile=textfile, metrics_interval_ms=metrics_ms,
                   api_client_rate=client_rate, api_clients_rate=clients_rate)
