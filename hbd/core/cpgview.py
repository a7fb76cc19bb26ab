"""The agreed picture of an hbd cluster on Corosync: members, their states, group owners.

Corosync's CPG gives every member of a process group the same sequence of
membership changes and messages (virtual synchrony, agreed order).  Every hbd
feeds that sequence into a View, so every member computes the same owners
and the same desired placement at the same point of the sequence; the only
local inputs a node adds are its own decisions to ask for a group.

Ownership rules (all applied in delivery order):

* A member asks for a stopped group by announcing it as `claim`.  The first
  claim delivered while the group has no owner wins; later ones lose, and
  their senders withdraw them.  A node starts a group only after its own
  claim came back accepted.
* A member announcing a group as starting/running/stopping/blocked owns it;
  this beats a claim not yet acted on.  Two such members (after a partition
  heals, or a stop that failed) are a conflict: the better state wins
  (running/starting over stopping over blocked), then the earlier node in
  the group's preference order; the other must stop it.
* Ownership ends when the owner announces the group stopped or leaves the
  process group (its node died, was partitioned away, or hbd exited).

Placement (`desired`): the group's preference order (see `preference_order`)
filtered to members that have announced their state and do not decline the
group, have not failed to start it and are not leaving.  A member that took
the group over (`preferred`) comes first; with auto_failback off the current
owner stays while it is a candidate; otherwise the first candidate wins.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from hbd.core.config import ResourceGroup
from hbd.core.cpgwire import ACTIVE, Announced, NodeState

MemberId = tuple[int, int]  # (corosync nodeid, pid): one hbd process
RingId = tuple[int, int]  # (representative nodeid, sequence) of a totem ring


class Reason(enum.IntEnum):
    """cpg_reason_t: why a process joined or left the group."""

    UNDEFINED = 0
    JOIN = 1  # the process joined
    LEAVE = 2  # the process left
    NODEDOWN = 3  # its node left the ring
    NODEUP = 4  # its node joined the ring
    PROCDOWN = 5  # the process died


@dataclass(frozen=True)
class CpgMember:
    nodeid: int
    pid: int
    reason: int = 0

    @property
    def id(self) -> MemberId:
        return (self.nodeid, self.pid)


@dataclass(frozen=True)
class Confchg:
    """A change of the hbd process group (cpg_confchg_fn_t)."""

    members: tuple[CpgMember, ...]
    left: tuple[CpgMember, ...] = ()
    joined: tuple[CpgMember, ...] = ()

    @property
    def ring_changed(self) -> bool:
        """Nodes came or went: a new totem ring and a new quorum decision follow."""
        return any(m.reason in (Reason.NODEDOWN, Reason.NODEUP)
                   for m in (*self.left, *self.joined))


@dataclass(frozen=True)
class TotemChange:
    """A new totem ring (cpg_totem_confchg_fn_t): its id and its nodes."""

    ring: RingId
    nodes: tuple[int, ...]


@dataclass(frozen=True)
class QuorumNotice:
    """libquorum's notification: whether this partition is quorate, for which ring."""

    quorate: bool
    ring: RingId
    nodes: tuple[int, ...]


@dataclass(frozen=True)
class ClaimOutcome:
    group: str
    member: MemberId
    accepted: bool


@dataclass(frozen=True)
class OwnerConflict:
    group: str
    keeper: MemberId
    other: MemberId


Outcome = ClaimOutcome | OwnerConflict

_RANK = {Announced.RUNNING: 0, Announced.STARTING: 0, Announced.STOPPING: 1,
         Announced.BLOCKED: 2}


