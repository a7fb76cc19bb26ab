"""`hbctl export pacemaker`: the CIB, the pcs and crmsh scripts, the CLI.

Every generated CIB goes through Pacemaker's own `crm_verify --xml-file`.
The pcs script is replayed with `pcs -f` and the crmsh text with
`crm configure load update` against an empty CIB file; the configuration
each tool builds must be the one the CIB says (same ids, agents,
parameters, operations, groups, clones and constraints).  Parameter names
are checked against the installed agents' meta-data.  Tools that are missing
skip their test with the reason.  corosync.conf is checked in
test_export_corosync.py.
"""

from __future__ import annotations

import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from hbd.cli import hbctl
from hbd.core.config import AutoFailback
from hbd.export import Exported, HostView, export
from hbd.export.model import Clone, Group
from tests.export_scenarios import (
    ALL,
    IPV6,
    PING,
    REALISTIC,
    SAMPLE_GROUP_LINES,
    SAMPLES,
    SEED,
    STORAGE,
    TWO_HOMES,
    WEB,
    Scenario,
)
from tests.infra import commands

IDS = [s.name for s in ALL]


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (Debian: pacemaker-cli-utils, pcs, crmsh)")
    return path


def _empty_cib(path: Path) -> Path:
    result = commands.run([_need("cibadmin"), "--empty"], capture_output=True, text=True,
                          check=True, timeout=60)
    path.write_text(result.stdout)
    return path


# --- reading a CIB back as comparable facts ----------------------------------

def _seconds(value: str | None) -> int:
    if not value:
        return 0
    match = re.fullmatch(r"(\d+)\s*(ms|s|m|min|h)?", value.strip())
    assert match, value
    factor = {"ms": 0.001, "s": 1, None: 1, "m": 60, "min": 60, "h": 3600}[match.group(2)]
    return int(int(match.group(1)) * factor)


def _role(value: str | None) -> str | None:
    return {"Master": "Promoted", "Slave": "Unpromoted"}.get(value or "", value)


def _pairs(el: ET.Element, tag: str) -> dict[str, str]:
    return {nv.get("name", ""): nv.get("value", "") for nv in el.findall(f"{tag}/nvpair")}


def _primitive_facts(p: ET.Element) -> tuple[Any, ...]:
    ops = frozenset(
        (op.get("name"), _seconds(op.get("interval")), _seconds(op.get("timeout")),
         _role(op.get("role")))
        for op in p.findall("operations/op"))
    return (p.get("class"), p.get("provider"), p.get("type"),
            _pairs(p, "instance_attributes"), ops)


def _score(value: str | None) -> str | None:
    return {"inf": "INFINITY", "+INFINITY": "INFINITY"}.get(value or "", value)


def cib_facts(xml: str) -> dict[str, Any]:
    """Everything a configuration means, without the ids of its inner blocks."""
    conf = ET.fromstring(xml).find("configuration")
    assert conf is not None
    facts: dict[str, Any] = {
        "properties": _pairs(conf, "crm_config/cluster_property_set"),
        "defaults": _pairs(conf, "rsc_defaults/meta_attributes"),
        "nodes": sorted((n.get("id"), n.get("uname")) for n in conf.findall("nodes/node")),
        "primitives": {p.get("id"): _primitive_facts(p) for p in conf.iter("primitive")},
        "groups": {g.get("id"): [p.get("id") for p in g.findall("primitive")]
                   for g in conf.iter("group")},
        "clones": {c.get("id"): (c.find("primitive").get("id"),  # type: ignore[union-attr]
                                 _pairs(c, "meta_attributes")) for c in conf.iter("clone")},
        # top-level order means nothing to Pacemaker (and crmsh sorts it)
        "top": sorted(r.get("id", "") for r in conf.find("resources") or []),
    }
    constraints = set()
    for c in conf.find("constraints") or []:
        if c.tag == "rsc_location" and c.get("node"):
            constraints.add(("location", c.get("id"), c.get("rsc"), c.get("node"),
                             c.get("score")))
        elif c.tag == "rsc_location":
            rule = c.find("rule")
            assert rule is not None
            exprs = frozenset((e.get("attribute"), e.get("operation"), e.get("value"))
                              for e in rule.findall("expression"))
            constraints.add(("rule", c.get("id"), c.get("rsc"), _role(rule.get("role")),
                             rule.get("score"), rule.get("score-attribute"), exprs))
        elif c.tag == "rsc_colocation":
            constraints.add(("colocation", c.get("id"), c.get("rsc"), c.get("with-rsc"),
                             _score(c.get("score")), _role(c.get("with-rsc-role"))))
        elif c.tag == "rsc_order":
            constraints.add(("order", c.get("id"), c.get("first"),
                             c.get("first-action", "start"), c.get("then"),
                             c.get("then-action", "start"), c.get("kind", "Mandatory")))
        else:
            raise AssertionError(f"unexpected constraint {c.tag}")
    facts["constraints"] = constraints
    return facts


