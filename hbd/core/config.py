"""The cluster configuration as frozen dataclasses.

These are what the three /etc/ha.d files (ha.cf, haresources, authkeys) mean
once parsed.  Nothing here reads a file: the parsers in `hacf.py`,
`haresources.py` and `authkeys.py` build these from text, and
`hbd.configfiles` does the reading.  Every time is in milliseconds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

# Heartbeat's defaults (heartbeat/config.c: init_config and Directives[]).
DEFAULT_KEEPALIVE_MS = 1000
DEFAULT_DEADTIME_MS = 30000
DEFAULT_UDPPORT = 694
DEFAULT_BAUD = 19200
DEFAULT_HOPFUDGE = 1
DEFAULT_MCAST_TTL = 1
MCAST6_MAX_HOPS = 4  # Heartbeat's mcast6 plugin refuses more hops
DEFAULT_MAX_REXMIT_DELAY_MS = 250
DEFAULT_NOTIFY_TIMEOUT_MS = 10_000  # hbd.conf notify_timeout
DEFAULT_METRICS_INTERVAL_MS = 1000  # hbd.conf metrics_interval
DEFAULT_API_CLIENT_RATE = 20  # KiB/s one API client name may put on the wire
DEFAULT_API_CLIENTS_RATE = 64  # KiB/s all API clients together


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or doubtful) in a config file, at a line."""

    file: str
    line: int  # 0 when the problem is about the file as a whole
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        if self.severity is Severity.WARNING:
            return f"{where}: warning: {self.message}"
        return f"{where}: {self.message}"


class AutoFailback(enum.Enum):
    """What happens when the preferred node of a group comes back."""

    ON = "on"  # the group moves back to its haresources node
    OFF = "off"  # the group stays where it is
    LEGACY = "legacy"  # Heartbeat's old nice_failback off: on unless a peer says otherwise


class ClusterStack(enum.Enum):
    """Where membership comes from (hbd-specific `cluster_stack` directive)."""

    HEARTBEAT = "heartbeat"  # hbd's own Heartbeat-compatible links
    COROSYNC = "corosync"  # Corosync CPG + votequorum


@dataclass(frozen=True)
class BcastLink:
    """`bcast IFACE`: UDP broadcast on one interface."""

    interface: str
    port: int = DEFAULT_UDPPORT
    line: int = 0

    @property
    def name(self) -> str:
        return self.interface


@dataclass(frozen=True)
class McastLink:
    """`mcast IFACE GROUP PORT TTL LOOP`: UDP multicast."""

    interface: str
    group: str
    port: int = DEFAULT_UDPPORT
    ttl: int = DEFAULT_MCAST_TTL
    loop: bool = False
    line: int = 0

    @property
    def name(self) -> str:
        return self.interface


@dataclass(frozen=True)
class UcastLink:
    """`ucast IFACE PEER-ADDRESS`: UDP unicast to one peer."""

    interface: str
    peer: str
    port: int = DEFAULT_UDPPORT
    line: int = 0

    @property
    def name(self) -> str:
        return self.interface


@dataclass(frozen=True)
class Ucast6Link:
    """`ucast6 IFACE PEER-ADDRESS`: UDP over IPv6 to one peer (Heartbeat's ucast6 plugin).

    A link-local peer is reached through IFACE (its scope id is the interface's
    index, as Heartbeat sets it); `peer` is canonical, without a `%scope`.
    """

    interface: str
    peer: str
    port: int = DEFAULT_UDPPORT
    line: int = 0

    @property
    def name(self) -> str:
        return self.interface


@dataclass(frozen=True)
class Mcast6Link:
    """`mcast6 IFACE GROUP PORT HOPS LOOP`: UDP over IPv6 multicast (Heartbeat's mcast6)."""

    interface: str
    group: str  # canonical; ff02::/16-style scopes 2, 4, 5 or 8 only (as Heartbeat)
    port: int = DEFAULT_UDPPORT
    hops: int = DEFAULT_MCAST_TTL
    loop: bool = False
    line: int = 0

    @property
    def name(self) -> str:
        return self.interface


@dataclass(frozen=True)
class SerialLink:
    """`serial /dev/ttyX`: a null-modem cable at `baud`."""

    device: str
    baud: int = DEFAULT_BAUD
    line: int = 0

    @property
    def name(self) -> str:
        return self.device


