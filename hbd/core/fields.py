"""What a peer sends, made safe where it is read: numbers with ranges, text shown safely.

Every number field the engine reads from a Heartbeat message has a base and a
range here, in one table.  `Engine.receive` checks a message against it
before anything moves (sequence tracking, membership, resources), so a
message with one bad number is one counted bad packet and changes nothing;
the handlers then read the same fields through `number()`, which applies the
same rule.  Ranges follow Heartbeat 3.0.6's types: sequence numbers and
generations are `unsigned long` (seqno_t), printed `%lx`; `dt` is a deadtime in
milliseconds, which hbd bounds (a peer announcing years would never be
declared dead).

Text from a peer (a field value, a name it claims) goes through `shown()`
before it reaches a log line or D-Bus: a newline in it would forge log
lines, an escape sequence would drive the admin's terminal, 200 KB of it
would be a 200 KB line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from hbd.core.wire import FieldType, Message

SEQ_MAX: Final = 2**64 - 1  # seqno_t: unsigned long on the 64-bit hosts Heartbeat ran on
DT_MIN_MS: Final = 1
DT_MAX_MS: Final = 3_600_000  # an hour: ha.cf's `deadtime` has the same upper bound
PING_MAX: Final = 1000  # reachable ping nodes a peer may report (hbd_ping)
SHOWN_MAX: Final = 64  # characters of peer text shown in a log line
# What an API client may be given or may send (hb_api.c, libplumb's IPC): a client name
# is Heartbeat's client_id[32]; a message's fields are few and short, printable ASCII
CLIENT_ID_MAX: Final = 31
CLIENT_FIELDS_MAX: Final = 64
CLIENT_NAME_MAX: Final = 64
CLIENT_VALUE_MAX: Final = 1024


@dataclass(frozen=True)
class IntField:
    """A number on the wire: its base and its inclusive range."""

    base: int
    low: int
    high: int

    def parse(self, text: str) -> int | None:
        """The value, or None when malformed or out of range."""
        # A bound on the digits before int(): it is linear, but 100 KB of digits is
        # still work an attacker chooses, and the range below decides anyway.
        value = text.strip()
        if not value or len(value) > 24 or not value.isascii():
            return None
        try:
            number = int(value, self.base)
        except ValueError:
            return None
        return number if self.low <= number <= self.high else None


_HEX_SEQ = IntField(16, 1, SEQ_MAX)
# Fields of every sequenced message.
_COMMON: Final = {"seq": _HEX_SEQ, "hg": IntField(16, 0, SEQ_MAX)}
# Fields the engine reads from one type of message.  NS_rexmit's numbers are decimal,
# NS_nak_rexmit's hex (Heartbeat's own inconsistency), so the table is per type.
_BY_TYPE: Final[dict[str, dict[str, IntField]]] = {
    "status": {"dt": IntField(16, DT_MIN_MS, DT_MAX_MS), "hbd_ping": IntField(10, 0, PING_MAX)},
    "NS_ackmsg": {"ackseq": IntField(16, 0, SEQ_MAX)},
    "NS_rexmit": {"firstseq": IntField(10, 1, SEQ_MAX), "lastseq": IntField(10, 1, SEQ_MAX)},
}


def _spec(msgtype: str, name: str) -> IntField:
    spec = _BY_TYPE.get(msgtype, {}).get(name) or _COMMON.get(name)
    if spec is None:
        raise KeyError(f"no range declared for field {name!r} of {msgtype!r}")
    return spec


def bad_number(message: Message, msgtype: str) -> str | None:
    """The bad-packet reason if a number field of the message is malformed or out of
    range, else None.  The reasons come from a small fixed set (one counter each)."""
    specs = {**_COMMON, **_BY_TYPE.get(msgtype, {})}
    for name, spec in specs.items():
        text = message.get(name)
        if text is not None and spec.parse(text) is None:
            return f"bad {name} field"
    return None


def number(message: Message, msgtype: str, name: str) -> int | None:
    """A declared number field's value; None when absent, malformed or out of range.

    Raises KeyError for a field without a declared range (a programming error:
    every number read from the wire must have one).
    """
    spec = _spec(msgtype, name)
    text = message.get(name)
    return None if text is None else spec.parse(text)


def client_id(text: str) -> str | None:
    """An API client's name (ipfail, a casual client's pid), or None when it is not one:
    1 to CLIENT_ID_MAX printable ASCII characters, no blank, no `=`."""
    if 0 < len(text) <= CLIENT_ID_MAX and text.isascii() and text.isprintable() and (
            " " not in text and "=" not in text):
        return text
    return None


def client_fields(pairs: list[tuple[str, str]]) -> tuple[tuple[str, str], ...] | None:
    """Fields fit for an API client's message, or None: at most CLIENT_FIELDS_MAX, each
    name a printable ASCII word of at most CLIENT_NAME_MAX characters without `=`, each
    value printable ASCII of at most CLIENT_VALUE_MAX (a newline would break the
    classic ha_msg framing the client reads).  A name may not begin with `(`: in the
    classic form `(N)name=` gives a field's type, so a client's "(2)x" would reach the
    peers as a nested message and its "(1)x" as binary data, not as the string it sent."""
    if len(pairs) > CLIENT_FIELDS_MAX:
        return None
    for name, value in pairs:
        if not (0 < len(name) <= CLIENT_NAME_MAX and name.isascii() and name.isprintable()
                and "=" not in name and " " not in name and not name.startswith("(")):
            return None
        if len(value) > CLIENT_VALUE_MAX or not value.isascii() or not value.isprintable():
            return None
    return tuple(pairs)


def client_message(message: Message) -> tuple[tuple[str, str], ...] | None:
    """A peer's message as an API client is given it, or None when it cannot be: its
    string fields (binary ones such as srcuuid, nested messages and auth are left out;
    hbd's client framing is the classic text one), each as `client_fields` requires."""
    pairs = []
    for f in message.fields:
        if f.name == "auth" or f.type is not FieldType.STRING:
            continue
        try:
            value = f.value.decode("ascii")
        except UnicodeDecodeError:
            return None
        pairs.append((f.name, value))
    return client_fields(pairs)


def shown(text: str, limit: int = SHOWN_MAX) -> str:
    """Peer-supplied text for a log line: printable ASCII, escaped otherwise, bounded.

    Backslash escapes (as Python writes them) keep what was sent readable
    without letting it break the line; the result is at most `limit` characters
    plus `...` when it was cut.
    """
    out: list[str] = []
    size = 0
    for char in text:  # ends within limit + 1 characters: each piece is one or more
        piece = char if " " <= char <= "~" and char != "\\" else _escape(char)
        if size + len(piece) > limit:
            return "".join(out) + "..."
        out.append(piece)
        size += len(piece)
    return "".join(out)


def _escape(char: str) -> str:
    if char == "\\":
        return "\\\\"
    escaped = repr(char)[1:-1]  # \n, \t, \x1b, \u202e ...
    if escaped == char:  # printable but not ASCII: repr leaves it alone
        code = ord(char)
        escaped = f"\\x{code:02x}" if code < 0x100 else (
            f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return escaped
