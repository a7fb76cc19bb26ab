"""Carry out the engine's StartGroup/StopGroup: the resources of one haresources line.

Start goes left to right, stop right to left, as Heartbeat's ResourceManager
does.  IPaddr/IPaddr2/IPv6addr are handled in-process: consecutive
addresses are added with one netlink batch (in a worker thread: pyroute2
must not run on the loop) and announced with gratuitous ARP at once; every
other name goes to the agent runner (resource.d, init.d or OCF).

* A failed start stops what was started so far, then reports the failure.
* A failed stop is retried (STOP_ATTEMPTS, STOP_RETRY_DELAY apart); if it
  still fails, the group is reported as not stopped and the engine keeps it
  BLOCKED.  Resources to its left are left alone: stopping a filesystem
  under a service that would not stop does more harm than good.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from hbd.agents import AgentRunner
from hbd.core.config import AgentKind, ClusterConfig, Resource, ResourceGroup
from hbd.core.haresources import parse_ipv4_spec, parse_ipv6_spec
from hbd.errors import HbdError, NetError
from hbd.net import addresses
from hbd.net.addresses import VirtualAddress
from hbd.net.arp import Announcement

log = logging.getLogger(__name__)

STOP_ATTEMPTS = 3
STOP_RETRY_DELAY = 1.0

Done = Callable[[str, str, bool, str], None]  # (group key, "start"|"stop", ok, detail)


def _resolve(resource: Resource) -> VirtualAddress:
    """Blocking (netlink): the full address a native IP resource stands for."""
    arg = resource.args[0] if resource.args else ""
    if resource.agent == "IPv6addr":
        return addresses.resolve_ipv6(parse_ipv6_spec(arg))
    return addresses.resolve_ipv4(parse_ipv4_spec(arg))


class GroupRunner:
    def __init__(self, config: ClusterConfig, agents: AgentRunner, done: Done) -> None:
        self.groups: dict[str, ResourceGroup] = {g.key: g for g in config.groups}
        self.agents = agents
        self.done = done
        self.arp_count = config.hacf.arp_count
        self.arp_interval = config.hacf.arp_interval_ms / 1000.0
        self.resolved: dict[str, VirtualAddress] = {}  # by resource id, kept while held
        self.announcements: dict[str, Announcement] = {}  # by group key
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def update(self, config: ClusterConfig) -> None:
        """A reload: new definitions apply to the next start of each group."""
        self.groups = {g.key: g for g in config.groups}
        self.arp_count = config.hacf.arp_count
        self.arp_interval = config.hacf.arp_interval_ms / 1000.0

    # --- entry points (from the daemon, on the loop) -------------------------------

    def start(self, key: str) -> None:
        self._spawn(key, self._start(key))

    def stop(self, key: str) -> None:
        self._spawn(key, self._stop(key))

    def announce(self, key: str) -> None:
        """Re-send gratuitous ARP for the addresses of a group we keep."""
        group = self.groups.get(key)
        if group is None:
            return
        vas = [self.resolved[r.id] for r in group.resources if r.id in self.resolved]
        if vas:
            self._announce(key, vas)

    def busy(self) -> bool:
        return any(not t.done() for t in self.tasks.values())

    def _spawn(self, key: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"group {key}")
        self.tasks[key] = task

    # --- start -------------------------------------------------------------------

    async def _start(self, key: str) -> None:
        group = self.groups.get(key)
        if group is None:
            self.done(key, "start", False, "no such group in haresources")
            return
        started: list[Resource] = []
        resources = list(group.resources)
        i = 0
        try:
            while i < len(resources):
                resource = resources[i]
                if resource.kind is AgentKind.NATIVE_IP:
                    batch = []
                    while i < len(resources) and resources[i].kind is AgentKind.NATIVE_IP:
                        batch.append(resources[i])
                        i += 1
                    await self._add_addresses(key, batch)
                    started += batch
                    continue
                result = await self.agents.run(resource, "start")
                if not result.ok:
                    raise HbdError(f"{resource.id}: start failed: {result.detail}")
                started.append(resource)
                i += 1
        except (HbdError, OSError) as err:
            log.error("group %s: %s; stopping what was started", key, err)
            await self._stop_resources(key, started)
            self.done(key, "start", False, str(err))
            return
        self.done(key, "start", True, "")

    async def _add_addresses(self, key: str, batch: list[Resource]) -> None:
        def work() -> list[VirtualAddress]:
            vas = []
            for resource in batch:
                va = self.resolved.get(resource.id) or _resolve(resource)
                self.resolved[resource.id] = va
                vas.append(va)
            failed = [o for o in addresses.add_addresses(vas) if not o.ok]
            if failed:
                raise failed[0].error or NetError(f"cannot add {failed[0].va}")
            return vas

        vas = await asyncio.to_thread(work)
        self._announce(key, vas)

    def _announce(self, key: str, vas: list[VirtualAddress]) -> None:
        previous = self.announcements.pop(key, None)
        if previous is not None:
            previous.cancel()
        if self.arp_count > 0:
            self.announcements[key] = Announcement(vas, self.arp_count, self.arp_interval)

    # --- stop --------------------------------------------------------------------

    async def _stop(self, key: str) -> None:
        group = self.groups.get(key)
        if group is None:
            self.done(key, "stop", False, "no such group in haresources")
            return
        error = await self._stop_resources(key, list(group.resources))
        self.done(key, "stop", error is None, error or "")

    async def _stop_resources(self, key: str, resources: list[Resource]) -> str | None:
        """Stop right to left; the first resource that will not stop ends the walk."""
        announcement = self.announcements.pop(key, None)
        if announcement is not None:
            announcement.cancel()
        i = len(resources) - 1
        while i >= 0:
            if resources[i].kind is AgentKind.NATIVE_IP:
                batch = []
                while i >= 0 and resources[i].kind is AgentKind.NATIVE_IP:
                    batch.append(resources[i])
                    i -= 1
                error = await self._retry(functools.partial(self._remove_addresses, batch))
            else:
                error = await self._retry(functools.partial(self._stop_agent, resources[i]))
                i -= 1
            if error is not None:
                log.error("group %s: %s", key, error)
                return error
        return None

    async def _retry(self, attempt: Callable[[], Coroutine[Any, Any, str | None]]) -> str | None:
        error: str | None = None
        for n in range(STOP_ATTEMPTS):
            error = await attempt()
            if error is None:
                return None
            if n + 1 < STOP_ATTEMPTS:
                log.warning("%s; retrying in %.0f s", error, STOP_RETRY_DELAY)
                await asyncio.sleep(STOP_RETRY_DELAY)
        return f"{error} (gave up after {STOP_ATTEMPTS} attempts)"

    async def _stop_agent(self, resource: Resource) -> str | None:
        try:
            result = await self.agents.run(resource, "stop")
        except HbdError as err:
            return f"{resource.id}: {err}"
        return None if result.ok else f"{resource.id}: stop failed: {result.detail}"

    async def _remove_addresses(self, batch: list[Resource]) -> str | None:
        def work() -> str | None:
            vas = []
            for resource in batch:
                va = self.resolved.get(resource.id)
                if va is None:
                    try:
                        va = _resolve(resource)
                    except NetError:
                        continue  # nothing resolvable was ever added
                vas.append(va)
            failed = [o for o in addresses.remove_addresses(vas) if not o.ok]
            if failed:
                return str(failed[0].error or f"cannot remove {failed[0].va}")
            for resource in batch:
                self.resolved.pop(resource.id, None)
            return None

        try:
            return await asyncio.to_thread(work)
        except (HbdError, OSError) as err:
            return str(err)