Link = BcastLink | McastLink | UcastLink | Ucast6Link | Mcast6Link | SerialLink


@dataclass(frozen=True)
class PingGroup:
    """`ping_group NAME ADDR...`: counts as one ping node, up if any member answers."""

    name: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class ApiAuth:
    """`apiauth CLIENT uid=USERS gid=GROUPS`: who may sign on to the client API as CLIENT."""

    client: str  # a client name, `anon` (casual clients) or `default`
    users: tuple[str, ...]  # names or numbers, as written
    groups: tuple[str, ...]
    line: int = 0


@dataclass(frozen=True)
class Respawn:
    """`respawn USER COMMAND`: a program Heartbeat runs as USER and restarts when it exits
    (ipfail, ...).  COMMAND is split as a shell would split it; no shell runs it."""

    user: str  # a user name or number, resolved when the program starts
    argv: tuple[str, ...]  # argv[0] is a full path
    line: int = 0

    @property
    def command(self) -> str:
        return " ".join(self.argv)


@dataclass(frozen=True)
class StonithDevice:
    """ha.cf `stonith TYPE FILE` or `stonith_host HOSTFROM TYPE PARAMS...` (cluster-glue).

    Heartbeat's rule (config.c): a line applies on the node it names, or on
    every node with `*` (`stonith` lines apply everywhere); of the lines that
    apply, the last wins.  The parameters often hold a password: never shown.
    """

    type: str  # cluster-glue plugin: null, meatware, ipmilan, external/ipmi...
    hostfrom: str = "*"  # the node that uses it, lower-cased; "*": every node
    config_file: str | None = None  # `stonith`: the plugin's parameters are in this file
    params: str = field(default="", repr=False)  # `stonith_host`: parameters (secret)
    line: int = 0


@dataclass(frozen=True)
class Timers:
    """Heartbeat's timing parameters, all in milliseconds."""

    keepalive_ms: int = DEFAULT_KEEPALIVE_MS  # interval between our status messages
    deadtime_ms: int = DEFAULT_DEADTIME_MS  # silence after which a node is dead
    warntime_ms: int = DEFAULT_DEADTIME_MS // 2  # silence after which we warn
    initdead_ms: int = 12000  # deadtime used right after start-up
    deadping_ms: int = DEFAULT_DEADTIME_MS  # deadtime for ping nodes
    max_rexmit_delay_ms: int = DEFAULT_MAX_REXMIT_DELAY_MS  # cap on retransmit back-off


@dataclass(frozen=True)
class HaCf:
    """What ha.cf says."""

    nodes: tuple[str, ...] = ()  # cluster members, lower-cased, in file order
    links: tuple[Link, ...] = ()  # heartbeat media, in file order
    timers: Timers = field(default_factory=Timers)
    udpport: int = DEFAULT_UDPPORT
    baud: int = DEFAULT_BAUD
    auto_failback: AutoFailback = AutoFailback.LEGACY
    ping_nodes: tuple[str, ...] = ()  # `ping` (IPv4) and `ping6` (IPv6) addresses, in order
    ping_groups: tuple[PingGroup, ...] = ()
    logfacility: str | None = None  # syslog facility name, None = no syslog
    logfile: str | None = None
    debugfile: str | None = None
    debug_level: int = 0
    cluster_name: str = "linux-ha"
    hopfudge: int = DEFAULT_HOPFUDGE  # ttl = hopfudge + node count
    msgfmt: str = "classic"  # Heartbeat's msgfmt; UDP is always netstring
    cluster_stack: ClusterStack = ClusterStack.HEARTBEAT
    # hbd-specific `group_order KEY NODE...` lines (corosync stack): a group's node order
    group_orders: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # every node and ping node in ha.cf order (Heartbeat's node table, for its client API)
    node_order: tuple[str, ...] = ()
    # what Heartbeat's client API reports as parameters (hbparams.py): (name, value)
    parameters: tuple[tuple[str, str], ...] = ()
    # `apiauth CLIENT uid=... gid=...` lines as written
    apiauth: tuple[ApiAuth, ...] = ()
    # hbd-specific: gratuitous ARPs per address and their spacing (IPaddr2's defaults)
    arp_count: int = 5
    arp_interval_ms: int = 200
    stonith: tuple[StonithDevice, ...] = ()  # every stonith/stonith_host line, in file order
    respawn: tuple[Respawn, ...] = ()  # `respawn USER COMMAND` lines, in file order
    # `realtime` (Heartbeat's default on): SCHED_RR for the event loop, memory locked
    realtime: bool = True
    # `rtprio` 1-99; None: Heartbeat's default, the lowest SCHED_RR priority (1)
    rtprio: int | None = None

    def stonith_for(self, node: str) -> StonithDevice | None:
        """The device `node` fences with: the last line that applies to it (Heartbeat's)."""
        found = None
        for device in self.stonith:
            if device.hostfrom in ("*", node):
                found = device
        return found


