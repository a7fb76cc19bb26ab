"""ha.cf's IPv6 media and ping nodes: `ucast6`, `mcast6`, `ping6` (Heartbeat 3.0.6 syntax).

The rules are those of Heartbeat's HBcomm plugins ucast6.c, mcast6.c and
ping6.c: one peer per ucast6 line, a `%scope` must name the line's own
device, mcast6 groups only of link, admin, site or organization scope and
at most 4 hops.  Each function returns the link (or None) or the error
messages for hacf.py to put on the line.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

from hbd.core.config import MCAST6_MAX_HOPS, Mcast6Link, Ucast6Link
from hbd.core.parsing import is_decimal


def parse_ipv6(text: str) -> tuple[ipaddress.IPv6Address, str] | None:
    """(address without scope, scope or "") for `addr` or `addr%scope`; None if not IPv6."""
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    return ipaddress.IPv6Address(address.compressed.split("%")[0]), address.scope_id or ""


def ucast6(args: list[str], port: int, line: int,
           local_addresses: Collection[str]) -> Ucast6Link | str | None:
    """`ucast6 DEV ADDR`: the link, an error message, or None for one of our own addresses."""
    if len(args) != 2:
        return "ucast6: needs 'ucast6 IFACE PEER-IPV6-ADDRESS', e.g. 'ucast6 eth0 fd00::2'"
    iface, text = args
    parsed = parse_ipv6(text)
    if parsed is None:
        return f"ucast6: '{text}' is not an IPv6 address"
    peer, scope = parsed
    if peer.is_multicast or peer.is_unspecified:
        return f"ucast6: '{text}' is not a unicast address"
    if scope and scope != iface:
        return f"ucast6: scope '%{scope}' does not match the device {iface}"
    if str(peer) in local_addresses:
        return None
    return Ucast6Link(interface=iface, peer=str(peer), port=port, line=line)


def mcast6_group_problem(group: ipaddress.IPv6Address) -> str | None:
    """Heartbeat's is_valid_mcast6_addr: which groups may carry heartbeats."""
    raw = group.packed
    if raw[0] != 0xFF:
        return "not a multicast group (ff00::/8)"
    if raw[1] & 0xE0:
        return "reserved flag bits set"
    if raw[1] & 0x0F not in (0x2, 0x4, 0x5, 0x8):
        return "scope must be link (2), admin (4), site (5) or organization (8) local"
    if not any(raw[2:]):
        return "reserved group (all-zero group id)"
    return None


def mcast6(args: list[str], line: int) -> Mcast6Link | list[str]:
    """`mcast6 DEV GROUP PORT HOPS LOOP`: the link, or every problem with the line."""
    if len(args) != 5:
        return ["mcast6: needs 'mcast6 IFACE GROUP PORT HOPS LOOP', e.g. "
                "'mcast6 eth0 ff12::1:2:3:4 694 1 0'"]
    iface, group_s, port_s, hops_s, loop_s = args
    problems = []
    parsed = parse_ipv6(group_s)
    if parsed is None or parsed[1]:
        problems.append(f"mcast6: '{group_s}' is not an IPv6 address")
    else:
        problem = mcast6_group_problem(parsed[0])
        if problem:
            problems.append(f"mcast6: bad group '{group_s}': {problem}")
    if not is_decimal(port_s) or not 0 < int(port_s) < 65536:
        problems.append(f"mcast6: bad UDP port '{port_s}' (1-65535)")
    if not is_decimal(hops_s) or not 0 <= int(hops_s) <= MCAST6_MAX_HOPS:
        problems.append(f"mcast6: bad hops '{hops_s}' (0-{MCAST6_MAX_HOPS})")
    if loop_s not in ("0", "1"):
        problems.append(f"mcast6: bad loop '{loop_s}' (0 or 1)")
    if problems or parsed is None:
        return problems
    return Mcast6Link(iface, str(parsed[0]), int(port_s), int(hops_s), loop_s == "1", line)


def ping6_problem(text: str) -> str | None:
    """Why `text` cannot be a ping6 node, or None."""
    parsed = parse_ipv6(text)
    if parsed is None:
        return f"ping6: '{text}' is not an IPv6 address"
    if parsed[0].is_multicast or parsed[0].is_unspecified:
        return f"ping6: '{text}' is not a unicast address"
    if parsed[0].is_link_local and not parsed[1]:
        return f"ping6: link-local '{text}' needs its interface, e.g. fe80::1%eth0"
    return None
