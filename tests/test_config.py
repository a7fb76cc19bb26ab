"""Config parser tests: Heartbeat's own sample files, the capture's real files,
and table-driven bad inputs each with its exact `file:line: message`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hbd.configfiles import describe
from hbd.core.assemble import ConfigTexts, assemble, check
from hbd.core.authkeys import parse_authkeys
from hbd.core.config import (
    AuthMethod,
    AutoFailback,
    BcastLink,
    McastLink,
    SerialLink,
    Severity,
    UcastLink,
)
from hbd.core.hacf import KNOWN_DIRECTIVES, NOT_IMPLEMENTED, parse_hacf
from hbd.core.haresources import parse_haresources, parse_ipv4_spec
from hbd.core.parsing import parse_time_ms
from hbd.errors import ConfigError
from tests.infra import commands

DATA = Path(__file__).parent / "data"
CAPTURE = DATA / "capture"
SAMPLE = DATA / "debian-sample"

GOOD_HACF = """\
keepalive 100ms
deadtime 500ms
initdead 1
udpport 694
bcast eth0
node n1 n2
"""
GOOD_HARESOURCES = "n1 10.77.0.240/24/eth0\n"
GOOD_AUTHKEYS = "auth 1\n1 sha1 secret\n"


def texts(hacf: str = GOOD_HACF, haresources: str | None = GOOD_HARESOURCES,
          authkeys: str | None = GOOD_AUTHKEYS, mode: int | None = 0o100600) -> ConfigTexts:
    return ConfigTexts("ha.cf", hacf, "haresources", haresources, "authkeys", authkeys, mode)


def messages(hacf: str = GOOD_HACF, haresources: str | None = GOOD_HARESOURCES,
             authkeys: str | None = GOOD_AUTHKEYS, mode: int | None = 0o100600,
             node: str = "n1") -> list[str]:
    _, problems = check(texts(hacf, haresources, authkeys, mode), node_name=node)
    return [str(p) for p in problems]


# --- time values -------------------------------------------------------------

@pytest.mark.parametrize("text,ms", [
    ("2", 2000), ("1.5", 1500), ("500ms", 500), ("500 ms", 500), ("0.1", 100),
    ("250MS", 250), ("1500us", 2), (".5", 500),
])
def test_time_values(text: str, ms: int) -> None:
    assert parse_time_ms(text) == ms


@pytest.mark.parametrize("text", ["", "fast", "1s", "-1", "1.5.2", "ms"])
def test_bad_time_values(text: str) -> None:
    assert parse_time_ms(text) is None


# --- the capture's real files ------------------------------------------------

def test_capture_config_as_heartbeat_ran_it() -> None:
    config = assemble(ConfigTexts(
        "ha.cf", (CAPTURE / "ha.cf").read_text(),
        "haresources", (CAPTURE / "haresources").read_text(),
        "authkeys", (CAPTURE / "authkeys").read_text(), 0o100600,
    ), node_name="n1")
    hacf = config.hacf
    assert hacf.nodes == ("n1", "n2")
    assert hacf.links == (BcastLink("eth0", 694, line=8), SerialLink("/dev/ttyS0", 19200, line=13))
    t = hacf.timers
    timers = (t.keepalive_ms, t.deadtime_ms, t.warntime_ms, t.initdead_ms)
    assert timers == (1000, 5000, 3000, 10000)
    assert hacf.auto_failback is AutoFailback.ON
    assert hacf.logfile == "/var/log/ha-lab.log"
    assert hacf.debugfile == "/var/log/ha-lab.debug"
    [group] = config.groups
    assert group.node == "n1"
    assert group.key == "IPaddr2::10.77.0.240/24/eth0"
    [vip] = group.resources
    assert (vip.agent, vip.args) == ("IPaddr2", ("10.77.0.240/24/eth0",))
    assert config.auth.active_key.method is AuthMethod.SHA1
    assert config.auth.active_key.secret == b"labsecret"
    assert config.peers == ("n2",)


# --- Heartbeat's shipped samples ----------------------------------------------

def test_debian_sample_hacf_as_shipped_needs_nodes_and_media() -> None:
    hacf, problems = parse_hacf((SAMPLE / "ha.cf").read_text(), filename="ha.cf")
    assert hacf.logfacility == "local0"
    assert hacf.auto_failback is AutoFailback.ON
    assert [str(p) for p in problems.errors] == [
        "ha.cf: no node directive: list every cluster node with 'node NAME'",
        "ha.cf: no heartbeat media: add bcast, mcast, ucast, mcast6, ucast6 or serial lines",
    ]


def test_every_directive_of_the_sample_is_recognised() -> None:
    """Uncomment every example directive of Heartbeat's annotated ha.cf: none is unknown."""
    uncommented = []
    seen = set()
    for line in (SAMPLE / "ha.cf").read_text().splitlines():
        match = re.match(r"^#([a-z_0-9]+)(\s+\S.*)$", line)
        if match and match.group(1) in KNOWN_DIRECTIVES:
            uncommented.append(match.group(1) + match.group(2))
            seen.add(match.group(1))
        else:
            uncommented.append(line)
    assert {"keepalive", "stonith_host", "apiauth", "respawn", "hbaping", "msgfmt"} <= seen
    _, problems = parse_hacf("\n".join(uncommented), filename="ha.cf")
    assert not [p for p in problems.items if "unknown directive" in p.message]
    warned = {p.message.split(":")[0] for p in problems.warnings}
    assert seen & set(NOT_IMPLEMENTED) <= warned


