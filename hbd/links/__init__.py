"""All heartbeat links of this node, opened, retried and written as one set.

A link that fails to open (missing interface, missing tty) is reported once
and retried every RETRY_INTERVAL; the others keep working meanwhile.  The
daemon asks `next_retry()` when arming its single timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hbd.core.actions import Transmit
from hbd.core.config import HaCf, SerialLink
from hbd.errors import LinkError
from hbd.links.udp import IPV6_LINKS, UdpEndpoint, UdpLink

if TYPE_CHECKING:  # imported (with pyserial) only when ha.cf configures a serial link
    from hbd.links.serial import SerialEndpoint

    Endpoint = UdpEndpoint | SerialEndpoint

log = logging.getLogger(__name__)

RETRY_INTERVAL = 5.0


@dataclass
class _Slot:
    endpoint: Endpoint
    next_retry: float | None = None  # None: open (or never tried)
    last_error: str = ""


class LinkSet:
    def __init__(self, hacf: HaCf, deliver: Callable[[bytes, int], str | None],
                 node: str = "") -> None:
        """deliver(data, link) answers the peer the datagram authenticated as, which
        the UDP endpoints' socket filters learn source addresses from; `node` is this
        node (every other `node` of ha.cf is a peer those filters wait to hear)."""
        self.deliver = deliver
        self.slots: list[_Slot] = []
        udp: dict[tuple[bool, str, int], dict[int, UdpLink]] = {}
        for index, link in enumerate(hacf.links):
            if isinstance(link, SerialLink):
                from hbd.links.serial import SerialEndpoint

                self.slots.append(_Slot(SerialEndpoint(index, link, deliver,
                                                       self._serial_failed)))
            else:
                ipv6 = isinstance(link, IPV6_LINKS)
                udp.setdefault((ipv6, link.interface, link.port), {})[index] = link
        peers = frozenset(n for n in hacf.nodes if n != node) if node else frozenset()
        hold = hacf.timers.deadtime_ms / 2000.0  # half a deadtime: see hbd.links.udp
        for (_ipv6, interface, port), links in udp.items():
            self.slots.append(_Slot(UdpEndpoint(interface, port, links, deliver,
                                                peers=peers, hold=hold)))
        self._loop: asyncio.AbstractEventLoop | None = None

    def open_all(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for slot in self.slots:
            self._try_open(slot, loop.time())

    def _try_open(self, slot: _Slot, now: float) -> None:
        assert self._loop is not None
        try:
            slot.endpoint.open(self._loop)
        except LinkError as err:
            if str(err) != slot.last_error:
                log.error("cannot open link %s; retrying every %.0f s", err, RETRY_INTERVAL)
            slot.last_error = str(err)
            slot.next_retry = now + RETRY_INTERVAL
            return
        if slot.last_error:
            log.info("link %s opened", slot.endpoint.describe())
        else:
            log.info("link %s open", slot.endpoint.describe())
        slot.last_error = ""
        slot.next_retry = None

    def _serial_failed(self, endpoint: SerialEndpoint, reason: str) -> None:
        for slot in self.slots:
            if slot.endpoint is endpoint:
                log.error("link %s failed: %s; reopening every %.0f s", endpoint.describe(),
                          reason, RETRY_INTERVAL)
                slot.last_error = reason
                now = self._loop.time() if self._loop else 0.0
                slot.next_retry = now + RETRY_INTERVAL

    def next_retry(self) -> float | None:
        """The next reopening attempt or socket filter review, whichever is first."""
        due = [s.next_retry for s in self.slots if s.next_retry is not None]
        for slot in self.slots:
            if isinstance(slot.endpoint, UdpEndpoint):
                review = slot.endpoint.next_due()
                if review is not None:
                    due.append(review)
        return min(due) if due else None

    def retry(self, now: float) -> None:
        for slot in self.slots:
            if slot.next_retry is not None and now >= slot.next_retry:
                self._try_open(slot, now)
            elif isinstance(slot.endpoint, UdpEndpoint):
                slot.endpoint.tick(now)

    def status(self) -> dict[str, bool]:
        """Our own links by name (interface or tty) -> open."""
        out: dict[str, bool] = {}
        for slot in self.slots:
            endpoint = slot.endpoint
            if not isinstance(endpoint, UdpEndpoint):  # a serial one
                out[endpoint.link.device] = endpoint.is_open
            else:
                # an interface carrying IPv4 and IPv6 media is one link, as in Heartbeat
                out[endpoint.interface] = out.get(endpoint.interface, False) or endpoint.is_open
        return out

    def open_count(self) -> int:
        return sum(1 for s in self.slots if s.endpoint.is_open)

    def send(self, transmit: Transmit) -> None:
        for slot in self.slots:
            endpoint = slot.endpoint
            if not isinstance(endpoint, UdpEndpoint):  # a serial one
                if transmit.links is None or endpoint.index in transmit.links:
                    endpoint.send(transmit.classic)
            else:
                endpoint.send(transmit.netstring, transmit.links)

    def close_all(self) -> None:
        for slot in self.slots:
            slot.endpoint.close()
