"""Which Pacemaker agent runs each haresources resource, with which parameters.

Heartbeat's /etc/ha.d/resource.d holds thin wrappers around OCF agents: each
takes its arguments by position (`Filesystem::/dev/sda1::/data::ext4`) and
exports them as OCF_RESKEY_ variables before calling the OCF agent.  The
table here is those wrappers read back: the positional order of each, the
OCF parameter each position becomes, and monitor/start/stop timeouts taken
from the agent's own meta-data advice (resource-agents 4.12).

A name that is not such a wrapper is looked up the way Heartbeat's
ResourceManager did (resource.d first, then /etc/init.d), using the facts the
caller gathered in a HostView; nothing here reads the disk.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from hbd.core.config import HaCf, Resource
from hbd.core.haresources import parse_ipv4_spec
from hbd.export.model import HostView, Op, Pairs

# hbd's own IPaddr2 gratuitous-ARP defaults equal the OCF agent's: only differences are exported.
_IPADDR2_ARP_COUNT = 5
_IPADDR2_ARP_INTERVAL_MS = 200


@dataclass(frozen=True)
class Mapped:
    """One resource as Pacemaker will run it (before its id is made unique)."""

    id_hint: str
    standard: str
    provider: str | None
    type: str
    params: Pairs
    ops: tuple[Op, ...]
    notes: tuple[str, ...] = ()
    promotable: bool = False  # DRBD: becomes a promotable clone, not a group member


def ops(monitor: str, monitor_timeout: str, start: str, stop: str) -> tuple[Op, ...]:
    return (
        Op("monitor", monitor, monitor_timeout),
        Op("start", "0s", start),
        Op("stop", "0s", stop),
    )


# Heartbeat gave haresources scripts unlimited time; Pacemaker needs a bound.
SCRIPT_OPS = ops("30s", "30s", "120s", "120s")


@dataclass(frozen=True)
class _Positional:
    """A resource.d wrapper that only renames its positional arguments."""

    type: str
    names: tuple[str, ...]  # OCF parameter for argument 1, 2, ...
    required: int  # how many the wrapper insists on
    ops: tuple[Op, ...]


_POSITIONAL: dict[str, _Positional] = {
    "Filesystem": _Positional("Filesystem", ("device", "directory", "fstype", "options"), 3,
                              ops("20s", "40s", "60s", "60s")),
    "MailTo": _Positional("MailTo", ("email", "subject"), 1, ops("10s", "10s", "10s", "10s")),
    "IPsrcaddr": _Positional("IPsrcaddr", ("ipaddress",), 1, ops("10s", "20s", "20s", "20s")),
    "Raid1": _Positional("Raid1", ("raidconf", "raiddev"), 2, ops("10s", "20s", "20s", "20s")),
    "portblock": _Positional("portblock", ("protocol", "portno", "action"), 3,
                             ops("10s", "10s", "20s", "20s")),
    "Xinetd": _Positional("Xinetd", ("service",), 1, ops("10s", "10s", "20s", "20s")),
    "db2": _Positional("db2", ("instance",), 1, ops("20s", "60s", "120s", "120s")),
    "ServeRAID": _Positional("ServeRAID", ("serveraid", "mergegroup"), 2,
                             ops("10s", "20s", "40s", "40s")),
    "ICP": _Positional("ICP", ("driveid", "device"), 2, ops("10s", "20s", "20s", "20s")),
    "LinuxSCSI": _Positional("LinuxSCSI", ("scsi",), 1, ops("10s", "20s", "20s", "20s")),
    "ids": _Positional("ids", ("informixdir", "informixserver", "onconfig"), 0,
                       ops("10s", "30s", "120s", "120s")),
    "apache": _Positional("apache", ("configfile",), 0, ops("10s", "20s", "40s", "60s")),
}

# Wrappers whose arguments need more than renaming; handled by _special().
_SPECIAL = frozenset(
    ["IPaddr", "IPaddr2", "IPv6addr", "SendArp", "Delay", "AudibleAlarm", "WinPopup", "WAS",
     "LVM", "drbddisk", "OCF"]
)
KNOWN_AGENTS = frozenset(_POSITIONAL) | _SPECIAL


def slug(text: str) -> str:
    """A fragment usable in a CIB id (an XML NCName that pcs and crmsh accept)."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "x"


def _count_notes(resource: Resource, names: tuple[str, ...], required: int) -> list[str]:
    got = len(resource.args)
    if got < required:
        return [f"{resource.text}: {resource.agent} expects at least {required} argument(s) "
                f"({', '.join(names)}), got {got}; Heartbeat would have refused it too"]
    if got > len(names):
        dropped = "::".join(resource.args[len(names):])
        return [f"{resource.text}: {resource.agent} takes at most {len(names)} argument(s); "
                f"'{dropped}' has no OCF parameter and is dropped"]
    return []