def test_debian_sample_haresources_examples_parse() -> None:
    """Each example line of Heartbeat's annotated haresources is a valid file of its own."""
    examples = []
    for line in (SAMPLE / "haresources").read_text().splitlines():
        match = re.match(r"^#(just\.linux-ha\.org|node1)(\s+.*)$", line)
        if match:
            examples.append(match.group(1) + match.group(2))
    assert len(examples) == 5
    parsed = []
    for example in examples:
        groups, problems = parse_haresources(example, nodes=("just.linux-ha.org", "node1"))
        assert not problems.items, example
        parsed.append(groups[0])
    assert [len(g.resources) for g in parsed] == [1, 2, 4, 2, 2]
    bare = parsed[0].resources[0]
    assert (bare.agent, bare.args) == ("IPaddr", ("135.9.216.110",))
    assert parsed[1].resources[1].agent == "http"
    fs = parsed[4].resources[1]
    assert (fs.agent, fs.args) == ("Filesystem", ("/dev/sda1", "/data1", "ext2"))
    spec = parse_ipv4_spec(parsed[3].resources[0].args[0])
    assert (spec.prefix, spec.interface, spec.broadcast) == (28, "eth0", "135.9.216.12")


def test_debian_sample_authkeys_examples() -> None:
    text = (SAMPLE / "authkeys").read_text()
    keys, problems = parse_authkeys(text, mode=0o100600)
    assert keys is None
    assert [str(p) for p in problems.errors] == [
        "authkeys: no 'auth N' line: say which key signs outgoing messages"
    ]
    uncommented = re.sub(r"^#(auth 1|\d (crc|sha1|md5).*)$", r"\1", text, flags=re.M)
    keys, problems = parse_authkeys(uncommented, mode=0o100600)
    assert keys is not None and not problems.items
    assert keys.active == 1
    assert [(k.index, k.method) for k in keys.keys] == [
        (1, AuthMethod.CRC), (2, AuthMethod.SHA1), (3, AuthMethod.MD5)]
    assert keys.get(2) is not None and keys.get(2).secret == b"HI!"  # type: ignore[union-attr]


# --- media and Heartbeat's ordering rules -------------------------------------

def test_media_kinds_and_udpport_baud_apply_below() -> None:
    hacf, problems = parse_hacf(
        "bcast eth0 eth1\n"
        "udpport 700\n"
        "mcast eth2 225.0.0.1 695 1 0\n"
        "ucast eth3 10.0.0.1\n"
        "ucast eth3 10.0.0.2\n"
        "baud 38400\n"
        "serial /dev/ttyS0\n"
        "node a b\nkeepalive 1\ndeadtime 10\n",
        filename="ha.cf", local_addresses={"10.0.0.1"},
    )
    assert hacf.links == (
        BcastLink("eth0", 694, 1), BcastLink("eth1", 694, 1),
        McastLink("eth2", "225.0.0.1", 695, 1, False, 3),
        UcastLink("eth3", "10.0.0.2", 700, 5),
        SerialLink("/dev/ttyS0", 38400, 7),
    )
    assert [str(p) for p in problems.items] == [
        "ha.cf:2: warning: udpport comes after the UDP medium at line 1; as in Heartbeat it "
        "applies only to media below it: move it above them"
    ]


