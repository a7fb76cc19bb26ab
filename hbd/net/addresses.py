"""The few pyroute2 calls hbd needs, behind typed functions.

pyroute2's API is broad and untyped; everything hbd asks of netlink goes
through this module, and netlink errors come out as hbd's NetError.  Only
calls that exist in both pyroute2 0.7 (Debian 12's python3-pyroute2) and
0.9 are used.

Threading: pyroute2 0.9's synchronous IPRoute runs an asyncio loop of its
own, so nothing here may run on a thread whose event loop is running.  The
daemon calls these functions through `asyncio.to_thread`.  They act on the
network namespace of the calling thread.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hbd.core.haresources import IPv4Spec, IPv6Spec
from hbd.errors import NetError
from hbd.net._pyroute2 import load as _load_pyroute2

IPRoute, NetlinkError = _load_pyroute2()  # NetlinkError carries .code (an errno)

log = logging.getLogger(__name__)

_IFF_UP = 0x1
_IFF_LOWER_UP = 0x10000  # carrier (RFC 2863 operstate lower layer up)
# IFA_F_NODAD: the address is usable at once instead of after ~1 s of
# duplicate address detection.  Cluster membership is what makes a VIP
# exclusive, and a failover should not wait for DAD.
_IFA_F_NODAD = 0x02


@dataclass(frozen=True)
class InterfaceAddress:
    interface: str
    index: int
    address: str
    prefix: int
    family: int  # socket.AF_INET or AF_INET6
    label: str | None = None
    broadcast: str | None = None


@dataclass(frozen=True)
class VirtualAddress:
    """A service address hbd adds and removes, fully resolved."""

    address: str  # canonical text form
    prefix: int
    interface: str  # the link it goes on (never the `iface:label` form)
    family: int  # socket.AF_INET or AF_INET6
    broadcast: str | None = None  # IPv4 only; None for /31 and /32
    label: str | None = None  # IPv4 address label, `iface:label`

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefix}"

    def __str__(self) -> str:
        return f"{self.cidr} on {self.interface}"


@dataclass(frozen=True)
class AddressOutcome:
    """What happened to one address of a batch."""

    va: VirtualAddress
    ok: bool
    changed: bool = False  # False: it was already there (add) / already gone (remove)
    error: NetError | None = None


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


def _describe(err: BaseException) -> str:
    code = getattr(err, "code", None)
    if code is None and isinstance(err, OSError):
        code = err.errno
    if isinstance(code, int) and code > 0:
        name = errno.errorcode.get(code, str(code))
        return f"[{name}] {os.strerror(code)}"
    return str(err)


@contextmanager
def _netlink(what: str) -> Iterator[Any]:
    """One rtnetlink socket; failure to open it is a NetError about `what`."""
    try:
        ipr = IPRoute()
    except (OSError, NetlinkError) as err:
        raise NetError(f"cannot {what}: cannot open a netlink socket: {_describe(err)}") from err
    try:
        yield ipr
    finally:
        ipr.close()


@dataclass(frozen=True)
class _Link:
    index: int
    up: bool


def _links(ipr: Any) -> dict[str, _Link]:
    return {str(_attr(m, "IFLA_IFNAME")): _Link(int(m["index"]), bool(m["flags"] & _IFF_UP))
            for m in ipr.get_links()}


def _addresses(ipr: Any, family: int) -> list[InterfaceAddress]:
    names = {int(m["index"]): str(_attr(m, "IFLA_IFNAME")) for m in ipr.get_links()}
    result = []
    for msg in ipr.get_addr(family=family):
        index = int(msg["index"])
        # IFA_LOCAL is this host's address; IFA_ADDRESS is the peer on a
        # point-to-point link and equal to IFA_LOCAL elsewhere (IPv6 has no LOCAL).
        local = _attr(msg, "IFA_LOCAL") or _attr(msg, "IFA_ADDRESS")
        result.append(InterfaceAddress(
            interface=names.get(index, str(index)),
            index=index,
            address=str(local),
            prefix=int(msg["prefixlen"]),
            family=family,
            label=_attr(msg, "IFA_LABEL"),
            broadcast=_attr(msg, "IFA_BROADCAST"),
        ))
    return result


def list_addresses(family: int = socket.AF_INET) -> list[InterfaceAddress]:
    """Every address of `family` on this host (in this network namespace).

    Raises NetError when netlink fails.
    """
    with _netlink("list addresses") as ipr:
        try:
            return _addresses(ipr, family)
        except NetlinkError as err:
            raise NetError(f"cannot list addresses: {_describe(err)}") from err


def local_ipv4_addresses() -> frozenset[str]:
    """This host's IPv4 addresses, for skipping ucast lines that name ourselves."""
    try:
        return frozenset(a.address for a in list_addresses(socket.AF_INET))
    except NetError as err:
        log.warning("%s; ucast lines naming this host will not be skipped", err)
        return frozenset()


