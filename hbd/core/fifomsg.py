"""Heartbeat's FIFO protocol (/var/lib/heartbeat/fifo): what its scripts write there.

Heartbeat's shell scripts talk to the running daemon through `ha_clustermsg`
(resource-agents' /etc/ha.d/shellfuncs), which appends one message to the
FIFO:

    >>>
    t=ask_resources
    rsc_hold=all
    info=me
    <<<

Heartbeat 3.0.6 reads these in a FIFO child process and sends each one to the
cluster as if the daemon had sent it (heartbeat.c: fifo_child,
FIFO_child_msg_dispatch); what the message then does is what the same
message from the wire does.  hbd does not echo script messages onto the wire:
it maps the ones its own protocol code understands to the admin commands
they amount to, and logs every other one with the reason it is not acted on.

    hb_standby SCOPE    t=ask_resources rsc_hold=SCOPE info=me   -> release(SCOPE)
    hb_takeover SCOPE   t=hb_takeover rsc_hold=SCOPE             -> takeover(SCOPE)

`FifoReader` turns bytes into messages (bounded line length and field
count, junk outside `>>>`/`<<<` counted and reported); `interpret` turns a
message into a `FifoCommand` or a `FifoRejected` with a reason.  Nothing here
changes any state but the reader's own buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

from hbd.core.fields import shown
from hbd.core.resources import SCOPES

MAX_LINE = 1024  # bytes in one FIFO line, newline excluded; longer lines are junk
MAX_FIELDS = 32  # name=value lines in one message
BEGIN = b">>>"
END = b"<<<"

# What Heartbeat's other scripts send, and why hbd does not act on it.
_NOT_ACTED_ON: dict[str, str] = {
    "resource": "hbd announces its resources itself (Heartbeat's rc.d and mach_down scripts "
    "send this)",
    "addnode": "hbd has no dynamic node list (hb_addnode): edit ha.cf and reload",
    "delnode": "hbd has no dynamic node list (hb_delnode): edit ha.cf and reload",
    "setweight": "node weights (hb_setweight) are only meaningful with Pacemaker",
    "setsite": "node sites (hb_setsite) are only meaningful with Pacemaker",
    "ip-request": "the ip-request protocol (req_resource) is obsolete since Heartbeat 1",
    "ip-request-resp": "the ip-request protocol (req_resource) is obsolete since Heartbeat 1",
}


@dataclass(frozen=True)
class FifoMessage:
    """One `>>>` ... `<<<` block, as name=value pairs in the order written."""

    fields: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        for key, value in self.fields:
            if key == name:
                return value
        return None

    def __str__(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.fields)


@dataclass(frozen=True)
class FifoJunk:
    """Input that is not a message: the reason, for one log line."""

    reason: str


@dataclass(frozen=True)
class FifoCommand:
    """An admin command a FIFO message amounts to."""

    command: str  # "release" (hb_standby) or "takeover" (hb_takeover)
    scope: str  # one of SCOPES
    tool: str  # the Heartbeat tool that sends it, for log lines


@dataclass(frozen=True)
class FifoRejected:
    """A well-formed message hbd does not act on, and why."""

    reason: str


class FifoReader:
    """Bytes from the FIFO in, messages and junk reports out.

    Lines longer than MAX_LINE are cut off and discarded up to their newline,
    so a writer that never sends one cannot make the buffer grow; the message
    they were part of is dropped as a whole (never half-applied).
    """

    def __init__(self) -> None:
        self._partial = bytearray()
        self._skipping = False  # inside an over-long line, until its newline
        self._fields: list[tuple[str, str]] | None = None  # None: outside a message
        self._broken: str | None = None  # why the open message will be dropped

    def feed(self, data: bytes) -> list[FifoMessage | FifoJunk]:
        out: list[FifoMessage | FifoJunk] = []
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline
            chunk = data[start:end]
            start = end + 1 if newline >= 0 else len(data)
            if self._skipping:
                if newline >= 0:
                    self._skipping = False
                continue
            if len(self._partial) + len(chunk) > MAX_LINE:
                self._partial.clear()
                self._skipping = newline < 0
                self._line_too_long(out)
                continue
            self._partial += chunk
            if newline < 0:
                break
            line = bytes(self._partial)
            self._partial.clear()
            self._line(line, out)
        return out

    def _line_too_long(self, out: list[FifoMessage | FifoJunk]) -> None:
        if self._fields is not None:
            self._broken = self._broken or f"a line longer than {MAX_LINE} bytes"
        else:
            out.append(FifoJunk(f"a line longer than {MAX_LINE} bytes outside a message"))

    def _line(self, raw: bytes, out: list[FifoMessage | FifoJunk]) -> None:
        line = raw.rstrip(b"\r").strip(b" \t")
        if line == BEGIN:
            if self._fields is not None:
                out.append(FifoJunk("a message without its closing '<<<' (dropped)"))
            self._fields, self._broken = [], None
            return
        if line == END:
            if self._fields is None:
                out.append(FifoJunk("'<<<' without a message"))
            elif self._broken is not None:
                out.append(FifoJunk(f"a message with {self._broken} (dropped)"))
            else:
                out.append(FifoMessage(tuple(self._fields)))
            self._fields, self._broken = None, None
            return
        if self._fields is None:
            if line:
                out.append(FifoJunk(f"text outside a message: {_shown(raw)}"))
            return
        if self._broken is not None or not line:
            return
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            self._broken = "a line that is not ASCII"
            return
        name, sep, value = text.partition("=")
        if not sep or not name or not all(c.isalnum() or c in "_-" for c in name):
            self._broken = f"a line that is not name=value: {_shown(raw)}"
        elif not value.isprintable():
            self._broken = f"a control character in {name}"
        elif len(self._fields) >= MAX_FIELDS:
            self._broken = f"more than {MAX_FIELDS} fields"
        else:
            self._fields.append((name, value))


def interpret(message: FifoMessage) -> FifoCommand | FifoRejected:
    """What a FIFO message asks of hbd, as Heartbeat 3.0.6 would handle it."""
    kind = message.get("t")
    if kind is None:
        return FifoRejected("no message type (t=)")
    scope = message.get("rsc_hold")
    if kind == "ask_resources":
        info = message.get("info")
        if info != "me":
            return FifoRejected(f"ask_resources with info={info} is part of the standby "
                                "exchange between nodes, not a request")
        if scope not in SCOPES:
            return FifoRejected(f"hb_standby: bad scope {scope!r} "
                                f"(one of {', '.join(SCOPES)})")
        return FifoCommand("release", scope, "hb_standby")
    if kind == "hb_takeover":
        if scope not in SCOPES:
            return FifoRejected(f"hb_takeover: bad scope {scope!r} "
                                f"(one of {', '.join(SCOPES)})")
        return FifoCommand("takeover", scope, "hb_takeover")
    reason = _NOT_ACTED_ON.get(kind)
    if reason is not None:
        return FifoRejected(f"t={kind}: not acted on: {reason}")
    return FifoRejected(f"unknown message type t={_shown(kind.encode(errors='replace'))}")


def _shown(raw: bytes, limit: int = 60) -> str:
    """Untrusted FIFO bytes for a log line, quoted: fields.shown over their ASCII reading."""
    return "'" + shown(raw.decode("ascii", "backslashreplace"), limit) + "'"
