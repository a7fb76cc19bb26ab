"""Resource groups: their state machine and the sets Heartbeat talks about.

A group (one haresources line) runs on at most one node.  Its state moves
only along GROUP_TRANSITIONS; anything else raises TransitionError and
leaves it unchanged.

Heartbeat's protocol never names single groups: nodes exchange which *sets*
they hold (`rsc_hold`): `local` is the groups whose haresources node is the
sender, `foreign` the others', `all` both.  This module converts between
the two views.

A group whose stop failed is BLOCKED: we cannot be sure it is down, so we
keep claiming it (the peer will not start it) until an admin clears it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from hbd.core.config import ResourceGroup
from hbd.core.fsm import StateMachine


class GroupState(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    BLOCKED = "blocked"  # a stop failed: it may still be running; never handed on


GROUP_TRANSITIONS: Final[dict[GroupState, frozenset[GroupState]]] = {
    GroupState.STOPPED: frozenset({GroupState.STARTING}),
    # a failed start is cleaned up by a stop, so STARTING never goes straight to STOPPED
    GroupState.STARTING: frozenset({GroupState.RUNNING, GroupState.STOPPING}),
    GroupState.RUNNING: frozenset({GroupState.STOPPING}),
    GroupState.STOPPING: frozenset({GroupState.STOPPED, GroupState.BLOCKED}),
    GroupState.BLOCKED: frozenset({GroupState.STOPPING, GroupState.STOPPED}),
}


class Held(enum.IntFlag):
    """Heartbeat's rsc_hold bit set (hb_resource.h)."""

    NONE = 0
    LOCAL = 1
    FOREIGN = 2
    ALL = 3

    @property
    def wire(self) -> str:
        return {0: "none", 1: "local", 2: "foreign", 3: "all"}[int(self)]

    @classmethod
    def parse(cls, text: str | None) -> Held | None:
        return {"none": cls.NONE, "local": cls.LOCAL, "foreign": cls.FOREIGN,
                "all": cls.ALL}.get((text or "").strip().lower())

    def mirror(self) -> Held:
        """The same groups seen from the other node (its local is our foreign)."""
        value = 0
        if self & Held.LOCAL:
            value |= Held.FOREIGN
        if self & Held.FOREIGN:
            value |= Held.LOCAL
        return Held(value)


SCOPES: Final = ("all", "local", "foreign", "failback")


def scope_set(scope: str) -> Held:
    """hb_standby/hb_takeover scope -> set (failback is foreign, as hb_standby maps it)."""
    return {"all": Held.ALL, "local": Held.LOCAL, "foreign": Held.FOREIGN,
            "failback": Held.FOREIGN}[scope]


def takeover_request_scope(scope: str) -> str:
    """What a peer receiving `hb_takeover SCOPE` asks itself to give up (rc.d/hb_takeover).

    Heartbeat maps all->all, local->foreign, foreign->local, and anything else
    (failback included) to a plain hb_standby, i.e. all.
    """
    return {"all": "all", "local": "foreign", "foreign": "local"}.get(scope, "all")


@dataclass
class Group:
    config: ResourceGroup
    fsm: StateMachine[GroupState] = field(init=False)
    detail: str = ""  # last failure, for logs and D-Bus

    def __post_init__(self) -> None:
        self.fsm = StateMachine(f"group {self.key}", GroupState.STOPPED, GROUP_TRANSITIONS)

    @property
    def key(self) -> str:
        return self.config.key

    @property
    def home(self) -> str:
        return self.config.node

    @property
    def state(self) -> GroupState:
        return self.fsm.state

    @property
    def active(self) -> bool:
        """Claimed by us: running, on its way, or possibly still running."""
        return self.state is not GroupState.STOPPED


class GroupTable:
    """Our view of every group, keyed by group key."""

    def __init__(self, node: str, groups: Iterable[ResourceGroup]) -> None:
        self.node = node
        self.groups = {g.key: Group(g) for g in groups}

    def __iter__(self) -> Iterator[Group]:
        return iter(self.groups.values())

    def in_set(self, held: Held) -> list[Group]:
        """Groups in a set, from our point of view (local = homed here)."""
        out = []
        for group in self.groups.values():
            local = group.home == self.node
            if (local and held & Held.LOCAL) or (not local and held & Held.FOREIGN):
                out.append(group)
        return out

    def claimed(self) -> Held:
        """The sets we claim: a set counts as soon as any of its groups is ours.

        A set with no groups at all counts as held when the caller says so (see
        Failover.held), which is how Heartbeat reports `local` on a node without
        local groups.
        """
        held = Held.NONE
        for group in self.groups.values():
            if group.active:
                held |= Held.LOCAL if group.home == self.node else Held.FOREIGN
        return held

    def busy(self) -> bool:
        return any(g.state in (GroupState.STARTING, GroupState.STOPPING)
                   for g in self.groups.values())

    def blocked(self) -> list[Group]:
        return [g for g in self.groups.values() if g.state is GroupState.BLOCKED]