# --- crm_verify ----------------------------------------------------------------

_EXPORTS: dict[str, Exported] = {}


def _export(scenario: Scenario) -> Exported:
    if scenario.name not in _EXPORTS:
        _EXPORTS[scenario.name] = export(scenario.config(), scenario.host)
    return _EXPORTS[scenario.name]


@pytest.mark.parametrize("scenario", ALL, ids=IDS)
def test_crm_verify_accepts_every_cib(scenario: Scenario, tmp_path: Path) -> None:
    crm_verify = _need("crm_verify")
    cib = tmp_path / "cib.xml"
    cib.write_text(_export(scenario).cib)
    result = commands.run([crm_verify, "--xml-file", str(cib), "-V"], capture_output=True,
                          text=True, timeout=120)
    output = result.stdout + result.stderr
    fencing = 'name="stonith-enabled" value="true"' in cib.read_text()
    # With fencing on, a file without status has nodes never seen: "unclean but cannot be
    # fenced", a warning crm_verify's exit status 78 reports; nothing else may appear.
    assert result.returncode == (78 if fencing else 0), output
    assert not [line for line in output.splitlines() if "error" in line.lower()], output
    # The only warnings are the documented ones: no fencing, no quorum in a file, and
    # with fencing on, nodes that (in a file without status) were never seen.
    for line in output.splitlines():
        assert ("Blind faith" in line or "lack of quorum" in line
                or "is unclean but cannot be fenced" in line
                or (fencing and "Warnings found during check" in line)), line


# --- mapping details ------------------------------------------------------------

def test_seed_is_one_ipaddr2_preferring_n1() -> None:
    result = _export(SEED)
    facts = cib_facts(result.cib)
    assert facts["primitives"] == {"ip-10.77.0.240": (
        "ocf", "heartbeat", "IPaddr2", {"ip": "10.77.0.240", "cidr_netmask": "24", "nic": "eth0"},
        frozenset({("monitor", 10, 20, None), ("start", 0, 20, None), ("stop", 0, 20, None)}))}
    assert facts["constraints"] == {("location", "loc-ip-10.77.0.240-n1", "ip-10.77.0.240",
                                     "n1", "100")}
    assert facts["properties"] == {"stonith-enabled": "false", "no-quorum-policy": "stop"}
    assert facts["defaults"] == {"resource-stickiness": "0"}  # auto_failback on
    assert facts["nodes"] == [("1", "n1"), ("2", "n2")]
    notes = [str(n) for n in result.notes]
    assert any(n.startswith("ha.cf:13: serial /dev/ttyS0: not carried over") for n in notes)
    assert any("sha1 key: not carried over" in n for n in notes)
    assert any("STONITH" in n for n in notes)


