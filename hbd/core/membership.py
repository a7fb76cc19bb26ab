"""Who is alive: node status and per-link liveness.

The rules (heartbeat.c: HBDoMsg_T_STATUS, check_for_timeouts,
mark_node_dead, check_comm_isup):

* a peer's status is what its own status messages say (init, up, active),
  except `dead`, which only we decide: no status message from it for its
  deadtime (the `dt` it announces, else ours; initdead until every node has
  been heard from);
* a link to a peer is up while packets from that peer arrive over it and
  dead after the same deadtime of silence; a node is dead only when its
  status messages stop, i.e. when every link to it is silent;
* a status message arriving later than warntime is a "late heartbeat"
  warning with the measured gap;
* our own status goes init -> up (links open) -> active (every node heard
  from or declared dead, and the node list exchanged).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from hbd.core.fsm import StateMachine
from hbd.core.seqtrack import ACK_DIV, SeqTrack


class NodeStatus(enum.Enum):
    INIT = "init"
    UP = "up"
    ACTIVE = "active"
    DEAD = "dead"


# A peer's status follows its own reports, any order (it may restart at any
# time); only we move it to DEAD, and only a report brings it back.
PEER_TRANSITIONS: Final[dict[NodeStatus, frozenset[NodeStatus]]] = {
    NodeStatus.INIT: frozenset({NodeStatus.UP, NodeStatus.ACTIVE, NodeStatus.DEAD}),
    NodeStatus.UP: frozenset({NodeStatus.INIT, NodeStatus.ACTIVE, NodeStatus.DEAD}),
    NodeStatus.ACTIVE: frozenset({NodeStatus.INIT, NodeStatus.UP, NodeStatus.DEAD}),
    NodeStatus.DEAD: frozenset({NodeStatus.INIT, NodeStatus.UP, NodeStatus.ACTIVE}),
}

# Our own status only ever moves forward; DEAD is announced when we stop.
LOCAL_TRANSITIONS: Final[dict[NodeStatus, frozenset[NodeStatus]]] = {
    NodeStatus.INIT: frozenset({NodeStatus.UP, NodeStatus.DEAD}),
    NodeStatus.UP: frozenset({NodeStatus.ACTIVE, NodeStatus.DEAD}),
    NodeStatus.ACTIVE: frozenset({NodeStatus.DEAD}),
    NodeStatus.DEAD: frozenset(),
}


class LinkStatus(enum.Enum):
    INIT = "init"  # nothing heard on it yet
    UP = "up"
    DEAD = "dead"


LINK_TRANSITIONS: Final[dict[LinkStatus, frozenset[LinkStatus]]] = {
    LinkStatus.INIT: frozenset({LinkStatus.UP, LinkStatus.DEAD}),
    LinkStatus.UP: frozenset({LinkStatus.DEAD}),
    LinkStatus.DEAD: frozenset({LinkStatus.UP}),
}


def ack_trigger_for(name: str) -> int:
    """Heartbeat picks a random digit per peer; a stable hash of the name does as well."""
    return sum(name.encode()) % ACK_DIV


@dataclass
class LinkState:
    name: str
    fsm: StateMachine[LinkStatus]
    last_heard: float | None = None
    heard: int = 0  # messages heard from the peer on this link (hbd_heartbeats_received)


@dataclass
class Peer:
    """Everything we track about one other node."""

    name: str
    status: StateMachine[NodeStatus]
    seq: SeqTrack
    links: dict[int, LinkState] = field(default_factory=dict)
    last_status_at: float | None = None  # local time of its last status message
    deadtime: float = 0.0  # seconds; from its `dt`, else ours
    uuid: bytes | None = None
    heard_from: bool = False  # any packet since start or since declared dead
    ackseq: int = 0  # highest of our seqs it has acked
    rsc_hold: str = "none"  # what it says it holds (resource protocol)

    @classmethod
    def new(cls, name: str, link_names: list[str], deadtime: float) -> Peer:
        links = {
            i: LinkState(n, StateMachine(f"link {name}:{n}", LinkStatus.INIT, LINK_TRANSITIONS))
            for i, n in enumerate(link_names)
        }
        return cls(
            name=name,
            status=StateMachine(f"node {name}", NodeStatus.INIT, PEER_TRANSITIONS),
            seq=SeqTrack(ack_trigger=ack_trigger_for(name)),
            links=links,
            deadtime=deadtime,
        )

    @property
    def alive(self) -> bool:
        return self.status.state in (NodeStatus.UP, NodeStatus.ACTIVE)

    @property
    def dead(self) -> bool:
        return self.status.state is NodeStatus.DEAD

    def links_up(self) -> int:
        return sum(1 for link in self.links.values() if link.fsm.state is LinkStatus.UP)


def parse_status(text: str | None) -> NodeStatus | None:
    """A peer's `st` value, or None for values we do not track (ping, unknown)."""
    if text is None:
        return None
    try:
        return NodeStatus(text.lower())
    except ValueError:
        return None
