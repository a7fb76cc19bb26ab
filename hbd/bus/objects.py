"""The exported objects: the Manager, one object per node and per group.

Methods stay thin: convert the arguments, authorize the caller, make one
call into the daemon (the Controller), convert the result.  `Tree.update`
takes each Snapshot the daemon publishes and emits PropertiesChanged for
what changed, plus the Manager's per-item signals.  Reading a property
first refreshes from a fresh Snapshot (announcing any change the daemon did
not publish), so a read is never stale and never ahead of the signals.

The D-Bus types come from the decorators of hbd.bus.members, not from the
annotations, which stay ordinary Python types.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from dbus_next.aio.message_bus import MessageBus
from dbus_next.service import ServiceInterface

from hbd import __version__
from hbd.bus.members import dbus_method, dbus_readonly, dbus_signal
from hbd.bus.names import (
    FENCE_ACTION,
    GROUP_IFACE,
    MANAGE_ACTION,
    MANAGER_IFACE,
    NODE_IFACE,
    OBJECT_PATH,
    group_path,
    node_path,
)
from hbd.control import Controller, GroupInfo, NodeInfo, Snapshot
from hbd.core.resources import SCOPES
from hbd.errors import InvalidScope

Authorize = Callable[[str], Awaitable[None]]  # raises NotAuthorized
Refresh = Callable[[], None]

# Manager property name -> its value in a Snapshot (D-Bus types in Manager below).
MANAGER_PROPERTIES: dict[str, Callable[[Snapshot], Any]] = {
    "NodeName": lambda s: s.node_name,
    "Version": lambda s: __version__,
    "Nodes": lambda s: [[n.name, n.status, n.local] for n in s.nodes],
    "Links": lambda s: [[lk.node, lk.link, lk.status] for lk in s.links],
    "ResourcesHeld": lambda s: s.resources_held,
    "Groups": lambda s: [[g.key, g.home, g.owner, g.state] for g in s.groups],
    "Stack": lambda s: s.stack,
    "Quorum": lambda s: s.quorum,
    "Votes": lambda s: [s.votes, s.expected_votes, s.quorum_votes],
    "Placement": lambda s: [[key, list(nodes)] for key, nodes in s.placement],
    "PingNodes": lambda s: [[p.name, p.status] for p in s.ping_nodes],
    "Fencing": lambda s: [[f.node, f.state, f.detail] for f in s.fencing],
    "FenceDevice": lambda s: s.fence_device,
    "GroupHealth": lambda s: [[g.key, g.fail_count, g.last_monitor,
                               int(g.last_monitor_at * 1e6), g.unfit] for g in s.groups],
    "TrackedLinks": lambda s: [[t.interface, t.state, list(t.groups)] for t in s.tracked_links],
    "Realtime": lambda s: s.realtime,
    "LoopLagMax": lambda s: s.loop_lag_max,
    "LoopLagHistogram": lambda s: [[bound, count] for bound, count in s.loop_lag],
}


def checked_scope(scope: str) -> str:
    """A takeover/standby scope, refused before anyone is asked for a password."""
    if scope not in SCOPES:
        raise InvalidScope(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    return scope


class Manager(ServiceInterface):
    """org.linuxha.hbd1.Manager at /org/linuxha/hbd1: the cluster as this node sees it."""

    def __init__(self, controller: Controller, authorize: Authorize, snapshot: Snapshot,
                 refresh: Refresh) -> None:
        super().__init__(MANAGER_IFACE)
        self._controller = controller
        self._authorize = authorize
        self._snap = snapshot
        self._refresh = refresh

    def _read(self, name: str) -> Any:
        self._refresh()
        return MANAGER_PROPERTIES[name](self._snap)

    # --- methods (org.linuxha.hbd1.manage) --------------------------------------------

    @dbus_method(scope="s")
    async def Takeover(self, scope: str) -> None:
        """hb_takeover SCOPE: all, local, foreign or failback."""
        scope = checked_scope(scope)
        await self._authorize(MANAGE_ACTION)
        await self._controller.takeover(scope)

    @dbus_method(scope="s")
    async def Release(self, scope: str) -> None:
        """hb_standby SCOPE: hand the scope's groups to the peer."""
        scope = checked_scope(scope)
        await self._authorize(MANAGE_ACTION)
        await self._controller.release(scope)

    @dbus_method()
    async def Reload(self) -> None:
        """Re-read ha.cf, haresources and authkeys (a bad new config is refused)."""
        await self._authorize(MANAGE_ACTION)
        await self._controller.reload()

    @dbus_method(group="s")
    async def Cleanup(self, group: str) -> None:
        """Forget a group's failures (a blocked group may be started again)."""
        await self._authorize(MANAGE_ACTION)
        await self._controller.cleanup(group)

    @dbus_method(node="s")
    async def FenceConfirm(self, node: str) -> None:
        """The admin confirms a lost node is down: its takeover goes on without a reset."""
        await self._authorize(FENCE_ACTION)
        await self._controller.fence_confirm(node)

    # --- properties (free to read) ----------------------------------------------------

    @dbus_readonly("s")
    def NodeName(self) -> str:
        return str(self._read("NodeName"))

    @dbus_readonly("s")
    def Version(self) -> str:
        return str(self._read("Version"))

    @dbus_readonly("a(ssb)")
    def Nodes(self) -> list[list[Any]]:
        """(name, status, is this node); status: init, up, active, dead."""
        return list(self._read("Nodes"))

    @dbus_readonly("a(sss)")
    def Links(self) -> list[list[str]]:
        """(node, link, status); status: up, dead."""
        return list(self._read("Links"))

    @dbus_readonly("s")
    def ResourcesHeld(self) -> str:
        """none, local, foreign, all or transition (cl_status rscstatus)."""
        return str(self._read("ResourcesHeld"))

    @dbus_readonly("a(ssss)")
    def Groups(self) -> list[list[str]]:
        """(key, home node, owner or "", state of our side)."""
        return list(self._read("Groups"))

    @dbus_readonly("s")
    def Stack(self) -> str:
        """heartbeat or corosync (ha.cf cluster_stack)."""
        return str(self._read("Stack"))

    @dbus_readonly("s")
    def Quorum(self) -> str:
        """quorate, inquorate, unknown (corosync, no decision yet), none (heartbeat stack)."""
        return str(self._read("Quorum"))

    @dbus_readonly("(uuu)")
    def Votes(self) -> list[int]:
        """(votes present, expected votes, votes needed); zeros on the heartbeat stack."""
        return list(self._read("Votes"))

    @dbus_readonly("a(sas)")
    def Placement(self) -> list[list[Any]]:
        """(group key, nodes in the order that places it); empty on the heartbeat stack."""
        return list(self._read("Placement"))

    @dbus_readonly("a(ss)")
    def PingNodes(self) -> list[list[str]]:
        """(ping node address or ping_group name, status); status: ping, dead."""
        return list(self._read("PingNodes"))

    @dbus_readonly("a(sss)")
    def Fencing(self) -> list[list[str]]:
        """(node, state, detail) of each peer whose fencing is under way or done."""
        return list(self._read("Fencing"))

    @dbus_readonly("s")
    def FenceDevice(self) -> str:
        """none (no device configured), unknown (not checked yet), ok or failed."""
        return str(self._read("FenceDevice"))

    @dbus_readonly("a(susts)")
    def GroupHealth(self) -> list[list[Any]]:
        """(group, fail count, last monitor "ok"/"failed: ..."/"", its end in usec since
        the epoch or 0, why it must not run here or "")."""
        return list(self._read("GroupHealth"))

    @dbus_readonly("a(ssas)")
    def TrackedLinks(self) -> list[list[Any]]:
        """(interface, state, groups needing it) for link tracking on this node; state:
        up, no-carrier, down, absent, unknown."""
        return list(self._read("TrackedLinks"))

    @dbus_readonly("s")
    def Realtime(self) -> str:
        """ha.cf realtime as applied: "SCHED_RR 1, memory locked", "off (...)", or what
        the system refused ("" when hbd runs inside another process)."""
        return str(self._read("Realtime"))

    @dbus_readonly("d")
    def LoopLagMax(self) -> float:
        """The latest hbd's timer has run since start, in seconds (hbd.looplag)."""
        return float(self._read("LoopLagMax"))

    @dbus_readonly("a(dt)")
    def LoopLagHistogram(self) -> list[list[Any]]:
        """(upper bound in seconds, the last +inf; firings that late), not cumulative;
        PropertiesChanged at most once a second, and only for a late firing."""
        return list(self._read("LoopLagHistogram"))

    # --- signals --------------------------------------------------------------------

    @dbus_signal(node="s", state="s", detail="s")
    def FencingChanged(self, node: str, state: str, detail: str) -> list[str]:
        return [node, state, detail]

    @dbus_signal(node="s", status="s")
    def NodeStatusChanged(self, node: str, status: str) -> list[str]:
        return [node, status]

    @dbus_signal(node="s", link="s", status="s")
    def LinkStatusChanged(self, node: str, link: str, status: str) -> list[str]:
        return [node, link, status]

    @dbus_signal(group="s", owner="s", state="s")
    def GroupStateChanged(self, group: str, owner: str, state: str) -> list[str]:
        return [group, owner, state]

    def update(self, snap: Snapshot) -> None:
        old, self._snap = self._snap, snap
        changed = {name: value(snap) for name, value in MANAGER_PROPERTIES.items()
                   if value(old) != value(snap)}
        if not changed:
            return
        self.emit_properties_changed(changed)
        before = {n.name: n.status for n in old.nodes}
        for node in snap.nodes:
            if before.get(node.name) != node.status:
                self.NodeStatusChanged(node.name, node.status)
        links = {(lk.node, lk.link): lk.status for lk in old.links}
        for link in snap.links:
            if links.get((link.node, link.link)) != link.status:
                self.LinkStatusChanged(link.node, link.link, link.status)
        fencing = {f.node: f.state for f in old.fencing}
        for fence in snap.fencing:
            if fencing.pop(fence.node, None) != fence.state:
                self.FencingChanged(fence.node, fence.state, fence.detail)
        for back in fencing:  # back to none: the node rejoined or was heard again
            self.FencingChanged(back, "none", "")
        groups = {g.key: (g.owner, g.state) for g in old.groups}
        for group in snap.groups:
            if groups.get(group.key) != (group.owner, group.state):
                self.GroupStateChanged(group.key, group.owner, group.state)