def test_sample_examples_map_as_heartbeat_documents_them() -> None:
    bare, http, three_ips, bcast, fs = (cib_facts(_export(s).cib) for s in SAMPLES[:5])
    assert bare["primitives"]["ip-135.9.216.110"][3] == {"ip": "135.9.216.110"}
    assert http["groups"] == {"grp-ip-135.9.216.110": ["ip-135.9.216.110", "http"]}
    assert http["primitives"]["http"][:3] == ("heartbeat", None, "http")
    assert len(three_ips["groups"]["grp-ip-135.9.216.110"]) == 4
    assert bcast["primitives"]["ip-135.9.216.3"][3] == {
        "ip": "135.9.216.3", "cidr_netmask": "28", "nic": "eth0", "broadcast": "135.9.216.12"}
    assert fs["primitives"]["fs-data1"][3] == {
        "device": "/dev/sda1", "directory": "/data1", "fstype": "ext2"}
    assert len(SAMPLE_GROUP_LINES) == 5


@pytest.mark.parametrize("mode,stickiness", [
    (AutoFailback.ON, "0"), (AutoFailback.OFF, "200"), (AutoFailback.LEGACY, "0")])
def test_auto_failback_is_stickiness(mode: AutoFailback, stickiness: str) -> None:
    hacf = WEB.hacf.replace("auto_failback on", f"auto_failback {mode.value}")
    result = export(Scenario("af", hacf, WEB.haresources).config())
    assert cib_facts(result.cib)["defaults"] == {"resource-stickiness": stickiness}
    legacy = [n for n in result.notes if "auto_failback legacy" in n.message]
    assert bool(legacy) == (mode is AutoFailback.LEGACY)


def test_two_groups_with_opposite_homes_and_script_classes() -> None:
    facts = cib_facts(_export(TWO_HOMES).cib)
    homes = {c[2]: c[3] for c in facts["constraints"] if c[0] == "location"}
    assert homes == {"grp-ip-192.0.2.10": "db1", "grp-ip-192.0.2.20": "db2"}
    assert facts["defaults"] == {"resource-stickiness": "200"}  # auto_failback off
    assert facts["primitives"]["postgresql"][:4] == ("lsb", None, "postgresql", {})
    assert facts["primitives"]["nginx"][:4] == ("lsb", None, "nginx", {})
    assert facts["primitives"]["checkout"][:4] == ("heartbeat", None, "checkout",
                                                   {"1": "--fast"})
    notes = [n.message for n in _export(TWO_HOMES).notes]
    assert any("'reload' is dropped" in n for n in notes)
    assert any("ocf:heartbeat:nginx exists" in n for n in notes)


def test_unknown_name_is_heartbeat_class_with_a_note() -> None:
    result = _export(REALISTIC[-1])  # three nodes, "unknownthing"
    assert cib_facts(result.cib)["primitives"]["unknownthing"][:3] == (
        "heartbeat", None, "unknownthing")
    assert any(n.message.startswith("unknownthing: 'unknownthing' is neither")
               and n.line == 1 for n in result.notes)
    assert "two_node" not in result.corosync


def test_ping_nodes_and_ping_group() -> None:
    result = _export(PING)
    facts = cib_facts(result.cib)
    assert facts["clones"]["ping-clone"][0] == "ping"
    ping = facts["primitives"]["ping"]
    assert ping[:3] == ("ocf", "pacemaker", "ping")
    assert ping[3] == {"name": "pingd", "host_list": "192.0.2.254 192.0.2.253",
                       "multiplier": "10000", "dampen": "15s"}
    assert facts["primitives"]["ping-uplinks"][3]["name"] == "pingd_uplinks"
    rules = {c[1]: c for c in facts["constraints"] if c[0] == "rule"}
    for group in ("grp-ip-192.0.2.1", "grp-ip-198.51.100.1"):
        assert rules[f"loc-{group}-ping"][5] == "pingd"
        assert rules[f"loc-{group}-uplinks"][4:] == (
            "10000", None, frozenset({("pingd_uplinks", "gt", "0")}))
    notes = [str(n) for n in result.notes]
    assert any(n.startswith("ha.cf:8: respawn: not carried over") for n in notes)
    assert any(n.startswith("ha.cf:9: apiauth: not carried over") for n in notes)
    assert any("auto_failback legacy" in n for n in notes)
    # portblock twice in one group: distinct ids
    assert facts["groups"]["grp-ip-192.0.2.1"] == [
        "ip-192.0.2.1", "portblock-tcp", "xinetd-tftp", "portblock-tcp-2"]
    assert facts["primitives"]["portblock-tcp-2"][3] == {
        "protocol": "tcp", "portno": "25,587", "action": "unblock"}


