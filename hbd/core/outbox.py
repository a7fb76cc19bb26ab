"""Building and signing our outgoing messages the way Heartbeat does.

Heartbeat appends its control fields after the message's own fields, in
this order (ha_msg_internal.c: add_control_msg_fields): destuuid (when the
message has a dest), src, srcuuid, seq (not for `NS_` types), hg, ts, ld,
ttl; then the auth field, then the UDP form gets the netstring trailer.
Sequenced messages are kept in the send history for retransmission.
"""

from __future__ import annotations

from typing import TypeVar

from hbd.core import auth, wire
from hbd.core.actions import Transmit
from hbd.core.config import AuthKeys
from hbd.core.seqtrack import SendHistory, SentMessage
from hbd.core.wire import FieldType, Message

NOSEQ_PREFIX = "NS_"
RECENT = 64  # datagrams remembered by the byte-identity caches
_V = TypeVar("_V")


class Outbox:
    def __init__(
        self,
        *,
        node: str,
        uuid: bytes,
        generation: int,
        keys: AuthKeys,
        ttl: int,
        history_size: int = 500,
    ) -> None:
        self.node = node
        self.uuid = uuid
        self.generation = generation
        self.keys = keys
        self.ttl = ttl
        self.history = SendHistory(history_size)
        # The classic (serial) encoding costs a second pass over the fields: built only
        # while a serial link is configured (Transmit.classic is b"" otherwise).
        self.classic = True
        self.load = "0.00 0.00 0.00 1/1 1"  # the adapter may refresh it (Heartbeat's `ld`)
        # What we sent lately, byte for byte: a bcast link hands our own datagrams back.
        self.recent: dict[bytes, None] = {}

    def _sent(self, transmit: Transmit) -> Transmit:
        self.recent[transmit.netstring] = None
        if len(self.recent) > RECENT:
            del self.recent[next(iter(self.recent))]
        return transmit

    def build(
        self,
        msgtype: str,
        fields: list[tuple[str, str]],
        *,
        wall: float,
        dest: str | None = None,
        dest_uuid: bytes | None = None,
    ) -> Transmit:
        """Make, sign and encode one message; sequenced ones go into the history."""
        message = Message.of(("t", msgtype), *fields)
        if dest is not None:
            message.set("dest", dest)
            if dest_uuid is not None:
                message.add("destuuid", dest_uuid, FieldType.BINARY)
        message.add("src", self.node)
        message.add("srcuuid", self.uuid, FieldType.BINARY)
        seq: int | None = None
        if not msgtype.startswith(NOSEQ_PREFIX):
            seq = self.history.next_seq()
            message.add("seq", f"{seq:x}")
        message.add("hg", f"{self.generation:x}")
        message.add("ts", f"{int(wall):x}")
        if seq is not None:
            message.add("ld", self.load)
        message.add("ttl", str(self.ttl))
        auth.sign_fields(message, self.keys)
        body = wire.netstring_body(message)
        trailer = auth.trailer(self.keys, body).encode()
        transmit = Transmit(
            netstring=body + wire.netstring_item(trailer),
            classic=wire.encode_classic(message) if self.classic else b"",
            msgtype=msgtype,
        )
        if seq is not None:
            self.history.add(SentMessage(seq, transmit.netstring, transmit.classic, msgtype))
        return self._sent(transmit)

    def retransmission(self, seq: int, now: float, min_interval: float) -> Transmit | None:
        """The stored message `seq`, unless resent less than min_interval ago."""
        sent = self.history.get(seq)
        if sent is None:
            return None
        if sent.last_rexmit is not None and now - sent.last_rexmit < min_interval:
            return None
        sent.last_rexmit = now
        return self._sent(Transmit(sent.netstring, sent.classic, sent.msgtype))


def remember(cache: dict[bytes, _V], key: bytes, value: _V) -> None:
    cache[key] = value
    if len(cache) > RECENT:
        del cache[next(iter(cache))]  # dicts keep insertion order: drop the oldest
