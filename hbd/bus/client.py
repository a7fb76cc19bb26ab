"""A small synchronous client of org.linuxha.hbd1, for hbctl and scripts.

Each call opens a connection to the system bus ($DBUS_SYSTEM_BUS_ADDRESS
honoured), does one thing and closes it.  Every failure is a ClientError
carrying a D-Bus error name; `unreachable` tells "hbd is not there" (no bus,
name not owned, no answer) from "hbd said no".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType, MessageFlag, MessageType
from dbus_next.message import Message

from hbd.bus.names import BUS_NAME, MANAGER_IFACE, OBJECT_PATH
from hbd.control import (
    FenceInfo,
    GroupInfo,
    LinkInfo,
    NodeInfo,
    PingInfo,
    Snapshot,
    TrackedLinkInfo,
)

T = TypeVar("T")

READ_TIMEOUT = 10.0
CALL_TIMEOUT = 30.0
INTERACTIVE_TIMEOUT = 300.0  # a person may be typing a password into a polkit agent
NO_CONNECTION = "org.freedesktop.DBus.Error.NoServer"
TIMED_OUT = "org.freedesktop.DBus.Error.TimedOut"
_UNREACHABLE = frozenset({
    NO_CONNECTION,
    TIMED_OUT,
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.Disconnected",
})


class ClientError(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message

    @property
    def short(self) -> str:
        """The last part of the error name: NotAuthorized, InvalidScope, ServiceUnknown..."""
        return self.name.rsplit(".", 1)[-1]

    @property
    def unreachable(self) -> bool:
        return self.name in _UNREACHABLE


@dataclass(frozen=True)
class State:
    snapshot: Snapshot
    version: str


def check(reply: Message | None) -> Message:
    if reply is None:
        raise ClientError(NO_CONNECTION, "no reply")
    if reply.message_type is MessageType.ERROR:
        text = str(reply.body[0]) if reply.body else ""
        raise ClientError(reply.error_name or "org.freedesktop.DBus.Error.Failed", text)
    return reply


async def connect(address: str | None = None) -> MessageBus:
    """A connection to the system bus (or `address`); ClientError if there is none."""
    try:  # the constructor already connects the socket
        bus = (MessageBus(bus_type=BusType.SYSTEM) if address is None
               else MessageBus(bus_address=address, bus_type=BusType.SYSTEM))
        await asyncio.wait_for(bus.connect(), READ_TIMEOUT)
    except Exception as err:  # OSError, timeout, dbus-next's AuthError...
        raise ClientError(NO_CONNECTION, f"cannot connect to the system bus: {err}") from None
    return bus


async def get_all(bus: MessageBus) -> dict[str, Any]:
    """Every Manager property (name -> Variant), in one GetAll."""
    reply = check(await bus.call(Message(
        destination=BUS_NAME, path=OBJECT_PATH, interface="org.freedesktop.DBus.Properties",
        member="GetAll", signature="s", body=[MANAGER_IFACE])))
    props: dict[str, Any] = reply.body[0]
    return props


async def _with_bus(address: str | None, timeout: float,
                    work: Callable[[MessageBus], Awaitable[T]]) -> T:
    bus = await connect(address)
    try:
        return await asyncio.wait_for(work(bus), timeout)
    except TimeoutError:
        raise ClientError(TIMED_OUT, f"hbd did not answer within {timeout:.0f}s") from None
    finally:
        bus.disconnect()  # type: ignore[no-untyped-call]


def state_from(props: dict[str, Any]) -> State:
    """The State that a GetAll's (or PropertiesChanged's) Variants describe."""
    def value(name: str, default: Any = None) -> Any:
        return props[name].value if name in props else default  # older hbds lack some

    votes = value("Votes", [0, 0, 0])
    health = {str(k): (int(n), str(last), int(at) / 1e6, str(unfit))
              for k, n, last, at, unfit in value("GroupHealth", [])}
    snapshot = Snapshot(
        node_name=str(value("NodeName")),
        nodes=tuple(NodeInfo(str(n), str(s), bool(local)) for n, s, local in value("Nodes")),
        links=tuple(LinkInfo(str(n), str(lk), str(s)) for n, lk, s in value("Links")),
        resources_held=str(value("ResourcesHeld")),
        groups=tuple(GroupInfo(str(k), str(h), str(o), str(s), *health.get(str(k), ()))
                     for k, h, o, s in value("Groups")),
        stack=str(value("Stack", "heartbeat")),
        quorate={"quorate": True, "inquorate": False}.get(str(value("Quorum", ""))),
        votes=int(votes[0]), expected_votes=int(votes[1]), quorum_votes=int(votes[2]),
        placement=tuple((str(k), tuple(str(n) for n in nodes))
                        for k, nodes in value("Placement", [])),
        ping_nodes=tuple(PingInfo(str(n), str(s)) for n, s in value("PingNodes", [])),
        tracked_links=tuple(TrackedLinkInfo(str(i), str(s), tuple(str(g) for g in groups))
                            for i, s, groups in value("TrackedLinks", [])),
        fencing=tuple(FenceInfo(str(n), str(s), str(d)) for n, s, d in value("Fencing", [])),
        fence_device=str(value("FenceDevice", "none")),
        realtime=str(value("Realtime", "")),
        loop_lag_max=float(value("LoopLagMax", 0.0)),
        loop_lag=tuple((float(b), int(n)) for b, n in value("LoopLagHistogram", [])),
    )
    return State(snapshot, str(value("Version")))


def read_state(address: str | None = None) -> State:
    """Every Manager property at once (one GetAll)."""

    async def work(bus: MessageBus) -> State:
        return state_from(await get_all(bus))

    return asyncio.run(_with_bus(address, READ_TIMEOUT, work))


def call(method: str, *args: str, address: str | None = None,
         interactive: bool = False) -> None:
    """Call a Manager method taking string arguments (Takeover, Release, Reload, Cleanup,
    FenceConfirm).

    `interactive`: allow polkit to ask the user for a password through an
    authentication agent, when one is running.
    """
    flags = MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION if interactive else MessageFlag.NONE

    async def work(bus: MessageBus) -> None:
        check(await bus.call(Message(
            destination=BUS_NAME, path=OBJECT_PATH, interface=MANAGER_IFACE, member=method,
            signature="s" * len(args), body=list(args), flags=flags)))

    timeout = INTERACTIVE_TIMEOUT if interactive else CALL_TIMEOUT
    asyncio.run(_with_bus(address, timeout, work))
