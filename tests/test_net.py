"""hbd/net against real kernels: addresses, gratuitous ARP / NA and ICMP in a netns lab.

Every address lives in the lab's namespaces (10.79.0.0/24, fd79::/64).  hbd's
functions act on the network namespace of the calling thread, so each test
body runs in a short-lived thread that has joined a node's namespace with
setns(2) (`in_ns`); sockets opened there stay in that namespace afterwards.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hbd.core.haresources import parse_ipv4_spec, parse_ipv6_spec
from hbd.errors import NetError
from hbd.net import addresses as A
from hbd.net.arp import (
    ETH_P_ARP,
    Announcement,
    announce,
    announce_once,
    arp_frames,
    na_frame,
)
from hbd.net.icmp import Pinger
from tests.infra import commands
from tests.infra.netns import Lab, wait_for
from tests.infra.netns import in_netns as in_ns

pytestmark = pytest.mark.netns

NET = "10.79.0.0/24"
_T = TypeVar("_T")
_SO_TIMESTAMPNS = 35


def ip_json(lab: Lab, node: str, *argv: str) -> list[dict[str, Any]]:
    out = commands.run(["ip", "-j", "-n", lab.nsname(node), *argv], check=True,
                       capture_output=True, text=True).stdout
    return list(json.loads(out or "[]"))


def v4(address: str, prefix: int = 24, interface: str = "eth0", **kw: Any) -> A.VirtualAddress:
    return A.VirtualAddress(address, prefix, interface, socket.AF_INET, **kw)


def v6(address: str, prefix: int = 64, interface: str = "eth0") -> A.VirtualAddress:
    return A.VirtualAddress(address, prefix, interface, socket.AF_INET6)


@pytest.fixture(scope="module")
def net(module_make_lab: Any) -> Lab:
    """n1 .1, n2 .2, client .3 on 10.79.0.0/24 and fd79::/64; n1 also has v0 10.79.0.130/25."""
    lab: Lab = module_make_lab(["n1", "n2", "client"], networks=[NET], ipv6=True)
    for i, node in enumerate(("n1", "n2", "client"), start=1):
        lab.run(node, ["ip", "-6", "addr", "add", f"fd79::{i}/64", "dev", "eth0", "nodad"])
    # a second, more specific subnet on n1 for the longest-prefix rule
    lab.run("n1", ["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"])
    lab.run("n1", ["ip", "addr", "add", "10.79.0.130/25", "dev", "v0"])
    lab.run("n1", ["ip", "link", "set", "v1", "up"])
    lab.run("n1", ["ip", "link", "set", "v0", "up"])
    return lab


# -- resolution -------------------------------------------------------------

def test_resolve_fills_interface_prefix_and_broadcast_from_subnet(net: Lab) -> None:
    va = in_ns(net, "n1", lambda: A.resolve_ipv4(parse_ipv4_spec("10.79.0.50")))
    assert va == v4("10.79.0.50", 24, "eth0", broadcast="10.79.0.255")
    # longest prefix wins, as IPaddr2's findif picks the most specific route
    va = in_ns(net, "n1", lambda: A.resolve_ipv4(parse_ipv4_spec("10.79.0.200")))
    assert (va.interface, va.prefix, va.broadcast) == ("v0", 25, "10.79.0.255")
    va = in_ns(net, "n1", lambda: A.resolve_ipv4(parse_ipv4_spec("10.79.0.50/26")))
    assert (va.interface, va.prefix, va.broadcast) == ("eth0", 26, "10.79.0.63")
    va = in_ns(net, "n1", lambda: A.resolve_ipv4(parse_ipv4_spec("10.79.0.50//eth0:web")))
    assert (va.interface, va.prefix, va.label) == ("eth0", 24, "eth0:web")
    va = in_ns(net, "n1", lambda: A.resolve_ipv4(parse_ipv4_spec("10.79.0.50/32/eth0")))
    assert va.broadcast is None  # no broadcast on /32, like `ip addr add ... brd +`
    va = in_ns(net, "n1", lambda: A.resolve_ipv6(parse_ipv6_spec("fd79::50")))
    assert va == v6("fd79::50", 64, "eth0")


def test_resolve_errors_name_the_address_and_interface(net: Lab) -> None:
    with pytest.raises(NetError, match=r"10\.99\.0\.5: no interface has a subnet containing"):
        in_ns(net, "n1", lambda: A.resolve_ipv4(parse_ipv4_spec("10.99.0.5")))
    with pytest.raises(NetError, match=r"10\.79\.0\.50: interface eth9 does not exist"):
        in_ns(net, "n1", lambda: A.resolve_ipv4(parse_ipv4_spec("10.79.0.50/24/eth9")))
    with pytest.raises(NetError, match=r"10\.79\.0\.50: no subnet on v0 contains it"):
        in_ns(net, "n1", lambda: A.resolve_ipv4(parse_ipv4_spec("10.79.0.50//v0")))
    with pytest.raises(NetError, match="link-local address needs an interface"):
        in_ns(net, "n1", lambda: A.resolve_ipv6(parse_ipv6_spec("fe80::77")))
    [outcome] = in_ns(net, "n1", lambda: A.add_addresses([v4("10.79.0.51", interface="eth9")]))
    assert not outcome.ok
    assert str(outcome.error) == "cannot add 10.79.0.51/24 on eth9: interface eth9 does not exist"


# -- add / remove -----------------------------------------------------------

def test_add_remove_idempotent_with_label_and_broadcast(net: Lab) -> None:
    va = v4("10.79.0.60", broadcast="10.79.0.255", label="eth0:vip")
    six = v6("fd79::60")
    first = in_ns(net, "n1", lambda: A.add_addresses([va, six]))
    assert [(o.ok, o.changed) for o in first] == [(True, True), (True, True)]
    again = in_ns(net, "n1", lambda: A.add_addresses([va, six]))
    assert [(o.ok, o.changed, o.error) for o in again] == [(True, False, None)] * 2
    assert in_ns(net, "n1", lambda: A.present_all([va, six])) == [True, True]
    info = {a["local"]: a for link in ip_json(net, "n1", "addr", "show", "dev", "eth0")
            for a in link["addr_info"]}
    assert info["10.79.0.60"]["label"] == "eth0:vip"
    assert info["10.79.0.60"]["broadcast"] == "10.79.0.255"
    assert info["fd79::60"].get("nodad") is True  # usable at once, no DAD wait
    gone = in_ns(net, "n1", lambda: A.remove_addresses([va, six]))
    assert [(o.ok, o.changed) for o in gone] == [(True, True), (True, True)]
    elsewhere = v4("10.79.0.61", interface="eth9")
    again = in_ns(net, "n1", lambda: A.remove_addresses([va, six, elsewhere]))
    assert [(o.ok, o.changed) for o in again] == [(True, False)] * 3
    assert in_ns(net, "n1", lambda: A.present(va)) is False


def test_batch_of_64_in_one_call(net: Lab) -> None:
    vas = [v4(f"10.79.0.{10 + i}", broadcast="10.79.0.255") for i in range(64)]
    t0 = time.perf_counter()
    added = in_ns(net, "n2", lambda: A.add_addresses(vas))
    t_add = time.perf_counter() - t0
    assert all(o.ok and o.changed for o in added)
    held = {a.split("/")[0] for a in net.addresses("n2")}
    assert {va.address for va in vas} <= held
    t0 = time.perf_counter()
    removed = in_ns(net, "n2", lambda: A.remove_addresses(vas))
    t_remove = time.perf_counter() - t0
    assert all(o.ok and o.changed for o in removed)
    assert not {va.address for va in vas} & {a.split("/")[0] for a in net.addresses("n2")}
    print(f"\n64 addresses: add {t_add * 1000:.1f} ms, remove {t_remove * 1000:.1f} ms")
    assert t_add < 2.0 and t_remove < 2.0


def test_prepared_batch_of_64_in_one_netlink_write(net: Lab) -> None:
    from hbd.net import batch
    vas = [v4(f"10.79.0.{100 + i}", broadcast="10.79.0.255") for i in range(64)]
    prepared = in_ns(net, "n2", lambda: batch.prepare(vas))
    t0 = time.perf_counter()
    added = in_ns(net, "n2", lambda: batch.send(prepared, "add"))
    t_add = time.perf_counter() - t0
    assert all(o.ok and o.changed for o in added)
    assert {va.address for va in vas} <= {a.split("/")[0] for a in net.addresses("n2")}
    again = in_ns(net, "n2", lambda: batch.send(prepared, "add"))
    assert all(o.ok and not o.changed for o in again)  # already there: fine
    removed = in_ns(net, "n2", lambda: batch.send(prepared, "remove"))
    assert all(o.ok and o.changed for o in removed)
    assert not {va.address for va in vas} & {a.split("/")[0] for a in net.addresses("n2")}
    gone = in_ns(net, "n2", lambda: batch.send(prepared, "remove"))
    assert all(o.ok and not o.changed for o in gone)
    print(f"\n64 prepared addresses added in {t_add * 1000:.1f} ms")
    with pytest.raises(NetError, match="eth9"):
        in_ns(net, "n2", lambda: batch.prepare([v4("10.79.0.99", interface="eth9")]))


def test_prepared_batch_reports_a_stale_interface_index(net: Lab) -> None:
    from hbd.net import batch
    net.run("n1", ["ip", "link", "add", "tmp0", "type", "veth", "peer", "name", "tmp1"])
    va = v4("10.79.2.1", interface="tmp0")
    prepared = in_ns(net, "n1", lambda: batch.prepare([va]))
    net.run("n1", ["ip", "link", "del", "tmp0"])  # recreated: same name, new index
    net.run("n1", ["ip", "link", "add", "tmp0", "type", "veth", "peer", "name", "tmp1"])
    try:
        [outcome] = in_ns(net, "n1", lambda: batch.send(prepared, "add"))
        assert not outcome.ok and outcome.error is not None
        assert "10.79.2.1" in str(outcome.error)
    finally:
        net.run("n1", ["ip", "link", "del", "tmp0"], check=False)


def test_add_brings_a_down_link_up(net: Lab) -> None:
    net.run("n1", ["ip", "link", "set", "v0", "down"])
    [outcome] = in_ns(net, "n1", lambda: A.add_addresses([v4("10.79.0.140", 25, "v0")]))
    assert outcome.ok
    assert "UP" in ip_json(net, "n1", "link", "show", "dev", "v0")[0]["flags"]
    in_ns(net, "n1", lambda: A.remove_addresses([v4("10.79.0.140", 25, "v0")]))


def test_debian_pyroute2_07_works_too(net: Lab) -> None:
    """The .deb runs on Debian 12's python3-pyroute2 0.7.2: same calls, same result."""
    probe = commands.run(["/usr/bin/python3", "-c", "import pyroute2"], capture_output=True,
                         check=False) if Path("/usr/bin/python3").exists() else None
    if probe is None or probe.returncode != 0:
        pytest.skip("no system python3 with python3-pyroute2 (Debian's 0.7.2) to compare with")
    script = (
        "import socket, json\n"
        "from hbd.net import addresses as A\n"
        "from hbd.core.haresources import parse_ipv4_spec\n"
        "va = A.resolve_ipv4(parse_ipv4_spec('10.79.0.70//eth0:old'))\n"
        "six = A.VirtualAddress('fd79::70', 64, 'eth0', socket.AF_INET6)\n"
        "r = [A.add_addresses([va, six]), A.add_addresses([va]), A.present_all([va, six]),\n"
        "     A.remove_addresses([va, six]), A.remove_addresses([va])]\n"
        "print(json.dumps([[(o.ok, o.changed) for o in r[0]], [(o.ok, o.changed) for o in r[1]],"
        " r[2], [(o.ok, o.changed) for o in r[3]], [(o.ok, o.changed) for o in r[4]],"
        " [va.interface, va.prefix, va.broadcast, va.label]]))\n")
    root = str(Path(__file__).resolve().parent.parent)
    out = net.run("n1", ["env", "-i", f"PYTHONPATH={root}", "/usr/bin/python3", "-c", script])
    assert json.loads(out.stdout) == [
        [[True, True], [True, True]], [[True, False]], [True, True],
        [[True, True], [True, True]], [[True, False]],
        ["eth0", 24, "10.79.0.255", "eth0:old"]]


