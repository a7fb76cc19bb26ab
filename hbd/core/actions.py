"""What the engine asks the outside world to do, and what it reports.

The core never performs I/O; every entry point returns a list of these.
The daemon hands each to the adapter that owns it: transmissions to the
links, resource work to the agent runner, events to the journal and D-Bus.
All are frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Transmit:
    """Send one message on every link (or only `links`), in the form each link uses."""

    netstring: bytes  # for UDP links (bcast, mcast, ucast)
    classic: bytes  # for serial links
    msgtype: str  # for logs and counters
    links: tuple[int, ...] | None = None  # None: every link


@dataclass(frozen=True)
class StartGroup:
    """Start a resource group's resources left to right; report with group_done()."""

    group: str
    reason: str


@dataclass(frozen=True)
class StopGroup:
    """Stop a resource group's resources right to left; report with group_done()."""

    group: str
    reason: str


@dataclass(frozen=True)
class RunMonitor:
    """Check a running group's resources (off the loop, killed after `timeout` seconds);
    report with monitor_done(group, token, ...)."""

    group: str
    resources: tuple[str, ...]  # resource ids as in haresources, left to right
    timeout: float  # seconds
    token: int  # hands the result back to this very check


@dataclass(frozen=True)
class AnnounceGroup:
    """Re-send gratuitous ARP for a group we keep (after a split brain heals)."""

    group: str


@dataclass(frozen=True)
class SendPing:
    """Send one ICMP echo to a ping node address; report replies with ping_reply()."""

    address: str


@dataclass(frozen=True)
class PersistPeerGeneration:
    """Remember a peer's generation across our restarts (replay defence)."""

    node: str
    generation: int


@dataclass(frozen=True)
class CpgSend:
    """Multicast one message to hbd's Corosync CPG group (cluster_stack corosync)."""

    payload: bytes
    what: str  # for logs


@dataclass(frozen=True)
class FenceNode:
    """Reset `node` with our fence devices, in order, until one succeeds (fencing.py).

    Report with fence_done(node, attempt, ok, detail).
    """

    node: str
    attempt: int  # numbers this try: a late result of an older one is ignored


@dataclass(frozen=True)
class CancelFence:
    """Stop a running attempt on `node` (confirmed by hand, or the peer came back)."""

    node: str


@dataclass(frozen=True)
class CheckFenceDevices:
    """Ask every fence device for its status; report with fence_devices_checked(ok, detail)."""


@dataclass(frozen=True)
class Shutdown:
    """The engine has finished a graceful stop: the daemon may exit now."""


# --- events: things worth telling admins and D-Bus clients --------------------

@dataclass(frozen=True)
class NodeStatusChanged:
    node: str
    old: str
    new: str
    local: bool = False  # True for our own status
    # a peer declared dead: when its last status arrived (the clock of `now`), so a
    # failover can be timed from the peer's last sign of life; None: never heard
    last_heard: float | None = None


@dataclass(frozen=True)
class LinkStatusChanged:
    node: str
    link: str
    up: bool


@dataclass(frozen=True)
class LateHeartbeat:
    node: str
    gap_ms: int
    beyond_deadtime: bool


@dataclass(frozen=True)
class PeerRestarted:
    node: str
    generation: int


@dataclass(frozen=True)
class PartitionHealed:
    """A node we had declared dead came back without restarting."""

    node: str


@dataclass(frozen=True)
class BadPackets:
    """Packets dropped for one reason since the last report (rate-limited)."""

    reason: str
    count: int
    last_source: str  # node name claimed by the last one, or "?"
    link: str


@dataclass(frozen=True)
class LostPackets:
    node: str
    first: int
    last: int


@dataclass(frozen=True)
class GroupStateChanged:
    group: str
    old: str
    new: str
    owner: str  # node that holds (or is taking) the group, "" for none


@dataclass(frozen=True)
class ResourcesHeldChanged:
    """Our rsc_hold value as cl_status rscstatus shows it (none/local/foreign/all/transition)."""

    old: str
    new: str


@dataclass(frozen=True)
class SplitBrain:
    group: str
    keeper: str
    detail: str


@dataclass(frozen=True)
class GroupFailed:
    group: str
    operation: str  # "start", "stop" or "monitor"
    detail: str


@dataclass(frozen=True)
class TrackedLinkChanged:
    """A tracked interface changed state (hbd.core.linktrack): up, no-carrier, down, absent."""

    interface: str
    old: str
    new: str
    groups: tuple[str, ...]  # the groups that need it


@dataclass(frozen=True)
class AddressRemoved:
    """An address of a group running here was removed by someone other than hbd."""

    group: str
    address: str
    interface: str


@dataclass(frozen=True)
class GroupRecovery:
    """What this node does about a group's health (hbd.core.health)."""

    group: str
    what: str  # restart, move, stop (nobody can take it), unfit, fit (cleanup, expiry...)
    detail: str


@dataclass(frozen=True)
class QuorumChanged:
    """Corosync's quorum decision for this partition changed (cluster_stack corosync)."""

    quorate: bool
    nodes: tuple[int, ...]  # corosync node ids in this partition


@dataclass(frozen=True)
class MembershipChanged:
    """hbd processes joined or left the CPG group (names when known, else node ids)."""

    members: tuple[str, ...]
    joined: tuple[str, ...]
    left: tuple[str, ...]


@dataclass(frozen=True)
class FenceStateChanged:
    """Fencing of a peer moved (none/delayed/fencing/confirm/failed/fenced)."""

    node: str
    old: str
    new: str
    detail: str


@dataclass(frozen=True)
class FenceDeviceStatus:
    """The result of a device status check (at start, then every fence_status_interval)."""

    ok: bool
    detail: str


@dataclass(frozen=True)
class Notice:
    """A plain log line the engine wants at a given level (info/warning/error)."""

    level: str
    text: str




@dataclass(frozen=True)
class DeliverToClients:
    """A message for Heartbeat's API clients (hbd.apiserver): one with a `to_id` only to
    the client of that name, one without to every named client."""

    fields: tuple[tuple[str, str], ...]
    to_id: str | None


@dataclass(frozen=True)
class PingNodeChanged:
    """A ping node (its address) or ping group (its name) became reachable or not."""

    name: str
    up: bool
    group: bool = False


Action = (
    Transmit | StartGroup | StopGroup | AnnounceGroup | SendPing | PersistPeerGeneration
    | Shutdown | NodeStatusChanged | LinkStatusChanged | LateHeartbeat | PeerRestarted
    | PartitionHealed | BadPackets | LostPackets | GroupStateChanged | ResourcesHeldChanged
    | SplitBrain | GroupFailed | Notice | CpgSend | QuorumChanged | MembershipChanged
    | FenceNode | CancelFence | CheckFenceDevices | FenceStateChanged | FenceDeviceStatus
    | RunMonitor | GroupRecovery | TrackedLinkChanged | AddressRemoved | DeliverToClients
    | PingNodeChanged
)