def test_ipv6_and_bare_ip() -> None:
    result = _export(IPV6)
    facts = cib_facts(result.cib)
    prims = facts["primitives"]
    assert prims["ip6-2001-db8-80"][2:4] == (
        "IPv6addr", {"ipv6addr": "2001:db8::80", "cidr_netmask": "64", "nic": "eth0"})
    assert prims["ip6-2001-db8-81"][3] == {"ipv6addr": "2001:db8::81"}
    assert prims["ip-135.9.216.3"][3] == {"ip": "135.9.216.3", "cidr_netmask": "28",
                                          "nic": "eth0", "broadcast": "135.9.216.12"}
    delay = prims["delay-30"]
    assert delay[3] == {"startdelay": "30", "stopdelay": "5"}
    assert ("start", 0, 60, None) in delay[4]  # outlasts the 30 s delay
    assert facts["defaults"] == {"resource-stickiness": "200"}  # nice_failback on = off
    notes = [n.message for n in result.notes]
    assert any("no /bits given" in n for n in notes)
    assert any(n.startswith("crc: authenticates nothing") for n in notes)


def test_storage_drbd_lvm_ocf_wrapper_and_legacy_agents() -> None:
    result = _export(STORAGE)
    facts = cib_facts(result.cib)
    assert facts["clones"]["drbd-r0-clone"] == ("drbd-r0", {
        "promotable": "true", "promoted-max": "1", "promoted-node-max": "1",
        "clone-max": "2", "clone-node-max": "1", "notify": "true"})
    group = "grp-fs-srv-nfs"
    assert ("colocation", f"col-{group}-with-drbd-r0-clone", group, "drbd-r0-clone",
            "INFINITY", "Promoted") in facts["constraints"]
    assert ("order", f"ord-drbd-r0-clone-then-{group}", "drbd-r0-clone", "promote", group,
            "start", "Mandatory") in facts["constraints"]
    # a line holding only DRBD: the promoted role prefers the line's node
    assert ("rule", "loc-drbd-r2-clone-store1", "drbd-r2-clone", "Promoted", "100", None,
            frozenset({("#uname", "eq", "store1")})) in facts["constraints"]
    prims = facts["primitives"]
    assert prims["lvm-vgdata"][2:4] == ("LVM-activate", {"vgname": "vgdata",
                                                         "vg_access_mode": "system_id"})
    assert prims["exportfs-nfsroot"][:4] == ("ocf", "heartbeat", "exportfs", {
        "clientspec": "192.0.2.0/24", "directory": "/srv/nfs", "fsid": "1",
        "options": "rw,no_root_squash"})
    assert prims["audiblealarm"][3] == {"nodelist": "store1 store2"}
    assert prims["was"][3] == {"port": "9080"}
    notes = [str(n) for n in result.notes]
    assert any(n.startswith("ha.cf:3: watchdog: not carried over") for n in notes)
    assert any(n.startswith("ha.cf:4: stonith_host: exported as stonith:external/ipmi")
               for n in notes)
    fence = prims["fence-external-ipmi-all"]
    assert fence[:4] == ("stonith", None, "external/ipmi", {
        "hostname": "node1", "ipaddr": "10.0.0.1", "userid": "admin", "passwd": "secret",
        "interface": "lanplus", "pcmk_host_list": "store1 store2",
        "pcmk_host_check": "static-list"})
    assert facts["properties"]["stonith-enabled"] == "true"


