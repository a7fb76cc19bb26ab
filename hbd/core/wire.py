"""Heartbeat 3.0.6's message format, both of its encodings.

A message is an ordered list of typed name=value fields.  Heartbeat puts it
on the wire in two forms:

* classic (serial links):  ``>>>\\n`` then ``name=value\\n`` per field (a
  non-string field is ``(T)name=value`` with binary values in base64), then
  ``<<<\\n``;
* netstring (UDP): ``###\\n`` then one netstring ``LEN:(T)name=value,`` per
  field, then ``%%%\\n``, then a trailer netstring ``LEN:N HEX,`` holding the
  MAC of everything before it.

Inside the body Heartbeat also carries an ``auth=N HEX`` field: the MAC of
the classic form without head, tail or auth field (see auth.py).  Parsing
keeps every field's raw bytes and order so a parsed packet re-encodes to
exactly the bytes that arrived.  This module only converts; it checks no
MAC (auth.py does).
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from hbd.errors import WireError

CLASSIC_START = b">>>\n"
CLASSIC_END = b"<<<\n"
NETSTRING_START = b"###\n"
NETSTRING_END = b"%%%\n"
MAX_MESSAGE = 256 * 1024  # Heartbeat's MAXMSG; anything longer is refused unparsed
MAX_FIELDS = 1024  # far above any real message; bounds the work a hostile packet causes
MAX_DEPTH = 8  # nested struct fields


class FieldType(enum.IntEnum):
    """cluster-glue's field types (ha_msg.h FT_*)."""

    STRING = 0
    BINARY = 1
    STRUCT = 2
    LIST = 3
    COMPRESS = 4
    UNCOMPRESS = 5


class Field(NamedTuple):
    """One field.  A NamedTuple, not a dataclass: a packet makes a dozen of these."""

    name: str
    value: bytes  # raw bytes as on the netstring wire (STRUCT: the nested netstring)
    type: FieldType = FieldType.STRING


class Message:
    """An ordered, typed field list.  Field names may repeat, as in Heartbeat."""

    __slots__ = ("_index", "fields")

    def __init__(self, fields: list[Field] | None = None) -> None:
        self.fields: list[Field] = list(fields or [])
        self._index: dict[str, bytes] | None = None  # first value per name, built on demand

    @classmethod
    def of(cls, *pairs: tuple[str, str]) -> Message:
        return cls([Field(name, value.encode()) for name, value in pairs])

    def __repr__(self) -> str:
        inner = ", ".join(f"{f.name}={f.value!r}" for f in self.fields if f.name != "auth")
        return f"Message({inner})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and other.fields == self.fields

    def __hash__(self) -> int:
        return hash(tuple(self.fields))

    def __iter__(self) -> Iterator[Field]:
        return iter(self.fields)

    def raw(self, name: str) -> bytes | None:
        index = self._index
        if index is None:
            index = {}
            for f in self.fields:
                index.setdefault(f.name, f.value)
            self._index = index
        return index.get(name)

    def get(self, name: str) -> str | None:
        """A string field's value (first occurrence), or None."""
        value = self.raw(name)
        if value is None:
            return None
        return value.decode("utf-8", errors="replace")

    def get_int(self, name: str, base: int = 10) -> int | None:
        value = self.get(name)
        if value is None:
            return None
        try:
            return int(value.strip(), base)
        except ValueError:
            return None

    def set(self, name: str, value: str | bytes, type: FieldType = FieldType.STRING) -> None:
        """Replace the first field called `name`, or append it (Heartbeat's ha_msg_mod)."""
        data = value.encode() if isinstance(value, str) else value
        self._index = None
        for i, f in enumerate(self.fields):
            if f.name == name:
                self.fields[i] = Field(name, data, type)
                return
        self.fields.append(Field(name, data, type))

    def add(self, name: str, value: str | bytes, type: FieldType = FieldType.STRING) -> None:
        data = value.encode() if isinstance(value, str) else value
        self._index = None
        self.fields.append(Field(name, data, type))

    def remove(self, name: str) -> None:
        self._index = None
        self.fields = [f for f in self.fields if f.name != name]

    def copy(self) -> Message:
        return Message(list(self.fields))

    @property
    def type(self) -> str | None:
        return self.get("t")