def test_default_timers_follow_heartbeat() -> None:
    hacf, _problems = parse_hacf("bcast eth0\nnode a b\n")
    t = hacf.timers
    assert (t.keepalive_ms, t.deadtime_ms, t.warntime_ms, t.initdead_ms, t.deadping_ms) == (
        1000, 30000, 15000, 30000, 30000)
    assert hacf.udpport == 694 and hacf.auto_failback is AutoFailback.LEGACY
    hacf, _ = parse_hacf("bcast eth0\nnode a b\ndeadtime 5\n")
    assert hacf.timers.initdead_ms == 12000
    hacf, _ = parse_hacf("bcast eth0\nnode a b\ndeadtime 8\n")
    assert hacf.timers.initdead_ms == 16000


@pytest.mark.parametrize("value,expected", [
    ("on", AutoFailback.ON), ("off", AutoFailback.OFF), ("legacy", AutoFailback.LEGACY),
    ("yes", AutoFailback.ON), ("false", AutoFailback.OFF)])
def test_auto_failback_values(value: str, expected: AutoFailback) -> None:
    hacf, problems = parse_hacf(f"bcast eth0\nnode a b\nauto_failback {value}\n")
    assert hacf.auto_failback is expected and not problems.items


def test_nice_failback_is_mapped_with_a_warning() -> None:
    hacf, problems = parse_hacf("bcast eth0\nnode a b\nnice_failback on\n")
    assert hacf.auto_failback is AutoFailback.OFF
    assert [str(p) for p in problems.items] == [
        "ha.cf:3: warning: nice_failback is obsolete: read as 'auto_failback off'; "
        "write that instead"]


def test_ping_and_ping_group() -> None:
    hacf, problems = parse_hacf(
        "bcast eth0\nnode a b\nping 10.1.1.1 10.1.1.2\nping_group g1 10.2.2.1 10.2.2.2\n"
        "deadping 5\n")
    assert not problems.items
    assert hacf.ping_nodes == ("10.1.1.1", "10.1.1.2")
    assert hacf.ping_groups[0].name == "g1" and hacf.ping_groups[0].addresses == (
        "10.2.2.1", "10.2.2.2")
    assert hacf.timers.deadping_ms == 5000


def test_node_names_are_lower_cased() -> None:
    hacf, _ = parse_hacf("bcast eth0\nnode Alpha BETA\n")
    assert hacf.nodes == ("alpha", "beta")


def test_crm_off_is_fine() -> None:
    for value in ("off", "no", "false"):
        _, problems = parse_hacf(f"bcast eth0\nnode a b\ncrm {value}\npacemaker {value}\n")
        assert not problems.items


# --- table-driven bad inputs: exact file:line messages ----------------------