def test_every_ocf_parameter_is_known_to_the_installed_agent() -> None:
    """Parameter names against `crm_resource --show-metadata` (resource-agents)."""
    crm_resource = _need("crm_resource")
    seen: dict[str, set[str]] = {}
    for scenario in ALL:
        for p in _export(scenario).plan.primitives():
            if p.standard == "ocf" and p.provider in ("heartbeat", "pacemaker"):
                seen.setdefault(p.agent, set()).update(name for name, _ in p.params)
    assert len(seen) >= 20
    for agent, names in sorted(seen.items()):
        result = commands.run([crm_resource, "--show-metadata", agent], capture_output=True,
                              text=True, timeout=60, env={**os.environ, "OCF_ROOT":
                                                            "/usr/lib/ocf"})
        if result.returncode != 0:
            pytest.skip(f"{agent}: no meta-data here (resource-agents not installed?)")
        known = {p.get("name") for p in ET.fromstring(result.stdout).iter("parameter")}
        assert names <= known, (agent, names - known)


def test_ids_are_unique_and_valid() -> None:
    for scenario in ALL:
        plan = _export(scenario).plan
        ids = [p.id for p in plan.primitives()]
        ids += [r.id for r in plan.resources if isinstance(r, Group | Clone)]
        ids += [c.id for c in plan.constraints]
        assert len(ids) == len(set(ids)), scenario.name
        for found in ids:
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", found), found


# --- the pcs and crmsh scripts say what the CIB says ---------------------------

@pytest.mark.parametrize("scenario", ALL, ids=IDS)
def test_scripts_name_every_id_and_parameter(scenario: Scenario) -> None:
    result = _export(scenario)
    for p in result.plan.primitives():
        for script in (result.pcs, result.crmsh):
            # pcs names a fence agent without its "stonith:" class
            agent = p.type if script is result.pcs and p.standard == "stonith" else p.agent
            assert re.search(rf"(create|primitive) {re.escape(p.id)} {re.escape(agent)}\b",
                             script), (p.id, script)
        for name, value in p.params:
            assert f"{name}={value}" in result.pcs or f"'{name}={value}'" in result.pcs
    for c in result.plan.constraints:
        assert c.id in result.pcs and c.id in result.crmsh


