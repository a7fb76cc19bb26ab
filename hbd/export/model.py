"""A neutral picture of a Pacemaker configuration, and the export's notes.

`plan.py` builds a `Plan` from a Heartbeat configuration; `cib.py` and
`scripts.py` only render it.  Keeping one model means the CIB, the pcs script
and the crmsh script cannot disagree about ids, parameters or constraints:
they are three spellings of the same objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

Pairs = tuple[tuple[str, str], ...]  # ordered name=value pairs (nvpairs)


@dataclass(frozen=True)
class Note:
    """One thing that did not carry over unchanged, at a config file line."""

    file: str  # e.g. "/etc/ha.d/ha.cf"
    line: int  # 0 when it is about the file (or the cluster) as a whole
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else (
            f"{self.file}: {self.message}")


@dataclass(frozen=True)
class Op:
    """One operation of a primitive (monitor, start, stop)."""

    name: str
    interval: str  # "0s" for start/stop
    timeout: str
    role: str | None = None  # "Promoted" / "Unpromoted" for promotable clones


@dataclass(frozen=True)
class Primitive:
    id: str
    standard: str  # ocf, lsb, heartbeat
    provider: str | None  # only for ocf
    type: str
    params: Pairs = ()
    ops: tuple[Op, ...] = ()
    source: str = ""  # the haresources text it came from, for comments

    @property
    def agent(self) -> str:
        """`standard:provider:type` as pcs and crmsh spell it."""
        if self.provider:
            return f"{self.standard}:{self.provider}:{self.type}"
        return f"{self.standard}:{self.type}"


@dataclass(frozen=True)
class Group:
    """An ordered, colocated list: exactly what one haresources line is."""

    id: str
    members: tuple[Primitive, ...]


@dataclass(frozen=True)
class Clone:
    id: str
    child: Primitive
    meta: Pairs = ()  # promotable=true etc.


Resource = Primitive | Group | Clone


@dataclass(frozen=True)
class Expression:
    attribute: str
    operation: str  # defined, not_defined, gt, lt, ...
    value: str | None = None


@dataclass(frozen=True)
class NodePreference:
    """`rsc_location` with a node and a score."""

    id: str
    rsc: str
    node: str
    score: str


@dataclass(frozen=True)
class RuleLocation:
    """`rsc_location` with one rule: a fixed score or a score from an attribute."""

    id: str
    rsc: str
    expressions: tuple[Expression, ...]
    score: str | None = None
    score_attribute: str | None = None
    boolean_op: str = "and"
    role: str | None = None  # e.g. Promoted: the rule places only that role

    @property
    def rule_id(self) -> str:
        return f"{self.id}-rule"


@dataclass(frozen=True)
class Colocation:
    id: str
    rsc: str
    with_rsc: str
    score: str = "INFINITY"
    with_rsc_role: str | None = None


@dataclass(frozen=True)
class Order:
    id: str
    first: str
    then: str
    first_action: str = "start"
    then_action: str = "start"


Constraint = NodePreference | RuleLocation | Colocation | Order


@dataclass(frozen=True)
class Plan:
    """Everything the CIB will say, in the order it says it."""

    cluster_name: str
    nodes: tuple[str, ...]  # node ids are 1..N in this order, as in corosync.conf
    properties: Pairs
    rsc_defaults: Pairs
    resources: tuple[Resource, ...]
    constraints: tuple[Constraint, ...]
    notes: tuple[Note, ...] = ()

    def primitives(self) -> list[Primitive]:
        found: list[Primitive] = []
        for res in self.resources:
            if isinstance(res, Group):
                found += res.members
            elif isinstance(res, Clone):
                found.append(res.child)
            else:
                found.append(res)
        return found


@dataclass(frozen=True)
class HostView:
    """What the exporting machine can tell about agents and itself.

    Everything is optional: the pure exporter never looks at the disk, and a
    test hands in exactly the facts it wants.
    """

    # names of /etc/init.d scripts (Heartbeat's second place to look for a resource)
    init_scripts: frozenset[str] = frozenset()
    # names of scripts in <config-dir>/resource.d (Heartbeat's first place)
    resource_scripts: frozenset[str] = frozenset()
    # OCF agent type -> provider, from /usr/lib/ocf/resource.d/*/
    ocf_agents: Mapping[str, str] = field(default_factory=dict)
    # (agent, instance) -> text of <config-dir>/conf/OCF/agent/instance (OCF:: wrapper)
    ocf_instances: Mapping[tuple[str, str], str] = field(default_factory=dict)
    # the cluster node this machine is, when it is one of them
    this_node: str | None = None
    # this machine's (interface, IPv4 address) pairs, used for its own ringX_addr
    addresses: tuple[tuple[str, str], ...] = ()
    # the node whose ha.cf this is (`--node`): a lone ucast peer is then the other node
    origin_node: str | None = None
    # cluster-glue plugin type -> its parameter names (`stonith -t TYPE -n`)
    stonith_params: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # ha.cf `stonith TYPE FILE`: FILE -> its text
    stonith_files: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sources:
    """How the three Heartbeat files are named in notes."""

    hacf: str = "ha.cf"
    haresources: str = "haresources"
    authkeys: str = "authkeys"