def _positional(resource: Resource, spec: _Positional) -> Mapped:
    params = tuple(zip(spec.names, resource.args, strict=False))
    if resource.agent == "Filesystem" and len(resource.args) > 1:
        hint = "fs-" + (slug(resource.args[1]) if resource.args[1].strip("/") else "root")
    elif resource.args:
        hint = f"{slug(spec.type)}-{slug(resource.args[0].rsplit('/', 1)[-1])}"
    else:
        hint = slug(spec.type)
    return Mapped(hint, "ocf", "heartbeat", spec.type, params, spec.ops,
                  tuple(_count_notes(resource, spec.names, spec.required)))


def _ip(resource: Resource, hacf: HaCf) -> Mapped:
    spec = parse_ipv4_spec(resource.args[0])  # the parser already accepted it
    params: list[tuple[str, str]] = [("ip", spec.address)]
    if spec.prefix is not None:
        params.append(("cidr_netmask", str(spec.prefix)))
    if spec.interface:
        params.append(("nic", spec.interface))
    if spec.label:
        params.append(("iflabel", spec.label.partition(":")[2]))
    if spec.broadcast:
        params.append(("broadcast", spec.broadcast))
    if hacf.arp_count != _IPADDR2_ARP_COUNT:
        params.append(("arp_count", str(hacf.arp_count)))
    if hacf.arp_interval_ms != _IPADDR2_ARP_INTERVAL_MS:
        params.append(("arp_interval", str(hacf.arp_interval_ms)))
    return Mapped(f"ip-{spec.address}", "ocf", "heartbeat", "IPaddr2", tuple(params),
                  ops("10s", "20s", "20s", "20s"))


def _ipv6(resource: Resource) -> Mapped:
    address, _, rest = resource.args[0].partition("/")
    bits, _, nic = rest.partition("/")
    params: list[tuple[str, str]] = [("ipv6addr", str(ipaddress.IPv6Address(address)))]
    notes: list[str] = []
    if bits:
        params.append(("cidr_netmask", bits))
    else:
        notes.append(f"{resource.text}: no /bits given; hbd assumed /64, "
                     "ocf:heartbeat:IPv6addr takes the prefix of a matching address on the "
                     "interface: add cidr_netmask if that differs")
    if nic:
        params.append(("nic", nic))
    hint = "ip6-" + slug(str(ipaddress.IPv6Address(address)).replace(":", "-"))
    return Mapped(hint, "ocf", "heartbeat", "IPv6addr", tuple(params),
                  ops("15s", "15s", "15s", "15s"), tuple(notes))


def _seconds(value: str, default: int) -> int:
    return int(value) if value.isdigit() else default


def _special(resource: Resource, hacf: HaCf, host: HostView) -> Mapped | None:
    agent, args, text = resource.agent, resource.args, resource.text
    if agent in ("IPaddr", "IPaddr2"):
        return _ip(resource, hacf)
    if agent == "IPv6addr":
        return _ipv6(resource)
    if agent == "SendArp":
        ip, _, nic = (args[0] if args else "").partition("/")
        notes = () if len(args) == 1 and nic else (
            f"{text}: SendArp expects one argument ip-address/interface",)
        return Mapped(f"arp-{slug(ip)}", "ocf", "heartbeat", "SendArp",
                      (("ip", ip), ("nic", nic)), ops("10s", "20s", "20s", "20s"), notes)
    if agent == "Delay":
        # The wrapper's default start delay is 10 s; the timeouts must outlast the delays.
        start = _seconds(args[0], 10) if args else 10
        stop = _seconds(args[1], 0) if len(args) > 1 else 0
        params = (("startdelay", str(start)),) + ((("stopdelay", str(stop)),) if stop else ())
        return Mapped(f"delay-{start}", "ocf", "heartbeat", "Delay", params,
                      ops("10s", "30s", f"{start + 30}s", f"{stop + 30}s"))
    if agent == "AudibleAlarm":
        params = (("nodelist", " ".join(args)),) if args else ()
        return Mapped("audiblealarm", "ocf", "heartbeat", "AudibleAlarm", params,
                      ops("10s", "10s", "10s", "10s"))
    if agent == "WinPopup":
        # Without an argument the wrapper passes hostfile=hosts; the agent requires one.
        return Mapped("winpopup", "ocf", "heartbeat", "WinPopup",
                      (("hostfile", args[0] if args else "hosts"),),
                      ops("10s", "10s", "30s", "30s"))
    if agent == "WAS":
        # The wrapper takes a config file, or a number meaning the snoop port.
        params = () if not args else (
            (("port", args[0]),) if args[0].isdigit() else (("config", args[0]),))
        return Mapped("was", "ocf", "heartbeat", "WAS", params, ops("10s", "30s", "300s", "300s"))
    if agent == "LVM":
        vg = args[0] if args else ""
        note = (f"{text}: ocf:heartbeat:LVM is deprecated; exported as LVM-activate "
                "vg_access_mode=system_id, which needs system_id_source in lvm.conf on "
                "every node (or choose tagging, lvmlockd or clvmd)")
        return Mapped(f"lvm-{slug(vg)}", "ocf", "heartbeat", "LVM-activate",
                      (("vgname", vg), ("vg_access_mode", "system_id")),
                      ops("30s", "90s", "90s", "90s"), (note,))
    if agent == "drbddisk":
        return _drbd(resource)
    return _ocf_wrapper(resource, host)