BAD_CASES = [
    pytest.param(
        dict(hacf=GOOD_HACF + "frobnicate yes\n"),
        ["ha.cf:7: unknown directive 'frobnicate'"], id="unknown-directive"),
    pytest.param(
        dict(hacf=GOOD_HACF.replace("keepalive 100ms", "keepalive fast")),
        ["ha.cf:1: keepalive: bad time value 'fast' (use seconds like 2 or 1.5, "
         "or milliseconds like 500ms)"], id="bad-time"),
    pytest.param(
        dict(hacf=GOOD_HACF.replace("node n1 n2\n", ""),
             haresources="n1 10.77.0.240\n"),
        ["ha.cf: no node directive: list every cluster node with 'node NAME'"],
        id="missing-node-line"),
    pytest.param(
        dict(mode=0o100644),
        ["authkeys: is readable by group or others (mode 644): run 'chmod 600 authkeys'"],
        id="authkeys-0644"),
    pytest.param(
        dict(authkeys="auth 1\n1 sha1 a\n2 md5 b\n1 md5 c\n"),
        ["authkeys:4: key index 1 is defined twice (first at line 2)"],
        id="duplicate-key-index"),
    pytest.param(
        dict(hacf=GOOD_HACF + "crm on\n"),
        ["ha.cf:7: crm on: hbd manages haresources groups itself and does not run Pacemaker's "
         "CRM; set 'crm off', or move to Pacemaker/Corosync (hbctl export pacemaker writes "
         "the configuration)"], id="crm-on"),
    pytest.param(
        dict(haresources="n1 10.77.0.240\nn3 10.77.0.241\n"),
        ["haresources:2: node 'n3' is not a node of ha.cf (nodes: n1, n2)"],
        id="haresources-unknown-node"),
    pytest.param(
        dict(hacf=GOOD_HACF.replace("deadtime 500ms", "deadtime 200ms")),
        ["ha.cf:2: deadtime (200 ms) must be more than twice keepalive (100 ms)"],
        id="deadtime-too-short"),
    pytest.param(
        dict(hacf=GOOD_HACF.replace("deadtime 500ms", "deadtime 3601").replace("initdead 1",
                                                                            "initdead 4000")),
        ["ha.cf:2: deadtime (3601000 ms) is above the most hbd accepts (3600 s)"],
        id="deadtime-above-dt-range"),
    pytest.param(
        dict(hacf=GOOD_HACF.replace("initdead 1", "initdead 300ms")),
        ["ha.cf:3: initdead (300 ms) must be at least deadtime (500 ms)"],
        id="initdead-below-deadtime"),
    pytest.param(
        dict(hacf=GOOD_HACF.replace("bcast eth0\n", "")),
        ["ha.cf: no heartbeat media: add bcast, mcast, ucast, mcast6, ucast6 or serial lines"],
        id="no-media"),
    pytest.param(
        dict(hacf=GOOD_HACF + "mcast eth0 10.0.0.1 694 1 0\n"),
        ["ha.cf:7: mcast: '10.0.0.1' is not a multicast group (224.0.0.0/4)"],
        id="mcast-not-multicast"),
    pytest.param(
        dict(hacf=GOOD_HACF + "autojoin any\n"),
        ["ha.cf:7: autojoin any: hbd supports only 'autojoin none' (list every node with a "
         "node line)"], id="autojoin-any"),
    pytest.param(
        dict(hacf=GOOD_HACF + "baud 12345\n"),
        ["ha.cf:7: baud: unsupported rate '12345' (one of 300, 600, 1200, 1800, 2400, 4800, "
         "9600, 19200, 38400, 57600, 115200, 230400, 460800)"], id="bad-baud"),
    pytest.param(
        dict(authkeys="auth 2\n1 sha1 a\n"),
        ["authkeys:1: auth 2: there is no key 2 in this file"], id="auth-names-missing-key"),
    pytest.param(
        dict(authkeys="auth 1\n1 sha256 a\n"),
        ["authkeys:2: key 1: unknown method 'sha256' (crc, md5, sha1 or blake2b)",
         "authkeys:1: auth 1: there is no key 1 in this file"], id="unknown-auth-method"),
    pytest.param(
        dict(authkeys="auth 1\n1 crc abc\n"),
        ["authkeys:2: key 1: crc takes no key",
         "authkeys:1: auth 1: there is no key 1 in this file"],
        id="crc-with-key"),
    pytest.param(
        dict(haresources="n1 IPaddr2::10.77.0.999/24\n"),
        ["haresources:1: resource 'IPaddr2::10.77.0.999/24': '10.77.0.999' is not an IPv4 "
         "address"], id="bad-vip"),
    pytest.param(
        dict(haresources="n1 ../../bin/sh::-c\n"),
        ["haresources:1: resource '../../bin/sh::-c': '../../bin/sh' is not a resource agent "
         "name"], id="agent-path-traversal"),
    pytest.param(
        dict(hacf=GOOD_HACF + "node n3\n"),
        ["ha.cf:7: node 'n3' is a third node: Heartbeat's own cluster stack runs two "
         "nodes (its resource protocol has one peer); for three or more add "
         "'cluster_stack corosync'"], id="third-node-on-heartbeat-stack"),
    pytest.param(
        dict(hacf=GOOD_HACF.replace("node n1 n2", "node n1 n2 n3 n4")),
        ["ha.cf:6: node 'n3' is a third node: Heartbeat's own cluster stack runs two "
         "nodes (its resource protocol has one peer); for three or more add "
         "'cluster_stack corosync'"], id="four-nodes-one-line"),
    pytest.param(
        dict(node="n9"),
        ["ha.cf: this node 'n9' is not in the node list (n1, n2); nodes are named by "
         "`uname -n` (or hbd --node)"], id="this-node-not-listed"),
]