class AgentKind(enum.Enum):
    """Who provides a haresources resource name; decided at run time."""

    NATIVE_IP = "native-ip"  # IPaddr / IPaddr2 / IPv6addr handled in-process
    SCRIPT = "script"  # anything else: resource.d, init.d or OCF


@dataclass(frozen=True)
class Resource:
    """One haresources item: `Agent::arg1::arg2` or a bare IP address."""

    agent: str  # e.g. "IPaddr2", "Filesystem", "apache"
    args: tuple[str, ...] = ()
    text: str = ""  # as written in haresources, used as the resource id

    @property
    def kind(self) -> AgentKind:
        if self.agent in ("IPaddr", "IPaddr2", "IPv6addr"):
            return AgentKind.NATIVE_IP
        return AgentKind.SCRIPT

    @property
    def id(self) -> str:
        return self.text or "::".join((self.agent, *self.args))


@dataclass(frozen=True)
class ResourceGroup:
    """One haresources line: a preferred node and resources started left to right."""

    node: str  # the preferred ("home") node, lower-cased
    resources: tuple[Resource, ...]
    line: int = 0

    @property
    def key(self) -> str:
        """The group's name, as Heartbeat's ResourceManager names it: its first resource."""
        return self.resources[0].id if self.resources else self.node


class AuthMethod(enum.Enum):
    CRC = "crc"  # integrity only: authenticates nothing
    MD5 = "md5"  # HMAC-MD5
    SHA1 = "sha1"  # HMAC-SHA1
    BLAKE2B = "blake2b"  # hbd-only: keyed BLAKE2b (hashlib), not understood by Heartbeat


@dataclass(frozen=True)
class AuthKey:
    index: int
    method: AuthMethod
    secret: bytes = field(repr=False, default=b"")  # never logged

    def __str__(self) -> str:
        return f"{self.index} {self.method.value}"


@dataclass(frozen=True)
class AuthKeys:
    """What authkeys says: the key we sign with, and every key we accept."""

    active: int
    keys: tuple[AuthKey, ...]

    def get(self, index: int) -> AuthKey | None:
        for key in self.keys:
            if key.index == index:
                return key
        return None

    @property
    def active_key(self) -> AuthKey:
        key = self.get(self.active)
        if key is None:  # the parser never builds such an AuthKeys
            raise LookupError(f"no key {self.active}")
        return key


@dataclass(frozen=True)
class FenceAgent:
    """hbd.conf `fence_agent fence_NAME key=value...`: a fence-agents device.

    Run as Pacemaker's fencer does: `action=` and `plug=` (the node) are added,
    everything goes to the agent's stdin, never its argv.
    """

    agent: str  # fence_ipmilan, fence_virsh...
    options: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold passwords
    line: int = 0


DEFAULT_FENCE_RETRY_MS = 5000  # hb_resource.c: "STONITH of %s failed.  Retrying..." after 5 s
DEFAULT_FENCE_STATUS_MS = 3600_000  # hb_resource.c: the device status check runs hourly
DEFAULT_FENCE_TIMEOUT_MS = 120_000
DEFAULT_FENCE_RACE_DELAY_MS = 3000


@dataclass(frozen=True)
class FenceSettings:
    """hbd.conf's fencing settings (Heartbeat has none of these)."""

    agents: tuple[FenceAgent, ...] = ()  # tried after ha.cf's stonith device, in order
    race_delay_ms: int = DEFAULT_FENCE_RACE_DELAY_MS  # the side that held less waits this
    retry_ms: int = DEFAULT_FENCE_RETRY_MS  # between failed attempts
    timeout_ms: int = DEFAULT_FENCE_TIMEOUT_MS  # one device's attempt (not meatware's)
    status_interval_ms: int = DEFAULT_FENCE_STATUS_MS  # device status check; 0: only at start


