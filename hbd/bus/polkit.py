"""Ask polkit whether the caller of a method may do an action.

The subject is the caller's unique bus name ("system-bus-name"), so polkitd
itself asks the bus daemon for the peer's uid and pid: no PID-reuse race.
When polkitd is not on the bus at all, only root is allowed (the bus daemon
tells us the caller's uid) - a minimal server without polkit stays usable by
its administrator and closed to everyone else.
"""

from __future__ import annotations

import logging

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import MessageType
from dbus_next.message import Message
from dbus_next.signature import Variant

from hbd.bus.caller import Caller
from hbd.errors import NotAuthorized

log = logging.getLogger(__name__)

POLKIT_NAME = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_IFACE = "org.freedesktop.PolicyKit1.Authority"
ALLOW_USER_INTERACTION = 1
# Errors meaning "polkitd is not there", as opposed to "polkitd said no".
_ABSENT = frozenset({
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoReply",
})


async def _call(bus: MessageBus, msg: Message) -> Message:
    reply = await bus.call(msg)
    if reply is None:  # only for NO_REPLY_EXPECTED calls, which we never make
        raise NotAuthorized("no answer from the bus")
    return reply


async def _caller_uid(bus: MessageBus, sender: str) -> int | None:
    reply = await _call(bus, Message(
        destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus", member="GetConnectionUnixUser",
        signature="s", body=[sender]))
    if reply.message_type is MessageType.ERROR:
        return None
    return int(reply.body[0])


async def authorize(bus: MessageBus, caller: Caller, action: str) -> None:
    """Return if `caller` may do `action`; raise NotAuthorized otherwise."""
    flags = ALLOW_USER_INTERACTION if caller.interactive else 0
    reply = await _call(bus, Message(
        destination=POLKIT_NAME, path=POLKIT_PATH, interface=POLKIT_IFACE,
        member="CheckAuthorization", signature="(sa{sv})sa{ss}us",
        body=[["system-bus-name", {"name": Variant("s", caller.sender)}], action, {},
              flags, ""]))
    if reply.message_type is MessageType.ERROR:
        detail = reply.body[0] if reply.body else reply.error_name
        if reply.error_name in _ABSENT:
            if await _caller_uid(bus, caller.sender) == 0:
                log.debug("polkit unavailable (%s); %s is root: allowed", detail, caller.sender)
                return
            raise NotAuthorized(f"{action} needs root: polkit is not available ({detail})")
        log.warning("polkit check of %s for %s failed: %s: %s", action, caller.sender,
                    reply.error_name, detail)
        raise NotAuthorized(f"polkit could not check {action}: {detail}")
    authorized, challenge, _details = reply.body[0]
    if authorized:
        return
    if challenge:
        raise NotAuthorized(f"{action} requires authentication (run as root or through "
                            "a polkit authentication agent)")
    raise NotAuthorized(f"not authorized for {action}")