@pytest.mark.parametrize("kwargs,expected", BAD_CASES)
def test_bad_inputs(kwargs: dict, expected: list[str]) -> None:  # type: ignore[type-arg]
    got = [m for m in messages(**kwargs) if ": warning: " not in m]
    assert got == expected
    config, _ = check(texts(**{k: v for k, v in kwargs.items() if k != "node"}),
                      node_name=kwargs.get("node", "n1"))
    assert config is None


def test_every_problem_is_reported_at_once() -> None:
    got = messages(
        hacf="keepalive x\nnode n1 n2\nbcast eth0\nwhatever\n",
        haresources="n7 10.0.0.1\n",
        authkeys="auth 1\n1 md5\n",
        mode=0o100640,
    )
    assert got == [
        "ha.cf:1: keepalive: bad time value 'x' (use seconds like 2 or 1.5, or milliseconds "
        "like 500ms)",
        "ha.cf:4: unknown directive 'whatever'",
        "haresources:1: node 'n7' is not a node of ha.cf (nodes: n1, n2)",
        "authkeys: is readable by group or others (mode 640): run 'chmod 600 authkeys'",
        "authkeys:2: key 1: md5 needs a key",
        "authkeys:1: auth 1: there is no key 1 in this file",
    ]
    with pytest.raises(ConfigError) as err:
        assemble(texts(hacf="keepalive x\nnode n1 n2\nbcast eth0\n"), node_name="n1")
    assert err.value.problems == (
        "ha.cf:1: keepalive: bad time value 'x' (use seconds like 2 or 1.5, or milliseconds "
        "like 500ms)",)


def test_unimplemented_directive_is_a_warning_naming_it() -> None:
    got = messages(hacf=GOOD_HACF + "watchdog /dev/watchdog\n")
    assert got == ["ha.cf:7: warning: watchdog: not implemented by hbd, ignored (hbd feeds "
                   "systemd's watchdog (WatchdogSec=) instead of a watchdog device)"]


def test_secrets_never_in_messages() -> None:
    got = messages(authkeys="auth 1\n1 sha1 TOPSECRET extra words\n1 md5 OTHERSECRET\n",
                   mode=0o100666)
    assert got and not any("SECRET" in m for m in got)
    keys, _ = parse_authkeys("auth 1\n1 sha1 TOPSECRET\n")
    assert "TOPSECRET" not in repr(keys)


# --- haresources details --------------------------------------------------------

def test_haresources_continuation_and_agents() -> None:
    groups, problems = parse_haresources(
        "n1 10.0.0.5/24/eth0/10.0.0.255 \\\n"
        "   Filesystem::/dev/sdb1::/srv::ext4 \\\n"
        "   apache   # trailing comment\n"
        "N2 IPaddr2::10.0.1.5 IPv6addr::2001:db8::5/64/eth0 httpd\n",
        nodes=("n1", "n2"))
    assert not problems.items
    first, second = groups
    assert first.line == 1 and second.line == 4
    assert [r.agent for r in first.resources] == ["IPaddr", "Filesystem", "apache"]
    assert second.node == "n2"
    assert second.resources[1].args == ("2001:db8::5/64/eth0",)
    spec = parse_ipv4_spec("10.0.0.5/24/eth0:vip/10.0.0.255")
    assert (spec.address, spec.prefix, spec.interface, spec.label, spec.broadcast) == (
        "10.0.0.5", 24, "eth0", "eth0:vip", "10.0.0.255")


def test_duplicate_resource_across_groups() -> None:
    _, problems = parse_haresources("n1 10.0.0.5\nn2 10.0.0.5\n", nodes=("n1", "n2"))
    assert [str(p) for p in problems.items] == [
        "haresources:2: resource '10.0.0.5' is already in the group at line 1"]


# --- the command line -------------------------------------------------------------

def _write_dir(tmp_path: Path, authkeys_mode: int = 0o600) -> Path:
    (tmp_path / "ha.cf").write_text(GOOD_HACF)
    (tmp_path / "haresources").write_text(GOOD_HARESOURCES)
    (tmp_path / "authkeys").write_text(GOOD_AUTHKEYS)
    os.chmod(tmp_path / "authkeys", authkeys_mode)
    return tmp_path