class _Item(ServiceInterface):
    """An object whose properties are one tuple of values."""

    FIELDS: tuple[str, ...] = ()

    def __init__(self, interface: str, values: tuple[Any, ...], refresh: Refresh) -> None:
        super().__init__(interface)
        self._values = values
        self._refresh = refresh

    def _get(self, name: str) -> Any:
        self._refresh()
        return self._values[self.FIELDS.index(name)]

    def update(self, values: tuple[Any, ...]) -> None:
        old, self._values = self._values, values
        changed = {name: new for name, was, new in zip(self.FIELDS, old, values, strict=True)
                   if was != new}
        if changed:
            self.emit_properties_changed(changed)


class NodeObject(_Item):
    """org.linuxha.hbd1.Node at /org/linuxha/hbd1/node/<escaped name>."""

    FIELDS = ("Name", "Status", "Local", "Links")

    @dbus_readonly("s")
    def Name(self) -> str:
        return str(self._get("Name"))

    @dbus_readonly("s")
    def Status(self) -> str:
        return str(self._get("Status"))

    @dbus_readonly("b")
    def Local(self) -> bool:
        return bool(self._get("Local"))

    @dbus_readonly("a(ss)")
    def Links(self) -> list[list[str]]:
        """(link, status) of the links to this node."""
        return list(self._get("Links"))


