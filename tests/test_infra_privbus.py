"""Prove the private bus fixture: real dbus-daemon policy + real polkitd decisions.

The service below is the pattern hbd's D-Bus control interface will use:
a dbus-next ServiceInterface whose methods ask polkit about *the caller*.
dbus-next does not pass the Message to interface methods, so a low-level
message handler (``MessageBus.add_message_handler``) records ``msg.sender``
in a ContextVar just before dbus-next dispatches the call; the method (sync,
or async - ``asyncio.ensure_future`` copies the current context) reads it.
"""

import asyncio
import contextvars
import os
import subprocess
from pathlib import Path

import pytest
from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType, MessageType
from dbus_next.errors import DBusError
from dbus_next.message import Message
from dbus_next.service import ServiceInterface, method
from dbus_next.signature import Variant

from tests.infra import commands
from tests.infra.privbus import PrivateBus

NAME = "org.linuxha.hbdtest1"
PATH = "/org/linuxha/hbdtest1"
IFACE = "org.linuxha.hbdtest1.Control"
ACTION = "org.linuxha.hbdtest1.control"

BUS_POLICY = f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root"><allow own="{NAME}"/></policy>
  <policy context="default"><allow send_destination="{NAME}"/></policy>
</busconfig>
"""

POLKIT_ACTION = f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE policyconfig PUBLIC "-//freedesktop//DTD PolicyKit Policy Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/PolicyKit/1/policyconfig.dtd">
<policyconfig>
  <action id="{ACTION}">
    <description>Control the hbd test service</description>
    <message>Authentication is required to control the hbd test service</message>
    <defaults>
      <allow_any>auth_admin_keep</allow_any>
      <allow_inactive>auth_admin_keep</allow_inactive>
      <allow_active>auth_admin_keep</allow_active>
    </defaults>
  </action>
</policyconfig>
"""

POLKIT_RULE = f"""polkit.addRule(function(action, subject) {{
    if (action.id == "{ACTION}" && subject.isInGroup("haclient")) {{
        return polkit.Result.YES;
    }}
}});
"""

CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("CALLER")


async def check_authorization(bus: MessageBus, sender: str, action: str) -> tuple[bool, bool]:
    """Ask polkit whether the bus peer ``sender`` may do ``action``.

    Subject kind "system-bus-name" makes polkitd itself resolve the peer's
    uid/pid via the bus daemon, so there is no PID-reuse race.
    """
    reply = await bus.call(Message(
        destination="org.freedesktop.PolicyKit1",
        path="/org/freedesktop/PolicyKit1/Authority",
        interface="org.freedesktop.PolicyKit1.Authority",
        member="CheckAuthorization",
        signature="(sa{sv})sa{ss}us",
        body=[["system-bus-name", {"name": Variant("s", sender)}], action, {}, 0, ""],
    ))
    assert reply is not None
    if reply.message_type == MessageType.ERROR:
        raise DBusError(  # type: ignore[no-untyped-call]
            reply.error_name or "polkit.Error", str(reply.body))
    is_authorized, is_challenge, _details = reply.body[0]
    return bool(is_authorized), bool(is_challenge)


class Control(ServiceInterface):
    """Test interface: Check() reports the polkit verdict for the caller."""

    def __init__(self, bus: MessageBus) -> None:
        super().__init__(IFACE)
        self._bus = bus

    @method()  # type: ignore[untyped-decorator]
    async def Check(self) -> "sb":  # type: ignore[name-defined]  # noqa: F821
        sender = CALLER.get()
        authorized, _challenge = await check_authorization(self._bus, sender, ACTION)
        return [sender, authorized]


def remember_sender(msg: Message) -> None:
    """Low-level handler: runs before dbus-next's own dispatch of each message."""
    if msg.message_type == MessageType.METHOD_CALL and msg.sender:
        CALLER.set(msg.sender)
    # Returning None lets dbus-next continue with normal method dispatch.


