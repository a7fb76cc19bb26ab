"""The cluster as an admin sees it (hbd.control.Snapshot), built once for both stacks.

What every snapshot shows the same way is built in `_build`: one row per
node, one row per group (our side's state; the owner is this node while the
group is anything but stopped here, else whoever the stack says runs it) and
what we hold.  `heartbeat()` and `corosync()` gather what only their stack
knows (links and ping nodes; quorum, votes and each group's order) and add it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from hbd.control import (
    FenceInfo,
    GroupInfo,
    LinkInfo,
    NodeInfo,
    PingInfo,
    Snapshot,
    TrackedLinkInfo,
)
from hbd.core.failover import Failover
from hbd.core.groupwork import GroupWork
from hbd.core.linktrack import TrackedLink
from hbd.core.membership import LinkStatus
from hbd.core.monitoring import Monitoring
from hbd.core.resources import GroupState, Held

if TYPE_CHECKING:  # the Corosync stack's parts: only their types here (not imported on
    # the Heartbeat stack, whose daemon never needs them)
    from hbd.core.placement import Placement
    from hbd.corosync.quorum import VoteInfo


def _build(node: str, nodes: Mapping[str, str], work: GroupWork,
           owner_elsewhere: Callable[[str], str], held: str) -> Snapshot:
    """The part both stacks share; the caller adds its own facts with `replace`.

    `nodes`: name -> cl_status nodestatus, in display order; `owner_elsewhere(key)`:
    who runs a group that is stopped here ("" for nobody).
    """
    node_rows = tuple(NodeInfo(name, status, name == node) for name, status in nodes.items())
    groups = tuple(GroupInfo(g.key, g.home,
                             node if g.state is not GroupState.STOPPED else owner_elsewhere(g.key),
                             g.state.value) for g in work.groups)
    return Snapshot(node, node_rows, (), held, groups)


def heartbeat(failover: Failover, local_links: Mapping[str, bool],
              pings: list[tuple[str, bool]] | None = None,
              tracked: tuple[TrackedLink, ...] = ()) -> Snapshot:
    """The Heartbeat stack: the engine's membership and links, Failover's groups.

    `local_links`: our own links (name -> open), which only the adapters know;
    `pings`: each ping node or group and whether it answers (PingNodes.statuses);
    `tracked`: the interfaces link tracking watches (LinkTracker.tracked).
    """
    engine = failover.engine
    nodes = {engine.node: engine.status.state.value}
    links = [LinkInfo(engine.node, name, "up" if up else "dead")
             for name, up in local_links.items()]
    for other in engine.peers.values():
        nodes[other.name] = other.status.state.value
        for state in other.links.values():
            status = state.fsm.state
            links.append(LinkInfo(other.name, state.name,
                                  "dead" if status is LinkStatus.INIT else status.value))
    peer = failover.peer
    peer_sets = failover.other_holds.mirror() if peer is not None and peer.alive else Held.NONE
    peer_groups = {g.key for g in failover.groups.in_set(peer_sets)}

    def owner(key: str) -> str:
        return peer.name if key in peer_groups and peer is not None else ""

    fencing = failover.fencing
    fence_rows = tuple(FenceInfo(node, t.fsm.state.value, t.detail)
                       for node, t in fencing.targets.items() if t.fsm.state.value != "none")
    device = ("none" if not fencing.configured else "unknown" if fencing.device_ok is None
              else "ok" if fencing.device_ok else "failed")
    snap = _build(engine.node, nodes, failover, owner, failover.rscstatus())
    return replace(snap, groups=tuple(_with_health(g, failover) for g in snap.groups),
                   links=tuple(links), fencing=fence_rows, fence_device=device,
                   ping_nodes=tuple(PingInfo(name, "ping" if up else "dead")
                                    for name, up in pings or ()),
                   tracked_links=_tracked_infos(tracked))


def _tracked_infos(tracked: tuple[TrackedLink, ...]) -> tuple[TrackedLinkInfo, ...]:
    return tuple(TrackedLinkInfo(t.interface, t.state, t.groups) for t in tracked)


def _with_health(group: GroupInfo, work: Monitoring) -> GroupInfo:
    health = work.health.groups.get(group.key)
    if health is None:
        return group
    last = health.last_result
    if last == "failed":
        last = f"failed: {health.last_detail}"
    return replace(group, fail_count=health.fail_count, last_monitor=last,
                   last_monitor_at=health.last_at,
                   unfit="; ".join(r.detail for r in health.unfit.values()))


def corosync(placement: Placement, node: str, hacf_nodes: tuple[str, ...],
             corosync_nodes: Mapping[str, int], votes: VoteInfo | None,
             tracked: tuple[TrackedLink, ...] = ()) -> Snapshot:
    """The Corosync stack: ha.cf's nodes then corosync's others, quorum and placement.

    `corosync_nodes`: corosync's nodelist (name -> node id); `votes`: votequorum's
    numbers as last read (shown only while connected); `tracked`: as for heartbeat().
    """
    p = placement
    names = [*hacf_nodes, *(name for name in corosync_nodes if name not in hacf_nodes)]
    members = {s.node for s in p.view.members.values() if s is not None}
    nodes: dict[str, str] = {}
    for name in names:
        if name == node:
            status = "active" if p.me is not None and p.me in p.view.members else "init"
        elif name in members:
            status = "active"
        elif corosync_nodes.get(name) in p.ring_nodes:
            status = "up"  # corosync runs there, hbd does not
        else:
            status = "dead"
        nodes[name] = status
    shown = votes if p.connected else None
    snap = _build(node, nodes, p, p.owner_name, p.held().wire)
    return replace(snap, groups=tuple(_with_health(g, p) for g in snap.groups),
                   stack="corosync", quorate=p.quorate(),
                   votes=shown.total if shown else 0,
                   expected_votes=shown.expected if shown else 0,
                   quorum_votes=shown.quorum if shown else 0,
                   placement=tuple((g.key, p.orders.get(g.key, ())) for g in p.groups),
                   tracked_links=_tracked_infos(tracked))