class GroupObject(_Item):
    """org.linuxha.hbd1.Group at /org/linuxha/hbd1/group/<escaped key>."""

    FIELDS = ("Key", "Home", "Owner", "State", "FailCount", "LastMonitor", "LastMonitorTime",
              "FailedHere")

    @dbus_readonly("s")
    def Key(self) -> str:
        return str(self._get("Key"))

    @dbus_readonly("s")
    def Home(self) -> str:
        return str(self._get("Home"))

    @dbus_readonly("s")
    def Owner(self) -> str:
        return str(self._get("Owner"))

    @dbus_readonly("s")
    def State(self) -> str:
        return str(self._get("State"))

    @dbus_readonly("u")
    def FailCount(self) -> int:
        """Monitor failures here since the last cleanup or expiry."""
        return int(self._get("FailCount"))

    @dbus_readonly("s")
    def LastMonitor(self) -> str:
        """"ok", "failed: <detail>", or "" (never checked)."""
        return str(self._get("LastMonitor"))

    @dbus_readonly("t")
    def LastMonitorTime(self) -> int:
        """When the last check ended, microseconds since the epoch; 0 for never."""
        return int(self._get("LastMonitorTime"))

    @dbus_readonly("s")
    def FailedHere(self) -> str:
        """Why the group must not run on this node ("" when it may)."""
        return str(self._get("FailedHere"))


