"""hbctl against hbd's bus service on a private system bus (real polkitd).

Most commands run in-process (`main(argv)` with the bus address in the
environment); the ones whose point is the process (another user, exit
status of the real entry point) run as subprocesses.  The cl_status
subcommands must print what Heartbeat's cl_status prints (cl_status.c:
bare status words, tab-indented link lists, the hbstatus sentences) with
its 0/1 answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hbd.cli.hbctl import main
from hbd.control import GroupInfo, LinkInfo, NodeInfo, PingInfo, TrackedLinkInfo
from hbd.errors import Busy
from tests.infra import commands
from tests.infra.privbus import PrivateBus
from tests.test_bus import SNAP, VIP, FakeController, ServiceThread, install_hbd_files

ROOT = Path(__file__).resolve().parent.parent
# n2 dead, its link down, nobody holds the group: exercises the "no" answers too
DOWN = replace(SNAP, nodes=(SNAP.nodes[0], NodeInfo("n2", "dead")),
               links=(SNAP.links[0], LinkInfo("n2", "eth0", "dead")))


@pytest.fixture(scope="module")
def served(private_bus: PrivateBus) -> Iterator[ServiceThread]:
    install_hbd_files(private_bus)
    svc = ServiceThread(private_bus.address)
    try:
        svc.wait_owned()
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def fake(served: ServiceThread, private_bus: PrivateBus,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeController]:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", private_bus.address)
    served.controller.calls.clear()
    served.controller.fail.clear()
    yield served.controller
    served.publish(SNAP)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        rc = int(exc.code or 0)
    out = capsys.readouterr()
    return rc, out.out, out.err


def hbctl_as(bus: PrivateBus, user: str, *argv: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "hbd.cli.hbctl", *argv]
    return bus.run_as(user, cmd, env={"PYTHONPATH": str(ROOT)})


# --- reading ---------------------------------------------------------------------------


def test_status_table(fake: FakeController, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "status")
    assert rc == 0
    assert out.splitlines()[0].endswith("on n1: holding all resources")
    assert out.splitlines()[1:] == [
        "",
        "NODE            STATUS  LINKS",
        "n1 (this node)  active  eth0:up",
        "n2              active  eth0:up",
        "",
        "GROUP                HOME  OWNER  STATE",
        f"{VIP}  n1    n1     running",
    ]


def test_status_shows_monitoring_through_the_bus(served: ServiceThread,
                                                fake: FakeController,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    at = 1_800_000_000.25
    failed = replace(SNAP, groups=(GroupInfo(VIP, "n1", "n2", "stopped", 2,
                                             "failed: udpsvc: status: dead (rc=1)", at,
                                             "monitor failed: udpsvc: status: dead"),))
    served.publish(failed)
    rc, out, _ = run(capsys, "status")
    assert rc == 0
    lines = out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("GROUP")))
    assert lines[header].split() == ["GROUP", "HOME", "OWNER", "STATE", "FAILS", "LAST",
                                     "MONITOR"]
    assert lines[header + 1].split()[:5] == [VIP, "n1", "n2", "stopped", "2"]
    assert "failed: udpsvc: status: dead (rc=1) at" in lines[header + 1]
    assert lines[header + 2] == f"{VIP}: not on this node: monitor failed: udpsvc: status: dead"
    status = json.loads(run(capsys, "status", "--json")[1])
    group = status["groups"][0]
    assert (group["fail_count"], group["last_monitor_at"], group["unfit"]) == (
        2, at, "monitor failed: udpsvc: status: dead")


def test_status_shows_tracked_links_through_the_bus(served: ServiceThread,
                                                   fake: FakeController,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    lost = replace(SNAP, groups=(GroupInfo(VIP, "n1", "n2", "stopped",
                                           unfit="eth0 lost carrier"),),
                   tracked_links=(TrackedLinkInfo("eth0", "no-carrier", (VIP,)),))
    served.publish(lost)
    rc, out, _ = run(capsys, "status")
    assert rc == 0
    lines = out.splitlines()
    assert f"{VIP}: not on this node: eth0 lost carrier" in lines
    assert lines[-2:] == ["TRACKED LINK  STATE       GROUPS", f"eth0          no-carrier  {VIP}"]
    status = json.loads(run(capsys, "status", "--json")[1])
    assert status["tracked_links"] == [{"interface": "eth0", "state": "no-carrier",
                                        "groups": [VIP]}]
    # the peer refused it: still running here, and hbctl says so
    served.publish(replace(lost, groups=(GroupInfo(VIP, "n1", "n1", "running",
                                                   unfit="eth0 lost carrier"),)))
    out = run(capsys, "status")[1]
    assert (f"{VIP}: unfit here, kept running (nobody else can take it): eth0 lost carrier"
            in out.splitlines())


def test_json_everywhere(fake: FakeController, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--json", "status"], ["status", "--json"]):
        rc, out, _ = run(capsys, *argv)
        status = json.loads(out)
        assert rc == 0 and status["node_name"] == "n1" and status["resources_held"] == "all"
        assert status["groups"] == [{"key": VIP, "home": "n1", "owner": "n1",
                                     "state": "running", "fail_count": 0,
                                     "last_monitor": "", "last_monitor_at": 0.0,
                                     "unfit": ""}]
    assert json.loads(run(capsys, "nodes", "--json")[1]) == [
        {"name": "n1", "status": "active", "local": True},
        {"name": "n2", "status": "active", "local": False}]
    assert json.loads(run(capsys, "links", "--json")[1])[1] == {
        "node": "n2", "link": "eth0", "status": "up"}
    assert json.loads(run(capsys, "groups", "--json")[1])[0]["owner"] == "n1"
    assert json.loads(run(capsys, "rscstatus", "--json")[1]) == {"resources_held": "all"}
    assert json.loads(run(capsys, "nodestatus", "n2", "--json")[1]) == {
        "node": "n2", "status": "active"}
    assert json.loads(run(capsys, "takeover", "--json")[1]) == {
        "ok": True, "command": "takeover", "scope": "all"}


def test_tables(served: ServiceThread, fake: FakeController,
                capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "links")[1].splitlines() == [
        "NODE  LINK  STATUS", "n1    eth0  up", "n2    eth0  up"]
    assert run(capsys, "groups")[1].splitlines()[1].split() == [VIP, "n1", "n1", "running"]
    served.publish(replace(DOWN, groups=(replace(SNAP.groups[0], owner="", state="stopped"),)))
    assert run(capsys, "groups")[1].splitlines()[1].split() == [VIP, "n1", "-", "stopped"]
    assert run(capsys, "nodes")[1].splitlines()[2].split() == ["n2", "dead", "eth0:dead"]


def test_cl_status_compatible(served: ServiceThread, fake: FakeController,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "hbstatus") == (0, "Heartbeat is running on this machine.\n", "")
    assert run(capsys, "listnodes")[:2] == (0, "n1\nn2\n")
    assert run(capsys, "listnodes", "-m")[1] == "The nodes are as follow:\nn1\nn2\n"
    assert run(capsys, "nodestatus", "n2")[:2] == (0, "active\n")
    assert run(capsys, "nodestatus", "-m", "n1")[1] == "The cluster node n1 is active\n"
    assert run(capsys, "listhblinks", "n1")[:2] == (0, "\teth0\n")
    assert run(capsys, "listhblinks", "-v", "n2")[1] == "\teth0\tup\n"
    assert run(capsys, "hblinkstatus", "n2", "eth0")[:2] == (0, "up\n")
    assert run(capsys, "rscstatus")[:2] == (0, "all\n")
    assert run(capsys, "rscstatus", "-m")[1] == "This node is holding all resources.\n"
    served.publish(DOWN)
    assert run(capsys, "nodestatus", "n2")[:2] == (1, "dead\n")  # cl_status: 1 = node down
    assert run(capsys, "hblinkstatus", "n2", "eth0")[:2] == (1, "dead\n")
    rc, out, err = run(capsys, "nodestatus", "n9")
    assert (rc, out) == (2, "") and "incorrect node name" in err
    assert run(capsys, "hblinkstatus", "n2", "eth7")[0] == 2



def test_ping_nodes_as_cl_status_shows_them(served: ServiceThread, fake: FakeController,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    served.publish(replace(SNAP, ping_nodes=(PingInfo("10.9.0.1", "ping"),
                                             PingInfo("gw", "dead"))))
    assert run(capsys, "listnodes")[:2] == (0, "n1\nn2\n10.9.0.1\ngw\n")
    assert run(capsys, "listnodes", "-p")[:2] == (0, "10.9.0.1\ngw\n")
    assert run(capsys, "listnodes", "-n")[:2] == (0, "n1\nn2\n")
    assert run(capsys, "listnodes", "-p", "-n")[0] == 2  # cl_status takes one or the other
    verbose = run(capsys, "listnodes", "-v", "-p")[1]
    assert verbose == "\n10.9.0.1\tping\t(nodetype: ping)\n\ngw\tdead\t(nodetype: ping)\n"
    assert "(nodetype: normal)" in run(capsys, "listnodes", "-v")[1]
    assert run(capsys, "nodestatus", "10.9.0.1")[:2] == (0, "ping\n")
    assert run(capsys, "nodestatus", "gw")[:2] == (1, "dead\n")
    assert json.loads(run(capsys, "listnodes", "--json", "-p")[1]) == ["10.9.0.1", "gw"]
    rows = [line.split() for line in run(capsys, "nodes")[1].splitlines()]
    assert ["10.9.0.1", "(ping", "node)", "ping"] in rows
    assert ["gw", "(ping", "node)", "dead"] in rows
    status = json.loads(run(capsys, "status", "--json")[1])
    assert status["ping_nodes"] == [{"name": "10.9.0.1", "status": "ping"},
                                    {"name": "gw", "status": "dead"}]

# --- commands --------------------------------------------------------------------------


def test_commands_reach_the_daemon(fake: FakeController,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["takeover"], ["takeover", "foreign"], ["release"], ["standby", "local"],
                 ["reload"], ["cleanup", VIP]):
        assert run(capsys, *argv) == (0, "", "")
    assert fake.calls == [("takeover", "all"), ("takeover", "foreign"), ("release", "all"),
                          ("release", "local"), ("reload", ""), ("cleanup", VIP)]


def test_refusals_exit_1(fake: FakeController, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "takeover", "sideways")
    assert (rc, out) == (1, "") and err.startswith("hbctl: InvalidScope: scope must be one of")
    fake.fail["release"] = Busy("a standby exchange is already under way")
    rc, out, err = run(capsys, "--json", "standby")
    assert rc == 1 and json.loads(out) == {
        "ok": False, "error": "Busy", "name": "org.linuxha.hbd1.Error.Busy",
        "message": "a standby exchange is already under way"}
    assert fake.calls == []


def test_usage_exit_2(fake: FakeController, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "nodestatus")[0] == 2
    assert run(capsys, "frobnicate")[0] == 2
    assert run(capsys, "takeover", "all", "extra")[0] == 2
    # the configuration commands registered by other modules are still there
    assert run(capsys, "export", "--help")[0] == 0
    assert run(capsys, "config", "--help")[0] == 0


def test_unprivileged_exit_4(private_bus: PrivateBus, fake: FakeController) -> None:
    res = hbctl_as(private_bus, "hbdtest", "takeover")
    assert res.returncode == 4, res
    assert res.stderr.startswith("hbctl: NotAuthorized:")
    res = hbctl_as(private_bus, "hbdtest", "status")  # reading is free
    assert res.returncode == 0 and "n1 (this node)" in res.stdout
    assert fake.calls == []


# --- no daemon -------------------------------------------------------------------------


def test_daemon_down_exit_3(capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    with PrivateBus(with_polkit=False) as empty:  # a bus, but no hbd on it
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", empty.address)
        rc, _, err = run(capsys, "status")
        assert rc == 3 and "ServiceUnknown" in err and "is hbd running?" in err
        assert run(capsys, "takeover")[0] == 3
        assert run(capsys, "nodestatus", "n1")[0] == 3
        # cl_status hbstatus answers 1 and its sentence: scripts test exactly that
        assert run(capsys, "hbstatus") == (1, "Heartbeat is stopped on this machine.\n", "")
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")  # no bus
    rc, out, _ = run(capsys, "--json", "rscstatus")
    assert rc == 3 and json.loads(out)["error"] == "NoServer"
    res = commands.run([sys.executable, "-m", "hbd.cli.hbctl", "links"], capture_output=True,
                       text=True, check=False,
                       env={**os.environ, "PYTHONPATH": commands.pythonpath()})
    assert res.returncode == 3 and "Traceback" not in res.stderr


def test_status_shows_realtime_and_loop_lag_through_the_bus(
        served: ServiceThread, fake: FakeController,
        capsys: pytest.CaptureFixture[str]) -> None:
    lag = ((0.0005, 120), (0.001, 3), (0.05, 0), (0.5, 1), (float("inf"), 0))
    served.publish(replace(SNAP, realtime="SCHED_RR 1, memory locked", loop_lag_max=0.2314,
                           loop_lag=lag))
    rc, out, _ = run(capsys, "status")
    assert rc == 0
    assert out.splitlines()[-2:] == [
        "realtime: SCHED_RR 1, memory locked",
        "loop lag: worst 231.4 ms; timer runs by lateness: <=0.5ms 120, <=1ms 3, <=500ms 1"]
    status = json.loads(run(capsys, "status", "--json")[1])
    assert status["realtime"] == "SCHED_RR 1, memory locked"
    assert status["loop_lag"] == {"max_s": 0.2314, "buckets": [
        [0.0005, 120], [0.001, 3], [0.05, 0], [0.5, 1], [None, 0]]}