def _hbd(*args: str) -> subprocess.CompletedProcess[str]:
    return commands.run([sys.executable, "-m", "hbd.daemon", *args],
                        capture_output=True, text=True, timeout=60)


def test_check_config_good(tmp_path: Path) -> None:
    d = _write_dir(tmp_path)
    result = _hbd("--check-config", "--config-dir", str(d), "--node", "N1")
    assert result.returncode == 0, result.stderr
    assert "this node n1" in result.stdout
    assert "bcast eth0 udp/694" in result.stdout
    assert "keepalive 100 ms, deadtime 500 ms" in result.stdout
    assert "IPaddr::10.77.0.240/24/eth0" not in result.stdout  # bare IP shown as written
    assert "10.77.0.240/24/eth0: home n1" in result.stdout
    assert "configuration OK" in result.stdout
    assert "secret" not in result.stdout
    assert ("API clients' messages on the wire: at most 20 KiB/s each, 64 KiB/s together"
            in result.stdout)


def test_check_config_bad(tmp_path: Path) -> None:
    d = _write_dir(tmp_path, authkeys_mode=0o644)
    result = _hbd("--check-config", "--config-dir", str(d), "--node", "n1")
    assert result.returncode == 1
    assert f"{d}/authkeys: is readable by group or others (mode 644): run 'chmod 600 " \
        f"{d}/authkeys'" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_warns_of_a_respawn_line_that_cannot_run(tmp_path: Path) -> None:
    d = _write_dir(tmp_path)
    with open(d / "ha.cf", "a") as hacf:
        hacf.write(f"respawn no-such-hbd-user {sys.executable} -c pass\n"
                   f"respawn root {d}/ipfail\n"
                   f"respawn root {sys.executable} -c pass\n")
    lines = len(GOOD_HACF.splitlines())
    result = _hbd("--check-config", "--config-dir", str(d), "--node", "n1")
    # Heartbeat would refuse to start; hbd runs the cluster without them, and says so
    assert result.returncode == 0, result.stderr
    assert (f"{d}/ha.cf:{lines + 1}: warning: respawn: no user 'no-such-hbd-user'"
            in result.stderr)
    assert (f"{d}/ha.cf:{lines + 2}: warning: respawn: {d}/ipfail is missing or not an "
            "executable file" in result.stderr)
    assert f"ha.cf:{lines + 3}" not in result.stderr
    (d / "ipfail").write_text("#!/bin/sh\n")  # there, but not executable
    result = _hbd("--check-config", "--config-dir", str(d), "--node", "n1")
    assert f"{d}/ipfail is missing or not an executable file" in result.stderr


def test_three_nodes_are_fine_on_the_corosync_stack_and_ping_nodes_do_not_count() -> None:
    # cluster_stack may come after the node lines: the rule is applied at the end
    assert messages(hacf=GOOD_HACF + "node n3\ncluster_stack corosync\n") == []
    assert messages(hacf=GOOD_HACF + "ping 10.9.0.1 10.9.0.2\nping_group gw 10.9.1.1\n") == []
    assert messages(hacf=GOOD_HACF + "cluster_stack heartbeat\nnode n3\n") == [
        "ha.cf:8: node 'n3' is a third node: Heartbeat's own cluster stack runs two "
        "nodes (its resource protocol has one peer); for three or more add "
        "'cluster_stack corosync'"]


def test_severity_enum_roundtrip() -> None:
    assert Severity("warning") is Severity.WARNING


