"""Parser for Heartbeat's ha.cf.

Every directive of Heartbeat 3.0.6's ha.cf(5) is known here (the media and ping
lines are parsed in hacfmedia.py, stonith/stonith_host in stonithcf.py): each is either
implemented, accepted with a warning that hbd does not implement it, or
refused with an error that says what to do instead.  Nothing is ignored
silently.  Heartbeat's own rules are kept: udpport and baud apply to the
media lines below them, ucast lines naming one of our own addresses are
skipped (so one ha.cf serves both nodes), deadtime must exceed twice the
keepalive and initdead must be at least deadtime.  Defaults are Heartbeat's.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Collection
from dataclasses import replace

from hbd.core import hacfmedia, hbparams
from hbd.core.config import (
    DEFAULT_DEADTIME_MS,
    DEFAULT_KEEPALIVE_MS,
    DEFAULT_MAX_REXMIT_DELAY_MS,
    AutoFailback,
    ClusterStack,
    HaCf,
    Respawn,
    StonithDevice,
    Timers,
)
from hbd.core.fields import DT_MAX_MS
from hbd.core.hacfmedia import BAUD_RATES as BAUD_RATES
from hbd.core.hacfstate import Handler, State, need_args
from hbd.core.parsing import (
    Problems,
    content_lines,
    is_decimal,
    one_value,
    parse_bool,
    parse_time_ms,
)
from hbd.core.stonithcf import check_stonith, parse_stonith, parse_stonith_host
from hbd.core.unimplemented import NOT_IMPLEMENTED as NOT_IMPLEMENTED

SYSLOG_FACILITIES = frozenset(
    ["auth", "authpriv", "cron", "daemon", "ftp", "kern", "lpr", "mail", "news", "syslog",
     "user", "uucp"]
    + [f"local{i}" for i in range(8)]
)


def _time(name: str) -> Handler:
    def handle(st: State, line: int, args: list[str]) -> None:
        value = one_value(st.problems, line, name, args)
        if value is None:
            return
        ms = parse_time_ms(value)
        if ms is None or ms <= 0:
            st.bad_times.add(name)
            st.problems.error(
                line,
                f"{name}: bad time value '{value}' "
                "(use seconds like 2 or 1.5, or milliseconds like 500ms)",
            )
            return
        st.times[name] = ms

    return handle


def _node(st: State, line: int, args: list[str]) -> None:
    if not need_args(st, line, "node", args, 1):
        return
    for name in args:
        lowered = name.lower()  # Heartbeat lower-cases node names (add_node)
        if lowered in st.nodes:
            st.problems.error(line, f"node: '{lowered}' is listed twice")
        else:
            st.nodes.append(lowered)
            st.node_lines.append(line)
            st.order.append((line, lowered))


def _choice(name: str, parse: Callable[[str], object | None], hint: str) -> Handler:
    def handle(st: State, line: int, args: list[str]) -> None:
        value = one_value(st.problems, line, name, args)
        if value is None:
            return
        parsed = parse(value)
        if parsed is None:
            st.problems.error(line, f"{name}: bad value '{value}' ({hint})")
            return
        st.values[name] = parsed

    return handle


def _auto_failback_value(value: str) -> AutoFailback | None:
    if value.lower() == "legacy":
        return AutoFailback.LEGACY
    flag = parse_bool(value)
    if flag is None:
        return None
    return AutoFailback.ON if flag else AutoFailback.OFF


def _nice_failback(st: State, line: int, args: list[str]) -> None:
    value = one_value(st.problems, line, "nice_failback", args)
    if value is None:
        return
    flag = parse_bool(value)
    if flag is None:
        st.problems.error(line, f"nice_failback: bad value '{value}' (on or off)")
        return
    # Heartbeat maps nice_failback on -> auto_failback off, off -> legacy.
    mapped = AutoFailback.OFF if flag else AutoFailback.LEGACY
    st.problems.warning(
        line,
        f"nice_failback is obsolete: read as 'auto_failback {mapped.value}'; "
        "write that instead",
    )
    st.values["auto_failback"] = mapped


def _logfacility(st: State, line: int, args: list[str]) -> None:
    value = one_value(st.problems, line, "logfacility", args)
    if value is None:
        return
    lowered = value.lower()
    if lowered == "none":
        st.values["logfacility"] = None
    elif lowered in SYSLOG_FACILITIES:
        st.values["logfacility"] = lowered
    else:
        st.problems.error(line, f"logfacility: unknown syslog facility '{value}' "
                          "(e.g. daemon, local0 ... local7, or none)")


def _path(name: str) -> Handler:
    def handle(st: State, line: int, args: list[str]) -> None:
        value = one_value(st.problems, line, name, args)
        if value is not None:
            st.values[name] = value

    return handle


def _pacemaker(name: str) -> Handler:
    def handle(st: State, line: int, args: list[str]) -> None:
        value = one_value(st.problems, line, name, args)
        if value is None:
            return
        if parse_bool(value) is False:
            return
        st.problems.error(
            line,
            f"{name} {value}: hbd manages haresources groups itself and does not run "
            f"Pacemaker's CRM; set '{name} off', or move to Pacemaker/Corosync "
            "(hbctl export pacemaker writes the configuration)",
        )

    return handle


def _autojoin(st: State, line: int, args: list[str]) -> None:
    value = one_value(st.problems, line, "autojoin", args)
    if value is None:
        return
    if value.lower() != "none":
        st.problems.error(
            line,
            f"autojoin {value}: hbd supports only 'autojoin none' "
            "(list every node with a node line)",
        )


def _positive_int(name: str, low: int, high: int) -> Handler:
    def handle(st: State, line: int, args: list[str]) -> None:
        value = one_value(st.problems, line, name, args)
        if value is None:
            return
        if not is_decimal(value) or not low <= int(value) <= high:
            st.problems.error(line, f"{name}: bad value '{value}' ({low}-{high})")
            return
        st.values[name] = int(value)

    return handle


def _max_rexmit_delay(st: State, line: int, args: list[str]) -> None:
    value = one_value(st.problems, line, "max_rexmit_delay", args)
    if value is None:
        return
    # Heartbeat reads a bare number here as milliseconds.
    ms = int(value) if is_decimal(value) else parse_time_ms(value)
    if ms is None or ms <= 0:
        st.problems.error(line, f"max_rexmit_delay: bad value '{value}' (milliseconds)")
        return
    st.times["max_rexmit_delay"] = ms


def _msgfmt(st: State, line: int, args: list[str]) -> None:
    value = one_value(st.problems, line, "msgfmt", args)
    if value is None:
        return
    if value not in ("classic", "netstring"):
        st.problems.error(line, f"msgfmt: bad value '{value}' (classic or netstring)")
        return
    st.values["msgfmt"] = value


def _cluster_stack(st: State, line: int, args: list[str]) -> None:
    value = one_value(st.problems, line, "cluster_stack", args)
    if value is None:
        return
    try:
        st.values["cluster_stack"] = ClusterStack(value.lower())
    except ValueError:
        st.problems.error(line, f"cluster_stack: bad value '{value}' (heartbeat or corosync)")


def _group_order(st: State, line: int, args: list[str]) -> None:
    """hbd-only `group_order KEY NODE...`: a group's node order on the corosync stack."""
    nodes = tuple(n.lower() for n in args[1:])
    orders = st.values.setdefault("group_orders", {})
    assert isinstance(orders, dict)
    if not nodes or len(set(nodes)) != len(nodes) or args[0] in orders:
        st.problems.error(line, "group_order: needs a group key (once) and distinct nodes")
    else:
        orders[args[0]] = (nodes, line)