@dataclass(frozen=True)
class Packet:
    """A message as received: its form, the MAC trailer (netstring) and the signed bytes."""

    message: Message
    form: str  # "classic" or "netstring"
    signed: bytes  # the bytes the trailer MAC covers (netstring) or b""
    trailer: str | None  # "N HEX" from after %%%, None if absent


# --- classic form -------------------------------------------------------------

def _classic_value(f: Field) -> bytes:
    if f.type is FieldType.BINARY:
        return base64.b64encode(f.value)
    return f.value


def classic_body(message: Message, *, skip_auth: bool) -> bytes:
    """The field lines without head/tail; with skip_auth, the text auth MACs cover."""
    parts = []
    for name, value, ftype in message.fields:
        if skip_auth and name == "auth":
            continue
        if ftype is FieldType.STRING:
            parts.append(b"%s=%s\n" % (name.encode(), value))
        else:
            parts.append(b"(%d)%s=%s\n" % (ftype, name.encode(),
                                           base64.b64encode(value) if ftype is FieldType.BINARY
                                           else value))
    return b"".join(parts)


def encode_classic(message: Message) -> bytes:
    return CLASSIC_START + classic_body(message, skip_auth=False) + CLASSIC_END


def _parse_type_prefix(line: bytes) -> tuple[FieldType, bytes]:
    if line.startswith(b"(") and len(line) > 3 and line[2:3] == b")":
        digit = line[1:2]
        if not digit.isdigit():
            raise WireError("bad field type prefix")
        try:
            return FieldType(int(digit)), line[3:]
        except ValueError:
            raise WireError(f"unknown field type {digit!r}") from None
    return FieldType.STRING, line


def decode_classic(data: bytes) -> Message:
    """Parse one classic message (from >>> through <<<).  Raises WireError."""
    if len(data) > MAX_MESSAGE:
        raise WireError("message too long")
    if not data.startswith(CLASSIC_START):
        raise WireError("no >>> start line")
    end = data.find(b"\n" + CLASSIC_END, len(CLASSIC_START) - 1)
    if end < 0:
        raise WireError("no <<< end line")
    body = data[len(CLASSIC_START):end + 1]
    fields: list[Field] = []
    for line in body.split(b"\n"):
        line = line.strip(b"\r")
        if not line:
            continue
        if len(fields) >= MAX_FIELDS:
            raise WireError("too many fields")
        ftype, rest = _parse_type_prefix(line)
        name, sep, value = rest.partition(b"=")
        if not sep or not name:
            raise WireError("field line without name=value")
        if ftype is FieldType.BINARY:
            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise WireError("bad base64 in binary field") from None
        elif ftype is not FieldType.STRING:
            raise WireError(f"field type {int(ftype)} is not supported in the classic form")
        fields.append(Field(_name(name), value, ftype))
    if not fields:
        raise WireError("empty message")
    return Message(fields)


_TYPE_PREFIXES = {b"(%d)" % int(t): t for t in FieldType}
_NAMES: dict[bytes, str] = {}  # field names seen so far (a handful in practice)


def _name(raw: bytes) -> str:
    known = _NAMES.get(raw)
    if known is not None:
        return known
    name = _check_name(raw)
    if len(_NAMES) < 256:  # bounded: hostile traffic cannot grow it
        _NAMES[raw] = name
    return name


def _check_name(raw: bytes) -> str:
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        raise WireError("field name is not ASCII") from None
    if not name.isprintable() or " " in name:
        raise WireError("bad field name")
    return name


# --- netstring form -------------------------------------------------------------

def netstring_item(payload: bytes) -> bytes:
    """One netstring: LEN:payload,"""
    return b"%d:" % len(payload) + payload + b","


def netstring_body(message: Message) -> bytes:
    """###\\n ... %%%\\n: the bytes the trailer MAC covers."""
    parts = [NETSTRING_START]
    for name, value, ftype in message.fields:
        encoded = name.encode()
        # LEN counts "(T)" + name + "=" + value
        parts.append(b"%d:(%d)%s=%s," % (len(encoded) + len(value) + 4, ftype, encoded, value))
    parts.append(NETSTRING_END)
    return b"".join(parts)


def encode_netstring(message: Message, trailer: str | None) -> bytes:
    body = netstring_body(message)
    if trailer is None:
        return body
    return body + netstring_item(trailer.encode())