def _best_subnet(target: ipaddress.IPv4Address | ipaddress.IPv6Address,
                 entries: Sequence[InterfaceAddress],
                 interface: str | None) -> InterfaceAddress | None:
    """The configured address whose subnet holds `target`, longest prefix first.

    Like IPaddr2's findif, which takes the most specific matching route.  The
    VIP's own entry counts only when nothing else matches, so resolving an
    address hbd already holds gives the same answer as before it was added.
    """
    best: InterfaceAddress | None = None
    best_key = (-1, -1)
    for entry in entries:
        if interface is not None and entry.interface != interface:
            continue
        network = ipaddress.ip_network(f"{entry.address}/{entry.prefix}", strict=False)
        if target not in network:
            continue
        key = (int(entry.address != str(target)), entry.prefix)
        if key > best_key:
            best, best_key = entry, key
    return best


def interface_for(address: str) -> InterfaceAddress | None:
    """The configured address whose subnet contains `address` (IPaddr with no iface)."""
    target = ipaddress.ip_address(address)
    family = socket.AF_INET if target.version == 4 else socket.AF_INET6
    found = _best_subnet(target, list_addresses(family), None)
    if found is None or found.address == str(target):
        return None
    return found


def _ipv4_broadcast(address: str, prefix: int) -> str | None:
    # As `ip addr add ... brd +`: no broadcast on /31 (RFC 3021) and /32.
    if prefix > 30:
        return None
    return str(ipaddress.IPv4Network(f"{address}/{prefix}", strict=False).broadcast_address)


def _resolve(address: str, prefix: int | None, interface: str | None, family: int,
             ipr: Any) -> tuple[int, str]:
    """Fill in (prefix, interface) the way IPaddr2's findif does."""
    target = ipaddress.ip_address(address)
    links = _links(ipr)
    if interface is not None and interface not in links:
        raise NetError(f"cannot place {address}: interface {interface} does not exist")
    if interface is not None and prefix is not None:
        return prefix, interface
    found = _best_subnet(target, _addresses(ipr, family), interface)
    if found is None:
        if interface is None:
            raise NetError(f"cannot place {address}: no interface has a subnet containing it;"
                           " name the interface and prefix (address/bits/interface)")
        raise NetError(f"cannot place {address}: no subnet on {interface} contains it;"
                       " give the prefix (address/bits/interface)")
    return (found.prefix if prefix is None else prefix), found.interface


def resolve_ipv4(spec: IPv4Spec) -> VirtualAddress:
    """Complete an IPaddr/IPaddr2 argument against this host's interfaces.

    A missing interface is the one whose configured subnet holds the address
    (the longest such prefix), a missing prefix is that subnet's, and a missing
    broadcast is address|~mask.  Raises NetError when no interface matches or
    the named one does not exist.
    """
    with _netlink(f"place {spec.address}") as ipr:
        try:
            prefix, interface = _resolve(spec.address, spec.prefix, spec.interface,
                                         socket.AF_INET, ipr)
        except NetlinkError as err:
            raise NetError(f"cannot place {spec.address}: {_describe(err)}") from err
    broadcast = spec.broadcast or _ipv4_broadcast(spec.address, prefix)
    return VirtualAddress(spec.address, prefix, interface, socket.AF_INET, broadcast, spec.label)