def _check_group_orders(st: State, orders: dict[str, tuple[tuple[str, ...], int]]
                        ) -> tuple[tuple[str, tuple[str, ...]], ...]:
    for key, (nodes, line) in orders.items():
        if unknown := [n for n in nodes if n not in st.nodes]:
            st.problems.error(line, f"group_order {key}: not in ha.cf: {', '.join(unknown)}")
        if st.values.get("cluster_stack") is not ClusterStack.COROSYNC:
            st.problems.warning(line, "group_order: only used with 'cluster_stack corosync'")
    return tuple((key, nodes) for key, (nodes, _) in orders.items())


def _check_two_nodes(st: State) -> None:
    """Heartbeat's own stack runs two nodes: its resource protocol knows one peer.

    With a third node, hb_resource.c's rules (and hbd's, which follow them) read
    any peer's death or `resource` message as "the" peer's: a third node holding
    nothing that dies makes a node take the second node's groups.  Checked once
    the whole file is read, since `cluster_stack` may come after the node lines.
    Ping nodes are not nodes (`ping`/`ping_group` are directives of their own).
    """
    if st.values.get("cluster_stack") is ClusterStack.COROSYNC or len(st.nodes) <= 2:
        return
    st.problems.error(st.node_lines[2], f"node '{st.nodes[2]}' is a third node: Heartbeat's "
                      "own cluster stack runs two nodes (its resource protocol has one peer); "
                      "for three or more add 'cluster_stack corosync'")


