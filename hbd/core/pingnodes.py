"""Ping nodes and ping groups, and Heartbeat's ipfail decision.

Every keepalive we ask the adapter to ping each configured address; a ping
node is up while its replies are younger than `deadping`, a ping group while
any of its members is.  The count of reachable ping nodes travels in our
status messages (`hbd_ping`, an extension Heartbeat ignores), and ipfail's
rule applies: the node that reaches fewer ping nodes than its peer hands its
groups to the peer.  The imbalance must last GRACE keepalives first, so a
single lost echo moves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from hbd.core import fields
from hbd.core.actions import Action, Notice, PingNodeChanged, SendPing
from hbd.core.config import HaCf
from hbd.core.engine import EngineComponent, Received

PING_FIELD = "hbd_ping"
GRACE = 3  # keepalives an imbalance must last before resources move


class ResourceHolder(Protocol):
    """What ipfail's rule asks of the resource layer (hbd.core.failover.Failover)."""

    def live_peer(self) -> str | None:
        """The peer's name while it is alive, else None."""

    def holds_groups(self) -> bool: ...

    def release_refusal(self) -> str | None:
        """Why handing our groups over cannot start now (a standby under way...), or None."""

    def release(self, scope: str, now: float, wall: float) -> list[Action]: ...


@dataclass
class PingNodes(EngineComponent):
    """A component of the Engine: our ping count travels in the status messages."""

    hacf: HaCf
    resources: ResourceHolder
    last_reply: dict[str, float] = field(default_factory=dict)
    next_ping: float | None = None
    imbalance_since: float | None = None
    peer_count: int | None = None
    reported: dict[str, bool] = field(default_factory=dict)  # last logged up/down per name
    # ipfail decides instead when a `respawn` line runs it or it is signed on here: the
    # built-in rule steps aside so that one ping node lost moves the groups once
    ipfail_respawned: bool = False
    ipfail_signed_on: bool = False

    def __post_init__(self) -> None:
        self.update(self.hacf)

    def update(self, hacf: HaCf) -> None:
        """(Re)read the ping configuration; replies already seen are kept."""
        self.hacf = hacf
        self.deadping = hacf.timers.deadping_ms / 1000.0
        self.interval = hacf.timers.keepalive_ms / 1000.0
        self.addresses = list(hacf.ping_nodes) + [
            a for group in hacf.ping_groups for a in group.addresses]
        self.next_ping = 0.0 if self.addresses else None
        self.imbalance_since = None
        names = set(hacf.ping_nodes) | {g.name for g in hacf.ping_groups}
        self.reported = {k: v for k, v in self.reported.items() if k in names}

    @property
    def configured(self) -> int:
        return len(self.hacf.ping_nodes) + len(self.hacf.ping_groups)

    def _up(self, address: str, now: float) -> bool:
        at = self.last_reply.get(address)
        return at is not None and now - at <= self.deadping

    def statuses(self, now: float) -> list[tuple[str, bool]]:
        """Each ping node (its address) and ping group (its name): (name, reachable)."""
        nodes = [(a, self._up(a, now)) for a in self.hacf.ping_nodes]
        return nodes + [(g.name, any(self._up(a, now) for a in g.addresses))
                        for g in self.hacf.ping_groups]

    def reachable(self, now: float) -> int:
        return sum(1 for _, up in self.statuses(now) if up)

    def ping_reply(self, address: str, now: float) -> None:
        if address in self.addresses:
            self.last_reply[address] = now

    # --- EngineComponent ------------------------------------------------------------

    def status_fields(self, now: float) -> list[tuple[str, str]]:
        if not self.addresses:
            return []
        return [(PING_FIELD, str(self.reachable(now)))]

    def status_seen(self, received: Received, now: float) -> None:
        value = fields.number(received.message, "status", PING_FIELD)
        if value is not None:
            self.peer_count = value

    def next_timer(self) -> float | None:
        return self.next_ping

    def handle_timer(self, now: float, wall: float) -> list[Action]:
        if self.next_ping is None or now < self.next_ping:
            return []
        self.next_ping = now + self.interval
        actions: list[Action] = [SendPing(a) for a in self.addresses]
        return actions + self._report(now) + self._judge(now, wall)

    def _report(self, now: float) -> list[Action]:
        """Heartbeat's lines when a ping node answers or stops answering."""
        actions: list[Action] = []
        groups = {g.name for g in self.hacf.ping_groups}
        for name, up in self.statuses(now):
            if self.reported.get(name, False) == up:
                continue
            self.reported[name] = up
            actions.append(PingNodeChanged(name, up, name in groups))
            if up:
                actions.append(Notice("info", f"Status update for node {name}: status ping"))
            else:
                actions.append(Notice("warning", f"node {name}: is dead (ping node: no reply "
                                      f"for {self.deadping:g} s)"))
        return actions

    @property
    def decides(self) -> bool:
        """Whether the built-in rule moves groups (not while ipfail does)."""
        return not (self.ipfail_respawned or self.ipfail_signed_on)

    def _judge(self, now: float, wall: float) -> list[Action]:
        peer = self.resources.live_peer()
        ours = self.reachable(now)
        if (not self.decides or peer is None or self.peer_count is None
                or self.peer_count <= ours or not self.resources.holds_groups()):
            self.imbalance_since = None
            return []
        if self.imbalance_since is None:
            self.imbalance_since = now
        if now - self.imbalance_since < GRACE * self.interval:
            return []
        if self.resources.release_refusal() is not None:
            return []
        self.imbalance_since = None
        text = (f"ping nodes: we reach {ours} of {self.configured}, {peer} reaches "
                f"{self.peer_count}: handing our groups to {peer}")
        return [Notice("warning", text), *self.resources.release("all", now, wall)]
