"""`hbctl history`: the cluster's events, read back from the local journal.

hbd logs each event with a stable MESSAGE_ID and HBD_* fields (hbd/eventlog.py,
docs/operations.md); this reads those entries with systemd-python's journal
reader (no daemon needed), oldest first.  A takeover or release entry is
joined to the GROUP_STATE entry that ended it through their common HBD_MOVE,
which carries HBD_DURATION_MS: how long the group took to start (or stop) and
what it ended as; when the start ended a failover, also HBD_FAILOVER_MS: how
long the failover took from its trigger (a dead peer's last heartbeat, the
request, the monitor failure) to the group running here, the figure of the
metrics' hbd_failover_duration_seconds.  Entries of an hbd older than those
fields show no duration.

Reading the system journal needs what journalctl needs: root, or membership of
the systemd-journal (or adm) group; without it this says so and exits 4.

Anyone may write to the journal, MESSAGE_ID and HBD_* fields included
(`logger --journald`, systemd-cat): only entries whose trusted `_UID` field
(set by journald from the sender's credentials, never by the sender) is 0
count, as hbd runs as root.  Every field read is checked (numbers are short
ASCII digit strings, text shown on a terminal loses its control characters),
so a hostile entry is skipped or shown harmless, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import glob
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

from hbd.eventlog import MessageId

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_AUTHORIZED = 0, 1, 2, 4

QUORUM_ID: Final = "25d0a98266c146028d93470fb4a18977"  # stack_corosync.MSG_QUORUM
MEMBERSHIP_ID: Final = "cad5ff67cb424cc79d4cb2e988baeaaf"  # stack_corosync.MSG_MEMBERSHIP
# MESSAGE_ID -> the event's name in the listing
EVENTS: Final = {
    MessageId.TAKEOVER: "takeover",
    MessageId.RELEASE: "release",
    MessageId.NODE_DEAD: "node-dead",
    MessageId.NODE_UP: "node-up",
    MessageId.PARTITION_HEALED: "partition-healed",
    MessageId.SPLIT_BRAIN: "split-brain",
    MessageId.RESOURCE_FAILURE: "resource-failure",
    MessageId.MONITOR_FAILURE: "monitor-failure",
    MessageId.GROUP_RESTART: "restart",
    MessageId.GROUP_MOVE: "move-away",
    MessageId.GROUP_STRANDED: "stranded",
    MessageId.GROUP_UNFIT: "unfit",
    MessageId.GROUP_FIT: "fit",
    MessageId.FENCING: "fencing",
    MessageId.TRACKED_LINK_DOWN: "tracked-link-down",
    MessageId.ADDRESS_REMOVED: "address-removed",
    # the corosync stack's own (hbd/stack_corosync.py; not imported: it brings the stack)
    QUORUM_ID: "quorum",
    MEMBERSHIP_ID: "members",
}
_ENDS: Final = MessageId.GROUP_STATE  # read only for the end of a takeover or release
_EXPECTED_END: Final = {"takeover": "running", "release": "stopped"}
TRUSTED_UID: Final = "0"  # hbd runs as root; journald stamps _UID from the sender
_NUMBER: Final = re.compile(r"[0-9]{1,9}")  # a duration in ms: ASCII, under 12 days
_TIMESTAMP: Final = re.compile(r"[0-9]{1,16}")  # µs: before the year 2286
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
JOURNAL_DIRS: Final = ("/var/log/journal", "/run/log/journal")


class HistoryError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Event:
    timestamp_us: int  # when journald received it, µs since the epoch
    host: str  # the machine that logged it
    event: str  # a value of EVENTS
    group: str  # "" when the event is about no group
    node: str  # the node it is about (dead node, fenced node, split brain keeper), or ""
    link: str  # the heartbeat link or tracked interface it is about, or ""
    reason: str  # why (the takeover's reason, the failure's detail...), or ""
    message: str  # the log line as written
    duration_ms: int | None = None  # a takeover's or release's start or stop, once ended
    result: str = ""  # what the group ended as: running, stopped, blocked ("": not yet)
    failover_ms: int | None = None  # a takeover that was a failover: from its trigger
    failover_reason: str = ""  # why: peer_dead, request, monitor, link, other

    @property
    def time(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.timestamp_us / 1e6).astimezone()


# --- --since / --until ---------------------------------------------------------------

_RELATIVE = re.compile(r"^-?\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*(?:ago)?$")
_UNITS: Final = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_FORMATS: Final = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S",
                   "%Y-%m-%dT%H:%M")


def parse_time(text: str, now: float) -> float:
    """A journalctl-like time as seconds since the epoch: `now`, `today`, `yesterday`,
    `1h` / `-30min` / `2d ago` (before now), `@EPOCH`, `YYYY-MM-DD [HH:MM[:SS]]` or
    `HH:MM[:SS]` (today), local time.  Raises ValueError."""
    word = text.strip().lower()
    midnight = dt.datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0,
                                                      microsecond=0)
    if word == "now":
        return now
    if word in ("today", "yesterday", "tomorrow"):
        days = {"today": 0, "yesterday": -1, "tomorrow": 1}[word]
        return (midnight + dt.timedelta(days=days)).timestamp()
    if word.startswith("@"):
        return float(word[1:])
    match = _RELATIVE.match(word)
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    for fmt in _FORMATS:
        with contextlib.suppress(ValueError):
            return dt.datetime.strptime(text.strip(), fmt).timestamp()
    for fmt in ("%H:%M:%S", "%H:%M"):
        with contextlib.suppress(ValueError):
            clock = dt.datetime.strptime(text.strip(), fmt)
            return midnight.replace(hour=clock.hour, minute=clock.minute,
                                    second=clock.second).timestamp()
    raise ValueError(f"not a time: {text!r} (try '1h', 'today', '2026-12-07 10:00')")


# --- reading -------------------------------------------------------------------------


def check_access(directory: str | None) -> None:
    """Raise HistoryError unless a system journal (or `directory`'s) can be read."""
    if directory is not None:
        if not os.path.isdir(directory):
            raise HistoryError(f"no such journal directory: {directory}")
        files = glob.glob(os.path.join(directory, "**", "*.journal"), recursive=True)
    else:
        files = [f for d in JOURNAL_DIRS for f in glob.glob(os.path.join(d, "*", "*.journal"))]
    if not files:
        raise HistoryError("no journal files found here (is systemd-journald running?)")
    if not any(os.access(f, os.R_OK) for f in files if os.path.basename(f).startswith("system")
               or directory is not None):
        raise HistoryError("cannot read the system journal: run as root or as a member of "
                           "the systemd-journal or adm group", EXIT_NOT_AUTHORIZED)


def _entries(directory: str | None, since: float | None) -> Iterator[Mapping[str, Any]]:
    from systemd import journal  # only here: the rest of hbctl runs without it

    reader = journal.Reader(path=directory) if directory else journal.Reader()
    try:
        for message_id in (*EVENTS, _ENDS):
            reader.add_match(MESSAGE_ID=message_id)  # one field: these are ORed
        reader.add_match(_UID=TRUSTED_UID)  # another field: ANDed with them
        if since is not None:
            reader.seek_realtime(since)
        yield from reader
    finally:
        reader.close()


def _json_entries(path: str) -> Iterator[Mapping[str, Any]]:
    """Entries as `journalctl -o json` prints them, one per line ("-": standard input)."""
    with open(sys.stdin.fileno() if path == "-" else path, encoding="utf-8",
              errors="replace", closefd=path != "-") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                raise HistoryError(f"{path}:{number}: not a JSON journal entry") from None
            if isinstance(entry, dict):
                yield entry


def _text(entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key, "")
    if isinstance(value, list):  # journalctl -o json: a binary field is a list of bytes
        value = bytes(v for v in value if isinstance(v, int) and 0 <= v < 256)
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _message_id(entry: Mapping[str, Any]) -> str:
    value = entry.get("MESSAGE_ID")
    if isinstance(value, str):  # journalctl -o json
        return value.replace("-", "").lower()
    return str(getattr(value, "hex", value or ""))  # systemd-python makes it a UUID


def _timestamp_us(entry: Mapping[str, Any]) -> int | None:
    value = entry.get("__REALTIME_TIMESTAMP")
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1_000_000)
    text = _text(entry, "__REALTIME_TIMESTAMP")
    return int(text) if _TIMESTAMP.fullmatch(text) else None