# -- gratuitous ARP / unsolicited NA ----------------------------------------

def test_frames_match_debian_send_arp_byte_for_byte() -> None:
    # captured with tcpdump -XX from /usr/libexec/heartbeat/send_arp (resource-agents 4.12)
    mac = bytes.fromhex("8a00b41d7053")
    request, reply = arp_frames(mac, "10.79.9.1")
    assert request.hex() == ("ffffffffffff8a00b41d705308060001080006040001"
                             "8a00b41d70530a4f09010000000000000a4f0901")
    assert reply.hex() == ("ffffffffffff8a00b41d705308060001080006040002"
                           "8a00b41d70530a4f09018a00b41d70530a4f0901")
    na = na_frame(mac, "fd79::5")
    assert na[:14] == bytes.fromhex("333300000001") + mac + b"\x86\xdd"
    assert na[14 + 6:14 + 8] == bytes([58, 255])  # next header ICMPv6, hop limit 255
    icmp = na[54:]
    assert icmp[0] == 136 and icmp[4] & 0x20 and not icmp[4] & 0xC0  # override, not S/R
    assert icmp[24:32] == bytes([2, 1]) + mac  # target link-layer address option


def _move(net: Lab, va: A.VirtualAddress, src: str, dst: str) -> None:
    in_ns(net, src, lambda: A.remove_addresses([va]))
    assert all(o.ok for o in in_ns(net, dst, lambda: A.add_addresses([va])))


