"""`hbctl status --watch`: the cluster as this node sees it, redrawn as it changes.

Like crm_mon, but driven by hbd's signals instead of polling: one GetAll at
the start, then every PropertiesChanged of the Manager updates the copy held
here and asks for a redraw.  Bursts coalesce: at most one redraw every
REDRAW_INTERVAL (a failover changes several properties within milliseconds).

On a terminal (stdout a tty and TERM not `dumb`) each screen replaces the
last (ANSI home + clear); otherwise every screen is printed after a line with
its time, so a pipe or a log gets a readable sequence.  No colours.

Ends: Ctrl-C (SIGINT) or SIGTERM stops it quietly with exit 0; hbd not
answering a re-read within READ_TIMEOUT, or hbd leaving
the bus (its name loses its owner: stopped, crashed, restarting, or passes
straight to another process queued for it) or the bus
going away prints why and exits 3, as any hbctl command that cannot reach hbd
does.  It does not wait for hbd to come back: `while :; do hbctl status
--watch; sleep 1; done` does that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import MessageType
from dbus_next.message import Message

from hbd.bus import client
from hbd.bus.names import BUS_NAME, MANAGER_IFACE, OBJECT_PATH

REDRAW_INTERVAL = 0.1
EXIT_OK, EXIT_UNREACHABLE = 0, 3
CLEAR = "\x1b[H\x1b[2J"
_MATCHES = (
    f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}',"
    "interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',"
    f"arg0='{MANAGER_IFACE}'",
    "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
    f"member='NameOwnerChanged',arg0='{BUS_NAME}'",
)

Render = Callable[[client.State], str]


def fancy_terminal(out: TextIO) -> bool:
    """Redraw in place only on a real terminal that understands ANSI clear."""
    return out.isatty() and os.environ.get("TERM", "dumb") not in ("", "dumb")


class Watch:
    """One watch session on a connected bus: holds the properties, draws, ends."""

    def __init__(self, bus: MessageBus, render: Render, out: TextIO, *, clear: bool,
                 json_lines: bool) -> None:
        self.bus = bus
        self.render = render
        self.out = out
        self.clear = clear
        self.json_lines = json_lines
        self.props: dict[str, Any] = {}
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._last_draw = 0.0
        self._pending: asyncio.TimerHandle | None = None
        self._last_text = ""
        self._refetch = False
        self.owner = ""  # hbd's unique name: the only sender whose changes count

    def finish(self, code: int, why: str = "") -> None:
        if self.done.done():
            return
        if why:
            print(f"hbctl: {why}", file=sys.stderr, flush=True)
        self.done.set_result(code)

    def on_message(self, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL or self.done.done():
            return
        # A unicast signal reaches us whatever our match rules say: check who sent it.
        if (msg.member == "NameOwnerChanged" and msg.sender == "org.freedesktop.DBus"
                and msg.body and msg.body[0] == BUS_NAME):
            if not msg.body[2]:
                self.finish(EXIT_UNREACHABLE, "hbd went away (org.linuxha.hbd1 left the bus)")
            elif msg.body[2] != self.owner and self.owner:
                # straight to a process that was queued for the name (a second hbd):
                # the hbd we watched is gone, and its successor's state is not ours
                self.finish(EXIT_UNREACHABLE, "hbd went away (org.linuxha.hbd1 passed to "
                            "another process)")
        elif (msg.member == "PropertiesChanged" and msg.path == OBJECT_PATH
              and msg.sender == self.owner and msg.body and msg.body[0] == MANAGER_IFACE):
            self.props.update(msg.body[1])
            self._refetch = self._refetch or bool(msg.body[2])  # invalidated: read them
            self.schedule()

    def schedule(self) -> None:
        """Redraw now, or when REDRAW_INTERVAL has passed since the last one."""
        if self._pending is not None:
            return
        loop = asyncio.get_running_loop()
        at = max(loop.time(), self._last_draw + REDRAW_INTERVAL)
        self._pending = loop.call_at(at, lambda: asyncio.ensure_future(self.redraw()))

    async def redraw(self) -> None:
        self._last_draw = asyncio.get_running_loop().time()
        self._pending = None
        if self._refetch:
            self._refetch = False
            try:  # bounded: a hung hbd must end the watch, not freeze it unnoticed
                self.props = await asyncio.wait_for(client.get_all(self.bus),
                                                    client.READ_TIMEOUT)
            except client.ClientError as err:
                self.finish(EXIT_UNREACHABLE, f"cannot read hbd's state: {err.message}")
                return
            except TimeoutError:
                self.finish(EXIT_UNREACHABLE, "cannot read hbd's state: hbd did not answer")
                return
            except Exception as err:  # the bus went away under the call (dbus-next's own)
                self.finish(EXIT_UNREACHABLE, f"cannot read hbd's state: {err}")
                return
        self.draw()

    def draw(self) -> None:
        if self.done.done():
            return
        try:
            text = self.render(client.state_from(self.props))
        except (KeyError, TypeError, ValueError, IndexError):  # a value not as documented
            self._refetch = True  # read everything again at the next change
            return
        if text == self._last_text:
            return
        self._last_text = text
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        if self.json_lines:
            screen = text + "\n"
        elif self.clear:
            screen = f"{CLEAR}{stamp}  hbctl status --watch (Ctrl-C to quit)\n\n{text}\n"
        else:
            screen = f"--- {stamp} ---\n{text}\n"
        try:
            self.out.write(screen)
            self.out.flush()
        except BrokenPipeError as err:  # `hbctl status --watch | head`: hbctl's main handles it
            self.done.set_exception(err)


async def _run(address: str | None, render: Render, out: TextIO, json_lines: bool) -> int:
    bus = await client.connect(address)
    try:
        session = Watch(bus, render, out, clear=fancy_terminal(out) and not json_lines,
                        json_lines=json_lines)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, session.finish, EXIT_OK)
        bus.add_message_handler(session.on_message)
        for rule in _MATCHES:  # before the GetAll: no change falls between the two
            reply = await bus.call(Message(
                destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                body=[rule]))
            client.check(reply)
        reply = client.check(await bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="GetNameOwner", signature="s",
            body=[BUS_NAME])))
        session.owner = str(reply.body[0])
        session.props = await asyncio.wait_for(client.get_all(bus), client.READ_TIMEOUT)
        session.draw()
        lost = asyncio.ensure_future(bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
        lost.add_done_callback(lambda _: session.finish(EXIT_UNREACHABLE, "lost the system bus"))
        try:
            return await session.done
        finally:
            lost.cancel()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
    except TimeoutError:
        raise client.ClientError(client.TIMED_OUT, "hbd did not answer") from None
    finally:
        with contextlib.suppress(Exception):
            bus.disconnect()  # type: ignore[no-untyped-call]


def run(render: Render, *, json_lines: bool = False, address: str | None = None,
        out: TextIO | None = None) -> int:
    """Watch until Ctrl-C (0) or hbd leaves (3).  Raises client.ClientError when hbd
    cannot be reached at the start."""
    try:
        return asyncio.run(_run(address, render, out or sys.stdout, json_lines))
    except KeyboardInterrupt:  # Ctrl-C before the handler was in place (still connecting)
        return EXIT_OK