def _realtime(st: State, line: int, args: list[str]) -> None:
    value = one_value(st.problems, line, "realtime", args)
    if value is None:
        return
    flag = parse_bool(value)
    if flag is None:  # Heartbeat's set_realtime refuses the file too
        st.problems.error(line, f"realtime: bad value '{value}' (on or off)")
        return
    st.values["realtime"] = flag


def _simple(name: str) -> Handler:
    """A directive whose value is kept as a string (cluster, hopfudge...)."""

    def handle(st: State, line: int, args: list[str]) -> None:
        value = one_value(st.problems, line, name, args)
        if value is not None:
            st.values[name] = value

    return handle


def _stonith(parse: Callable[[Problems, int, list[str]], StonithDevice | None]) -> Handler:
    def handle(st: State, line: int, args: list[str]) -> None:
        if (device := parse(st.problems, line, args)) is not None:
            st.stonith.append(device)
    return handle


HANDLERS: dict[str, Handler] = {
    "node": _node,
    "keepalive": _time("keepalive"),
    "deadtime": _time("deadtime"),
    "warntime": _time("warntime"),
    "initdead": _time("initdead"),
    "deadping": _time("deadping"),
    "udpport": hacfmedia.udpport,
    "baud": hacfmedia.baud,
    "bcast": hacfmedia.bcast,
    "mcast": hacfmedia.mcast,
    "ucast": hacfmedia.ucast,
    "ucast6": hacfmedia.ucast6,
    "mcast6": hacfmedia.mcast6,
    "serial": hacfmedia.serial,
    "auto_failback": _choice("auto_failback", _auto_failback_value, "on, off or legacy"),
    "nice_failback": _nice_failback,
    "ping": hacfmedia.ping,
    "ping6": hacfmedia.ping6,
    "ping_group": hacfmedia.ping_group,
    "logfacility": _logfacility,
    "logfile": _path("logfile"),
    "debugfile": _path("debugfile"),
    "crm": _pacemaker("crm"),
    "pacemaker": _pacemaker("pacemaker"),
    "autojoin": _autojoin,
    "debug": _positive_int("debug", 0, 255),
    "hopfudge": _positive_int("hopfudge", 0, 255),
    "cluster": _simple("cluster"),
    "max_rexmit_delay": _max_rexmit_delay,
    "msgfmt": _msgfmt,
    "realtime": _realtime,
    # Heartbeat's set_realtime_prio: SCHED_FIFO's range, sched_get_priority_min..max
    "rtprio": _positive_int("rtprio", 1, 99),
    # hbd-only directives (a Heartbeat node would refuse a file containing them)
    "cluster_stack": _cluster_stack,
    "group_order": _group_order,
    "stonith": _stonith(parse_stonith),
    "stonith_host": _stonith(parse_stonith_host),
    "arp_count": _positive_int("arp_count", 0, 100),
    "arp_interval": _time("arp_interval"),
}

