"""hbd errors -> D-Bus errors: the one place that decides what a caller sees.

An HbdError travels as its own `dbus_name` (org.linuxha.hbd1.Error.*) with
its message; anything else is a bug: it is logged with its traceback here
and the caller gets org.linuxha.hbd1.Error.Failed without one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from dbus_next.errors import DBusError

from hbd.errors import DBUS_ERROR_PREFIX, HbdError

log = logging.getLogger(__name__)

FAILED = DBUS_ERROR_PREFIX + "Failed"

P = ParamSpec("P")
T = TypeVar("T")


def dbus_error(name: str, text: str) -> DBusError:
    return DBusError(name, text)  # type: ignore[no-untyped-call]


def to_dbus_error(err: Exception) -> DBusError:
    if isinstance(err, DBusError):
        return err
    if isinstance(err, HbdError):
        return dbus_error(err.dbus_name, str(err) or type(err).__name__)
    log.error("D-Bus method failed unexpectedly", exc_info=err)
    return dbus_error(FAILED, "internal error in hbd (details in its log)")


def mapped(fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Wrap an async D-Bus method so that only D-Bus errors leave it."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except Exception as err:
            raise to_dbus_error(err) from None

    return wrapper
