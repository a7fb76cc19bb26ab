"""The one error hierarchy of hbd.

Every error hbd raises on purpose derives from HbdError.  Errors that can
reach a D-Bus caller carry their D-Bus error name, so the bus layer maps them
with one lookup and never shows a traceback.  This module imports nothing
but the standard library so that the sans-I/O core may use it.
"""

from __future__ import annotations

DBUS_ERROR_PREFIX = "org.linuxha.hbd1.Error."


class HbdError(Exception):
    """Base of every error hbd raises on purpose."""

    dbus_name: str = DBUS_ERROR_PREFIX + "Failed"


class ConfigError(HbdError):
    """A configuration could not be used; carries every problem found.

    `problems` are rendered `file:line: message` strings, in file order.
    """

    dbus_name = DBUS_ERROR_PREFIX + "InvalidConfig"

    def __init__(self, problems: list[str] | tuple[str, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems) or "invalid configuration")


class WireError(HbdError):
    """A packet could not be parsed as a Heartbeat message."""


class AuthError(HbdError):
    """A packet failed authentication (bad MAC, unknown key index)."""


class TransitionError(HbdError):
    """A state machine was asked for a move its table does not allow.

    The state machine is left exactly as it was.
    """

    dbus_name = DBUS_ERROR_PREFIX + "Busy"


class InvalidScope(HbdError):
    """A takeover/standby scope is not one of all, local, foreign, failback."""

    dbus_name = DBUS_ERROR_PREFIX + "InvalidScope"


class NoSuchGroup(HbdError):
    """No haresources group has that key."""

    dbus_name = DBUS_ERROR_PREFIX + "NoSuchGroup"


class Busy(HbdError):
    """The request conflicts with a transition already under way."""

    dbus_name = DBUS_ERROR_PREFIX + "Busy"


class NotAuthorized(HbdError):
    """polkit refused the caller."""

    dbus_name = DBUS_ERROR_PREFIX + "NotAuthorized"


class ResourceError(HbdError):
    """A resource agent failed or timed out."""

    dbus_name = DBUS_ERROR_PREFIX + "ResourceFailed"


class LinkError(HbdError):
    """A heartbeat link could not be opened or used."""


class NetError(HbdError):
    """An address, ARP or ICMP operation on the host failed."""


class CorosyncError(HbdError):
    """A Corosync client library call failed; `code` is its cs_error_t value.

    CS_ERR_LIBRARY (2) and a closed connection mean corosync went away.
    """

    def __init__(self, call: str, code: int, text: str = "") -> None:
        self.call = call
        self.code = code
        super().__init__(f"{call}: {text or 'error'} (cs_error_t {code})")


class NotFencing(HbdError):
    """`hbctl fence confirm NODE` when hbd is not waiting to fence NODE."""

    dbus_name = DBUS_ERROR_PREFIX + "NotFencing"