def test_gratuitous_arp_moves_a_client_to_the_new_mac(net: Lab) -> None:
    va = v4("10.79.0.100", broadcast="10.79.0.255")
    in_ns(net, "n1", lambda: A.add_addresses([va]))
    try:
        sock = _arp_capture(net, "client")
        net.flush_arp("client")
        assert net.ping("client", va.address)
        assert net.arp_entry("client", va.address) == net.mac("n1")
        _move(net, va, "n1", "n2")

        async def go() -> tuple[float, Any]:
            t0 = time.time()
            ann = Announcement([va], count=2, interval=0.05)
            return t0, await ann.wait()

        t0, report = in_ns(net, "n2", lambda: asyncio.run(go()))
        assert (report.rounds, report.frames, report.errors) == (2, 4, [])
        seen = _drain(sock, 0.1, va.address)
        assert [op for _, op, _ in seen] == [1, 2, 1, 2]
        print(f"\nARP: first frame at the client {(seen[0][0] - t0) * 1000:.2f} ms after"
              " the announcement started")
        wait_for(lambda: net.arp_entry("client", va.address) == net.mac("n2"), 3.0,
                 "client's neighbour entry to switch to n2's MAC")
        assert net.ping("client", va.address)
    finally:
        sock.close()
        for node in ("n1", "n2"):
            in_ns(net, node, lambda: A.remove_addresses([va]))