def _number(entry: Mapping[str, Any], key: str) -> int | None:
    text = _text(entry, key)
    return int(text) if _NUMBER.fullmatch(text) else None


def trusted(entry: Mapping[str, Any]) -> bool:
    """Logged by a root process (hbd), as journald saw the sender."""
    return _text(entry, "_UID") == TRUSTED_UID


def events_from(entries: Iterable[Mapping[str, Any]]) -> list[Event]:
    """The listed events of these journal entries, takeovers and releases joined to
    their end.  Pure: the tests feed it dicts."""
    found: list[tuple[Event, str]] = []
    ends: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if not trusted(entry):
            continue  # anyone may log a MESSAGE_ID: not hbd's
        message_id = _message_id(entry)
        if message_id == _ENDS:
            move, took = _text(entry, "HBD_MOVE"), _number(entry, "HBD_DURATION_MS")
            if move and took is not None:
                ends[move] = {"duration_ms": took, "result": _text(entry, "HBD_STATE")}
                failover = _number(entry, "HBD_FAILOVER_MS")
                if failover is not None:
                    ends[move].update(failover_ms=failover, failover_reason=_text(
                        entry, "HBD_FAILOVER_REASON"))
            continue
        name = EVENTS.get(message_id)
        stamp = _timestamp_us(entry)
        if name is None or stamp is None:
            continue
        message = _text(entry, "MESSAGE")
        message = message.split(": ", 1)[1] if re.match(r"^[A-Za-z]+: ", message) else message
        node = _text(entry, "HBD_NODE") if name not in ("takeover", "release") else ""
        found.append((Event(stamp, _text(entry, "_HOSTNAME"), name,
                            _text(entry, "HBD_GROUP"), node, _text(entry, "HBD_LINK"),
                            _text(entry, "HBD_REASON"), message), _text(entry, "HBD_MOVE")))
    events = []
    for event, move in found:
        if move in ends:
            event = replace(event, **ends[move])
        events.append(event)
    events.sort(key=lambda e: e.timestamp_us)
    return events