REPLAYED = [SEED, SAMPLES[-1], *REALISTIC]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", REPLAYED, ids=[s.name for s in REPLAYED])
def test_pcs_script_builds_the_same_configuration(scenario: Scenario, tmp_path: Path) -> None:
    _need("pcs")
    cib = _empty_cib(tmp_path / "pcs.xml")
    script = tmp_path / "pcs.sh"
    script.write_text(_export(scenario).pcs)
    result = commands.run(["sh", str(script), str(cib)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    built, wanted = cib_facts(cib.read_text()), cib_facts(_export(scenario).cib)
    wanted["nodes"] = built["nodes"] = []  # pcs -f cannot add nodes; Corosync does that
    assert built == wanted


@pytest.mark.slow
@pytest.mark.parametrize("scenario", REPLAYED, ids=[s.name for s in REPLAYED])
def test_crmsh_text_builds_the_same_configuration(scenario: Scenario, tmp_path: Path) -> None:
    crm = _need("crm")
    cib = _empty_cib(tmp_path / "crm.xml")
    (tmp_path / "crmsh.txt").write_text(_export(scenario).crmsh)
    # -F: crmsh refuses agents it cannot find here (DRBD, scripts) unless forced.
    result = commands.run([crm, "-F", "configure", "load", "update", "crmsh.txt"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "CIB_file": str(cib)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert cib_facts(cib.read_text()) == cib_facts(_export(scenario).cib)


# --- the CLI ------------------------------------------------------------------------

def test_cli_prints_the_cib_and_lists_notes(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    directory = SEED.write(tmp_path / "ha.d")
    assert hbctl.main(["export", "pacemaker", "--config-dir", str(directory),
                       "--no-probe"]) == 0
    out, err = capsys.readouterr()
    assert cib_facts(out) == cib_facts(_export(SEED).cib)
    assert f"{directory}/ha.cf:13: serial /dev/ttyS0: not carried over" in err
    assert f"{directory}/authkeys: sha1 key: not carried over" in err
    assert all(line.startswith(str(directory)) for line in err.splitlines())


@pytest.mark.parametrize("fmt,marker", [
    ("pcs", "pcs -f \"$cib\" resource create"), ("crmsh", "primitive ip-10.77.0.240"),
    ("corosync", "two_node: 1"), ("cib", "<cib ")])
def test_cli_formats(fmt: str, marker: str, tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    directory = SEED.write(tmp_path / "ha.d")
    assert hbctl.main(["export", "pacemaker", "--config-dir", str(directory), "--no-probe",
                       "--format", fmt]) == 0
    assert marker in capsys.readouterr().out


def test_cli_output_dir_and_corosync_file(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    directory = STORAGE.write(tmp_path / "ha.d")
    out_dir = tmp_path / "out"
    corosync = tmp_path / "corosync.conf"
    assert hbctl.main(["export", "pacemaker", "--config-dir", str(directory), "--no-probe",
                       "--output-dir", str(out_dir), "--corosync", str(corosync)]) == 0
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["cib.xml", "corosync.conf", "crmsh.txt", "pcs.sh"]
    assert os.access(out_dir / "pcs.sh", os.X_OK)
    assert corosync.read_text() == (out_dir / "corosync.conf").read_text()
    out, err = capsys.readouterr()
    assert out.split() == [str(out_dir / n) for n in
                           ("cib.xml", "pcs.sh", "crmsh.txt", "corosync.conf")]
    # no instance file in this directory: said so, not dropped silently
    assert "instance file conf/OCF/exportfs/nfsroot not found" in err


def test_cli_reads_ocf_instance_files(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    directory = STORAGE.write(tmp_path / "ha.d")
    instance = directory / "conf" / "OCF" / "exportfs" / "nfsroot"
    instance.parent.mkdir(parents=True)
    instance.write_text("OCF_RESKEY_directory=/srv/nfs\nOCF_RESKEY_clientspec=*\n")
    assert hbctl.main(["export", "pacemaker", "--config-dir", str(directory), "--no-probe",
                       "--format", "crmsh"]) == 0
    out, err = capsys.readouterr()
    assert "params directory=/srv/nfs clientspec=\"*\"" in out
    assert "not found" not in err


def test_cli_node_option_assigns_the_lone_ucast_peer(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = IPV6.write(tmp_path / "ha.d")
    assert hbctl.main(["export", "pacemaker", "--config-dir", str(directory), "--no-probe",
                       "--node", "left", "--format", "corosync"]) == 0
    out = capsys.readouterr().out
    right = out.split("name: right")[1]
    assert "ring0_addr: 203.0.113.2" in right


def test_cli_probes_init_scripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from hbd.cli import export_pacemaker

    init = tmp_path / "init.d"
    init.mkdir()
    (init / "postgresql").write_text("#!/bin/sh\n")
    monkeypatch.setattr(export_pacemaker, "INIT_DIR", init)
    monkeypatch.setattr(export_pacemaker, "OCF_DIR", tmp_path / "no-ocf")
    directory = TWO_HOMES.write(tmp_path / "ha.d")
    (directory / "resource.d").mkdir()
    (directory / "resource.d" / "checkout").write_text("#!/bin/sh\n")
    assert hbctl.main(["export", "pacemaker", "--config-dir", str(directory),
                       "--format", "crmsh"]) == 0
    out, err = capsys.readouterr()
    assert "primitive postgresql lsb:postgresql" in out
    assert "primitive checkout heartbeat:checkout" in out
    assert "primitive nginx heartbeat:nginx" in out  # not in this init.d
    assert "'nginx' is neither a known Heartbeat agent" in err


def test_cli_bad_config_exits_1_with_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = Scenario("bad", SEED.hacf.replace("deadtime 5", "deadtime soon"),
                   "n1 IPaddr2::10.77.0.240/24/eth0\nn3 apache\n", SEED.authkeys)
    directory = bad.write(tmp_path / "ha.d")
    assert hbctl.main(["export", "pacemaker", "--config-dir", str(directory)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{directory}/ha.cf:4: deadtime: bad time value 'soon'" in err
    assert f"{directory}/haresources:2: node 'n3' is not a node of ha.cf" in err


def test_cli_missing_directory_exits_1(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert hbctl.main(["export", "pacemaker", "--config-dir", str(tmp_path / "none")]) == 1
    assert "cannot read the file" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["export"], ["export", "heartbeat"], ["export", "pacemaker", "--format", "yaml"]])
def test_cli_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        hbctl.main(argv)
    assert exc.value.code == 2


def test_cli_unwritable_output_exits_1(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    directory = SEED.write(tmp_path / "ha.d")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert hbctl.main(["export", "pacemaker", "--config-dir", str(directory), "--no-probe",
                       "--output-dir", str(blocker / "sub")]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_hostview_default_is_pure() -> None:
    """Without a HostView nothing is looked up: an init-script name is a heartbeat script."""
    result = export(TWO_HOMES.config(), HostView())
    assert cib_facts(result.cib)["primitives"]["postgresql"][0] == "heartbeat"


@pytest.mark.slow
def test_cib_pushes_into_a_newer_live_cib_with_pcs(tmp_path: Path) -> None:
    """The documented way in: `pcs cluster cib-push cib.xml --config` keeps the live epoch."""
    _need("pcs")
    live = _empty_cib(tmp_path / "live.xml")
    live.write_text(live.read_text().replace('epoch="1"', 'epoch="7"', 1))
    cib = tmp_path / "cib.xml"
    cib.write_text(_export(STORAGE).cib)
    result = commands.run(["pcs", "-f", str(live), "cluster", "cib-push", str(cib), "--config"],
                          capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert cib_facts(live.read_text()) == cib_facts(cib.read_text())


def test_stonith_host_and_fence_agents_become_stonith_resources(tmp_path: Path) -> None:
    """stonith_host n2 ...: only n2 uses it and fences n1; hbd.conf agents fence anyone."""
    from dataclasses import replace as dc_replace

    from hbd.core.hbdconf import parse_hbdconf
    from tests.simnet import make_config

    hbd, problems = parse_hbdconf("fence_agent fence_virsh ip=192.0.2.9 username=root "
                                  "password=pw2\nfence_race_delay 5\n")
    assert not problems.errors
    config = dc_replace(make_config("n1", haresources="n1 10.77.0.240\n",
                                    extra="stonith_host n2 external/libvirt n1 qemu:///x hard\n"),
                        hbd=hbd)
    result = export(config, HostView())
    facts = cib_facts(result.cib)
    prims = facts["primitives"]
    assert prims["fence-external-libvirt-n2"][:4] == ("stonith", None, "external/libvirt", {
        "hostlist": "n1", "hypervisor_uri": "qemu:///x", "reboot_method": "hard",
        "pcmk_host_list": "n1", "pcmk_host_check": "static-list"})
    assert prims["fence-fence-virsh-1"][:4] == ("stonith", None, "fence_virsh", {
        "ip": "192.0.2.9", "username": "root", "password": "pw2", "pcmk_host_list": "n1 n2"})
    assert ("location", "ban-fence-external-libvirt-n2-n1", "fence-external-libvirt-n2", "n1",
            "-INFINITY") in facts["constraints"]
    assert facts["properties"]["stonith-enabled"] == "true"
    assert facts["properties"]["priority-fencing-delay"] == "5s"
    assert "pcs stonith create" not in result.pcs  # inside the script: no "pcs " prefix
    assert "stonith create fence-fence-virsh-1 fence_virsh" in result.pcs
    crm_verify = _need("crm_verify")
    cib = tmp_path / "cib.xml"
    cib.write_text(result.cib)
    verify = commands.run([crm_verify, "--xml-file", str(cib), "-V"], capture_output=True,
                            text=True, timeout=120)
    assert verify.returncode in (0, 78), verify
    for line in (verify.stdout + verify.stderr).splitlines():
        assert ("lack of quorum" in line or "unclean but cannot be fenced" in line
                or "Warnings found" in line), line
