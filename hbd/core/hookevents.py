"""What notify hooks are told: the core's events turned into `TYPE NAME STATE` events.

keepalived calls its notify scripts with `TYPE NAME STATE`; hbd's hooks get
`group KEY STATE` and `node NAME STATE`, and the details in HBD_* variables
(docs/operations.md, "Notify hooks").  This module decides which of the
actions the core hands the daemon are hook events and what each says; the
adapter (hbd/hooks.py) queues them and runs the hooks.

* a group of this node: every state it moves to (starting, running,
  stopping, stopped, blocked) and `failed` when a start, stop or monitor
  fails (GroupFailed, which comes before the move it causes);
* another node: `up` when it comes to life (init or dead -> up or active;
  on the corosync stack, being in hbd's process group) and `dead` when it
  is declared dead (or leaves the group).  A peer that restarts without
  ever being declared dead stays `up`: no event;
* fencing of another node (hbd/core/fencing.py): every state its fencing
  moves to (delayed, fencing, waiting-confirmation, failed, fenced, and none
  when it is heard from again), as `fence NAME STATE`, with the detail (never
  a device parameter) as the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hbd.core.actions import (
    Action,
    FenceStateChanged,
    GroupFailed,
    GroupStateChanged,
    MembershipChanged,
    NodeStatusChanged,
    StartGroup,
    StopGroup,
)

ALIVE = ("up", "active")


@dataclass(frozen=True)
class HookEvent:
    """One event as the hooks see it."""

    seq: int  # 1, 2, ... from the daemon's start; a gap means dropped events
    kind: str  # "group", "node" or "fence"
    name: str  # the group's key or the node's name
    state: str  # group: starting running stopping stopped blocked failed; node: up dead
    old_state: str  # group: its state before (failed: the state it failed in); node: its
    # status before (init, up, active, dead; corosync: member, left)
    wall: float  # Unix time of the event
    owner: str = ""  # group: the node holding it ("" once stopped)
    reason: str = ""  # why: the takeover/release reason, or the failure
    operation: str = ""  # failed: start, stop or monitor
    status: str = ""  # node: the status it reported (init, up, active, dead; member, left)

    @property
    def argv(self) -> tuple[str, str, str]:
        return self.kind, self.name, self.state

    def environment(self, local_node: str, dropped: int) -> dict[str, str]:
        """The HBD_* variables; `dropped`: events dropped before this one, in all."""
        env = {
            "HBD_EVENT": self.kind, "HBD_STATE": self.state, "HBD_OLD_STATE": self.old_state,
            "HBD_REASON": self.reason, "HBD_LOCAL_NODE": local_node, "HBD_SEQ": str(self.seq),
            "HBD_DROPPED": str(dropped), "HBD_TIME": f"{self.wall:.6f}",
        }
        if self.kind == "group":
            env.update(HBD_GROUP=self.name, HBD_OWNER=self.owner)
            if self.operation:
                env["HBD_OPERATION"] = self.operation
        else:
            env.update(HBD_NODE=self.name, HBD_NODE_STATUS=self.status)
        return env

    def __str__(self) -> str:
        return " ".join(self.argv)


class HookEvents:
    """Translates dispatched actions into hook events, numbering them in order."""

    def __init__(self, local_node: str) -> None:
        self.local_node = local_node
        self.seq = 0
        self._group_state: dict[str, str] = {}  # what hooks were last told, per group
        self._reason: dict[str, str] = {}  # the last start/stop reason, per group
        self._node_state: dict[str, str] = {}  # "up" or "dead" as last told, per node
        self._members: set[str] = set()  # hbd's process group as last seen (corosync)

    def translate(self, actions: Iterable[Action], wall: float) -> list[HookEvent]:
        batch = list(actions)
        # A StartGroup/StopGroup follows the state move it explains: read reasons first.
        for action in batch:
            if isinstance(action, StartGroup | StopGroup):
                self._reason[action.group] = action.reason
        events: list[HookEvent] = []
        for action in batch:
            if isinstance(action, GroupStateChanged):
                events.append(self._event("group", action.group, action.new, action.old, wall,
                                          owner=action.owner,
                                          reason=self._reason.get(action.group, "")))
                self._group_state[action.group] = action.new
            elif isinstance(action, GroupFailed):
                old = self._group_state.get(action.group, "")
                events.append(self._event("group", action.group, "failed", old, wall,
                                          owner=self.local_node, reason=action.detail,
                                          operation=action.operation))
            elif isinstance(action, NodeStatusChanged) and not action.local:
                events += self._node(action.node, action.new, action.old, wall)
            elif isinstance(action, MembershipChanged):
                events += self._membership(action, wall)
            elif isinstance(action, FenceStateChanged):
                events.append(self._event("fence", action.node, action.new, action.old, wall,
                                          reason=action.detail))
        return events

    def _membership(self, change: MembershipChanged, wall: float) -> list[HookEvent]:
        """The corosync stack: the member list is the truth.

        Joining a group that already has members, we are the only one in
        `joined`; the others are in `members`, and are up for us from now on.
        """
        events: list[HookEvent] = []
        gone = sorted(n for n in self._members if n not in change.members
                      and n not in change.left)
        for name in (*change.left, *gone):
            events += self._node(name, "left", "member", wall)
        for name in change.members:
            events += self._node(name, "member", "left", wall)
        self._members = set(change.members)
        return events

    def _node(self, node: str, status: str, old_status: str, wall: float) -> list[HookEvent]:
        if node == self.local_node:
            return []
        if status in ALIVE or status == "member":
            state = "up"
        elif status in ("dead", "left"):
            state = "dead"
        else:
            return []  # init: a restart announcing itself; up or dead follows
        old = self._node_state.get(node, "")
        if old == state:
            return []
        self._node_state[node] = state
        return [self._event("node", node, state, old_status, wall, status=status)]

    def _event(self, kind: str, name: str, state: str, old: str, wall: float,
               **details: str) -> HookEvent:
        self.seq += 1
        return HookEvent(self.seq, kind, name, state, old, wall, **details)
