"""hbd on the system bus: owns org.linuxha.hbd1 and keeps owning it.

The cluster never depends on the bus.  `start()` returns once the name is
owned or the first attempt has failed (and was logged); a background task
then reconnects with backoff whenever the connection drops or was never
there, re-exports every object and asks for the name again.  Snapshots keep
flowing into the exported objects while the bus is away, so a client that
reconnects reads current state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType, MessageType, RequestNameReply
from dbus_next.errors import DBusError
from dbus_next.message import Message

from hbd.bus import caller, polkit
from hbd.bus.connection import Bus
from hbd.bus.names import BUS_NAME
from hbd.bus.objects import Tree
from hbd.control import Controller
from hbd.errors import NotAuthorized

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0  # a bus daemon that accepts but never answers is as good as none
FIRST_RETRY = 0.2
MAX_RETRY = 5.0
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"


class BusService:
    """The D-Bus front of a Controller (a stack's daemon, on hbd.service.ServiceBase)."""

    def __init__(self, controller: Controller, *, bus_address: str | None = None) -> None:
        self._controller = controller
        self._address = bus_address  # None: $DBUS_SYSTEM_BUS_ADDRESS or the standard socket
        self._tree = Tree(controller, self._authorize)
        self._bus: MessageBus | None = None
        self._owned = False
        self._queued = False  # asked for the name and got in line behind another owner
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._first_attempt = asyncio.Event()

    @property
    def owned(self) -> bool:
        """True while this process is the primary owner of org.linuxha.hbd1."""
        return self._owned

    async def start(self) -> None:
        """Connect, export, request the name; never raises because the bus is absent."""
        if self._task is not None:
            return
        self._unsubscribe = self._controller.subscribe(self._tree.update)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="hbd-bus")
        await self._first_attempt.wait()

    async def stop(self) -> None:
        """Release the name, drop the connection, stop reconnecting."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._drop()

    # --- the connection loop -----------------------------------------------------------

    async def _run(self) -> None:
        delay = FIRST_RETRY
        failures = 0
        while True:
            try:
                bus = await self._connect()
            except Exception as err:  # whatever the bus did, the cluster must not notice
                self._drop()
                level = logging.WARNING if failures == 0 else logging.DEBUG
                if isinstance(err, DBusError) and err.type == ACCESS_DENIED:
                    log.log(level, "not allowed to own %s (%s): hbd must run as root and "
                            "dbus/%s.conf be installed in /usr/share/dbus-1/system.d; "
                            "retrying", BUS_NAME, err.text, BUS_NAME)
                else:
                    log.log(level, "system bus unavailable (%s: %s); the cluster runs on, "
                            "retrying every %.1fs at most", type(err).__name__, err, MAX_RETRY)
                failures += 1
                self._first_attempt.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY)
                continue
            self._first_attempt.set()
            delay, failures = FIRST_RETRY, 0
            try:
                await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
            except Exception as err:  # the connection broke rather than being closed
                log.debug("system bus connection error: %s", err)
            self._drop()
            log.warning("lost the system bus; the cluster runs on, reconnecting")

    async def _connect(self) -> MessageBus:
        if self._address is None:  # dbus-next: $DBUS_SYSTEM_BUS_ADDRESS or the standard path
            bus = Bus(bus_type=BusType.SYSTEM)
        else:
            bus = Bus(bus_address=self._address, bus_type=BusType.SYSTEM)
        self._bus = bus
        await asyncio.wait_for(bus.connect(), CONNECT_TIMEOUT)
        caller.install(bus)
        bus.add_message_handler(self._name_signals)
        self._tree.attach(bus)
        reply = await asyncio.wait_for(bus.request_name(BUS_NAME), CONNECT_TIMEOUT)
        if reply in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            self._owned = True
            log.info("owning %s on the system bus as %s", BUS_NAME, bus.unique_name)
        else:  # IN_QUEUE: another process owns it; NameAcquired tells us when it goes
            self._queued = True
            log.warning("%s is owned by another process; waiting in the queue (no control "
                        "over D-Bus until it goes)", BUS_NAME)
        return bus

    def _name_signals(self, msg: Message) -> None:
        if (msg.message_type is MessageType.SIGNAL and msg.sender == "org.freedesktop.DBus"
                and msg.member in ("NameAcquired", "NameLost") and msg.body
                and msg.body[0] == BUS_NAME):
            owned = msg.member == "NameAcquired"
            if owned != self._owned:
                # a first NameAcquired comes before RequestName's reply, which is logged
                level = logging.WARNING if not owned else (
                    logging.INFO if self._queued else logging.DEBUG)
                log.log(level, "%s %s", "acquired" if owned else "lost", BUS_NAME)
            self._owned = owned

    def _drop(self) -> None:
        """Forget the current connection (closing it if it is still open)."""
        self._owned = self._queued = False
        self._tree.detach()
        bus, self._bus = self._bus, None
        if bus is not None and bus.connected:
            bus.disconnect()  # type: ignore[no-untyped-call]

    async def _authorize(self, action: str) -> None:
        bus = self._bus
        who = caller.current()
        if bus is None:  # cannot happen while serving a call, but never guess yes
            raise NotAuthorized("not connected to the system bus")
        try:
            await polkit.authorize(bus, who, action)
        except NotAuthorized as err:
            log.warning("refused %s to %s: %s", action, who.sender, err)
            raise
        log.info("%s authorized for %s", who.sender, action)
