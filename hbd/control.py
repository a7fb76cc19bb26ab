"""The daemon's control surface, as the D-Bus service and tests see it.

`Snapshot` is the cluster as an admin sees it (cl_status's answers;
hbd/snapshot.py builds it for either stack); the `Controller` protocol is
what a front end may ask of the daemon.  The daemon implements it; hbd/bus/
exports it on the system bus.  Commands raise hbd errors (InvalidScope,
Busy, ConfigError, NotAuthorized...) that carry their D-Bus names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class NodeInfo:
    name: str
    status: str  # init, up, active, dead (cl_status nodestatus)
    local: bool = False


@dataclass(frozen=True)
class PingInfo:
    name: str  # the address of a `ping` node, or the name of a `ping_group`
    status: str  # ping (answering) or dead (cl_status nodestatus)


@dataclass(frozen=True)
class LinkInfo:
    node: str
    link: str  # interface or tty, as Heartbeat names links
    status: str  # up, dead, init


@dataclass(frozen=True)
class TrackedLinkInfo:
    """An interface link tracking watches on this node (hbd.core.linktrack)."""

    interface: str
    state: str  # up, no-carrier, down, absent, unknown
    groups: tuple[str, ...]  # the groups that need it


@dataclass(frozen=True)
class GroupInfo:
    key: str  # the first resource of the haresources line
    home: str  # the haresources node
    owner: str  # the node running it, "" when nobody does
    state: str  # stopped, starting, running, stopping, blocked (our side's view)
    # resource monitoring on this node (hbd.core.health); defaults: not monitored
    fail_count: int = 0  # failures since the last cleanup or expiry
    last_monitor: str = ""  # "", "ok" or "failed: <detail>"
    last_monitor_at: float = 0.0  # wall clock of that check's end, 0 for none
    unfit: str = ""  # why it must not run here ("" when it may), e.g. a monitor failure


@dataclass(frozen=True)
class FenceInfo:
    node: str  # the peer being (or last) fenced
    state: str  # delayed, fencing, waiting-confirmation, failed, fenced (hbd.core.fencing)
    detail: str  # what is happening, for admins (never a device parameter)


@dataclass(frozen=True)
class Snapshot:
    node_name: str
    nodes: tuple[NodeInfo, ...]
    links: tuple[LinkInfo, ...]
    resources_held: str  # none, local, foreign, all, transition (cl_status rscstatus)
    groups: tuple[GroupInfo, ...]
    stack: str = "heartbeat"  # or "corosync" (ha.cf cluster_stack)
    # corosync stack only: this partition's quorum (None: no decision yet, or heartbeat's
    # stack, which has none), the votes behind it, and each group's node order
    quorate: bool | None = None
    votes: int = 0  # votes present in this partition
    expected_votes: int = 0
    quorum_votes: int = 0  # votes needed for quorum
    placement: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (group key, nodes best first)
    ping_nodes: tuple[PingInfo, ...] = ()  # ha.cf ping and ping_group (heartbeat stack)
    tracked_links: tuple[TrackedLinkInfo, ...] = ()  # link tracking (both stacks)
    fencing: tuple[FenceInfo, ...] = ()  # peers whose fencing is not "none"
    fence_device: str = "none"  # none (no device), unknown (not checked yet), ok, failed
    # the daemon's own health: ha.cf realtime as applied ("" when not asked), and how
    # late its timer ran (hbd.looplag): the worst, and (upper bound s, count) per bucket
    realtime: str = ""
    loop_lag_max: float = 0.0
    loop_lag: tuple[tuple[float, int], ...] = ()

    @property
    def quorum(self) -> str:
        """quorate, inquorate, unknown (corosync, no decision yet), none (heartbeat)."""
        if self.stack == "heartbeat":
            return "none"
        return {True: "quorate", False: "inquorate", None: "unknown"}[self.quorate]


class Controller(Protocol):
    def snapshot(self) -> Snapshot: ...

    async def takeover(self, scope: str) -> None: ...

    async def release(self, scope: str) -> None: ...

    async def reload(self) -> None: ...

    async def cleanup(self, group: str) -> None: ...

    async def fence_confirm(self, node: str) -> None: ...

    def subscribe(self, callback: Callable[[Snapshot], None]) -> Callable[[], None]: ...
