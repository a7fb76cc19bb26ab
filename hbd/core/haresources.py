"""Parser for Heartbeat's haresources.

One resource group per logical line (a trailing backslash continues it):
`NODE RESOURCE...`.  A resource is `Agent::arg1::arg2`, a bare name
(`httpd`), or a bare IPv4 address `a.b.c.d[/bits[/iface[/bcast]]]`, which
means IPaddr.  The text is never handed to a shell: the agent name becomes
a file name under a fixed directory and the arguments an argument list, so
agent names are checked to be plain names.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass

from hbd.core.config import Resource, ResourceGroup
from hbd.core.parsing import Problems, joined_lines

_AGENT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
_IFACE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
_BARE_IP = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}(?:/.*)?$")


@dataclass(frozen=True)
class IPv4Spec:
    """The argument of IPaddr/IPaddr2: `a.b.c.d[/bits[/iface[/bcast]]]`."""

    address: str
    prefix: int | None = None  # None: take it from the interface's subnet
    interface: str | None = None  # None: the interface whose subnet holds address
    broadcast: str | None = None
    label: str | None = None  # `iface:label` gives an address label


@dataclass(frozen=True)
class IPv6Spec:
    """The argument of IPv6addr: `addr[/bits[/iface]]`."""

    address: str
    prefix: int = 64
    interface: str | None = None


def parse_ipv4_spec(arg: str) -> IPv4Spec:
    """Parse an IPaddr argument.  Raises ValueError with a readable message."""
    parts = arg.split("/")
    if len(parts) > 4:
        raise ValueError(f"'{arg}' has too many parts (a.b.c.d[/bits[/iface[/bcast]]])")
    try:
        address = str(ipaddress.IPv4Address(parts[0]))
    except ValueError:
        raise ValueError(f"'{parts[0]}' is not an IPv4 address") from None
    prefix: int | None = None
    if len(parts) > 1 and parts[1]:
        if not parts[1].isdigit() or not 1 <= int(parts[1]) <= 32:
            raise ValueError(f"'{parts[1]}' is not a prefix length (1-32)")
        prefix = int(parts[1])
    interface: str | None = None
    label: str | None = None
    if len(parts) > 2 and parts[2]:
        if not _IFACE_NAME.match(parts[2]):
            raise ValueError(f"'{parts[2]}' is not an interface name")
        interface, _, label_part = parts[2].partition(":")
        label = parts[2] if label_part else None
    broadcast: str | None = None
    if len(parts) > 3 and parts[3]:
        try:
            broadcast = str(ipaddress.IPv4Address(parts[3]))
        except ValueError:
            raise ValueError(f"'{parts[3]}' is not a broadcast address") from None
    return IPv4Spec(address, prefix, interface, broadcast, label)


def parse_ipv6_spec(arg: str) -> IPv6Spec:
    """Parse an IPv6addr argument.  Raises ValueError with a readable message."""
    parts = arg.split("/")
    if len(parts) > 3:
        raise ValueError(f"'{arg}' has too many parts (addr[/bits[/iface]])")
    try:
        address = str(ipaddress.IPv6Address(parts[0]))
    except ValueError:
        raise ValueError(f"'{parts[0]}' is not an IPv6 address") from None
    prefix = 64
    if len(parts) > 1 and parts[1]:
        if not parts[1].isdigit() or not 1 <= int(parts[1]) <= 128:
            raise ValueError(f"'{parts[1]}' is not a prefix length (1-128)")
        prefix = int(parts[1])
    interface = parts[2] if len(parts) > 2 and parts[2] else None
    if interface is not None and not _IFACE_NAME.match(interface):
        raise ValueError(f"'{interface}' is not an interface name")
    return IPv6Spec(address, prefix, interface)


def parse_resource(token: str) -> Resource:
    """Turn one haresources token into a Resource.  Raises ValueError."""
    if _BARE_IP.match(token):
        parse_ipv4_spec(token)
        return Resource(agent="IPaddr", args=(token,), text=token)
    agent, sep, rest = token.partition("::")
    if not _AGENT_NAME.match(agent):
        raise ValueError(f"'{agent}' is not a resource agent name")
    if not sep:
        return Resource(agent=agent, args=(), text=token)
    if agent == "IPv6addr":
        # IPv6 addresses contain '::' themselves: the whole rest is the one argument.
        parse_ipv6_spec(rest)
        return Resource(agent=agent, args=(rest,), text=token)
    args = tuple(rest.split("::"))
    if agent in ("IPaddr", "IPaddr2"):
        if len(args) != 1:
            raise ValueError(f"{agent} takes one argument a.b.c.d[/bits[/iface[/bcast]]]")
        parse_ipv4_spec(args[0])
    return Resource(agent=agent, args=args, text=token)


def parse_haresources(
    text: str,
    *,
    filename: str = "haresources",
    nodes: Collection[str] = (),
) -> tuple[tuple[ResourceGroup, ...], Problems]:
    """Parse haresources text.  Returns the groups and every problem found.

    `nodes` are ha.cf's node names; a line naming any other node is an error.
    An empty `nodes` skips that check (ha.cf itself was unusable).
    """
    problems = Problems(filename)
    groups: list[ResourceGroup] = []
    seen: dict[str, int] = {}
    for line, content in joined_lines(text):
        node, *tokens = content.split()
        node = node.lower()
        if nodes and node not in nodes:
            problems.error(
                line,
                f"node '{node}' is not a node of ha.cf (nodes: {', '.join(nodes)})",
            )
        if not tokens:
            problems.error(line, f"group for node '{node}' lists no resources")
            continue
        resources: list[Resource] = []
        for token in tokens:
            try:
                resource = parse_resource(token)
            except ValueError as err:
                problems.error(line, f"resource '{token}': {err}")
                continue
            if resource.id in seen:
                problems.error(
                    line, f"resource '{token}' is already in the group at line {seen[resource.id]}"
                )
                continue
            seen[resource.id] = line
            resources.append(resource)
        if resources:
            groups.append(ResourceGroup(node=node, resources=tuple(resources), line=line))
    return tuple(groups), problems
