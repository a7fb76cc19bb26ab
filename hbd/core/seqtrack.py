"""Per-sender sequence and generation tracking, as Heartbeat 3.0.6 does it.

Every message but the `NS_` types carries a sequence number (hex) and the
sender's generation `hg` (hex).  For each peer we remember the generation
and the last sequence number seen (heartbeat.c: should_drop_message):

* a lower generation is a replay (or a very stale packet): dropped;
* a higher generation on a status message means the peer restarted: we
  forget its sequence state;
* the next sequence number is kept; the same one again (the copy that came
  over the other link) is a duplicate; a gap records the missing numbers,
  which are then asked for again (NS_rexmit) until they arrive; an old
  number is kept only if it was one of the missing ones.

Acks (NS_ackmsg) follow Heartbeat's flow control: we ack a peer's message
when its number ends in the peer's trigger digit and nothing before it is
missing, so a Heartbeat peer can free its send history and never stalls.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

ACK_DIV = 10  # heartbeat.h ACK_MSG_DIV
FLOWCONTROL_LIMIT = 250  # MAXMSGHIST / 2: a gap this large means start over
MAX_MISSING = 500


class Verdict(enum.Enum):
    KEEP = "keep"  # new: process it
    DUPLICATE = "duplicate"  # seen already (other link): counts for link liveness only
    DROP = "drop"  # stale, replayed or malformed: ignore entirely


@dataclass
class SeqResult:
    verdict: Verdict
    restarted: bool = False  # higher generation on a status message
    replay: bool = False  # lower generation
    healed: bool = False  # same generation from a node we had declared dead
    lost: tuple[int, int] | None = None  # a new gap first..last
    ack: int | None = None  # send NS_ackmsg with this ackseq
    refilled: bool = False  # a missing packet arrived


@dataclass
class SeqTrack:
    """What we know of one peer's sequence numbers."""

    ack_trigger: int  # the digit that triggers our acks to this peer
    generation: int = 0
    last_seq: int | None = None
    missing: set[int] = field(default_factory=set)
    next_rexmit_request: float | None = None  # when to (re)ask for the missing ones
    status_seqno: int = 0

    def reset(self) -> None:
        self.last_seq = None
        self.missing.clear()
        self.next_rexmit_request = None
        self.status_seqno = 0

    @property
    def first_missing(self) -> int:
        return min(self.missing) if self.missing else 0

    def _ack_if_needed(self, seq: int) -> int | None:
        first = self.first_missing
        if (first and seq > first) or seq % ACK_DIV != self.ack_trigger:
            return None
        return seq

    def classify(
        self,
        seq: int,
        generation: int,
        *,
        is_status: bool,
        peer_dead: bool,
        now: float,
        first_request_delay: float,
    ) -> SeqResult:
        """Decide what to do with a sequenced message.  Mutates the tracking state."""
        restarted = healed = False
        if generation < self.generation:
            return SeqResult(Verdict.DROP, replay=True)
        if is_status:
            if generation == self.generation and generation > 0 and peer_dead:
                if seq <= self.status_seqno:
                    return SeqResult(Verdict.DROP)
                healed = True
            elif generation > self.generation:
                restarted = self.generation > 0
                self.reset()
            self.generation = generation

        if self.last_seq is None or seq == self.last_seq + 1:
            self.last_seq = seq
            return SeqResult(Verdict.KEEP, restarted, healed=healed,
                             ack=self._ack_if_needed(seq))
        if seq == self.last_seq:
            return SeqResult(Verdict.DUPLICATE)
        if seq > self.last_seq:
            first, last = self.last_seq + 1, seq - 1
            if seq - first > FLOWCONTROL_LIMIT:
                self.reset()
                self.last_seq = seq
                return SeqResult(Verdict.KEEP, restarted, healed=healed)
            for missing in range(first, last + 1):
                if len(self.missing) >= MAX_MISSING:
                    self.missing.discard(min(self.missing))
                self.missing.add(missing)
            if self.next_rexmit_request is None:
                self.next_rexmit_request = now + first_request_delay
            self.last_seq = seq
            return SeqResult(Verdict.KEEP, restarted, healed=healed, lost=(first, last))
        # older than the last one
        if seq in self.missing:
            old_first = self.first_missing
            self.missing.discard(seq)
            if not self.missing:
                self.next_rexmit_request = None
            ack = None
            if seq == old_first:
                ack = self._refill_ack(old_first)
            return SeqResult(Verdict.KEEP, refilled=True, ack=ack)
        if healed or restarted:
            self.reset()
            self.last_seq = seq
            return SeqResult(Verdict.KEEP, restarted, healed=healed)
        return SeqResult(Verdict.DROP)

    def _refill_ack(self, old_first: int) -> int | None:
        """After the first missing packet arrives, ack up to the next hole (is_lost_packet)."""
        assert self.last_seq is not None
        first = self.first_missing
        upto = first - 1 if first else self.last_seq
        low = upto % ACK_DIV
        if low >= self.ack_trigger:
            ack_seq = upto // ACK_DIV * ACK_DIV + self.ack_trigger
        else:
            ack_seq = (upto // ACK_DIV - 1) * ACK_DIV + self.ack_trigger
        if ack_seq >= old_first and ack_seq > 0:
            return self._ack_if_needed(ack_seq)
        return None

    def missing_ranges(self) -> list[tuple[int, int]]:
        """The missing numbers as contiguous (first, last) runs, lowest first."""
        runs: list[tuple[int, int]] = []
        for seq in sorted(self.missing):
            if runs and runs[-1][1] == seq - 1:
                runs[-1] = (runs[-1][0], seq)
            else:
                runs.append((seq, seq))
        return runs


@dataclass
class SentMessage:
    seq: int
    netstring: bytes
    classic: bytes
    msgtype: str
    last_rexmit: float | None = None


class SendHistory:
    """Our recently sent sequenced messages, kept for retransmission requests."""

    def __init__(self, size: int = 500) -> None:
        self.size = size
        self._by_seq: dict[int, SentMessage] = {}
        self.hiseq = 0

    def next_seq(self) -> int:
        self.hiseq += 1
        return self.hiseq

    def add(self, sent: SentMessage) -> None:
        # seqs only grow and dicts keep insertion order: the first key is the oldest
        self._by_seq[sent.seq] = sent
        while len(self._by_seq) > self.size:
            del self._by_seq[next(iter(self._by_seq))]

    def get(self, seq: int) -> SentMessage | None:
        return self._by_seq.get(seq)

    @property
    def lowseq(self) -> int:
        return next(iter(self._by_seq)) if self._by_seq else 0