def preference_order(group: ResourceGroup, nodes: tuple[str, ...],
                     overrides: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The nodes that may run a group, best first.

    An hbd `group_order KEY NODE...` line in ha.cf gives the list outright.
    Otherwise: the haresources node, then the ha.cf `node` lines in file
    order, starting after it and wrapping around (nodes n1..n5, home n3:
    n3 n4 n5 n1 n2), so the groups of one dead node spread over the others
    the same way on every node.
    """
    listed = overrides.get(group.key)
    if listed:
        return listed
    if group.node not in nodes:
        return (group.node, *nodes)
    i = nodes.index(group.node)
    return nodes[i:] + nodes[:i]


class View:
    """Members of the hbd CPG group, what each announced, and who owns each group."""

    def __init__(self, orders: Mapping[str, tuple[str, ...]]) -> None:
        self.orders = orders  # group key -> preference order
        self.members: dict[MemberId, NodeState | None] = {}  # None: not heard since joining
        self.owner: dict[str, MemberId] = {}

    # --- the agreed sequence ------------------------------------------------------------

    def confchg(self, change: Confchg) -> list[Outcome]:
        """Apply a membership change; owners that left lose their groups."""
        now_in = {m.id for m in change.members}
        self.members = {mid: self.members.get(mid) for mid in sorted(now_in)}
        outcomes: list[Outcome] = []
        for key, owner in list(self.owner.items()):
            if owner not in now_in:
                del self.owner[key]
                outcomes += self._reelect(key)
        return outcomes

    def deliver(self, sender: MemberId, state: NodeState) -> list[Outcome]:
        """Apply one member's announced state; returns the claims decided and conflicts."""
        if sender not in self.members:
            return []  # CPG delivers only members' messages; a stale one is ignored
        previous = self.members[sender]
        self.members[sender] = state
        outcomes: list[Outcome] = []
        for key, announced in state.groups:
            was = previous.group(key) if previous is not None else None
            owner = self.owner.get(key)
            if announced is Announced.CLAIM:
                if was is Announced.CLAIM or owner == sender:
                    continue  # the same claim again, already decided
                accepted = owner is None
                if accepted:
                    self.owner[key] = sender
                outcomes.append(ClaimOutcome(key, sender, accepted))
            elif owner is None or owner == sender or self.announced(owner, key) not in ACTIVE:
                self.owner[key] = sender
            elif was is not announced:  # report a conflict once, not at every message
                keeper = self._better(key, owner, sender)
                self.owner[key] = keeper
                outcomes.append(OwnerConflict(key, keeper, sender if keeper == owner else owner))
        for key, owner in list(self.owner.items()):
            if owner == sender and state.group(key) is None:
                del self.owner[key]
                outcomes += self._reelect(key)
        return outcomes

    def _reelect(self, key: str) -> list[Outcome]:
        """An owner is gone: another member still announcing the group active owns it."""
        holders = [mid for mid in self.members if self.announced(mid, key) in ACTIVE]
        if not holders:
            return []
        best = holders[0]
        for other in holders[1:]:
            best = self._better(key, best, other)
        self.owner[key] = best
        return [OwnerConflict(key, best, other) for other in holders if other != best]

    def _better(self, key: str, a: MemberId, b: MemberId) -> MemberId:
        order = self.orders.get(key, ())

        def rank(mid: MemberId) -> tuple[int, int, MemberId]:
            announced = self.announced(mid, key)
            name = self.name(mid)
            position = order.index(name) if name in order else len(order)
            return (_RANK.get(announced, 3) if announced else 3, position, mid)

        return min(a, b, key=rank)

    # --- questions ------------------------------------------------------------------------

    def announced(self, member: MemberId, key: str) -> Announced | None:
        state = self.members.get(member)
        return state.group(key) if state is not None else None

    def name(self, member: MemberId) -> str | None:
        state = self.members.get(member)
        return state.node if state is not None else None

    def synced(self) -> bool:
        """Every member's state is known (a joiner decides nothing before)."""
        return all(state is not None for state in self.members.values())

    def by_name(self, name: str) -> MemberId | None:
        """The member running as node `name` (the lowest id if, wrongly, several do)."""
        for mid, state in self.members.items():
            if state is not None and state.node == name:
                return mid
        return None

    def candidates(self, key: str) -> list[MemberId]:
        """Members that may run the group now, in its preference order."""
        out = []
        for name in self.orders.get(key, ()):
            mid = self.by_name(name)
            state = self.members.get(mid) if mid is not None else None
            if mid is None or state is None or state.leaving:
                continue
            if key in state.declined or key in state.failed:
                continue
            out.append(mid)
        return out

    def desired(self, key: str, failback: bool) -> MemberId | None:
        """Where the group should run, or None when no member may run it."""
        candidates = self.candidates(key)
        if not candidates:
            return None
        for mid in candidates:
            state = self.members[mid]
            if state is not None and key in state.preferred:
                return mid
        owner = self.owner.get(key)
        if not failback and owner in candidates:
            return owner
        return candidates[0]