KNOWN_DIRECTIVES = frozenset(HANDLERS) | frozenset(NOT_IMPLEMENTED) | {"apiauth", "respawn"}
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?")
RESPAWN_MAX = 4096  # characters of a respawn command line


def parse_respawn(problems: Problems, line: int, content: str) -> Respawn | None:
    """`respawn USER /full/path [ARGS]` (config.c add_client_child_base): a whole-line
    directive, split as a shell would split it.  Whether USER exists and the program is
    executable is checked when it starts (hbd.respawn), as Heartbeat checks at start."""
    _, _, rest = content.partition("respawn")
    user, _, command = rest.strip().partition(" ")
    command = command.strip()
    if not user or not command:
        problems.error(line, "respawn: needs a user and a command (respawn USER /PATH ARGS)")
        return None
    if not _USER.fullmatch(user):
        problems.error(line, f"respawn: {user[:40]!r} is not a user name")
        return None
    if len(command) > RESPAWN_MAX:
        problems.error(line, f"respawn: command longer than {RESPAWN_MAX} characters")
        return None
    try:
        argv = shlex.split(command)
    except ValueError as err:
        problems.error(line, f"respawn: cannot split the command ({err})")
        return None
    if not argv or not argv[0].startswith("/"):
        problems.error(line, f"respawn: client child command [{command[:60]}] is not a "
                       "full pathname")
        return None
    return Respawn(user, tuple(argv), line)


def parse_hacf(
    text: str,
    *,
    filename: str = "ha.cf",
    local_addresses: Collection[str] = (),
) -> tuple[HaCf, Problems]:
    """Parse ha.cf text.  Returns the config and every problem found.

    Never raises on bad input: the caller decides what errors mean (refuse to
    start, keep the old config on reload).
    """
    st = State(problems=Problems(filename), local_addresses=frozenset(local_addresses))
    for line, content in content_lines(text):
        # a line of commas only splits into nothing: report it as it is
        directive, *args = content.replace(",", " ").split() or [content]
        if directive in ("stonith", "stonith_host"):  # a comma may be part of a password
            args = content.split()[1:]
        handler = HANDLERS.get(directive)
        if handler is not None:
            st.lines[directive] = line
            if args:
                st.last_values[directive] = args[-1]
            handler(st, line, args)
        elif directive == "respawn":
            respawn = parse_respawn(st.problems, line, content)
            if respawn is not None:
                st.respawn.append(respawn)
        elif directive == "apiauth":
            # a whole-line directive in Heartbeat: its lists are comma-separated
            parsed = hbparams.parse_apiauth(content.split()[1:], line)
            if isinstance(parsed, str):
                st.problems.error(line, parsed)
            elif any(entry.client == parsed.client for entry in st.apiauth):
                st.problems.warning(line, f"apiauth: client '{parsed.client}' is listed twice: "
                                    "Heartbeat refuses that; hbd keeps the first line")
            else:
                st.apiauth.append(parsed)
        elif directive in NOT_IMPLEMENTED:
            st.problems.warning(
                line, f"{directive}: not implemented by hbd, ignored ({NOT_IMPLEMENTED[directive]})"
            )
        else:
            st.problems.error(line, f"unknown directive '{directive}'")
    return _finish(st), st.problems


