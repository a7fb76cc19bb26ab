"""Who is calling: the sender of the D-Bus method call being served.

dbus-next never hands a method its Message.  It does run low-level message
handlers synchronously just before it dispatches a call, and it starts an
async method with asyncio.ensure_future, which copies the current context.
So a handler that puts the call's sender (and whether the caller allows
interactive authorization) into a ContextVar makes them visible to exactly
that method call, however many calls are in flight.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import MessageFlag, MessageType
from dbus_next.message import Message

from hbd.errors import NotAuthorized


@dataclass(frozen=True)
class Caller:
    sender: str  # unique bus name, e.g. ":1.42"
    interactive: bool  # the call carries ALLOW_INTERACTIVE_AUTHORIZATION


_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "hbd_bus_caller", default=None)


def _remember(msg: Message) -> None:
    if msg.message_type is MessageType.METHOD_CALL:
        interactive = bool(msg.flags & MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION)
        _CALLER.set(Caller(msg.sender, interactive) if msg.sender else None)
    # returning None lets dbus-next dispatch the message as usual


def install(bus: MessageBus) -> None:
    """Record the caller of every method call on `bus` (once per connection)."""
    bus.add_message_handler(_remember)


def current() -> Caller:
    """The caller of the method being served; NotAuthorized when unknown."""
    caller = _CALLER.get()
    if caller is None:
        raise NotAuthorized("the caller of this request is unknown")
    return caller