@dataclass(frozen=True)
class MonitorConf:
    """hbd.conf `monitor TARGET interval= timeout= failures=`: a recurring health check."""

    target: str  # a group key (all its resources) or one resource id, as in haresources
    interval_ms: int = 10_000  # from the group's start (and each check's end) to the next
    timeout_ms: int = 20_000  # a check still running then is killed and counts as failed
    failures: int = 1  # consecutive failed checks that count as one failure of the group
    line: int = 0


@dataclass(frozen=True)
class RestartConf:
    """hbd.conf `restart GROUP max=N window=T`: restarts in place before handing over."""

    group: str  # group key
    max: int = 0  # restarts allowed within `window_ms`; 0: hand the group over at once
    window_ms: int = 600_000
    line: int = 0


@dataclass(frozen=True)
class ExpiryConf:
    """hbd.conf `failure_expiry GROUP T|never`: when a failure here is forgotten."""

    group: str
    expiry_ms: int = 0  # 0: never (until `hbctl cleanup GROUP`)
    line: int = 0


@dataclass(frozen=True)
class TrackConf:
    """hbd.conf `track_interface GROUP|* IFACE...`: more interfaces a group needs up here."""

    group: str  # a group key, or "*" for every group
    interfaces: tuple[str, ...]
    line: int = 0


@dataclass(frozen=True)
class HbdConf:
    """What hbd.conf says: hbd's own settings, which Heartbeat never reads (hbdconf.py)."""

    present: bool = False  # the file exists (it is optional)
    lines: dict[str, int] = field(default_factory=dict, compare=False)  # directive -> line
    # gratuitous ARP rounds and spacing; None: not set here (ha.cf's, else IPaddr2's default)
    arp_count: int | None = None
    arp_interval_ms: int | None = None
    fencing: FenceSettings = field(default_factory=FenceSettings)
    # resource monitoring (hbd.core.health): checks, restart policies, failure expiry
    monitors: tuple[MonitorConf, ...] = ()
    restarts: tuple[RestartConf, ...] = ()
    expiries: tuple[ExpiryConf, ...] = ()
    # notify hooks (hbd/hooks.py): `notify PATH` lines, run first, in file order
    notify: tuple[str, ...] = ()
    # `notify_dir`: a directory of hooks run after them, by name; None: `notify.d` in the
    # configuration directory (when it exists); "": none (`notify_dir off`)
    notify_dir: str | None = None
    notify_timeout_ms: int = DEFAULT_NOTIFY_TIMEOUT_MS  # each hook's time limit
    # keepalived's garp_master_refresh: re-announce the addresses of running groups this
    # often; 0: never (only the arp_count rounds after a takeover)
    garp_refresh_ms: int = 0
    # link tracking (hbd.core.linktrack): the interfaces of a group's addresses are watched
    # unless `link_tracking off`; `track_interface` lines add others
    link_tracking: bool = True
    tracks: tuple[TrackConf, ...] = ()
    # Prometheus metrics (hbd/metrics.py), off by default: the HTTP endpoint's (host, port),
    # a node_exporter textfile's path ("" for none), and how often the view is refreshed
    metrics_listen: tuple[str, int] | None = None
    metrics_textfile: str = ""
    metrics_interval_ms: int = DEFAULT_METRICS_INTERVAL_MS
    # what Heartbeat's API clients may put on the wire (hbd.core.clientmsgs), in KiB/s: one
    # client name, and all clients together
    api_client_rate: int = DEFAULT_API_CLIENT_RATE
    api_clients_rate: int = DEFAULT_API_CLIENTS_RATE


@dataclass(frozen=True)
class ClusterConfig:
    """Everything hbd needs from /etc/ha.d, for one node."""

    node_name: str  # this node, lower-cased
    hacf: HaCf
    groups: tuple[ResourceGroup, ...]
    auth: AuthKeys
    warnings: tuple[Problem, ...] = ()
    hbd: HbdConf = field(default_factory=HbdConf)  # hbd.conf

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(n for n in self.hacf.nodes if n != self.node_name)
