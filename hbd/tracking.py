"""Link tracking's adapter: the rtnetlink watcher feeding the core's LinkTracker.

What is tracked comes from the configuration and the group runner: every
interface a group's native addresses live on (as resolved at start, or as
named in haresources) and the removal of those addresses by someone else,
unless hbd.conf says `link_tracking off`; plus the `track_interface` lines.
The watcher's reports arrive on the loop and go straight into
hbd.core.linktrack; its actions are dispatched by the stack (one dispatch,
one timer: the tracker's settle and grace deadlines are in the stack's
`_deadlines`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from hbd.core.actions import Action
from hbd.core.config import AgentKind, ClusterConfig
from hbd.core.haresources import parse_ipv4_spec, parse_ipv6_spec
from hbd.core.linktrack import LinkState, LinkTracker
from hbd.errors import HbdError
from hbd.grouprunner import GroupRunner
from hbd.net.linkwatch import LinkWatch

log = logging.getLogger(__name__)

SYNC_WAIT = 2.0  # seconds start() waits for the first dump before going on without it

Feed = Callable[[list[Action]], None]  # dispatch the actions, re-arm the timer
Clock = Callable[[], tuple[float, float]]  # (monotonic, wall)


def tracked(config: ClusterConfig, runner: GroupRunner) -> tuple[
        dict[str, set[str]], dict[str, str], dict[str, str]]:
    """(interface -> group keys, address -> group key, address -> interface)."""
    needs: dict[str, set[str]] = {}
    owners: dict[str, str] = {}
    homes: dict[str, str] = {}
    keys = [g.key for g in config.groups]
    for group in config.groups:
        for resource in group.resources:
            if resource.kind is not AgentKind.NATIVE_IP:
                continue
            if not config.hbd.link_tracking:
                continue  # off: neither the addresses' interfaces nor their removal
            va = runner.resolved.get(resource.id)
            if va is not None:
                owners[va.address] = group.key
                homes[va.address] = va.interface
                interface: str | None = va.interface
            else:
                interface = _named_interface(resource.agent, resource.args)
            if interface:
                needs.setdefault(interface, set()).add(group.key)
    for track in config.hbd.tracks:
        for name in track.interfaces:
            needs.setdefault(name, set()).update(keys if track.group == "*" else [track.group])
    return needs, owners, homes


def _named_interface(agent: str, args: tuple[str, ...]) -> str | None:
    """The interface an unresolved address names itself (`IP/24/eth0`), if any."""
    try:
        spec = (parse_ipv6_spec if agent == "IPv6addr" else parse_ipv4_spec)(
            args[0] if args else "")
    except (HbdError, ValueError):
        return None
    return spec.interface


class LinkTracking:
    def __init__(self, tracker: LinkTracker, feed: Feed, clock: Clock) -> None:
        self.tracker = tracker
        self._feed = feed
        self._clock = clock
        self._synced = asyncio.Event()
        self.watch = LinkWatch(self._on_link, self._on_synced, self._on_address)
        self.running = False

    def configure(self, config: ClusterConfig, runner: GroupRunner) -> None:
        needs, owners, homes = tracked(config, runner)
        now, wall = self._clock()
        self._feed(self.tracker.configure(needs, owners, homes, now, wall))

    async def start(self, loop: asyncio.AbstractEventLoop, config: ClusterConfig,
                    runner: GroupRunner) -> None:
        """Track from now on; return once every interface's state is known (or after
        SYNC_WAIT: the cluster does not wait longer for it)."""
        self.configure(config, runner)
        try:
            self.watch.start(loop)
        except HbdError as err:
            log.error("link tracking is off: %s", err)
            return
        self.running = True
        try:
            await asyncio.wait_for(self._synced.wait(), SYNC_WAIT)
        except TimeoutError:
            log.warning("netlink did not list the interfaces within %g s: link tracking "
                        "starts without them", SYNC_WAIT)

    def close(self) -> None:
        self.watch.close()
        self.running = False

    def _on_link(self, name: str, state: LinkState) -> None:
        now, wall = self._clock()
        self._feed(self.tracker.link(name, state, now, wall))

    def _on_synced(self, names: list[str]) -> None:
        now, wall = self._clock()
        self._synced.set()
        self._feed(self.tracker.synced(names, now, wall))

    def _on_address(self, address: str, interface: str, present: bool) -> None:
        if present:
            self.tracker.address_added(address)
            return
        self.tracker.address_removed(address, interface, self._clock()[0])
        self._feed([])  # re-arm: the removal is judged on the timer
