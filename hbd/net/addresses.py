"""The few pyroute2 calls hbd needs, behind typed functions.

pyroute2's API is broad and untyped; everything hbd asks of netlink goes
through this module, and netlink errors come out as hbd's NetError.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hbd.errors import NetError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InterfaceAddress:
    interface: str
    index: int
    address: str
    prefix: int
    family: int  # socket.AF_INET or AF_INET6
    label: str | None = None
    broadcast: str | None = None


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


def list_addresses(family: int = socket.AF_INET) -> list[InterfaceAddress]:
    """Every address of `family` on this host (in this network namespace)."""
    try:
        with IPRoute() as ipr:
            names = {link["index"]: _attr(link, "IFLA_IFNAME") for link in ipr.get_links()}
            result = []
            for msg in ipr.get_addr(family=family):
                index = msg["index"]
                result.append(InterfaceAddress(
                    interface=names.get(index, str(index)),
                    index=index,
                    address=str(_attr(msg, "IFA_ADDRESS")),
                    prefix=int(msg["prefixlen"]),
                    family=family,
                    label=_attr(msg, "IFA_LABEL"),
                    broadcast=_attr(msg, "IFA_BROADCAST"),
                ))
            return result
    except NetlinkError as err:
        raise NetError(f"cannot list addresses: {err}") from err


def local_ipv4_addresses() -> frozenset[str]:
    """This host's IPv4 addresses, for skipping ucast lines that name ourselves."""
    try:
        return frozenset(a.address for a in list_addresses(socket.AF_INET))
    except NetError as err:
        log.warning("%s; ucast lines naming this host will not be skipped", err)
        return frozenset()


def interface_for(address: str) -> InterfaceAddress | None:
    """The configured address whose subnet contains `address` (IPaddr with no iface)."""
    target = ipaddress.ip_address(address)
    family = socket.AF_INET if target.version == 4 else socket.AF_INET6
    for entry in list_addresses(family):
        network = ipaddress.ip_network(f"{entry.address}/{entry.prefix}", strict=False)
        if target in network and str(target) != entry.address:
            return entry
    return None
