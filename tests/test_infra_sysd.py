"""Prove the throwaway systemd container: boot, units, notify, journal, veth."""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.infra.fixtures_sysd import ContainerFactory
from tests.infra.sysd import Container

VENV_PYTHON = str(Path(sys.prefix) / "bin" / "python")

NOTIFY_SCRIPT = """\
import os, sys, time
from systemd import daemon, journal
journal.send("hbd notify test starting", HBD_TEST_FIELD="notify-ok", PRIORITY="6")
while not os.path.exists("/run/hbd-test/go"):   # the test decides when we are ready
    time.sleep(0.02)
daemon.notify("READY=1")
journal.send("hbd notify test ready", HBD_TEST_FIELD="ready")
while True:
    time.sleep(3600)
"""

NOTIFY_UNIT = f"""\
[Unit]
Description=hbd infra Type=notify probe

[Service]
Type=notify
ExecStart={VENV_PYTHON} /usr/local/lib/hbd-test/notify.py
TimeoutStartSec=60
"""


def poll(cond: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def host_mounts() -> set[str]:
    return {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}


@pytest.fixture(scope="module")
def host_sentinels() -> Iterator[list[Path]]:
    """Files in the host's /tmp and /run that a leaking tmpfiles would delete."""
    token = uuid.uuid4().hex[:8]
    paths = [Path(f"/tmp/hbd-sysd-sentinel-{token}"), Path(f"/run/hbd-sysd-sentinel-{token}")]
    for p in paths:
        p.write_text("must survive\n")
    yield paths
    for p in paths:
        p.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def node(systemd_container: ContainerFactory, host_sentinels: list[Path]) -> Container:
    return systemd_container("hbdn1", "node1")


def test_boots_running_without_failed_units(node: Container) -> None:
    state = node.wait_booted(30)
    assert state in ("running", "degraded")
    assert node.failed_units() == []
    assert state == "running"
    assert node.boot_seconds is not None and node.boot_seconds < 15
    print(f"container boot took {node.boot_seconds:.2f}s")
    assert node.run(["hostname"]).stdout.strip() == "node1"
    assert node.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    assert node.run(["systemctl", "is-active", "systemd-journald", "dbus", "rsyslog"]).stdout \
        .split() == ["active", "active", "active"]


def test_transient_unit_with_systemd_run(node: Container) -> None:
    res = node.run(["systemd-run", "--wait", "--quiet", "--unit=hbd-transient",
                    "-p", "Type=oneshot", "/bin/sh", "-c", "echo transient-ran"])
    assert res.returncode == 0
    poll(lambda: any(e.get("MESSAGE") == "transient-ran"
                     for e in node.journal("-u", "hbd-transient.service")),
         what="transient unit output in journal")


def test_notify_unit_active_only_after_ready(node: Container) -> None:
    node.install_file("/usr/local/lib/hbd-test/notify.py", NOTIFY_SCRIPT)
    node.install_file("/etc/systemd/system/hbd-notify.service", NOTIFY_UNIT)
    node.systemctl("daemon-reload")
    node.systemctl("start", "--no-block", "hbd-notify.service")

    def state() -> str:
        return node.systemctl("is-active", "hbd-notify.service", check=False).stdout.strip()

    poll(lambda: state() == "activating", what="activating")
    poll(lambda: any(e.get("HBD_TEST_FIELD") == "notify-ok"
                     for e in node.journal("-u", "hbd-notify.service")),
         what="journal field from the script")
    time.sleep(0.3)  # the script is running but has not said READY=1
    assert state() == "activating"
    node.install_file("/run/hbd-test/go", "")
    poll(lambda: state() == "active", what="active after READY=1")
    poll(lambda: any(e.get("HBD_TEST_FIELD") == "ready"
                     for e in node.journal("-u", "hbd-notify.service")), what="ready entry")
    main_pid = node.systemctl("show", "-P", "MainPID", "hbd-notify.service").stdout.strip()
    assert main_pid not in ("", "0")


def test_container_tmp_is_private(node: Container, host_sentinels: list[Path]) -> None:
    node.run(["sh", "-c", "echo inside > /tmp/hbd-inside-only"])
    assert not Path("/tmp/hbd-inside-only").exists()
    for p in host_sentinels:
        assert node.run(["test", "-e", str(p)], check=False).returncode == 1  # fresh tmpfs
        assert p.exists()


def test_two_containers_ping_over_veth(
    systemd_container: ContainerFactory, node: Container,
) -> None:
    peer = systemd_container("hbdn2", "node2")
    a, b = node.link_to(peer, "10.77.0.1", "10.77.0.2")
    assert a in node.run(["ip", "-o", "link"]).stdout
    assert b in peer.run(["ip", "-o", "link"]).stdout
    assert a not in Path("/proc/net/dev").read_text()  # nothing in the host netns
    res = node.run(["ping", "-c", "1", "-W", "3", "10.77.0.2"], check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    res = peer.run(["ping", "-c", "1", "-W", "3", "10.77.0.1"], check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_stop_leaves_nothing_behind(host_sentinels: list[Path]) -> None:
    before = host_mounts()
    c = Container.start("hbdn3", "node3")
    workdir, cgroup, pid = c.workdir, c.cgroup, c.pid
    assert workdir is not None and cgroup is not None
    c.stop()
    c.stop()  # idempotent
    assert not workdir.exists()
    assert not cgroup.exists()
    assert not os.path.exists(f"/proc/{pid}")
    # other test suites may add /run/netns/* concurrently; ours never mount on the host
    new = {m for m in host_mounts() - before if not m.startswith("/run/netns/")}
    assert new == set()
    assert not any("hbd-sysd" in m for m in host_mounts())
    for p in host_sentinels:
        assert p.read_text() == "must survive\n"