def test_group_order_naming_no_group_is_a_warning() -> None:
    got = messages(hacf=GOOD_HACF + "cluster_stack corosync\ngroup_order 10.9.9.9 n2 n1\n")
    assert got == ["ha.cf: warning: group_order 10.9.9.9: no haresources group has that key "
                   "(keys: 10.77.0.240/24/eth0); the line has no effect"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_hbdconf_with_fence_passwords_readable_by_others_is_warned(tmp_path: Path,
                                                                    mode: int) -> None:
    d = _write_dir(tmp_path)
    (d / "hbd.conf").write_text("notify_timeout 5\nfence_agent fence_dummy type=file\n")
    os.chmod(d / "hbd.conf", mode)
    result = _hbd("--check-config", "--config-dir", str(d), "--node", "n1")
    assert result.returncode == 0, result.stderr
    assert (f"{d}/hbd.conf:2: warning: fence_agent options (passwords) in a file readable or "
            f"writable by group or others (mode {mode:o}): chmod 600 {d}/hbd.conf"
            ) in result.stderr + result.stdout


def test_hbdconf_private_or_without_fence_agents_is_not_warned(tmp_path: Path) -> None:
    d = _write_dir(tmp_path)
    conf = d / "hbd.conf"
    conf.write_text("fence_agent fence_dummy type=file\n")
    os.chmod(conf, 0o600)
    out = _hbd("--check-config", "--config-dir", str(d), "--node", "n1")
    conf.write_text("notify_timeout 5\n")
    os.chmod(conf, 0o644)
    out2 = _hbd("--check-config", "--config-dir", str(d), "--node", "n1")
    for result in (out, out2):
        assert result.returncode == 0, result.stderr
        assert "chmod 600" not in result.stderr + result.stdout


# --- respawn (issue 19) ---------------------------------------------------------------

def test_respawn_lines() -> None:
    hacf, problems = parse_hacf(GOOD_HACF + "respawn hacluster /usr/libexec/heartbeat/ipfail\n"
                                "respawn root /usr/bin/env 'A B=1' x,y\n", filename="ha.cf")
    assert not problems.errors and not problems.warnings
    first, second = hacf.respawn
    assert (first.user, first.argv, first.line) == (
        "hacluster", ("/usr/libexec/heartbeat/ipfail",), 7)
    assert second.argv == ("/usr/bin/env", "A B=1", "x,y")  # whole-line: commas kept


@pytest.mark.parametrize("line,expected", [
    ("respawn", "needs a user and a command"),
    ("respawn hacluster", "needs a user and a command"),
    ("respawn hacluster ipfail", "is not a full pathname"),
    ("respawn 'ha cluster' /bin/true", "is not a user name"),
    ("respawn root /bin/echo 'unclosed", "cannot split the command"),
])
def test_bad_respawn_lines(line: str, expected: str) -> None:
    hacf, problems = parse_hacf(GOOD_HACF + line + "\n", filename="ha.cf")
    errors = [str(p) for p in problems.errors]
    assert len(errors) == 1 and errors[0].startswith("ha.cf:7: respawn: ")
    assert expected in errors[0]
    assert hacf.respawn == ()


def test_realtime_and_rtprio_as_heartbeat_reads_them() -> None:
    hacf, problems = parse_hacf(GOOD_HACF)
    assert (hacf.realtime, hacf.rtprio) == (True, None) and not problems.items
    hacf, problems = parse_hacf(GOOD_HACF + "realtime off\nrtprio 99\n")
    assert (hacf.realtime, hacf.rtprio) == (False, 99) and not problems.items
    hacf, _ = parse_hacf(GOOD_HACF + "realtime yes\nrtprio 1\n")
    assert (hacf.realtime, hacf.rtprio) == (True, 1)


@pytest.mark.parametrize("line,message", [
    ("realtime maybe", "ha.cf:7: realtime: bad value 'maybe' (on or off)"),
    ("rtprio 0", "ha.cf:7: rtprio: bad value '0' (1-99)"),
    ("rtprio 100", "ha.cf:7: rtprio: bad value '100' (1-99)"),
    ("rtprio high", "ha.cf:7: rtprio: bad value 'high' (1-99)"),
])
def test_bad_realtime_lines_are_errors_with_their_line(line: str, message: str) -> None:
    assert messages(hacf=GOOD_HACF + line + "\n") == [message]


@pytest.mark.parametrize("lines,shown", [
    ("", "realtime: on (SCHED_RR priority 1, memory locked; children at normal priority)"),
    ("rtprio 7\n", "realtime: on (SCHED_RR priority 7, memory locked; children at normal "
     "priority)"),
    ("realtime off\n", "realtime: off"),
])
def test_check_config_shows_realtime(lines: str, shown: str) -> None:
    texts = ConfigTexts("ha.cf", GOOD_HACF + lines, "haresources", GOOD_HARESOURCES,
                        "authkeys", "auth 1\n1 sha1 secret\n", 0o100600)
    config, problems = check(texts, node_name="n1")
    assert config is not None, problems
    assert shown in describe(config).splitlines()
