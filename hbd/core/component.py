"""What the engine hands its components, and what a component offers it.

The engine (hbd.core.engine) routes membership; the layers above it (the
resource protocol, ping nodes, API queries) plug in as components of this
shape.  Kept apart from the engine so a component's module needs only this.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from hbd.core.actions import Action
from hbd.core.membership import NodeStatus, Peer
from hbd.core.wire import Message


@dataclass(frozen=True)
class Received:
    """A verified, sequence-checked message handed to a protocol handler."""

    message: Message
    peer: Peer
    link: int
    seq: int


Handler = Callable[[Received, float, float], list[Action]]


class EngineComponent(Protocol):
    """A layer above membership that the engine consults (the resource protocol, ping nodes).

    These are all of the engine's extension points.  A component answers the
    message types it names, hears of comm-up, of a peer's status changes and of
    a healed partition, adds fields to our status messages and reads the
    peer's, and has deadlines of its own, woken through the engine's single
    timer.  The bodies below are the defaults a component gets by subclassing
    this protocol; the engine calls its components in the order given to
    `Engine.attach`.
    """

    def message_handlers(self) -> Mapping[str, Handler]:
        return {}

    def comm_up(self, now: float, wall: float) -> list[Action]:
        return []

    def peer_status(self, peer: Peer, old: NodeStatus, new: NodeStatus, now: float,
                    wall: float) -> list[Action]:
        return []

    def partition_healed(self, peer: Peer, now: float, wall: float) -> list[Action]:
        return []

    def status_fields(self, now: float) -> list[tuple[str, str]]:
        """hbd's extensions to our status messages (Heartbeat ignores unknown fields)."""
        return []

    def status_seen(self, received: Received, now: float) -> None:
        """A peer's status message, for the fields `status_fields` adds on its side."""
        return None

    def message_seen(self, received: Received, now: float, wall: float) -> list[Action]:
        """Every kept message but the engine's own (status, acks, retransmissions,
        reqnodes), after its handler: Heartbeat's API clients see them (clientmsgs)."""
        return []

    def next_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float, wall: float) -> list[Action]:
        return []
