"""ha.cf's stonith/stonith_host (Heartbeat's syntax) and hbd.conf's fencing settings.

Every problem at its file:line, all at once; a password never appears in a
problem, a repr or `hbd --check-config`'s description.
"""

from __future__ import annotations

import pytest

from hbd.configfiles import describe
from hbd.core.assemble import ConfigTexts, check
from hbd.core.hacf import parse_hacf
from hbd.core.hbdconf import parse_hbdconf
from tests.test_config import GOOD_AUTHKEYS, GOOD_HACF, GOOD_HARESOURCES

SECRET = "s3cr3t-pw"


def _check(hacf_extra: str = "", hbdconf: str | None = None) -> tuple[object, list[str]]:
    texts = ConfigTexts("ha.cf", GOOD_HACF + hacf_extra, "haresources", GOOD_HARESOURCES,
                        "authkeys", GOOD_AUTHKEYS, 0o100600, "hbd.conf", hbdconf)
    config, problems = check(texts, node_name="n1")
    return config, [str(p) for p in problems]


def test_stonith_lines_as_heartbeat_reads_them() -> None:
    hacf, problems = parse_hacf(
        "node n1 n2\nbcast eth0\nstonith baytech /etc/ha.d/conf/stonith.baytech\n"
        f"stonith_host N2 external/ipmi n1 10.0.0.1 admin {SECRET},x lanplus\n")
    assert not problems.errors
    first, second = hacf.stonith
    assert (first.type, first.hostfrom, first.config_file, first.line) == (
        "baytech", "*", "/etc/ha.d/conf/stonith.baytech", 3)
    # hostfrom lower-cased as Heartbeat does; a comma inside a parameter survives
    assert (second.type, second.hostfrom, second.params, second.line) == (
        "external/ipmi", "n2", f"n1 10.0.0.1 admin {SECRET},x lanplus", 4)
    assert hacf.stonith_for("n2") is second and hacf.stonith_for("n1") is first
    assert SECRET not in repr(hacf)


@pytest.mark.parametrize(("line", "message"), [
    ("stonith baytech", "ha.cf:{n}: stonith: needs a type and a configuration file "
     "(stonith TYPE FILE), got 1 value(s)"),
    ("stonith_host n1", "ha.cf:{n}: stonith_host: needs the node that uses the device (or *), "
     "its type and its parameters, got 1 value(s)"),
    (f"stonith_host n1 ../../bin/sh {SECRET}", "ha.cf:{n}: stonith_host: invalid STONITH type "
     "'../../bin/sh' (a cluster-glue plugin name such as null, meatware, ipmilan or "
     "external/ipmi)"),
    (f"stonith_host n1;x null {SECRET}", "ha.cf:{n}: stonith_host: invalid node name 'n1;x' "
     "(a node name or *)"),
])
def test_malformed_stonith_lines_are_errors_at_their_line(line: str, message: str) -> None:
    _, messages = _check(line + "\n")
    n = len(GOOD_HACF.splitlines()) + 1
    assert message.format(n=n) in messages
    assert not [m for m in messages if SECRET in m]


def test_unknown_hostfrom_and_several_devices_are_warnings() -> None:
    config, messages = _check(f"stonith_host n9 null n1\nstonith_host * null {SECRET}\n"
                              f"stonith_host n1 meatware n2\n")
    n = len(GOOD_HACF.splitlines()) + 1
    assert config is not None
    assert f"ha.cf:{n}: warning: stonith_host: 'n9' is not a node of this cluster: no node " \
        "uses this device" in messages
    assert any(m.startswith(f"ha.cf:{n + 2}: warning: node n1 has several STONITH devices "
                            f"(lines {n + 1}, {n + 2})") for m in messages)
    assert not [m for m in messages if SECRET in m]


def test_fencing_settings_in_hbdconf() -> None:
    conf, problems = parse_hbdconf(
        f"fence_agent fence_ipmilan ip=10.0.0.9 username=admin password={SECRET}\n"
        "fence_agent fence_virsh ip=10.0.0.8\nfence_race_delay 0\nfence_retry_interval 1\n"
        "fence_timeout 30\nfence_status_interval 0\n")
    assert not problems.errors
    fencing = conf.fencing
    assert [a.agent for a in fencing.agents] == ["fence_ipmilan", "fence_virsh"]
    assert fencing.agents[0].options[2] == ("password", SECRET)
    assert (fencing.race_delay_ms, fencing.retry_ms, fencing.timeout_ms,
            fencing.status_interval_ms) == (0, 1000, 30_000, 0)
    assert SECRET not in repr(conf)


@pytest.mark.parametrize(("text", "message"), [
    ("fence_agent\n", "hbd.conf:1: fence_agent: needs an agent name (fence_ipmilan...) and "
     "its options as key=value"),
    ("fence_agent ipmitool a=b\n", "hbd.conf:1: fence_agent: 'ipmitool' is not a "
     "fence-agents name (fence_ipmilan, fence_virsh...)"),
    (f"fence_agent fence_x ip=1 {SECRET}\n", "hbd.conf:1: fence_agent: option 2 is not "
     "key=value"),
    (f"fence_agent fence_x plug=n2 password={SECRET}\n", "hbd.conf:1: fence_agent: 'plug' "
     "is set by hbd (the node to fence and the action)"),
    ("\nfence_race_delay 11min\n", "hbd.conf:2: fence_race_delay: bad time '11min'"),
    ("fence_retry_interval 50ms\n", "hbd.conf:1: fence_retry_interval: bad time '50ms'"),
    ("fence_timeout 1\nfence_timeout 2\n", "hbd.conf:2: fence_timeout: already set at line 1"),
])
def test_bad_fencing_settings(text: str, message: str) -> None:
    _, problems = parse_hbdconf(text)
    messages = [str(p) for p in problems.errors]
    assert any(m.startswith(message) for m in messages), messages
    assert not [m for m in messages if SECRET in m]


def test_check_config_names_devices_never_their_secrets() -> None:
    config, messages = _check(f"stonith_host * external/ipmi n2 10.0.0.2 admin {SECRET} lan\n",
                              f"fence_agent fence_ipmilan ip=10.0.0.9 password={SECRET}x\n")
    assert config is not None, messages
    text = describe(config)  # type: ignore[arg-type]
    line = next(x for x in text.splitlines() if x.startswith("fencing:"))
    assert "external/ipmi (ha.cf:" in line and "fence_ipmilan (hbd.conf:1)" in line
    assert SECRET not in text