def resolve_ipv6(spec: IPv6Spec) -> VirtualAddress:
    """Complete an IPv6addr argument: a missing interface is found by subnet.

    Raises NetError when no interface matches, the named one does not exist,
    or a link-local address names no interface.
    """
    address = str(ipaddress.IPv6Address(spec.address))
    if spec.interface is None and ipaddress.IPv6Address(address).is_link_local:
        raise NetError(f"cannot place {address}: a link-local address needs an interface")
    with _netlink(f"place {address}") as ipr:
        try:
            prefix, interface = _resolve(address, spec.prefix, spec.interface,
                                         socket.AF_INET6, ipr)
        except NetlinkError as err:
            raise NetError(f"cannot place {address}: {_describe(err)}") from err
    return VirtualAddress(address, prefix, interface, socket.AF_INET6)


def resolve_many(specs: Sequence[IPv4Spec | IPv6Spec]) -> list[VirtualAddress | NetError]:
    """Resolve many specs over one netlink socket (one dump of links and addresses).

    Same rules as resolve_ipv4/resolve_ipv6; each result is the address or the
    NetError that explains why it cannot be placed.
    """
    if not specs:
        return []
    with _netlink(f"place {len(specs)} address(es)") as ipr:
        try:
            links = _links(ipr)
            dumps = {family: _addresses(ipr, family)
                     for family in (socket.AF_INET, socket.AF_INET6)}
        except NetlinkError as err:
            raise NetError(f"cannot list interfaces: {_describe(err)}") from err
    results: list[VirtualAddress | NetError] = []
    for spec in specs:
        family = socket.AF_INET6 if isinstance(spec, IPv6Spec) else socket.AF_INET
        address = str(ipaddress.ip_address(spec.address))
        target = ipaddress.ip_address(address)
        if spec.interface is not None and spec.interface not in links:
            results.append(NetError(f"cannot place {address}: interface {spec.interface} "
                                    "does not exist"))
            continue
        if isinstance(spec, IPv6Spec) and spec.interface is None and target.is_link_local:
            results.append(NetError(f"cannot place {address}: a link-local address needs "
                                    "an interface"))
            continue
        prefix: int | None = spec.prefix
        interface = spec.interface
        if interface is None or (isinstance(spec, IPv4Spec) and prefix is None):
            found = _best_subnet(target, dumps[family], interface)
            if found is None:
                where = f"on {interface} " if interface else ""
                results.append(NetError(f"cannot place {address}: no subnet {where}contains it;"
                                        " name the interface and prefix"))
                continue
            prefix = found.prefix if prefix is None else prefix
            interface = found.interface
        assert prefix is not None and interface is not None
        if isinstance(spec, IPv4Spec):
            broadcast = spec.broadcast or _ipv4_broadcast(address, prefix)
            results.append(VirtualAddress(address, prefix, interface, family, broadcast,
                                          spec.label))
        else:
            results.append(VirtualAddress(address, prefix, interface, family))
    return results


def link_indexes() -> dict[str, int]:
    """Interface name -> index.  Raises NetError when netlink fails."""
    with _netlink("list interfaces") as ipr:
        try:
            return {name: link.index for name, link in _links(ipr).items()}
        except NetlinkError as err:
            raise NetError(f"cannot list interfaces: {_describe(err)}") from err


def _request(va: VirtualAddress, index: int) -> dict[str, Any]:
    return {"index": index, "address": va.address, "prefixlen": va.prefix, "family": va.family}


def add_addresses(vas: Sequence[VirtualAddress], *, dad: bool = False) -> list[AddressOutcome]:
    """Add every address over one netlink socket; one outcome per address, in order.

    An address already present counts as success (changed=False).  A link
    that is down is brought up, as IPaddr2 does.  IPv6 addresses skip
    duplicate address detection unless `dad` is true.  Raises NetError only
    when netlink cannot be opened at all; per-address failures are outcomes.
    """
    if not vas:
        return []
    outcomes: list[AddressOutcome] = []
    with _netlink(f"add {len(vas)} address(es)") as ipr:
        try:
            links = _links(ipr)
        except NetlinkError as err:
            raise NetError(f"cannot list interfaces: {_describe(err)}") from err
        for va in vas:
            outcomes.append(_add_one(ipr, links, va, dad))
    return outcomes