def _finish(st: State) -> HaCf:
    timers = _timers(st)
    _check_two_nodes(st)
    if not st.nodes:
        st.problems.error(0, "no node directive: list every cluster node with 'node NAME'")
    if not st.links and st.values.get("cluster_stack") is not ClusterStack.COROSYNC:
        st.problems.error(0, "no heartbeat media: add bcast, mcast, ucast, mcast6, ucast6 "
                          "or serial lines")
    auto_failback = st.values.get("auto_failback", AutoFailback.LEGACY)
    assert isinstance(auto_failback, AutoFailback)
    hacf = HaCf(
        nodes=tuple(st.nodes),
        links=tuple(st.links),
        timers=timers,
        udpport=st.udpport,
        baud=st.baud,
        auto_failback=auto_failback,
        ping_nodes=tuple(st.ping_nodes),
        ping_groups=tuple(st.ping_groups),
        node_order=tuple(name for _line, name in sorted(st.order, key=lambda e: e[0])),
        parameters=tuple(sorted(hbparams.parameters(st.last_values).items())),
        apiauth=tuple(st.apiauth),
        stonith=tuple(st.stonith),
        respawn=tuple(st.respawn),
    )
    check_stonith(st.problems, st.stonith, st.nodes,
                  corosync=st.values.get("cluster_stack") is ClusterStack.COROSYNC)
    overrides: dict[str, object] = {}
    for key, attr in (("logfacility", "logfacility"), ("logfile", "logfile"),
                      ("debugfile", "debugfile"), ("debug", "debug_level"),
                      ("cluster", "cluster_name"), ("msgfmt", "msgfmt"),
                      ("cluster_stack", "cluster_stack"), ("arp_count", "arp_count"),
                      ("realtime", "realtime"), ("rtprio", "rtprio")):
        if key in st.values:
            overrides[attr] = st.values[key]
    if isinstance(orders := st.values.get("group_orders"), dict):
        overrides["group_orders"] = _check_group_orders(st, orders)
    if "hopfudge" in st.values:
        overrides["hopfudge"] = st.values["hopfudge"]
    if "arp_interval" in st.times:
        overrides["arp_interval_ms"] = st.times["arp_interval"]
    return replace(hacf, **overrides)  # type: ignore[arg-type]


def _timers(st: State) -> Timers:
    """Apply Heartbeat's defaults and cross-checks (config.c: init_config)."""
    t = st.times
    keepalive = t.get("keepalive", DEFAULT_KEEPALIVE_MS)
    deadtime = t.get("deadtime", DEFAULT_DEADTIME_MS)
    warntime = t.get("warntime", deadtime // 2)
    if "initdead" in t:
        initdead = t["initdead"]
    elif deadtime > 10000:
        initdead = deadtime
    elif deadtime < 6000:
        initdead = 12000
    else:
        initdead = 2 * deadtime
    deadping = t.get("deadping", deadtime)
    line = st.lines.get
    if st.bad_times & {"keepalive", "deadtime", "initdead", "deadping", "warntime"}:
        # A value already reported as unreadable would only cause misleading follow-ups.
        return Timers(keepalive, deadtime, warntime, initdead, deadping,
                      t.get("max_rexmit_delay", DEFAULT_MAX_REXMIT_DELAY_MS))
    if deadtime <= 2 * keepalive:
        st.problems.error(
            line("deadtime") or line("keepalive") or 0,
            f"deadtime ({deadtime} ms) must be more than twice keepalive ({keepalive} ms)",
        )
    if deadtime > DT_MAX_MS:
        # Announced in every status message (dt): a peer refuses a larger one.
        st.problems.error(
            line("deadtime") or 0,
            f"deadtime ({deadtime} ms) is above the most hbd accepts ({DT_MAX_MS // 1000} s)",
        )
    if initdead < deadtime:
        st.problems.error(
            line("initdead") or 0,
            f"initdead ({initdead} ms) must be at least deadtime ({deadtime} ms)",
        )
    if "deadping" in t and deadping <= 2 * keepalive:
        st.problems.error(
            line("deadping") or 0,
            f"deadping ({deadping} ms) must be more than twice keepalive ({keepalive} ms)",
        )
    if "warntime" in t and warntime >= deadtime:
        st.problems.warning(
            line("warntime") or 0,
            f"warntime ({warntime} ms) is not below deadtime ({deadtime} ms): "
            "no late-heartbeat warning will ever come before a node is declared dead",
        )
    return Timers(
        keepalive_ms=keepalive,
        deadtime_ms=deadtime,
        warntime_ms=warntime,
        initdead_ms=initdead,
        deadping_ms=deadping,
        max_rexmit_delay_ms=t.get("max_rexmit_delay", DEFAULT_MAX_REXMIT_DELAY_MS),
    )