def _drbd(resource: Resource) -> Mapped | None:
    if not resource.args or resource.args[0] == "all":
        return None  # plan.py explains why
    name = resource.args[0]
    monitors = (
        Op("monitor", "29s", "20s", "Promoted"),
        Op("monitor", "31s", "20s", "Unpromoted"),
        Op("start", "0s", "240s"),
        Op("promote", "0s", "90s"),
        Op("demote", "0s", "90s"),
        Op("stop", "0s", "100s"),
    )
    note = (f"{resource.text}: drbddisk becomes a promotable ocf:linbit:drbd clone that the "
            "group follows (colocated with the Promoted role, started after promotion); "
            "install drbd-utils' OCF agent and set DRBD's fencing policy for Pacemaker")
    return Mapped(f"drbd-{slug(name)}", "ocf", "linbit", "drbd", (("drbd_resource", name),),
                  monitors, (note,), promotable=True)


def _parse_instance(text: str) -> Pairs:
    """The OCF wrapper's instance file: shell `OCF_RESKEY_name=value` lines."""
    params: list[tuple[str, str]] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        if not sep or not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        params.append((name.removeprefix("OCF_RESKEY_"), value))
    return tuple(params)


def _ocf_wrapper(resource: Resource, host: HostView) -> Mapped:
    """`OCF::agent::instance`: parameters live in <config-dir>/conf/OCF/agent/instance."""
    if len(resource.args) != 2:
        note = (f"{resource.text}: the OCF wrapper takes OCF::agent::instance; "
                "exported without parameters, fill them in")
        agent = resource.args[0] if resource.args else "Dummy"
        return Mapped(f"ocf-{slug(agent)}", "ocf", host.ocf_agents.get(agent, "heartbeat"),
                      agent, (), SCRIPT_OPS, (note,))
    agent, instance = resource.args
    notes: list[str] = []
    provider = host.ocf_agents.get(agent)
    if provider is None:
        provider = "heartbeat"
        notes.append(f"{resource.text}: OCF agent '{agent}' is not installed on this machine; "
                     "assumed provider 'heartbeat'")
    text = host.ocf_instances.get((agent, instance))
    params: Pairs = ()
    if text is None:
        notes.append(f"{resource.text}: instance file conf/OCF/{agent}/{instance} not found; "
                     "exported without parameters, fill them in")
    else:
        params = _parse_instance(text)
    return Mapped(f"{slug(agent)}-{slug(instance)}", "ocf", provider, agent, params,
                  SCRIPT_OPS, tuple(notes))


def map_resource(resource: Resource, hacf: HaCf, host: HostView) -> Mapped | None:
    """The Pacemaker agent for one haresources resource; None when it cannot be mapped."""
    spec = _POSITIONAL.get(resource.agent)
    if spec is not None:
        return _positional(resource, spec)
    if resource.agent in _SPECIAL:
        return _special(resource, hacf, host)
    return _script(resource, host)


def _script(resource: Resource, host: HostView) -> Mapped:
    """Not a known wrapper: resource.d first, then /etc/init.d, as Heartbeat looked."""
    name, args, text = resource.agent, resource.args, resource.text
    hint = slug(name)
    numbered = tuple((str(i), arg) for i, arg in enumerate(args, start=1))
    ocf_provider = host.ocf_agents.get(name)
    better = (f"; an OCF agent ocf:{ocf_provider}:{name} exists on this machine and "
              "would give Pacemaker a real monitor" if ocf_provider else "")
    if name in host.resource_scripts:
        note = (f"{text}: resource.d script, exported as heartbeat:{name}: copy it to "
                f"/etc/ha.d/resource.d/{name} on every Pacemaker node (monitor runs its "
                f"'status'){better}")
        return Mapped(hint, "heartbeat", None, name, numbered, SCRIPT_OPS, (note,))
    if name in host.init_scripts:
        notes = []
        if args:
            notes.append(f"{text}: LSB init scripts take no arguments in Pacemaker; "
                         f"'{'::'.join(args)}' is dropped")
        if better:
            notes.append(f"{text}: exported as lsb:{name}{better}")
        return Mapped(hint, "lsb", None, name, (), SCRIPT_OPS, tuple(notes))
    note = (f"{text}: '{name}' is neither a known Heartbeat agent nor a script in resource.d "
            f"or /etc/init.d on this machine; exported as heartbeat:{name} (a script in "
            f"/etc/ha.d/resource.d): check it, or change it to lsb:, systemd: or ocf:{better}")
    return Mapped(hint, "heartbeat", None, name, numbered, SCRIPT_OPS, (note,))