def test_unsolicited_na_moves_an_ipv6_client(net: Lab) -> None:
    va = v6("fd79::100")
    in_ns(net, "n1", lambda: A.add_addresses([va]))
    try:
        net.run("client", ["ping", "-6", "-c", "1", "-W", "2", va.address])
        entries = ip_json(net, "client", "-6", "neigh", "show", "to", va.address)
        assert entries and entries[0]["lladdr"] == net.mac("n1")
        _move(net, va, "n1", "n2")
        report = in_ns(net, "n2", lambda: asyncio.run(announce([va], count=1)))
        assert (report.frames, report.errors) == (1, [])

        def lladdr() -> str | None:
            found = ip_json(net, "client", "-6", "neigh", "show", "to", va.address)
            return found[0].get("lladdr") if found else None

        wait_for(lambda: lladdr() == net.mac("n2"), 3.0, "client's IPv6 neighbour entry")
    finally:
        for node in ("n1", "n2"):
            in_ns(net, node, lambda: A.remove_addresses([va]))


def _arp_capture(net: Lab, node: str) -> socket.socket:
    sock = in_ns(net, node, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                                  socket.htons(ETH_P_ARP)))
    in_ns(net, node, lambda: sock.bind(("eth0", 0)))
    # kernel arrival stamps: frames are read after the announcement is over
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    sock.settimeout(0.05)
    return sock


