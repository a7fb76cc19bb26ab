"""ha.cf's heartbeat media and ping nodes: udpport, baud, bcast, mcast, ucast, ucast6, mcast6,
serial, ping, ping6 and ping_group.

Heartbeat's rules: udpport and baud apply to the media lines below them, and a ucast line
naming one of our own addresses is skipped (so one ha.cf serves both nodes).
"""

from __future__ import annotations

import ipaddress

from hbd.core import media6
from hbd.core.config import (
    BcastLink,
    Mcast6Link,
    McastLink,
    PingGroup,
    SerialLink,
    UcastLink,
)
from hbd.core.hacfstate import Handler, State, need_args, udp_port
from hbd.core.parsing import is_decimal, one_value

BAUD_RATES = frozenset(
    (300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800)
)


def udpport(st: State, line: int, args: list[str]) -> None:
    value = one_value(st.problems, line, "udpport", args)
    if value is None:
        return
    port = udp_port(st, line, value, "udpport")
    if port is None:
        return
    if st.first_udp_media_line:
        st.problems.warning(
            line,
            f"udpport comes after the UDP medium at line {st.first_udp_media_line}; "
            "as in Heartbeat it applies only to media below it: move it above them",
        )
    st.udpport = port


def baud(st: State, line: int, args: list[str]) -> None:
    value = one_value(st.problems, line, "baud", args)
    if value is None:
        return
    if not is_decimal(value) or int(value) not in BAUD_RATES:
        rates = ", ".join(str(r) for r in sorted(BAUD_RATES))
        st.problems.error(line, f"baud: unsupported rate '{value}' (one of {rates})")
        return
    if st.first_serial_line:
        st.problems.warning(
            line,
            f"baud comes after the serial line at line {st.first_serial_line}; "
            "as in Heartbeat it applies only to serial lines below it: move it above them",
        )
    st.baud = int(value)


def mark_udp(st: State, line: int) -> None:
    if not st.first_udp_media_line:
        st.first_udp_media_line = line


def bcast(st: State, line: int, args: list[str]) -> None:
    if not need_args(st, line, "bcast", args, 1):
        return
    mark_udp(st, line)
    for iface in args:
        st.links.append(BcastLink(interface=iface, port=st.udpport, line=line))


def mcast(st: State, line: int, args: list[str]) -> None:
    if len(args) != 5:
        st.problems.error(line, "mcast: needs 'mcast IFACE GROUP PORT TTL LOOP', e.g. "
                          "'mcast eth0 225.0.0.1 694 1 0'")
        return
    iface, group, port_s, ttl_s, loop_s = args
    mark_udp(st, line)
    ok = True
    try:
        if not ipaddress.IPv4Address(group).is_multicast:
            st.problems.error(line, f"mcast: '{group}' is not a multicast group (224.0.0.0/4)")
            ok = False
    except ValueError:
        st.problems.error(line, f"mcast: '{group}' is not an IPv4 address")
        ok = False
    port = udp_port(st, line, port_s, "mcast")
    if not is_decimal(ttl_s) or not 0 <= int(ttl_s) <= 255:
        st.problems.error(line, f"mcast: bad ttl '{ttl_s}' (0-255)")
        ok = False
    if loop_s not in ("0", "1"):
        st.problems.error(line, f"mcast: bad loop '{loop_s}' (0 or 1)")
        ok = False
    if ok and port is not None:
        st.links.append(McastLink(iface, group, port, int(ttl_s), loop_s == "1", line))


def ucast(st: State, line: int, args: list[str]) -> None:
    if not need_args(st, line, "ucast", args, 2):
        return
    iface, peers = args[0], args[1:]
    mark_udp(st, line)
    for peer in peers:
        try:
            ipaddress.IPv4Address(peer)
        except ValueError:
            st.problems.error(line, f"ucast: '{peer}' is not an IPv4 address")
            continue
        if peer in st.local_addresses:
            continue  # our own address: this line is the peer's half of a shared ha.cf
        st.links.append(UcastLink(interface=iface, peer=peer, port=st.udpport, line=line))


def ucast6(st: State, line: int, args: list[str]) -> None:
    mark_udp(st, line)
    link = media6.ucast6(args, st.udpport, line, st.local_addresses)
    if isinstance(link, str):
        st.problems.error(line, link)
    elif link is not None:  # None: our own address, the peer's half of a shared ha.cf
        st.links.append(link)


def mcast6(st: State, line: int, args: list[str]) -> None:
    mark_udp(st, line)
    link = media6.mcast6(args, line)
    if isinstance(link, Mcast6Link):
        st.links.append(link)
    else:
        for message in link:
            st.problems.error(line, message)


def serial(st: State, line: int, args: list[str]) -> None:
    if not need_args(st, line, "serial", args, 1):
        return
    if not st.first_serial_line:
        st.first_serial_line = line
    for device in args:
        if not device.startswith("/"):
            st.problems.error(line, f"serial: '{device}' is not a device path like /dev/ttyS0")
            continue
        st.links.append(SerialLink(device=device, baud=st.baud, line=line))


def ping(st: State, line: int, args: list[str]) -> None:
    if not need_args(st, line, "ping", args, 1):
        return
    for address in args:
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            st.problems.error(line, f"ping: '{address}' is not an IPv4 address")
            continue
        st.ping_nodes.append(address)
        st.order.append((line, address))


def ping6(st: State, line: int, args: list[str]) -> None:
    if not need_args(st, line, "ping6", args, 1):
        return
    for text in args:
        problem = media6.ping6_problem(text)
        if problem is None and text in st.ping_nodes:
            problem = f"ping6: '{text}' is listed twice"
        if problem:
            st.problems.error(line, problem)
        else:
            st.ping_nodes.append(text)  # named as written, as Heartbeat names ping nodes
            st.order.append((line, text))


def ping_group(st: State, line: int, args: list[str]) -> None:
    if not need_args(st, line, "ping_group", args, 2):
        return
    name, addresses = args[0], args[1:]
    good: list[str] = []
    for address in addresses:
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            st.problems.error(line, f"ping_group: '{address}' is not an IPv4 address")
            continue
        good.append(address)
    if any(g.name == name for g in st.ping_groups):
        st.problems.error(line, f"ping_group: group '{name}' is defined twice")
    elif good:
        st.ping_groups.append(PingGroup(name=name, addresses=tuple(good)))
        st.order.append((line, name))


HANDLERS: dict[str, Handler] = {
    "udpport": udpport,
    "baud": baud,
    "bcast": bcast,
    "mcast": mcast,
    "ucast": ucast,
    "ucast6": ucast6,
    "mcast6": mcast6,
    "serial": serial,
    "ping": ping,
    "ping6": ping6,
    "ping_group": ping_group,
}
