"""hbd's D-Bus service on a private system bus with the real polkitd.

The service (hbd.bus.service.BusService) runs in this process, in a loop
thread, in front of a fake Controller; clients are busctl / dbus-send /
gdbus run as root or as the namespace's test users, so the bus policy
(dbus/org.linuxha.hbd1.conf), the polkit action (polkit/) and the polkit
rule example are the shipped files, checked by the real daemons.

The helpers here (FakeController, LoopThread, ServiceThread, SignalWatcher)
are also used by tests/test_hbctl.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType, MessageType
from dbus_next.message import Message

from hbd.bus import client
from hbd.bus.names import (
    BUS_NAME,
    GROUP_IFACE,
    MANAGER_IFACE,
    NODE_IFACE,
    OBJECT_PATH,
    escape_label,
    group_path,
    node_path,
    unescape_label,
)
from hbd.bus.service import BusService
from hbd.control import GroupInfo, LinkInfo, NodeInfo, Snapshot, TrackedLinkInfo
from hbd.errors import Busy, ConfigError, HbdError
from tests.infra import commands
from tests.infra.privbus import PrivateBus

ROOT = Path(__file__).resolve().parent.parent
VIP = "10.77.0.240/24/eth0"
ERR = "org.linuxha.hbd1.Error."
T = TypeVar("T")

SNAP = Snapshot(
    node_name="n1",
    nodes=(NodeInfo("n1", "active", True), NodeInfo("n2", "active")),
    links=(LinkInfo("n1", "eth0", "up"), LinkInfo("n2", "eth0", "up")),
    resources_held="all",
    groups=(GroupInfo(VIP, "n1", "n1", "running"),),
)


# --- harness ---------------------------------------------------------------------------


class FakeController:
    """The Controller protocol, recording commands; `fail[method]` is raised instead."""

    def __init__(self, snap: Snapshot = SNAP) -> None:
        self.snap = snap
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[str, Exception] = {}
        self._subs: list[Callable[[Snapshot], None]] = []

    def snapshot(self) -> Snapshot:
        return self.snap

    async def _do(self, method: str, arg: str = "") -> None:
        if method in self.fail:
            raise self.fail[method]
        self.calls.append((method, arg))

    async def takeover(self, scope: str) -> None:
        await self._do("takeover", scope)

    async def release(self, scope: str) -> None:
        await self._do("release", scope)

    async def reload(self) -> None:
        await self._do("reload")

    async def cleanup(self, group: str) -> None:
        await self._do("cleanup", group)

    def subscribe(self, callback: Callable[[Snapshot], None]) -> Callable[[], None]:
        self._subs.append(callback)
        return lambda: self._subs.remove(callback)

    def publish(self, snap: Snapshot) -> None:
        """Must run in the service's loop, like the daemon's own publishing."""
        self.snap = snap
        for callback in list(self._subs):
            callback(snap)


class LoopThread:
    """An asyncio loop in a daemon thread; `run(coro)` waits for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        async def wrapped() -> T:
            return fn()

        return self.run(wrapped())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class ServiceThread:
    """A BusService (the real one) serving a FakeController from a LoopThread."""

    def __init__(self, address: str, controller: FakeController | None = None) -> None:
        self.controller = controller or FakeController()
        self.thread = LoopThread()
        self.service: BusService = self.thread.call(
            lambda: BusService(self.controller, bus_address=address))
        self.thread.run(self.service.start())

    def publish(self, snap: Snapshot) -> None:
        self.thread.call(lambda: self.controller.publish(snap))

    def wait_owned(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.service.owned:
            assert time.monotonic() < deadline, "BusService did not (re)acquire its name"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.thread.loop.is_closed():
            return
        self.thread.run(self.service.stop())
        self.thread.close()


class SignalWatcher:
    """A second connection collecting every signal hbd sends (match on its bus name)."""

    def __init__(self, address: str) -> None:
        self.thread = LoopThread()
        self.signals: list[Message] = []
        self._lock = threading.Lock()
        self.bus: MessageBus = self.thread.run(self._connect(address))

    async def _connect(self, address: str) -> MessageBus:
        bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
        bus.add_message_handler(self._on_message)
        reply = await bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=[f"type='signal',sender='{BUS_NAME}'"]))
        assert reply is not None and reply.message_type is MessageType.METHOD_RETURN
        return bus

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL:
            with self._lock:
                self.signals.append(msg)

    def clear(self) -> None:
        with self._lock:
            self.signals.clear()

    def wait(self, pred: Callable[[Message], bool], timeout: float = 10.0) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = next((m for m in self.signals if pred(m)), None)
            if found is not None:
                return found
            assert time.monotonic() < deadline, f"signal not seen; got {self.summary()}"
            time.sleep(0.02)

    def summary(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return [(m.path, m.interface, m.member) for m in self.signals]

    def close(self) -> None:
        self.thread.call(self.bus.disconnect)
        self.thread.close()


def properties_changed(path: str, iface: str, prop: str) -> Callable[[Message], bool]:
    def match(msg: Message) -> bool:
        return (msg.path == path and msg.member == "PropertiesChanged"
                and msg.body[0] == iface and prop in msg.body[1])

    return match


def install_hbd_files(bus: PrivateBus) -> None:
    """The shipped bus policy and polkit action, exactly as packaged."""
    bus.install_bus_policy("org.linuxha.hbd1.conf",
                           (ROOT / "dbus" / "org.linuxha.hbd1.conf").read_text())
    bus.install_polkit_action("org.linuxha.hbd1.policy",
                              (ROOT / "polkit" / "org.linuxha.hbd1.policy").read_text())


def dbus_send(bus: PrivateBus, user: str, member: str, *args: str,
              ) -> subprocess.CompletedProcess[str]:
    """Call a Manager method as `user` with dbus-send, which prints the error *name*."""
    argv = ["dbus-send", "--system", "--print-reply", f"--dest={BUS_NAME}", OBJECT_PATH,
            f"{MANAGER_IFACE}.{member}", *args]
    if user == "root":
        return commands.run(argv, env=bus.env(), capture_output=True, text=True, timeout=30,
                            check=False)
    return bus.run_as(user, argv)


def refused_with(res: subprocess.CompletedProcess[str], name: str) -> bool:
    return res.returncode != 0 and f"{ERR}{name}" in res.stderr


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hbd_bus(private_bus: PrivateBus) -> PrivateBus:
    install_hbd_files(private_bus)
    return private_bus


@pytest.fixture(scope="module")
def served(hbd_bus: PrivateBus) -> Iterator[ServiceThread]:
    svc = ServiceThread(hbd_bus.address)
    try:
        svc.wait_owned()
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def fake(served: ServiceThread) -> Iterator[FakeController]:
    controller = served.controller
    controller.calls.clear()
    controller.fail.clear()
    yield controller
    served.publish(SNAP)


# --- the API as exported ----------------------------------------------------------------


def _interfaces(xml: str) -> dict[str, str]:
    """Our interfaces in an introspection document, canonicalized for comparison."""
    out = {}
    for iface in ET.fromstring(xml).iter("interface"):
        name = iface.get("name", "")
        if name.startswith("org.linuxha."):
            ET.indent(iface)
            out[name] = ET.canonicalize(ET.tostring(iface, encoding="unicode"),
                                        strip_text=True)
    return out


def test_introspection_matches_shipped_xml(hbd_bus: PrivateBus, served: ServiceThread) -> None:
    shipped = _interfaces((ROOT / "dbus" / "org.linuxha.hbd1.xml").read_text())
    assert set(shipped) == {MANAGER_IFACE, NODE_IFACE, GROUP_IFACE}
    live: dict[str, str] = {}
    for path in (OBJECT_PATH, node_path("n1"), group_path(VIP)):
        out = hbd_bus.busctl("call", BUS_NAME, path, "org.freedesktop.DBus.Introspectable",
                             "Introspect", "--json=short")
        live.update(_interfaces(json.loads(out)["data"][0]))
    assert live == shipped


def test_object_paths_and_labels(hbd_bus: PrivateBus, served: ServiceThread) -> None:
    tree = hbd_bus.busctl("tree", "--list", BUS_NAME).split()
    assert {OBJECT_PATH, node_path("n1"), node_path("n2"), group_path(VIP)} <= set(tree)
    for text in ("n1", VIP, "IPaddr::10.0.0.1", "", "9lives", "ümlaut"):
        assert unescape_label(escape_label(text)) == text
    assert escape_label("db-1") == "db_2d1"


def test_anyone_reads_state(hbd_bus: PrivateBus, served: ServiceThread) -> None:
    res = hbd_bus.run_as("hbdtest", [
        "busctl", "--system", "get-property", BUS_NAME, OBJECT_PATH, MANAGER_IFACE,
        "NodeName", "ResourcesHeld", "Nodes", "Links", "Groups"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:5] == [
        's "n1"', 's "all"', 'a(ssb) 2 "n1" "active" true "n2" "active" false',
        'a(sss) 2 "n1" "eth0" "up" "n2" "eth0" "up"',
        f'a(ssss) 1 "{VIP}" "n1" "n1" "running"']
    res = hbd_bus.run_as("hbdtest", ["busctl", "--system", "get-property", BUS_NAME,
                                     group_path(VIP), GROUP_IFACE, "Owner", "State"])
    assert res.stdout.split() == ["s", '"n1"', "s", '"running"']


def test_only_root_may_own_the_name(hbd_bus: PrivateBus) -> None:
    res = hbd_bus.run_as("hbdtest", [
        "gdbus", "call", "--system", "--dest", "org.freedesktop.DBus", "--object-path",
        "/org/freedesktop/DBus", "--method", "org.freedesktop.DBus.RequestName", BUS_NAME, "4"])
    assert res.returncode != 0 and "AccessDenied" in res.stderr, res


# --- authorization ---------------------------------------------------------------------


def test_root_is_authorized(hbd_bus: PrivateBus, fake: FakeController) -> None:
    hbd_bus.busctl("call", BUS_NAME, OBJECT_PATH, MANAGER_IFACE, "Takeover", "s", "all")
    hbd_bus.busctl("call", BUS_NAME, OBJECT_PATH, MANAGER_IFACE, "Release", "s", "foreign")
    hbd_bus.busctl("call", BUS_NAME, OBJECT_PATH, MANAGER_IFACE, "Reload")
    hbd_bus.busctl("call", BUS_NAME, OBJECT_PATH, MANAGER_IFACE, "Cleanup", "s", VIP)
    assert fake.calls == [("takeover", "all"), ("release", "foreign"), ("reload", ""),
                          ("cleanup", VIP)]


@pytest.mark.parametrize("user", ["hbdtest", "hbdadmin"])
def test_unprivileged_refused(hbd_bus: PrivateBus, fake: FakeController, user: str) -> None:
    for member, args in (("Takeover", ["string:all"]), ("Release", ["string:all"]),
                         ("Reload", []), ("Cleanup", [f"string:{VIP}"])):
        res = dbus_send(hbd_bus, user, member, *args)
        assert refused_with(res, "NotAuthorized"), res
    # busctl asks with ALLOW_INTERACTIVE_AUTHORIZATION: no agent, so still refused
    res = hbd_bus.run_as(user, ["busctl", "--system", "call", BUS_NAME, OBJECT_PATH,
                                MANAGER_IFACE, "Takeover", "s", "all"])
    assert res.returncode != 0 and "authentication" in res.stderr
    assert fake.calls == []


def test_haclient_rule_grants_members(hbd_bus: PrivateBus, fake: FakeController) -> None:
    rule = (ROOT / "polkit" / "50-hbd-haclient.rules.example").read_text()
    hbd_bus.install_polkit_rule("50-hbd-haclient.rules", rule)
    try:
        assert dbus_send(hbd_bus, "hbdadmin", "Takeover", "string:local").returncode == 0
        assert refused_with(dbus_send(hbd_bus, "hbdtest", "Takeover", "string:all"),
                            "NotAuthorized")
    finally:
        (hbd_bus.rules_dir / "50-hbd-haclient.rules").unlink()
        hbd_bus.restart_polkit()
    assert fake.calls == [("takeover", "local")]


def test_without_polkit_only_root() -> None:
    with PrivateBus(with_polkit=False) as bus:
        bus.install_bus_policy("org.linuxha.hbd1.conf",
                               (ROOT / "dbus" / "org.linuxha.hbd1.conf").read_text())
        svc = ServiceThread(bus.address)
        try:
            svc.wait_owned()
            assert dbus_send(bus, "root", "Takeover", "string:all").returncode == 0
            res = dbus_send(bus, "hbdtest", "Takeover", "string:all")
            assert refused_with(res, "NotAuthorized") and "polkit is not available" in res.stderr
            assert svc.controller.calls == [("takeover", "all")]
        finally:
            svc.stop()


# --- arguments and errors --------------------------------------------------------------


def test_bad_arguments_change_nothing(hbd_bus: PrivateBus, fake: FakeController) -> None:
    res = dbus_send(hbd_bus, "root", "Takeover", "string:everything")
    assert refused_with(res, "InvalidScope") and "all, local, foreign, failback" in res.stderr
    # refused before polkit is asked: an unprivileged caller learns the same, no prompt
    assert refused_with(dbus_send(hbd_bus, "hbdtest", "Release", "string:"), "InvalidScope")
    res = dbus_send(hbd_bus, "root", "Takeover", "int32:1")
    assert res.returncode != 0 and "UnknownMethod" in res.stderr
    assert fake.calls == []


def test_errors_keep_their_names_and_no_traceback(
        hbd_bus: PrivateBus, fake: FakeController, caplog: pytest.LogCaptureFixture) -> None:
    fake.fail = {"release": Busy("a standby exchange is already under way"),
                 "reload": ConfigError(["ha.cf:3: unknown directive 'kepalive'"]),
                 "cleanup": RuntimeError("a bug"),
                 "takeover": HbdError("generic")}
    with caplog.at_level(logging.DEBUG):
        res = dbus_send(hbd_bus, "root", "Release", "string:all")
        assert refused_with(res, "Busy") and "already under way" in res.stderr
        res = dbus_send(hbd_bus, "root", "Reload")
        assert refused_with(res, "InvalidConfig") and "ha.cf:3" in res.stderr
        res = dbus_send(hbd_bus, "root", "Takeover", "string:all")
        assert refused_with(res, "Failed")
        res = dbus_send(hbd_bus, "root", "Cleanup", "string:x")
        assert refused_with(res, "Failed")
        assert "Traceback" not in res.stderr and "a bug" not in res.stderr
    logged = [r for r in caplog.records if r.exc_info]
    # only the bug is logged with its traceback, once; refusals are not tracebacks
    assert [r.getMessage() for r in logged] == ["D-Bus method failed unexpectedly"]
    assert not [r for r in caplog.records if "Exception in callback" in r.getMessage()]


# --- change notification ---------------------------------------------------------------


def test_properties_changed_and_signals(hbd_bus: PrivateBus, served: ServiceThread) -> None:
    watcher = SignalWatcher(hbd_bus.address)
    try:
        moved = replace(SNAP, resources_held="none",
                        nodes=(SNAP.nodes[0], NodeInfo("n2", "dead")),
                        links=(SNAP.links[0], LinkInfo("n2", "eth0", "dead")),
                        groups=(GroupInfo(VIP, "n1", "", "stopped"),))
        served.publish(moved)
        msg = watcher.wait(properties_changed(OBJECT_PATH, MANAGER_IFACE, "Groups"))
        changed = msg.body[1]
        assert set(changed) == {"ResourcesHeld", "Nodes", "Links", "Groups"}
        assert changed["ResourcesHeld"].value == "none"
        assert changed["Groups"].value == [[VIP, "n1", "", "stopped"]]
        watcher.wait(lambda m: m.member == "NodeStatusChanged" and m.body == ["n2", "dead"])
        watcher.wait(lambda m: m.member == "LinkStatusChanged"
                     and m.body == ["n2", "eth0", "dead"])
        watcher.wait(lambda m: m.member == "GroupStateChanged"
                     and m.body == [VIP, "", "stopped"])
        msg = watcher.wait(properties_changed(group_path(VIP), GROUP_IFACE, "State"))
        assert set(msg.body[1]) == {"Owner", "State"}
        watcher.wait(properties_changed(node_path("n2"), NODE_IFACE, "Status"))
        # an identical snapshot emits nothing
        watcher.clear()
        served.publish(moved)
        time.sleep(0.3)
        assert watcher.summary() == []
    finally:
        watcher.close()


def test_monitoring_state_emits_properties_changed(hbd_bus: PrivateBus,
                                                   served: ServiceThread) -> None:
    watcher = SignalWatcher(hbd_bus.address)
    try:
        failed = replace(SNAP, groups=(GroupInfo(VIP, "n1", "n2", "stopped", 1,
                                                 "failed: apache: monitor failed: rc=1",
                                                 1_800_000_000.5, "monitor failed"),))
        served.publish(failed)
        msg = watcher.wait(properties_changed(OBJECT_PATH, MANAGER_IFACE, "GroupHealth"))
        assert msg.body[1]["GroupHealth"].value == [
            [VIP, 1, "failed: apache: monitor failed: rc=1", 1_800_000_000_500_000,
             "monitor failed"]]
        msg = watcher.wait(properties_changed(group_path(VIP), GROUP_IFACE, "FailCount"))
        changed = {k: v.value for k, v in msg.body[1].items()}
        assert {k: changed[k] for k in ("FailCount", "LastMonitor", "LastMonitorTime",
                                        "FailedHere")} == {
            "FailCount": 1,
            "LastMonitor": "failed: apache: monitor failed: rc=1",
            "LastMonitorTime": 1_800_000_000_500_000, "FailedHere": "monitor failed"}
    finally:
        watcher.close()
        served.publish(SNAP)


def test_tracked_links_emit_properties_changed(hbd_bus: PrivateBus,
                                              served: ServiceThread) -> None:
    watcher = SignalWatcher(hbd_bus.address)
    try:
        lost = replace(SNAP, tracked_links=(TrackedLinkInfo("eth0", "no-carrier", (VIP,)),
                                            TrackedLinkInfo("eth1", "up", (VIP,))))
        served.publish(lost)
        msg = watcher.wait(properties_changed(OBJECT_PATH, MANAGER_IFACE, "TrackedLinks"))
        assert msg.body[1]["TrackedLinks"].value == [["eth0", "no-carrier", [VIP]],
                                                     ["eth1", "up", [VIP]]]
        state = client.read_state(hbd_bus.address)
        assert state.snapshot.tracked_links == lost.tracked_links
    finally:
        watcher.close()
        served.publish(SNAP)


# --- losing the bus --------------------------------------------------------------------


def test_bus_restart_reregisters(hbd_bus: PrivateBus, served: ServiceThread,
                                 fake: FakeController) -> None:
    hbd_bus.restart_dbus()
    served.wait_owned()
    out = hbd_bus.busctl("get-property", BUS_NAME, OBJECT_PATH, MANAGER_IFACE, "NodeName")
    assert out.strip() == 's "n1"'
    hbd_bus.busctl("call", BUS_NAME, OBJECT_PATH, MANAGER_IFACE, "Takeover", "s", "all")
    assert fake.calls == [("takeover", "all")]


def test_policy_installed_later(caplog: pytest.LogCaptureFixture) -> None:
    """Without the bus policy the name is refused; hbd says why and retries."""
    with PrivateBus(with_polkit=False) as bus:
        with caplog.at_level(logging.WARNING, logger="hbd.bus.service"):
            svc = ServiceThread(bus.address)
        try:
            assert not svc.service.owned
            assert "not allowed to own org.linuxha.hbd1" in caplog.text
            bus.install_bus_policy("org.linuxha.hbd1.conf",
                                   (ROOT / "dbus" / "org.linuxha.hbd1.conf").read_text())
            svc.wait_owned()
        finally:
            svc.stop()


def test_second_instance_waits_in_queue() -> None:
    """A second hbd on the same bus does not steal the name; it takes over when the first goes."""
    with PrivateBus(with_polkit=False) as bus:
        bus.install_bus_policy("org.linuxha.hbd1.conf",
                               (ROOT / "dbus" / "org.linuxha.hbd1.conf").read_text())
        first = ServiceThread(bus.address)
        second = ServiceThread(bus.address)
        try:
            first.wait_owned()
            assert not second.service.owned
            first.stop()
            second.wait_owned()
        finally:
            first.stop()
            second.stop()


def test_start_without_bus_returns_then_connects(tmp_path: Path) -> None:
    link = tmp_path / "bus_socket"  # nothing there yet: the bus is "down"
    with PrivateBus(with_polkit=False) as bus:
        bus.install_bus_policy("org.linuxha.hbd1.conf",
                               (ROOT / "dbus" / "org.linuxha.hbd1.conf").read_text())
        started = time.monotonic()
        svc = ServiceThread(f"unix:path={link}")
        try:
            assert time.monotonic() - started < 3
            assert not svc.service.owned
            link.symlink_to(bus.socket_path)  # the bus "comes back"
            svc.wait_owned()
            out = bus.busctl("get-property", BUS_NAME, OBJECT_PATH, MANAGER_IFACE, "NodeName")
            assert out.strip() == 's "n1"'
        finally:
            svc.stop()