def _drain(sock: socket.socket, seconds: float, *ips: str) -> list[tuple[float, int, str]]:
    """(kernel arrival time, ARP opcode, address) of announcements of `ips`, for `seconds`."""
    wanted = {socket.inet_aton(ip) for ip in ips}
    seen: list[tuple[float, int, str]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            frame, anc, _flags, _addr = sock.recvmsg(128, 64)
        except TimeoutError:
            continue
        stamp = next((struct.unpack("qq", data[:16]) for level, kind, data in anc
                      if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS), (0, 0))
        if frame[28:32] in wanted and frame[38:42] == frame[28:32]:
            seen.append((stamp[0] + stamp[1] / 1e9, struct.unpack("!H", frame[20:22])[0],
                         socket.inet_ntoa(frame[28:32])))
    return seen


def test_announcement_rounds_and_cancel(net: Lab) -> None:
    """count rounds of request+reply, interval apart; cancel stops the rest at once."""
    vas = [v4(f"10.79.0.{150 + i}") for i in range(3)]
    in_ns(net, "n2", lambda: A.add_addresses(vas))
    sock = _arp_capture(net, "client")
    try:
        report = in_ns(net, "n2", lambda: asyncio.run(announce(vas, count=3, interval=0.1)))
        assert (report.rounds, report.frames, report.cancelled) == (3, 18, False)
        seen = _drain(sock, 0.3, vas[0].address)
        assert [op for _, op, _ in seen] == [1, 2, 1, 2, 1, 2]
        gaps = [b[0] - a[0] for a, b in zip(seen[::2], seen[2::2], strict=False)]
        assert all(0.05 < g < 0.5 for g in gaps), gaps

        async def cancelled() -> Any:
            ann = Announcement(vas, count=50, interval=0.05)
            await asyncio.sleep(0.12)
            ann.cancel()
            return await ann.wait()

        report = in_ns(net, "n2", lambda: asyncio.run(cancelled()))
        assert report.cancelled and 1 <= report.rounds < 10
        seen = _drain(sock, 0.4, vas[0].address)
        assert len(seen) == 2 * report.rounds  # nothing after the cancel
    finally:
        sock.close()
        in_ns(net, "n2", lambda: A.remove_addresses(vas))


def test_first_round_for_64_addresses_goes_out_at_once(net: Lab) -> None:
    vas = [v4(f"10.79.0.{10 + i}") for i in range(64)]
    in_ns(net, "n2", lambda: A.add_addresses(vas))
    sock = _arp_capture(net, "client")
    try:
        async def go() -> tuple[float, float, Any]:
            t0 = time.time()
            ann = Announcement(vas, count=2, interval=0.5)
            sent = time.time() - t0
            ann.cancel()  # the first round alone is measured
            return t0, sent, await ann.wait()

        t0, sent, report = in_ns(net, "n2", lambda: asyncio.run(go()))
        assert (report.rounds, report.frames) == (1, 128)
        seen = _drain(sock, 0.3, *(va.address for va in vas))
    finally:
        sock.close()
        in_ns(net, "n2", lambda: A.remove_addresses(vas))
    assert len(seen) == 128 and {ip for _, _, ip in seen} == {va.address for va in vas}
    arrivals = [t for t, _, _ in seen]
    print(f"\nARP first round, 64 addresses (128 frames): sent in {sent * 1000:.2f} ms,"
          f" last frame at the client after {(max(arrivals) - t0) * 1000:.2f} ms")
    assert max(arrivals) - t0 < 0.2


def test_announce_reports_a_missing_interface(net: Lab) -> None:
    # announce_once: the synchronous single round, no event loop in this thread
    report = in_ns(net, "n2", lambda: announce_once(
        [v4("10.79.0.99", interface="eth9"), v4("10.79.0.98")]))
    assert report.frames == 2
    assert len(report.errors) == 1 and "cannot announce on eth9" in str(report.errors[0])


# -- ICMP -------------------------------------------------------------------

def test_pinger_matches_only_its_own_replies(net: Lab) -> None:
    async def go() -> tuple[list[str], list[str], bool]:
        mine: list[str] = []
        other: list[str] = []
        with Pinger(mine.append) as pinger, Pinger(other.append):
            for _ in range(3):
                pinger.send(net.ip("n1"))
                pinger.send("10.79.0.77")  # nobody has it
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)
            return mine, other, pinger.raw

    mine, other, raw = in_ns(net, "client", lambda: asyncio.run(go()))
    assert raw  # root: raw socket with an ICMP filter
    assert mine == [net.ip("n1")] * 3
    assert other == []  # the second pinger sees the replies but they are not its own


def test_pinger_rejects_a_non_address(net: Lab) -> None:
    async def go() -> None:
        with Pinger(lambda _a: None) as pinger:
            pinger.send("not-an-address")

    with pytest.raises(NetError, match="not an IPv4 address"):
        in_ns(net, "client", lambda: asyncio.run(go()))


def test_tcpdump_sees_both_arp_kinds(net: Lab) -> None:
    """An independent decoder agrees that the frames are ARP request + reply for the VIP."""
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump not installed")
    va = v4("10.79.0.160")
    in_ns(net, "n2", lambda: A.add_addresses([va]))
    proc = net.popen("client", ["tcpdump", "-l", "-n", "-c", "2", "-i", "eth0",
                                "arp and host 10.79.0.160"], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None and proc.stdout is not None
        proc.stderr.readline()  # "listening on eth0 ..." once the capture is armed
        in_ns(net, "n2", lambda: asyncio.run(announce([va], count=1)))
        out = proc.stdout.read().decode()
        assert proc.wait(5) == 0
    finally:
        net.stop(proc)
        in_ns(net, "n2", lambda: A.remove_addresses([va]))
    assert "Request who-has 10.79.0.160 tell 10.79.0.160" in out
    assert f"Reply 10.79.0.160 is-at {net.mac('n2')}" in out