def _add_one(ipr: Any, links: dict[str, _Link], va: VirtualAddress, dad: bool) -> AddressOutcome:
    link = links.get(va.interface)
    if link is None:
        return AddressOutcome(va, False, error=NetError(
            f"cannot add {va}: interface {va.interface} does not exist"))
    request = _request(va, link.index)
    if va.family == socket.AF_INET:
        if va.broadcast is not None:
            request["broadcast"] = va.broadcast
        if va.label is not None:
            request["label"] = va.label
    elif not dad:
        request["flags"] = _IFA_F_NODAD
    changed = True
    try:
        ipr.addr("add", **request)
    except NetlinkError as err:
        if err.code != errno.EEXIST:
            return AddressOutcome(va, False, error=NetError(f"cannot add {va}: {_describe(err)}"))
        changed = False
    if not link.up:
        try:
            ipr.link("set", index=link.index, state="up")
        except NetlinkError as err:
            return AddressOutcome(va, False, changed, NetError(
                f"added {va} but cannot bring {va.interface} up: {_describe(err)}"))
        log.info("brought %s up for %s", va.interface, va.cidr)
        links[va.interface] = _Link(link.index, True)
    return AddressOutcome(va, True, changed)


def remove_addresses(vas: Sequence[VirtualAddress]) -> list[AddressOutcome]:
    """Remove every address over one netlink socket; one outcome per address.

    An address that is not there (or whose interface has gone) counts as
    success with changed=False.  Raises NetError only when netlink cannot be
    opened at all.
    """
    if not vas:
        return []
    outcomes: list[AddressOutcome] = []
    with _netlink(f"remove {len(vas)} address(es)") as ipr:
        try:
            links = _links(ipr)
        except NetlinkError as err:
            raise NetError(f"cannot list interfaces: {_describe(err)}") from err
        for va in vas:
            link = links.get(va.interface)
            if link is None:
                outcomes.append(AddressOutcome(va, True, False))
                continue
            try:
                ipr.addr("del", **_request(va, link.index))
            except NetlinkError as err:
                # EADDRNOTAVAIL: not configured; ENODEV: the link vanished meanwhile
                if err.code in (errno.EADDRNOTAVAIL, errno.ENODEV):
                    outcomes.append(AddressOutcome(va, True, False))
                else:
                    outcomes.append(AddressOutcome(va, False, error=NetError(
                        f"cannot remove {va}: {_describe(err)}")))
                continue
            outcomes.append(AddressOutcome(va, True, True))
    return outcomes


def present_all(vas: Sequence[VirtualAddress]) -> list[bool]:
    """Whether each address is configured on its interface (any prefix).

    Raises NetError when netlink fails.
    """
    if not vas:
        return []
    with _netlink("list addresses") as ipr:
        try:
            held = {(a.interface, ipaddress.ip_address(a.address))
                    for family in {va.family for va in vas}
                    for a in _addresses(ipr, family)}
        except NetlinkError as err:
            raise NetError(f"cannot list addresses: {_describe(err)}") from err
    return [(va.interface, ipaddress.ip_address(va.address)) in held for va in vas]


def check_held(vas: Sequence[VirtualAddress]) -> list[str | None]:
    """For a monitor: None when the address is on its interface and the interface is up
    with carrier, else what is wrong.  Raises NetError when netlink fails."""
    if not vas:
        return []
    with _netlink("check addresses") as ipr:
        try:
            flags = {str(_attr(m, "IFLA_IFNAME")): int(m["flags"]) for m in ipr.get_links()}
            held = {(a.interface, ipaddress.ip_address(a.address))
                    for family in {va.family for va in vas}
                    for a in _addresses(ipr, family)}
        except NetlinkError as err:
            raise NetError(f"cannot list addresses: {_describe(err)}") from err
    out: list[str | None] = []
    for va in vas:
        iface = flags.get(va.interface)
        if iface is None:
            out.append(f"interface {va.interface} is gone")
        elif not iface & _IFF_UP:
            out.append(f"interface {va.interface} is down")
        elif not iface & _IFF_LOWER_UP:
            out.append(f"interface {va.interface} has no carrier")
        elif (va.interface, ipaddress.ip_address(va.address)) not in held:
            out.append(f"{va.address} is no longer on {va.interface}")
        else:
            out.append(None)
    return out


def present(va: VirtualAddress) -> bool:
    """Whether `va` is configured on its interface.  Raises NetError."""
    return present_all([va])[0]
