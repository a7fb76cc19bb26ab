"""hbd/net/linkwatch.py against a real kernel: veth pairs in a network namespace.

The watcher runs on an asyncio loop in a thread that joined node n1's namespace;
the test changes links and addresses with `ip` and waits for what the watcher
reports.  Carrier loss on a veth: bring the far end (the switch's port) down.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import queue
import threading
import time
from typing import Any

import pytest

from hbd.core.linktrack import LinkState
from hbd.net.linkwatch import LinkWatch
from tests.infra.netns import SWITCH, Lab

pytestmark = pytest.mark.netns

_CLONE_NEWNET = 0x40000000


class Watcher:
    """A LinkWatch on its own loop, in a thread inside a node's namespace."""

    def __init__(self, lab: Lab, node: str) -> None:
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(f"/run/netns/"
                                                                 f"{lab.nsname(node)}",))
        self._thread.start()
        assert self._ready.wait(10)
        if self._error is not None:
            raise self._error

    def _run(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            asyncio.run(self._main())
        except BaseException as err:
            self._error = err
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        watch = LinkWatch(lambda n, s: self.events.put(("link", n, s)),
                          lambda names: self.events.put(("synced", tuple(sorted(names)))),
                          lambda a, i, p: self.events.put(("address", a, i, p)))
        watch.start(self._loop)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            watch.close()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def expect(self, event: tuple[Any, ...], timeout: float = 5.0) -> float:
        """Wait for `event`; return when it came (monotonic)."""
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                got = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if got == event:
                return time.monotonic()
            seen.append(got)
        raise AssertionError(f"no {event} within {timeout} s; saw {seen}")

    def drain(self) -> list[tuple[Any, ...]]:
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out


@pytest.fixture(scope="module")
def lab(module_make_lab: Any) -> Lab:
    return module_make_lab(["n1"], networks=["10.81.0.0/24"])


@pytest.fixture
def watcher(lab: Lab) -> Any:
    w = Watcher(lab, "n1")
    yield w
    w.close()


def _switch(lab: Lab, *argv: str) -> None:
    lab.run(SWITCH, ["ip", *argv])


def test_start_reports_every_interface_then_synced(lab: Lab, watcher: Watcher) -> None:
    watcher.expect(("link", "eth0", LinkState.UP))
    watcher.expect(("synced", ("eth0", "lo")))


def test_carrier_loss_admin_down_and_back(lab: Lab, watcher: Watcher) -> None:
    watcher.expect(("synced", ("eth0", "lo")))
    port = lab.iface("n1").port
    try:
        _switch(lab, "link", "set", port, "down")  # the cable's far end: no carrier here
        watcher.expect(("link", "eth0", LinkState.NO_CARRIER))
        _switch(lab, "link", "set", port, "up")
        watcher.expect(("link", "eth0", LinkState.UP))
        lab.run("n1", ["ip", "link", "set", "eth0", "down"])
        watcher.expect(("link", "eth0", LinkState.DOWN))
        lab.run("n1", ["ip", "link", "set", "eth0", "up"])
        watcher.expect(("link", "eth0", LinkState.UP))
    finally:
        _switch(lab, "link", "set", port, "up")
        lab.run("n1", ["ip", "link", "set", "eth0", "up"], check=False)


def test_address_removed_and_added(lab: Lab, watcher: Watcher) -> None:
    watcher.expect(("synced", ("eth0", "lo")))
    lab.run("n1", ["ip", "addr", "add", "10.81.0.200/24", "dev", "eth0"])
    watcher.expect(("address", "10.81.0.200", "eth0", True))
    lab.run("n1", ["ip", "addr", "del", "10.81.0.200/24", "dev", "eth0"])
    watcher.expect(("address", "10.81.0.200", "eth0", False))


def test_interface_renamed_and_removed(lab: Lab, watcher: Watcher) -> None:
    watcher.expect(("synced", ("eth0", "lo")))
    lab.run("n1", ["ip", "link", "add", "trk0", "type", "veth", "peer", "name", "trkp"])
    watcher.expect(("link", "trk0", LinkState.DOWN))
    lab.run("n1", ["ip", "link", "set", "trk0", "name", "trk1"])
    watcher.expect(("link", "trk0", LinkState.ABSENT))
    watcher.expect(("link", "trk1", LinkState.DOWN))
    lab.run("n1", ["ip", "link", "del", "trk1"])
    watcher.expect(("link", "trk1", LinkState.ABSENT))
