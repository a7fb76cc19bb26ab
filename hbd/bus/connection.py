"""The bus connection class hbd uses: dbus-next's MessageBus with one fix.

dbus-next 0.2.3 (its last release) sends the error reply when a method
raises DBusError, then lets the exception escape from the reply context it
has just used, so asyncio logs "Exception in callback" with a traceback
for every refused call.  A refused call is routine (NotAuthorized,
InvalidScope, Busy): the reply context below sends exactly the same reply
and swallows the exception.  `hbd.bus.errors.mapped` guarantees that what
reaches it is a DBusError carrying no traceback.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from dbus_next.aio.message_bus import MessageBus
from dbus_next.message import Message


class _ReplyContext:
    """Wraps dbus-next's per-call reply context; same interface."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __enter__(self) -> _ReplyContext:
        return self

    def __call__(self, reply: Message) -> None:
        self._inner(reply)

    def send_error(self, exc: Exception) -> None:
        self._inner.send_error(exc)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        self._inner.send_error(exc)  # the error reply, as dbus-next would send it
        return True


class Bus(MessageBus):
    """An asyncio MessageBus whose refused calls do not log tracebacks."""

    def _send_reply(self, msg: Message) -> _ReplyContext:
        return _ReplyContext(super()._send_reply(msg))  # type: ignore[no-untyped-call]
