"""ha.cf's IPv6 media and ping nodes (ucast6, mcast6, ping6): Heartbeat 3.0.6's syntax and rules."""

from __future__ import annotations

import pytest

from hbd.configfiles import describe
from hbd.core.assemble import ConfigTexts, check
from hbd.core.config import Mcast6Link, Ucast6Link
from hbd.core.hacf import parse_hacf

HEAD = "node n1 n2\n"


def errors(text: str) -> list[str]:
    _hacf, problems = parse_hacf(HEAD + text, local_addresses={"fd00::1"})
    return [str(p) for p in problems.errors]


def test_ucast6_lines() -> None:
    hacf, problems = parse_hacf(HEAD + "udpport 7000\nucast6 eth0 fd00::2\n"
                                "ucast6 eth0 fd00::1\n"  # our own: the peer's half
                                "ucast6 eth1 FE80::0:2%eth1\n", local_addresses={"fd00::1"})
    assert problems.errors == [] and problems.warnings == []
    assert hacf.links == (Ucast6Link("eth0", "fd00::2", 7000, 3),
                          Ucast6Link("eth1", "fe80::2", 7000, 5))


def test_mcast6_line() -> None:
    hacf, problems = parse_hacf(HEAD + "mcast6 eth0 ff12::1:2:3:4 694 1 0\n"
                                "mcast6 eth0 ff05::beef 695 4 1\n")
    assert problems.errors == []
    assert hacf.links == (Mcast6Link("eth0", "ff12::1:2:3:4", 694, 1, False, 2),
                          Mcast6Link("eth0", "ff05::beef", 695, 4, True, 3))


def test_ping6_nodes_beside_ping() -> None:
    hacf, problems = parse_hacf(HEAD + "bcast eth0\nping 10.0.0.1\nping6 fd00::9 "
                                "fe80::5%eth0\n")
    assert problems.errors == []
    assert hacf.ping_nodes == ("10.0.0.1", "fd00::9", "fe80::5%eth0")


@pytest.mark.parametrize("line,message", [
    ("ucast6 eth0", "needs 'ucast6 IFACE PEER-IPV6-ADDRESS'"),
    ("ucast6 eth0 fd00::2 fd00::3", "needs 'ucast6 IFACE PEER-IPV6-ADDRESS'"),
    ("ucast6 eth0 10.0.0.2", "'10.0.0.2' is not an IPv6 address"),
    ("ucast6 eth0 ff02::1", "not a unicast address"),
    ("ucast6 eth0 fe80::2%eth1", "scope '%eth1' does not match the device eth0"),
    ("mcast6 eth0 ff12::1 694 1", "needs 'mcast6 IFACE GROUP PORT HOPS LOOP'"),
    ("mcast6 eth0 fd00::1 694 1 0", "not a multicast group"),
    ("mcast6 eth0 ff0e::1 694 1 0", "scope must be link (2)"),  # global: refused
    ("mcast6 eth0 ff01::1 694 1 0", "scope must be link (2)"),  # interface-local
    ("mcast6 eth0 ff32::1 694 1 0", "reserved flag bits"),
    ("mcast6 eth0 ff12:: 694 1 0", "reserved group"),
    ("mcast6 eth0 ff12::1 0 1 0", "bad UDP port '0'"),
    ("mcast6 eth0 ff12::1 694 5 0", "bad hops '5' (0-4)"),
    ("mcast6 eth0 ff12::1 694 1 2", "bad loop '2'"),
    ("ping6 10.0.0.1", "not an IPv6 address"),
    ("ping6 fe80::1", "needs its interface"),
    ("ping6 fd00::9 fd00::9", "listed twice"),
])
def test_bad_lines_name_their_line(line: str, message: str) -> None:
    found = errors("bcast eth0\n" + line + "\n")
    assert len(found) == 1 and found[0].startswith("ha.cf:3: ") and message in found[0], found


def test_not_warned_as_unimplemented_any_more() -> None:
    _hacf, problems = parse_hacf(HEAD + "ucast6 eth0 fd00::2\nping6 fd00::9\n"
                                 "mcast6 eth0 ff12::1 694 1 0\n")
    assert problems.warnings == [] and problems.errors == []


def test_check_config_shows_ipv6_media() -> None:
    texts = ConfigTexts(hacf_name="ha.cf", hacf=HEAD + "ucast6 eth0 fd00::2\n"
                        "mcast6 eth1 ff12::1 694 1 0\nping6 fd00::9\n"
                        "apiauth anon gid=adm,haclient\n",
                        haresources_name="haresources", haresources="",
                        authkeys_name="authkeys", authkeys="auth 1\n1 sha1 x\n",
                        authkeys_mode=0o600)
    config, problems = check(texts, node_name="n1", local_addresses=())
    assert config is not None, problems
    shown = describe(config)
    assert "ucast6 eth0 -> [fd00::2] udp/694" in shown
    assert "mcast6 eth1 [ff12::1] udp/694 hops 1 no loop" in shown
    assert "ping nodes: fd00::9" in shown
    assert "client API (cl_status): apiauth anon gid=adm,haclient;" in shown


def test_corosync_export_carries_ipv6_media() -> None:
    from hbd.export.corosync import render_corosync

    texts = ConfigTexts(hacf_name="ha.cf", hacf=HEAD + "ucast6 eth0 fd00::1\n"
                        "ucast6 eth0 fd00::2\nmcast6 eth1 ff12::1 694 1 0\n",
                        haresources_name="haresources", haresources="",
                        authkeys_name="authkeys", authkeys="auth 1\n1 sha1 x\n",
                        authkeys_mode=0o600)
    config, problems = check(texts, node_name="n1", local_addresses=())
    assert config is not None, problems
    out = render_corosync(config)
    assert "fd00::1" in out.text and "fd00::2" in out.text
    assert any("mcast6 eth1 ff12::1" in note.message for note in out.notes)