async def call_as(bus: PrivateBus, user: str, timeout: float = 20.0) -> tuple[str, bool]:
    """Call Check() with busctl as ``user`` (via setpriv) and parse the reply."""
    argv = bus.as_user_argv(
        user, ["busctl", "--system", "call", NAME, PATH, IFACE, "Check"])
    proc = await commands.spawn(argv, env=bus.user_env(user), cwd="/",
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, err.decode()
    sig, sender, verdict = out.decode().split()
    assert sig == "sb"
    return sender.strip('"'), verdict == "true"


async def serve_and_check(bus: PrivateBus, users: list[str]) -> dict[str, tuple[str, bool]]:
    conn = await MessageBus(bus_address=bus.address, bus_type=BusType.SYSTEM).connect()
    try:
        conn.add_message_handler(remember_sender)
        conn.export(PATH, Control(conn))
        await conn.request_name(NAME)
        return {u: await call_as(bus, u) for u in users}
    finally:
        conn.disconnect()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def polkit_bus(private_bus: PrivateBus) -> PrivateBus:
    private_bus.install_bus_policy("org.linuxha.hbdtest1.conf", BUS_POLICY)
    private_bus.install_polkit_action("org.linuxha.hbdtest1.policy", POLKIT_ACTION)
    return private_bus


def test_bus_is_private_and_answers(private_bus: PrivateBus) -> None:
    assert private_bus.address.startswith("unix:path=")
    assert private_bus.socket_path.is_socket()
    assert private_bus.address != "unix:path=/run/dbus/system_bus_socket"
    out = private_bus.busctl("list")
    assert "org.freedesktop.PolicyKit1" in out
    # virtual users exist only inside the bus namespace
    res = private_bus.run_as("hbdadmin", ["id", "-nG"], check=True)
    assert "haclient" in res.stdout.split()
    assert "hbdadmin" not in Path("/etc/passwd").read_text()


def test_polkit_verdicts_for_root_and_unprivileged(polkit_bus: PrivateBus) -> None:
    results = asyncio.run(serve_and_check(polkit_bus, ["root", "hbdtest", "hbdadmin"]))
    root_sender, root_ok = results["root"]
    user_sender, user_ok = results["hbdtest"]
    assert root_sender.startswith(":1.") and user_sender.startswith(":1.")
    assert root_sender != user_sender
    assert root_ok is True  # polkit: uid 0 is always authorized
    assert user_ok is False  # auth_admin_keep and no agent -> challenge, not authorized
    assert results["hbdadmin"][1] is False  # haclient alone means nothing without a rule


def test_rules_d_grants_group_member(polkit_bus: PrivateBus) -> None:
    polkit_bus.install_polkit_rule("50-hbdtest.rules", POLKIT_RULE)
    try:
        results = asyncio.run(serve_and_check(polkit_bus, ["hbdadmin", "hbdtest"]))
    finally:
        (polkit_bus.rules_dir / "50-hbdtest.rules").unlink()
        polkit_bus.restart_polkit()
    assert results["hbdadmin"][1] is True  # member of haclient
    assert results["hbdtest"][1] is False  # not a member


def test_bus_policy_denies_unlisted_destination(private_bus: PrivateBus) -> None:
    """The system.conf default-deny is in force (we are not a permissive session bus)."""
    res = private_bus.run_as(
        "hbdtest", ["busctl", "--system", "call", "org.freedesktop.DBus",
                    "/org/freedesktop/DBus", "org.freedesktop.DBus.Monitoring",
                    "BecomeMonitor", "asu", "0", "0"])
    assert res.returncode != 0
    assert "AccessDenied" in res.stderr or "denied" in res.stderr.lower()


def test_restart_dbus_keeps_address(private_bus: PrivateBus) -> None:
    old = private_bus.dbus_pid
    private_bus.restart_dbus()
    assert private_bus.dbus_pid != old
    assert "org.freedesktop.PolicyKit1" in private_bus.busctl("list")
    assert old is not None
    assert not os.path.exists(f"/proc/{old}") or _is_zombie_or_gone(old)


def _is_zombie_or_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True