def _node_values(node: NodeInfo, snap: Snapshot) -> tuple[Any, ...]:
    links = [[lk.link, lk.status] for lk in snap.links if lk.node == node.name]
    return (node.name, node.status, node.local, links)


def _group_values(group: GroupInfo) -> tuple[Any, ...]:
    return (group.key, group.home, group.owner, group.state, group.fail_count,
            group.last_monitor, int(group.last_monitor_at * 1e6), group.unfit)


class Tree:
    """Every exported object, kept in step with the daemon's snapshots."""

    def __init__(self, controller: Controller, authorize: Authorize) -> None:
        snap = controller.snapshot()
        self._controller = controller
        self.manager = Manager(controller, authorize, snap, self.refresh)
        self._items: dict[str, _Item] = {}
        self._bus: MessageBus | None = None
        self._sync(snap)

    def paths(self) -> list[str]:
        return [OBJECT_PATH, *self._items]

    def attach(self, bus: MessageBus) -> None:
        """Export everything on a (new) connection."""
        self._bus = bus
        bus.export(OBJECT_PATH, self.manager)
        for path, item in self._items.items():
            bus.export(path, item)

    def detach(self) -> None:
        self._bus = None

    def update(self, snap: Snapshot) -> None:
        self.manager.update(snap)
        self._sync(snap)

    def refresh(self) -> None:
        self.update(self._controller.snapshot())

    def _sync(self, snap: Snapshot) -> None:
        wanted: dict[str, tuple[str, tuple[Any, ...]]] = {}
        for node in snap.nodes:
            wanted[node_path(node.name)] = (NODE_IFACE, _node_values(node, snap))
        for group in snap.groups:
            wanted[group_path(group.key)] = (GROUP_IFACE, _group_values(group))
        for path in [p for p in self._items if p not in wanted]:
            del self._items[path]
            if self._bus is not None:
                self._bus.unexport(path)
        for path, (iface, values) in wanted.items():
            item = self._items.get(path)
            if item is not None:
                item.update(values)
                continue
            kind = NodeObject if iface == NODE_IFACE else GroupObject
            item = kind(iface, values, self.refresh)
            self._items[path] = item
            if self._bus is not None:
                self._bus.export(path, item)