def select(events: Iterable[Event], *, since: float | None = None, until: float | None = None,
           group: str | None = None, node: str | None = None) -> list[Event]:
    """Events in [since, until) of `group`, and about or logged by `node`."""
    return [e for e in events
            if (since is None or e.timestamp_us >= since * 1e6)
            and (until is None or e.timestamp_us < until * 1e6)
            and (group is None or e.group == group)
            and (node is None or node in (e.node, e.host))]


# --- output --------------------------------------------------------------------------


def _ms(value: int) -> str:
    return f"{value} ms" if value < 10_000 else f"{value / 1000:.1f} s"


def _took(event: Event) -> str:
    if event.duration_ms is None:
        return "-" if event.event not in _EXPECTED_END else "?"
    return _ms(event.duration_ms)


def _failover(event: Event) -> str:
    return "-" if event.failover_ms is None else _ms(event.failover_ms)


def _detail(event: Event) -> str:
    if event.event not in _EXPECTED_END:
        return event.message
    detail = event.reason or event.message
    if event.result and event.result != _EXPECTED_END[event.event]:
        detail += f" (ended {event.result})"
    return detail


def _safe(text: str) -> str:
    """Text for a terminal: a journal field may hold escape sequences (JSON escapes its
    own)."""
    return _CONTROL.sub("?", text)


def text_of(events: list[Event]) -> str:
    hosts = len({e.host for e in events}) > 1
    head = ["TIME", *(["HOST"] if hosts else []), "EVENT", "ABOUT", "FAILOVER", "TOOK",
            "DETAIL"]
    rows = [[e.time.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], *([_safe(e.host)] if hosts else []),
             e.event, _safe(e.group or e.node or e.link or "-"), _failover(e), _took(e),
             _safe(_detail(e))]
            for e in events]
    widths = [max(len(c) for c in col) for col in zip(head, *rows, strict=False)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in (head, *rows))


def json_of(events: list[Event]) -> list[dict[str, Any]]:
    return [{"time": e.time.isoformat(timespec="milliseconds"), **asdict(e)} for e in events]


# --- the command ---------------------------------------------------------------------


def _command(args: argparse.Namespace) -> int:
    now = time.time()
    try:
        since = parse_time(args.since, now) if args.since else None
        until = parse_time(args.until, now) if args.until else None
    except ValueError as err:
        print(f"hbctl history: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.file:
            events = events_from(_json_entries(args.file))
        else:
            check_access(args.directory)
            events = events_from(_entries(args.directory, since))
    except HistoryError as err:
        print(f"hbctl history: {err}", file=sys.stderr)
        return err.code
    except OSError as err:
        print(f"hbctl history: cannot read the journal: {err}", file=sys.stderr)
        return EXIT_FAILED
    events = select(events, since=since, until=until, group=args.group, node=args.node)
    if args.json:
        print(json.dumps(json_of(events), indent=2))
    elif events:
        print(text_of(events))
    else:
        print("no cluster events in the journal" + (" for these filters" if any(
            (args.since, args.until, args.group, args.node)) else ""), file=sys.stderr)
    return EXIT_OK


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "history", help="the cluster's events from the journal: takeovers, releases, "
        "dead nodes, split brains, failures, fencing",
        description="List hbd's cluster events from the local journal, oldest first, with "
        "how long each failover took from its trigger (FAILOVER) and how long each "
        "takeover's start and release's stop took (TOOK).")
    parser.add_argument("--since", "-S", metavar="TIME",
                        help="only events from TIME on: '1h', '30min', 'today', "
                             "'2026-12-07 10:00', '@EPOCH'")
    parser.add_argument("--until", "-U", metavar="TIME", help="only events before TIME")
    parser.add_argument("--group", "-g", metavar="KEY", help="only this group's events")
    parser.add_argument("--node", "-n", metavar="NODE",
                        help="only events about NODE or logged on NODE")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--directory", "-D", metavar="DIR",
                        help="read the journal files in DIR (as journalctl -D)")
    source.add_argument("--file", "-f", metavar="FILE",
                        help="read entries as `journalctl -o json` prints them ('-': stdin)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="one JSON array of events")
    parser.set_defaults(func=_command)
