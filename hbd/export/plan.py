"""Turn a Heartbeat cluster (ha.cf + haresources) into a Pacemaker Plan.

The decisions, each explained in docs/migrating-to-pacemaker.md:

* one haresources line is one Pacemaker group (a lone resource stays a
  primitive), preferred on its line's node with score 100;
* auto_failback is resource-stickiness: `on` (and `legacy`) is 0 so groups
  move home, `off` is 200 per resource, which outweighs the home preference;
* ping nodes become an ocf:pacemaker:ping clone; each group prefers the node
  that reaches more of them, which is what Heartbeat's ipfail did.  A
  ping_group counts once, as it did in Heartbeat, through a fixed-score rule;
* drbddisk becomes a promotable ocf:linbit:drbd clone the group follows;
* ha.cf's STONITH device and hbd.conf's fence agents become stonith
  resources with stonith-enabled=true (hbd/export/fencing.py); without any,
  STONITH is off, as it was, and the notes say loudly that it should not
  stay off.

Every step that loses or changes something adds a Note with its file:line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hbd.core.config import AutoFailback, ClusterConfig, ResourceGroup
from hbd.core.hacf import NOT_IMPLEMENTED
from hbd.export.agents import Mapped, map_resource, slug
from hbd.export.fencing import export_fencing
from hbd.export.model import (
    Clone,
    Colocation,
    Constraint,
    Expression,
    Group,
    HostView,
    NodePreference,
    Note,
    Op,
    Order,
    Plan,
    Primitive,
    Resource,
    RuleLocation,
    Sources,
)

HOME_SCORE = "100"  # preference for the haresources node
STICKY = "200"  # auto_failback off: above HOME_SCORE even for a one-resource group
PING_SCORE = "10000"  # one more reachable ping node beats stickiness of groups < 50 members

# What each ha.cf directive hbd does not implement becomes in a Pacemaker cluster.
_DIRECTIVE_FATE: dict[str, str] = {
    "watchdog": "Pacemaker uses a watchdog through sbd (watchdog-only fencing); "
                "set it up separately",
    "respawn": "Pacemaker respawns no clients: run them as systemd units or cluster "
               "resources (ipfail's job is done by the ping location rules)",
    "apiauth": "the Heartbeat client API is gone; Pacemaker ACLs control access to the CIB",
    "compression": "knet has its own knet_compression_model (off by default)",
    "compression_threshold": "knet has its own knet_compression_threshold",
    "traditional_compression": "knet has its own knet_compression_model",
    "use_logd": "Corosync and Pacemaker log to syslog and their own log files",
    "conn_logd_time": "Corosync and Pacemaker log to syslog and their own log files",
    "syslogmsgfmt": "Corosync and Pacemaker choose their own syslog format",
    "crm_daemon_dir": "Pacemaker finds its daemons itself",
}


@dataclass
class _Builder:
    config: ClusterConfig
    host: HostView
    sources: Sources
    ids: set[str] = field(default_factory=set)
    resources: list[Resource] = field(default_factory=list)
    constraints: list[Constraint] = field(default_factory=list)
    placed: list[str] = field(default_factory=list)  # ids that get the ping rules
    notes: list[Note] = field(default_factory=list)

    def unique(self, wanted: str) -> str:
        base = wanted if re.match(r"^[A-Za-z_]", wanted) else f"r-{wanted}"
        candidate, n = base, 1
        while candidate in self.ids:
            n += 1
            candidate = f"{base}-{n}"
        self.ids.add(candidate)
        return candidate

    def hacf_note(self, message: str, line: int = 0) -> None:
        self.notes.append(Note(self.sources.hacf, line, message))

    def res_note(self, group: ResourceGroup, message: str) -> None:
        self.notes.append(Note(self.sources.haresources, group.line, message))


def _primitive(b: _Builder, mapped: Mapped, source: str) -> Primitive:
    return Primitive(b.unique(mapped.id_hint), mapped.standard, mapped.provider, mapped.type,
                     mapped.params, mapped.ops, source)


def _add_group(b: _Builder, group: ResourceGroup) -> None:
    members: list[Primitive] = []
    clones: list[Clone] = []
    for index, resource in enumerate(group.resources):
        mapped = map_resource(resource, b.config.hacf, b.host)
        if mapped is None:
            b.res_note(group, f"{resource.text}: drbddisk without a resource name manages every "
                       "DRBD resource; create one promotable ocf:linbit:drbd clone per DRBD "
                       "resource by hand: not exported")
            continue
        for text in mapped.notes:
            b.res_note(group, text)
        primitive = _primitive(b, mapped, resource.text)
        if not mapped.promotable:
            members.append(primitive)
            continue
        if index > 0:
            b.res_note(group, f"{resource.text}: the whole group now starts after DRBD is "
                       "promoted, including the resources listed before it")
        clones.append(Clone(b.unique(f"{primitive.id}-clone"), primitive, (
            ("promotable", "true"), ("promoted-max", "1"), ("promoted-node-max", "1"),
            ("clone-max", "2"), ("clone-node-max", "1"), ("notify", "true"))))
    top: Resource | None = None
    if len(members) > 1:
        top = Group(b.unique(f"grp-{members[0].id}"), tuple(members))
    elif members:
        top = members[0]
    if top is not None:
        b.resources.append(top)
        b.placed.append(top.id)
        b.constraints.append(NodePreference(
            b.unique(f"loc-{top.id}-{slug(group.node)}"), top.id, group.node, HOME_SCORE))
    for clone in clones:
        b.resources.append(clone)
        if top is None:
            # pcs and crmsh can give a role only to rule locations.
            b.constraints.append(RuleLocation(
                b.unique(f"loc-{clone.id}-{slug(group.node)}"), clone.id,
                (Expression("#uname", "eq", group.node),), score=HOME_SCORE, role="Promoted"))
            continue
        b.constraints.append(Colocation(b.unique(f"col-{top.id}-with-{clone.id}"), top.id,
                                        clone.id, with_rsc_role="Promoted"))
        b.constraints.append(Order(b.unique(f"ord-{clone.id}-then-{top.id}"), clone.id,
                                   top.id, first_action="promote"))


def _ping_primitive(b: _Builder, name: str, attribute: str, hosts: tuple[str, ...]) -> Clone:
    dampen = max(1, round(b.config.hacf.timers.deadping_ms / 1000))
    child = Primitive(b.unique(name), "ocf", "pacemaker", "ping", (
        ("name", attribute), ("host_list", " ".join(hosts)), ("multiplier", PING_SCORE),
        ("dampen", f"{dampen}s")),
        (Op("monitor", "10s", "60s"), Op("start", "0s", "60s"), Op("stop", "0s", "20s")))
    return Clone(b.unique(f"{name}-clone"), child)


def _add_ping(b: _Builder) -> None:
    hacf = b.config.hacf
    if not hacf.ping_nodes and not hacf.ping_groups:
        return
    if hacf.ping_nodes:
        b.resources.append(_ping_primitive(b, "ping", "pingd", hacf.ping_nodes))
        for rsc in b.placed:
            b.constraints.append(RuleLocation(
                b.unique(f"loc-{rsc}-ping"), rsc, (Expression("pingd", "defined"),),
                score_attribute="pingd"))
        b.hacf_note(f"ping {' '.join(hacf.ping_nodes)}: exported as a ping clone; every group "
                    "prefers the node reaching more ping nodes (Heartbeat did that only with "
                    "ipfail)")
    for ping_group in hacf.ping_groups:
        attribute = "pingd_" + re.sub(r"[^a-z0-9]+", "_", ping_group.name.lower())
        b.resources.append(_ping_primitive(
            b, f"ping-{slug(ping_group.name)}", attribute, ping_group.addresses))
        for rsc in b.placed:
            b.constraints.append(RuleLocation(
                b.unique(f"loc-{rsc}-{slug(ping_group.name)}"), rsc,
                (Expression(attribute, "gt", "0"),), score=PING_SCORE))
        b.hacf_note(f"ping_group {ping_group.name}: exported as its own ping clone (attribute "
                    f"{attribute}); a rule adds {PING_SCORE} where any member answers, so the "
                    "group still counts as one ping node")


def _add_fencing(b: _Builder) -> tuple[tuple[str, str], ...] | None:
    """Stonith resources for every device; the cluster options that go with them."""
    hbd_file = b.sources.hacf.rsplit("/", 1)[0] + "/hbd.conf" if "/" in b.sources.hacf \
        else "hbd.conf"
    fencing = export_fencing(b.config, b.host, b.sources.hacf, hbd_file)
    b.notes += fencing.notes
    if not fencing.primitives:
        return None
    for primitive in fencing.primitives:
        b.ids.add(primitive.id)
        b.resources.append(primitive)
    for hint, rsc, node in fencing.bans:
        b.constraints.append(NodePreference(b.unique(hint), rsc, node, "-INFINITY"))
    delay = b.config.hbd.fencing.race_delay_ms
    return (("stonith-enabled", "true"), ("no-quorum-policy", "stop"),
            ("priority-fencing-delay", f"{delay // 1000}s" if delay % 1000 == 0
             else f"{delay}ms"))


def _cluster_options(b: _Builder) -> tuple[tuple[str, str], ...]:
    b.hacf_note("STONITH: no stonith/stonith_host line (and no hbd.conf fence_agent), so "
                "this cluster did not fence and stonith-enabled=false keeps that behaviour; a "
                "two-node cluster without fencing can run a group on both nodes after a "
                "split: configure fence devices and set stonith-enabled=true")
    return (("stonith-enabled", "false"), ("no-quorum-policy", "stop"))


def _stickiness(b: _Builder) -> str:
    mode = b.config.hacf.auto_failback
    if mode is AutoFailback.OFF:
        return STICKY
    if mode is AutoFailback.LEGACY:
        b.hacf_note("auto_failback legacy: exported as 'on' (groups move back home); the "
                    "per-peer negotiation of the legacy mode has no Pacemaker equivalent")
    return "0"


def _unimplemented_directives(b: _Builder) -> None:
    for problem in b.config.warnings:
        directive = problem.message.split(":", 1)[0]
        if directive not in NOT_IMPLEMENTED or "not implemented by hbd" not in problem.message:
            continue
        fate = _DIRECTIVE_FATE.get(directive, "no Pacemaker or Corosync equivalent")
        b.notes.append(Note(problem.file, problem.line, f"{directive}: not carried over: {fate}"))
    for entry in b.config.hacf.apiauth:  # honoured by hbd, meaningless to Pacemaker
        b.notes.append(Note(b.sources.hacf, entry.line,
                            f"apiauth: not carried over: {_DIRECTIVE_FATE['apiauth']}"))
    for child in b.config.hacf.respawn:  # run by hbd; Pacemaker respawns nothing
        b.notes.append(Note(b.sources.hacf, child.line,
                            f"respawn: not carried over: {_DIRECTIVE_FATE['respawn']}"))


def build_plan(config: ClusterConfig, host: HostView | None = None,
               sources: Sources | None = None) -> Plan:
    """The Pacemaker picture of `config`; never raises on a config the parser accepted."""
    b = _Builder(config, host or HostView(), sources or Sources())
    for group in config.groups:
        _add_group(b, group)
    _add_ping(b)
    fencing = _add_fencing(b)
    properties = fencing or _cluster_options(b)
    defaults: tuple[tuple[str, str], ...] = (("resource-stickiness", _stickiness(b)),)
    if fencing:
        defaults += (("priority", "1"),)  # priority-fencing-delay counts resources
    _unimplemented_directives(b)
    if not config.groups:
        b.notes.append(Note(b.sources.haresources, 0, "no resource groups: the CIB has no "
                            "resources"))
    return Plan(config.hacf.cluster_name, config.hacf.nodes, properties, defaults,
                tuple(b.resources), tuple(b.constraints), tuple(b.notes))
