"""hbd on the Heartbeat stack (ha.cf `cluster_stack heartbeat`, the default).

Membership comes from hbd's own Heartbeat-compatible links: UDP and serial
endpoints (hbd.links) deliver datagrams and frames to the engine
(hbd.core.engine), whose components — the resource protocol
(hbd.core.failover) and the ping nodes (hbd.core.pingnodes) — decide who
runs which group.  The actions only this stack knows are carried out here:
transmissions on the links, ICMP pings, the peers' generations recorded in
the state directory.  The timer serves the engine (heartbeats, deadtime,
retransmissions, the components' deadlines) and the links that failed to
open; the rest of the daemon's life is hbd.service's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from hbd import __version__
from hbd.control import Snapshot
from hbd.core.actions import (
    Action,
    CancelFence,
    CheckFenceDevices,
    DeliverToClients,
    FenceNode,
    PersistPeerGeneration,
    SendPing,
    Transmit,
)
from hbd.core.apiquery import ClientStatusResponder
from hbd.core.clientmsgs import ClientRelay, Refused
from hbd.core.config import AuthMethod, ClusterConfig
from hbd.core.engine import Engine
from hbd.core.failover import Failover
from hbd.core.fifomsg import FifoCommand
from hbd.core.pingnodes import PingNodes
from hbd.errors import HbdError, NetError
from hbd.fencer import Fencer
from hbd.links import LinkSet
from hbd.respawn import runs_ipfail
from hbd.service import Options, ServiceBase
from hbd.snapshot import heartbeat as heartbeat_snapshot
from hbd.state import StateDir

log = logging.getLogger(__name__)

LOAD_REFRESH = 5.0  # seconds between reads of /proc/loadavg for the status `ld` field


class HeartbeatDaemon(ServiceBase):
    """The Controller (hbd.control) of an hbd whose cluster layer is its own links."""

    _ROUTINE = (Transmit, PersistPeerGeneration, SendPing, DeliverToClients)

    def __init__(self, options: Options, config: ClusterConfig) -> None:
        super().__init__(options, config)
        self.state = StateDir(options.state_dir)
        self._load_read_at = 0.0
        self.engine: Engine | None = None
        self.failover: Failover | None = None
        self.pingnodes: PingNodes | None = None
        self.pinger: Any = None  # hbd.net.icmp.Pinger when ping nodes are configured
        self._unpingable: set[str] = set()  # ping nodes whose echo could not be sent
        self.links: LinkSet | None = None
        self.clientstatus: ClientStatusResponder | None = None
        self.relay: ClientRelay | None = None  # named API clients' messages (ipfail)
        self.fencer = Fencer(config, options.runtime_dir, self._fence_done, self._fence_checked)
        self._heartbeats_sent: dict[int, int] = {}  # link index -> status messages sent

    # --- Heartbeat's named API clients: their messages ride our links ------------------

    _RELAYS = True

    def clients_changed(self, named: frozenset[str]) -> None:
        if self.clientstatus is not None:
            self.clientstatus.named_clients = named
        if self.pingnodes is not None:
            self.pingnodes.ipfail_signed_on = "ipfail" in named

    def client_status(self, client: str, joined: bool, reason: str, generation: int) -> None:
        if self.relay is None or (self._stopping and joined):
            return
        self._dispatch(self.relay.client_status(client, joined, reason, generation,
                                                *self._now()))
        self._arm()

    def client_message(self, client: str, fields: list[tuple[str, str]],
                       generation: int) -> str | None:
        if self.relay is None:
            return "hbd is not running its cluster layer yet"
        now, wall = self._now()
        result = self.relay.from_client(client, tuple(fields), generation, now, wall)
        if isinstance(result, Refused):
            return result.reason
        if isinstance(result, FifoCommand):
            # ipfail's giveup: what hb_standby asks for.  A refusal (Busy: a standby under
            # way, InvalidScope...) goes back to the API server, which logs it at most once
            # a minute: a client may ask again and again
            what = "standby" if result.command == "release" else result.command
            if self._stopping:
                return f"{what} [{result.scope}] ignored: hbd is stopping"
            try:
                self._command(result.command, result.scope)
            except HbdError as err:
                return f"{what} [{result.scope}] refused: {err}"
            log.info("%s asks for %s [%s]", result.tool, what, result.scope)
            return None
        self._dispatch(result)
        self._arm()
        return None

    def client_query(self, fields: list[tuple[str, str]]) -> str | None:
        if self.relay is None:
            return "hbd is not running its cluster layer yet"
        result = self.relay.query(tuple(fields), *self._now())
        if isinstance(result, Refused):
            return result.reason
        self._dispatch(result)
        self._arm()
        return None

    def _respawn_ended(self, entry: Any) -> None:
        super()._respawn_ended(entry)
        self._ipfail_respawned()

    def _ipfail_respawned(self) -> None:
        """Whether a respawned ipfail decides on ping nodes: not once its line ended (it
        exited 100, respawned too fast, cannot run), so that the built-in rule is back."""
        if self.pingnodes is None:
            return
        kept = self.config.hacf.respawn if self.respawner is None else self.respawner.kept()
        was, now = self.pingnodes.ipfail_respawned, runs_ipfail(kept)
        self.pingnodes.ipfail_respawned = now
        if was and not now and self.pingnodes.decides and self.pingnodes.addresses:
            log.warning("ipfail is not respawned any more: hbd's built-in ping node rule "
                        "decides again")

    def _group_work(self) -> Failover:
        assert self.failover is not None
        return self.failover

    # --- the engine: packets in, the stack's own actions out ------------------------------

    def _on_packet(self, data: bytes, link: int) -> str | None:
        """Feed one datagram or frame to the engine; answer the peer it came from."""
        assert self.engine is not None
        now, wall = self._now()
        actions = self.engine.receive(data, link, now, wall)
        sender = self.engine.last_sender
        if actions:
            self._dispatch(actions)
        # A datagram that did not authenticate changed nothing but the bad-packet
        # counters, whose summary can wait for the next timer (a keepalive at most):
        # a flood of them costs no timer computation per datagram.
        if actions or sender is not None:
            self._arm()
        return sender

    def _carry_out(self, action: Action) -> bool:
        if isinstance(action, Transmit):
            assert self.links is not None  # the engine starts sending once they are open
            self.links.send(action)
            if action.msgtype == "status":
                sent = self._heartbeats_sent
                for index in action.links or range(len(self.config.hacf.links)):
                    sent[index] = sent.get(index, 0) + 1
        elif isinstance(action, SendPing):
            if self.pinger is not None:
                try:
                    self.pinger.send(action.address)
                except NetError as err:  # e.g. no ICMPv6 socket on a host without IPv6
                    if action.address not in self._unpingable:
                        self._unpingable.add(action.address)
                        log.error("cannot ping %s (%s): it counts as unreachable",
                                  action.address, err)
        elif isinstance(action, FenceNode):
            self.fencer.fence(action.node, action.attempt)
        elif isinstance(action, CancelFence):
            self.fencer.cancel(action.node)
        elif isinstance(action, CheckFenceDevices):
            self.fencer.check()
        elif isinstance(action, PersistPeerGeneration):
            # a writer thread fsyncs it; its failures are logged there
            self.state.record_peer_generation(action.node, action.generation)
        else:
            return False
        return True

    def _metrics_traffic(self) -> tuple[tuple[tuple[str, int], ...],
                                        tuple[tuple[tuple[str, str], int], ...],
                                        tuple[tuple[str, int], ...]]:
        assert self.engine is not None
        names = self.engine.link_names
        sent: dict[str, int] = {}
        for index, count in self._heartbeats_sent.items():
            name = names[index] if index < len(names) else f"link{index}"
            sent[name] = sent.get(name, 0) + count  # links sharing an interface: one
        received: dict[tuple[str, str], int] = {}
        for peer in self.engine.peers.values():
            for state in peer.links.values():
                key = (peer.name, state.name)
                received[key] = received.get(key, 0) + state.heard
        return (tuple(sorted(sent.items())), tuple(sorted(received.items())),
                tuple(sorted(self.engine.bad.totals.items())))

    # --- fencing (hbd.fencer runs the devices) ----------------------------------------

    def _fence_done(self, node: str, attempt: int, ok: bool, detail: str) -> None:
        assert self.failover is not None
        now, wall = self._now()
        self._dispatch(self.failover.fencing.fence_done(node, attempt, ok, detail, now, wall))
        self._arm()

    def _fence_checked(self, ok: bool, detail: str) -> None:
        assert self.failover is not None
        now, _ = self._now()
        self._dispatch(self.failover.fencing.devices_checked(ok, detail, now))
        self._arm()

    async def fence_confirm(self, node: str) -> None:
        """An admin confirms `node` is down (hbctl fence confirm); raises NotFencing."""
        log.warning("fence confirm %s requested", node)
        self._command("fencing_confirm", node)

    # --- what the single timer serves ---------------------------------------------------

    def _deadlines(self) -> Iterable[float | None]:
        assert self.engine is not None and self.links is not None
        return self.engine.next_timer(), self.links.next_retry()

    def _timer_work(self, now: float, wall: float) -> list[Action]:
        assert self.engine is not None and self.links is not None
        self.links.retry(now)
        if now - self._load_read_at >= LOAD_REFRESH:
            self._load_read_at = now
            self.engine.outbox.load = _loadavg()
        return self.engine.handle_timer(now, wall)

    # --- the Controller protocol (hbd.control): what D-Bus and hbctl may ask ---------

    def _snapshot(self) -> Snapshot:
        assert self.failover is not None and self.links is not None
        pings = self.pingnodes.statuses(self._now()[0]) if self.pingnodes is not None else None
        return heartbeat_snapshot(self.failover, self.links.status(), pings, self._tracked())

    def _publish_status(self) -> None:
        if self.failover is None or self.links is None:
            return
        snapshot = self._snapshot()
        peers = ", ".join(f"{n.name} {n.status}" for n in snapshot.nodes if not n.local)
        local = next(n.status for n in snapshot.nodes if n.local)
        self.notifier.status(f"{local}; peers: {peers or 'none'}; "
                             f"holding: {snapshot.resources_held}")

    async def _apply(self, new: ClusterConfig) -> None:
        engine, failover, links, runner, pings = (self.engine, self.failover, self.links,
                                                  self.runner, self.pingnodes)
        assert engine is not None and failover is not None and links is not None
        assert runner is not None and pings is not None and self._loop is not None
        for warning in new.warnings:
            log.warning("%s", warning)
        now, wall = self._now()
        engine.reconfigure(new, now)
        if new.hacf.links != self.config.hacf.links:
            links.close_all()
            self.links = LinkSet(new.hacf, self._on_packet, new.node_name)
            self.links.open_all(self._loop)
        pings.update(new.hacf)
        pings.ipfail_respawned = runs_ipfail(new.hacf.respawn)
        if self.relay is not None:
            self.relay.configure(new.hbd.api_client_rate, new.hbd.api_clients_rate)
        self.fencer.update(new)
        runner.update(new)
        self._dispatch(failover.reconfigure(new, now, wall))
        self._arm()  # before the netlink work below: timers may have changed
        await runner.prepare()
        self._retrack(new)  # the addresses just resolved

    # --- the whole life -----------------------------------------------------------------

    def _build_core(self, uuid: bytes, generation: int, peers: dict[str, int]) -> None:
        """The engine and its components, in the order the engine consults them."""
        assert self._loop is not None
        loop = self._loop
        self.engine = Engine(self.config, uuid=uuid, generation=generation, now=loop.time(),
                             peer_generations=peers)
        self.failover = Failover(self.engine, self.config)
        self.pingnodes = PingNodes(self.config.hacf, self.failover)
        self.clientstatus = ClientStatusResponder(self.engine)
        self.relay = ClientRelay(self.engine)
        self.relay.configure(self.config.hbd.api_client_rate, self.config.hbd.api_clients_rate)
        self.pingnodes.ipfail_respawned = runs_ipfail(self.config.hacf.respawn)
        self.engine.attach(self.failover, self.pingnodes, self.clientstatus, self.relay)
        if self.pingnodes.addresses:
            from hbd.net.icmp import Pinger

            pings = self.pingnodes
            try:
                self.pinger = Pinger(lambda address: pings.ping_reply(address, loop.time()))
            except (OSError, HbdError) as err:
                log.error("cannot ping the ping nodes (%s): they will count as unreachable", err)

    async def run(self) -> int:
        self._loop = loop = asyncio.get_running_loop()
        self._handle_signals(loop)
        self._configure_logging(self.config)
        try:
            self.state.ensure()
            uuid = self.state.uuid()
            generation = self.state.next_generation(time.time())
            peers = self.state.peer_generations()
        except OSError as err:
            log.error("cannot use state directory %s: %s", self.options.state_dir, err)
            self.notifier.errno(err.errno or 5)
            return 1
        log.info("hbd %s starting as node %s (generation %d)", __version__, self.options.node,
                 generation)
        if self.config.auth.active_key.method is AuthMethod.CRC:
            log.warning("authkeys signs with crc: that authenticates nothing; anyone on the "
                        "heartbeat network can forge messages. Use sha1 or blake2b.")
        self._build_core(uuid, generation, peers)
        assert self.engine is not None
        await self._start_runner()
        self.links = LinkSet(self.config.hacf, self._on_packet,
                             self.config.node_name)
        await self._start_tracking()
        self.links.open_all(loop)
        now, wall = self._now()
        self._dispatch(self.engine.start(now, wall))
        self._arm()
        await self._start_bus()
        self._start_fifo()
        await self._start_api()
        self._start_respawn()
        # Ready: configuration loaded, links opened (failed ones keep retrying), bus name
        # owned when D-Bus is on (BusService.start returns once owned, or after a logged
        # failure: the cluster does not wait for the bus).
        self._publish_status()
        links = self.links.status()
        self._ready(f"{sum(links.values())} of {len(links)} link(s) open" + (
            "" if self.bus is None else
            f", D-Bus name {'owned' if self.bus.owned else 'not (yet) owned'}"))
        await self._serve_until_stopped()
        self._stop_fifo()
        await self._stop_api()
        self.engine.stop_heartbeats()
        self._cancel_timer()
        await asyncio.sleep(0.05)  # let a buffered serial write of `shutdone` drain
        self.links.close_all()
        self._stop_tracking()
        await self.fencer.close()
        if self.pinger is not None:
            self.pinger.close()
        if self.bus is not None:
            await self.bus.stop()
        self._report_pauses()
        log.info("hbd stopped")
        return 0


def _loadavg() -> str:
    """Heartbeat's `ld` field: the first line of /proc/loadavg."""
    try:
        with open("/proc/loadavg") as f:
            return f.readline().strip() or "n/a"
    except OSError:
        return "n/a"