def _peel(data: bytes, pos: int) -> tuple[bytes, int]:
    """Read one netstring at pos; return (payload, position after the comma)."""
    colon = data.find(b":", pos, pos + 12)
    if colon <= pos:
        raise WireError("bad netstring length")
    digits = data[pos:colon]
    if not digits.isdigit():
        raise WireError("bad netstring length")
    length = int(digits)
    start = colon + 1
    end = start + length
    if end >= len(data) or data[end:end + 1] != b",":
        raise WireError("truncated netstring")
    return data[start:end], end + 1


def _decode_netstring_fields(data: bytes, pos: int, depth: int) -> tuple[list[Field], int]:
    """Fields from just after ###\\n up to and including %%%\\n.

    Written as one tight loop: every heartbeat packet goes through it.
    """
    if depth > MAX_DEPTH:
        raise WireError("structs nested too deep")
    fields: list[Field] = []
    append = fields.append
    find = data.find
    size = len(data)
    new_field = tuple.__new__
    while True:
        if data.startswith(NETSTRING_END, pos):
            return fields, pos + len(NETSTRING_END)
        if pos >= size:
            raise WireError("no %%% end marker")
        if len(fields) >= MAX_FIELDS:
            raise WireError("too many fields")
        colon = find(b":", pos, pos + 12)
        digits = data[pos:colon]
        if colon <= pos or not digits.isdigit():
            raise WireError("bad netstring length")
        start = colon + 1
        end = start + int(digits)
        if end >= size or data[end] != 0x2C:  # ","
            raise WireError("truncated netstring")
        ftype = _TYPE_PREFIXES.get(data[start:start + 3])
        if ftype is None:
            raise WireError("field without a known (type) prefix")
        equals = find(b"=", start + 3, end)
        if equals <= start + 3:
            raise WireError("field without name=value")
        raw_name = data[start + 3:equals]
        name = _NAMES.get(raw_name) or _name(raw_name)
        value = data[equals + 1:end]
        if ftype is FieldType.STRUCT:
            if not value.startswith(NETSTRING_START):
                raise WireError("struct field is not a nested message")
            _, used = _decode_netstring_fields(value, len(NETSTRING_START), depth + 1)
            if used != len(value):
                raise WireError("junk after nested message")
        append(new_field(Field, (name, value, ftype)))
        pos = end + 1


def decode_netstring(data: bytes) -> Packet:
    """Parse a netstring datagram, keeping the signed bytes and the trailer."""
    if len(data) > MAX_MESSAGE:
        raise WireError("message too long")
    if not data.startswith(NETSTRING_START):
        raise WireError("no ### start line")
    fields, end = _decode_netstring_fields(data, len(NETSTRING_START), 0)
    if not fields:
        raise WireError("empty message")
    trailer: str | None = None
    rest = data[end:].rstrip(b"\0")
    if rest:
        payload, used = _peel(rest, 0)
        if rest[used:]:
            raise WireError("junk after the authentication trailer")
        try:
            trailer = payload.decode("ascii")
        except UnicodeDecodeError:
            raise WireError("authentication trailer is not ASCII") from None
    return Packet(Message(fields), "netstring", data[:end], trailer)


def decode(data: bytes) -> Packet:
    """Parse either form, as Heartbeat's wirefmt2msg picks by the first line."""
    if data.startswith(CLASSIC_START):
        return Packet(decode_classic(data.rstrip(b"\0")), "classic", b"", None)
    if data.startswith(NETSTRING_START):
        return decode_netstring(data)
    raise WireError("neither >>> nor ### at the start")


def split_classic_stream(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Cut complete classic messages out of a serial byte stream.

    Returns (messages, leftover).  Bytes before a `>>>` line (line noise, a
    half message from before we opened the port) are dropped, as Heartbeat's
    serial reader does.
    """
    messages: list[bytes] = []
    while True:
        start = buffer.find(CLASSIC_START)
        if start < 0:
            # keep a possible partial start marker at the end
            return messages, buffer[-(len(CLASSIC_START) - 1):] if buffer else b""
        if start:
            buffer = buffer[start:]
        end = buffer.find(b"\n" + CLASSIC_END, len(CLASSIC_START) - 1)
        if end < 0:
            if len(buffer) > MAX_MESSAGE:
                buffer = buffer[len(CLASSIC_START):]  # runaway message: resynchronise
                continue
            return messages, buffer
        cut = end + 1 + len(CLASSIC_END)
        messages.append(buffer[:cut])
        buffer = buffer[cut:]
