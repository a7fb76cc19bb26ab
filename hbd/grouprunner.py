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
from hbd.core.haresources import IPv4Spec, IPv6Spec, parse_ipv4_spec, parse_ipv6_spec
from hbd.errors import HbdError, NetError
from hbd.net import addresses, batch
from hbd.net.addresses import AddressOutcome, VirtualAddress
from hbd.net.arp import Announcement, announce_once

log = logging.getLogger(__name__)

STOP_ATTEMPTS = 3
STOP_RETRY_DELAY = 1.0

Done = Callable[[str, str, bool, str], None]  # (group key, "start"|"stop", ok, detail)
MonitorDone = Callable[[str, int, bool, str], None]  # (group key, token, ok, detail)


def _spec(resource: Resource) -> IPv4Spec | IPv6Spec:
    arg = resource.args[0] if resource.args else ""
    if resource.agent == "IPv6addr":
        return parse_ipv6_spec(arg)
    return parse_ipv4_spec(arg)


def _resolve(resource: Resource) -> VirtualAddress:
    """Blocking (netlink): the full address a native IP resource stands for."""
    spec = _spec(resource)
    if isinstance(spec, IPv6Spec):
        return addresses.resolve_ipv6(spec)
    return addresses.resolve_ipv4(spec)


class GroupRunner:
    def __init__(self, config: ClusterConfig, agents: AgentRunner, done: Done,
                 monitor_done: MonitorDone | None = None) -> None:
        self.groups: dict[str, ResourceGroup] = {g.key: g for g in config.groups}
        # groups a reload removed, by key: kept until a stop of theirs succeeds, since
        # the engine's StopGroup for them comes after update() (see update)
        self.retiring: dict[str, ResourceGroup] = {}
        self.agents = agents
        self.done = done
        self.monitor_done = monitor_done
        # the checks running, by (group key, token): a group may have several monitor lines
        self.monitors: dict[tuple[str, int], asyncio.Task[None]] = {}
        self.arp_count = config.hacf.arp_count
        self.arp_interval = config.hacf.arp_interval_ms / 1000.0
        self.resolved: dict[str, VirtualAddress] = {}  # by resource id, kept while held
        # netlink requests encoded ahead of time, by the ids of a run of native IPs
        self.prepared: dict[tuple[str, ...], batch.PreparedBatch] = {}
        self.announcements: dict[str, Announcement] = {}  # by group key
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def update(self, config: ClusterConfig) -> None:
        """A reload: new definitions apply to the next start of each group.

        A group the new configuration drops may still be running here, and the
        engine's StopGroup for it is carried out after this call.  Its old
        definition is kept in `retiring` until a stop succeeds (a failed stop
        keeps it, for the retry), so that stop still knows what to stop.
        """
        groups = {g.key: g for g in config.groups}
        retiring = {**self.retiring, **self.groups}
        self.retiring = {k: g for k, g in retiring.items() if k not in groups}
        self.groups = groups
        self.arp_count = config.hacf.arp_count
        self.arp_interval = config.hacf.arp_interval_ms / 1000.0

    # --- entry points (from the daemon, on the loop) -------------------------------

    def start(self, key: str) -> None:
        self._cancel_monitor(key)
        self._spawn(key, self._start(key))

    def stop(self, key: str) -> None:
        self._cancel_monitor(key)
        self._spawn(key, self._stop(key))

    def monitor(self, key: str, resource_ids: tuple[str, ...], timeout: float,
                token: int) -> None:
        """Check the group's resources off the loop; a check past `timeout` is killed."""
        task = asyncio.get_running_loop().create_task(
            self._monitor(key, resource_ids, timeout, token), name=f"monitor {key}")
        self.monitors[(key, token)] = task

    def _cancel_monitor(self, key: str) -> None:
        # A check must not run beside a start or stop of the same agents; its result
        # would be stale anyway (the engine ignores it).
        for running in [k for k in self.monitors if k[0] == key]:
            task = self.monitors.pop(running)
            if not task.done():
                task.cancel()

    def announce(self, key: str) -> None:
        """Re-send gratuitous ARP for the addresses of a group we keep."""
        group = self.groups.get(key)
        if group is None:
            return
        vas = [self.resolved[r.id] for r in group.resources if r.id in self.resolved]
        if vas:
            self._announce(key, vas)

    def refresh(self, key: str) -> None:
        """One more round for the addresses of a group running here (hbd.conf garp_refresh).

        A round of its own, beside any announcement still under way: the
        sends are non-blocking and failures are logged by the Announcement.
        """
        group = self.groups.get(key)
        if group is None:
            return
        vas = [self.resolved[r.id] for r in group.resources if r.id in self.resolved]
        if vas:
            announce_once(vas)

    async def prepare(self) -> None:
        """Resolve every native address now (one netlink dump), so a takeover only adds.

        Placing an address by subnet needs the host's address list; doing that
        for 64 addresses during a failover would cost more than adding them.
        Failures are only logged here: the takeover tries again and reports.
        """
        pending = [r for g in self.groups.values() for r in g.resources
                   if r.kind is AgentKind.NATIVE_IP and r.id not in self.resolved]
        if not pending:
            return

        def work() -> list[VirtualAddress | NetError]:
            return addresses.resolve_many([_spec(r) for r in pending])

        try:
            results = await asyncio.to_thread(work)
        except NetError as err:
            log.warning("cannot resolve the service addresses yet: %s", err)
            return
        for resource, result in zip(pending, results, strict=True):
            if isinstance(result, NetError):
                log.warning("%s: %s", resource.id, result)
            else:
                self.resolved[resource.id] = result
        await self._prepare_batches()

    def _native_runs(self) -> list[list[Resource]]:
        runs: list[list[Resource]] = []
        for group in self.groups.values():
            run: list[Resource] = []
            for resource in [*group.resources, None]:
                if resource is not None and resource.kind is AgentKind.NATIVE_IP:
                    run.append(resource)
                elif run:
                    runs.append(run)
                    run = []
        return runs

    async def _prepare_batches(self) -> None:
        runs = [run for run in self._native_runs()
                if all(r.id in self.resolved for r in run)
                and tuple(r.id for r in run) not in self.prepared]

        def work() -> None:
            for run in runs:
                vas = [self.resolved[r.id] for r in run]
                try:
                    self.prepared[tuple(r.id for r in run)] = batch.prepare(vas)
                except NetError as err:
                    log.warning("cannot prepare %d address(es): %s", len(vas), err)

        if runs:
            await asyncio.to_thread(work)

    async def stop_stale(self) -> dict[str, str]:
        """At start-up: stop every group found active although we hold nothing yet.

        A previous hbd that died without releasing (SIGKILL, watchdog) leaves
        addresses and services behind, and the peer may have taken them over
        since.  As Heartbeat's ResourceManager verifyallidle says, non-idle
        resources at start endanger data; hbd stops them before joining the
        cluster, and the protocol then places every group afresh.
        Returns {group key: error} for the groups that would not stop.
        """
        stuck: dict[str, str] = {}
        for key, group in self.groups.items():
            active = await self._active_resources(group)
            if not active:
                continue
            log.critical("group %s is active but hbd has just started (%s): a previous hbd "
                         "died without releasing it; stopping it before joining the cluster",
                         key, ", ".join(r.id for r in active))
            error = await self._stop_resources(key, list(group.resources))
            if error is not None:
                stuck[key] = error
        return stuck

    async def _active_resources(self, group: ResourceGroup) -> list[Resource]:
        active: list[Resource] = []
        natives = [r for r in group.resources if r.kind is AgentKind.NATIVE_IP
                   and r.id in self.resolved]
        if natives:
            vas = [self.resolved[r.id] for r in natives]
            try:
                flags = await asyncio.to_thread(addresses.present_all, vas)
            except NetError as err:
                log.warning("cannot check the addresses of %s: %s", group.key, err)
                flags = [False] * len(vas)
            active += [r for r, up in zip(natives, flags, strict=True) if up]
        for resource in group.resources:
            if resource.kind is AgentKind.NATIVE_IP:
                continue
            try:
                result = await self.agents.run(resource, "status")
            except HbdError as err:
                log.warning("cannot check %s: %s", resource.id, err)
                continue
            if result.running:
                active.append(resource)
        return active

    def busy(self) -> bool:
        return any(not t.done() for t in self.tasks.values())

    def _spawn(self, key: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"group {key}")
        self.tasks[key] = task

    # --- monitor -----------------------------------------------------------------

    async def _monitor(self, key: str, resource_ids: tuple[str, ...], timeout: float,
                       token: int) -> None:
        group = self.groups.get(key)
        if group is None:
            ok, detail = False, "no such group in haresources"
        else:
            wanted = [r for r in group.resources if r.id in resource_ids]
            try:
                ok, detail = await asyncio.wait_for(self._check(wanted, timeout), timeout)
            except TimeoutError:
                ok, detail = False, (f"monitor timed out after {timeout:g}s; the check was "
                                     "killed")
        self.monitors.pop((key, token), None)
        if self.monitor_done is not None:
            self.monitor_done(key, token, ok, detail)

    async def _check(self, resources: list[Resource], timeout: float) -> tuple[bool, str]:
        """Left to right; the first resource found not running ends the check."""
        for resource in resources:
            if resource.kind is AgentKind.NATIVE_IP:
                problem = await self._check_address(resource)
                if problem is not None:
                    return False, f"{resource.id}: {problem}"
                continue
            try:
                result = await self.agents.run(resource, "status", timeout=timeout)
            except HbdError as err:
                return False, f"{resource.id}: {err}"
            if not result.ok or not result.running:
                return False, f"{resource.id}: {result.detail}"
        return True, f"{len(resources)} resource(s) running"

    async def _check_address(self, resource: Resource) -> str | None:
        def work() -> str | None:
            va = self.resolved.get(resource.id) or _resolve(resource)
            return addresses.check_held([va])[0]

        try:
            return await asyncio.to_thread(work)
        except (HbdError, OSError) as err:
            return str(err)

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

    def _apply(self, resources: list[Resource], vas: list[VirtualAddress],
               command: str) -> list[AddressOutcome]:
        """Blocking: one prepared netlink write when possible, else step by step."""
        prepared = self.prepared.get(tuple(r.id for r in resources))
        slow = addresses.add_addresses if command == "add" else addresses.remove_addresses
        if prepared is None or list(prepared.vas) != vas:
            return slow(vas)
        outcomes = batch.send(prepared, command)
        retry = [o.va for o in outcomes if not o.ok]
        if not retry:
            return outcomes
        # e.g. an interface recreated with a new index: the careful path copes
        self.prepared.pop(tuple(r.id for r in resources), None)
        redone = iter(slow(retry))
        return [o if o.ok else next(redone) for o in outcomes]

    async def _add_addresses(self, key: str, resources: list[Resource]) -> None:
        def work() -> list[VirtualAddress]:
            missing = [r for r in resources if r.id not in self.resolved]
            for resource, result in zip(missing, addresses.resolve_many(
                    [_spec(r) for r in missing]), strict=True):
                if isinstance(result, NetError):
                    raise result
                self.resolved[resource.id] = result
            vas = [self.resolved[r.id] for r in resources]
            failed = [o for o in self._apply(resources, vas, "add") if not o.ok]
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
        group = self.groups.get(key) or self.retiring.get(key)
        if group is None:
            self.done(key, "stop", False, "no such group in haresources")
            return
        error = await self._stop_resources(key, list(group.resources))
        if error is None and self.retiring.get(key) is group:
            del self.retiring[key]  # stopped: the removed definition is no longer needed
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

    async def _remove_addresses(self, resources: list[Resource]) -> str | None:
        def work() -> str | None:
            known = [r for r in resources if r.id in self.resolved]
            unknown = [r for r in resources if r.id not in self.resolved]
            vas = [self.resolved[r.id] for r in known]
            for resource in unknown:
                try:
                    vas.append(_resolve(resource))
                except NetError:
                    continue  # nothing resolvable was ever added
            outcomes = (self._apply(resources, vas, "remove") if not unknown
                        else addresses.remove_addresses(vas))
            failed = [o for o in outcomes if not o.ok]
            if failed:
                return str(failed[0].error or f"cannot remove {failed[0].va}")
            return None

        try:
            return await asyncio.to_thread(work)
        except (HbdError, OSError) as err:
            return str(err)

