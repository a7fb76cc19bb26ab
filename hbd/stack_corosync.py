"""hbd on the Corosync stack (ha.cf `cluster_stack corosync`).

Membership, messaging and quorum come from Corosync through its client
libraries (hbd.corosync); hbd runs no heartbeat links of its own.  One
asyncio loop: the CPG and quorum file descriptors are readers on it; each
reader dispatches its library, feeds the events to the placement core
(hbd.core.placement) and carries out the actions: group work to the
GroupRunner, messages to CPG, events to the journal and D-Bus.  Requests
that wait for corosync's answer at a time it may be going away (connecting,
reading the votes) run in worker threads.  One timer
serves the core (blocked-stop retries, groups in doubt) and systemd's
watchdog.

Corosync going away (a call or a dispatch fails, or its fd hangs up) counts
as a loss of quorum: every group stops at once.  hbd reconnects with backoff
(RECONNECT_FIRST doubling up to RECONNECT_MAX) and rejoins the group when
Corosync is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hbd import __version__
from hbd.control import Snapshot
from hbd.core.actions import (
    Action,
    CpgSend,
    MembershipChanged,
    QuorumChanged,
    Shutdown,
)
from hbd.core.config import ClusterConfig
from hbd.core.cpgview import Confchg
from hbd.core.cpgwire import CPG_GROUP
from hbd.core.placement import Placement, order_problems
from hbd.corosync import cmap
from hbd.corosync.cpg import Cpg
from hbd.corosync.quorum import Quorum, VoteInfo, read_votes
from hbd.errors import CorosyncError, HbdError
from hbd.service import Options, ServiceBase
from hbd.snapshot import corosync as corosync_snapshot

log = logging.getLogger(__name__)

RECONNECT_FIRST = 0.2
RECONNECT_MAX = 5.0
SEND_RETRY = 0.02  # Corosync said CS_ERR_TRY_AGAIN (flow control)
DRAIN_TIMEOUT = 2.0  # at a graceful stop, for our last messages to leave
# Our state messages waiting out corosync's flow control.  Each one is small and they
# come only when our state changes, so a full queue means corosync has stopped taking
# messages: it is treated as lost (groups stop, hbd reconnects and sends its whole
# state again).  Dropping a queued message instead would be unsafe: every member
# decides claims by the agreed order of what was delivered, and its own view of
# what it sent would no longer be what the others saw.
OUTBOX_LIMIT = 256
CS_ERR_TRY_AGAIN = 6  # corosync's cs_error_t for flow control
MSG_QUORUM = "25d0a98266c146028d93470fb4a18977"
MSG_MEMBERSHIP = "cad5ff67cb424cc79d4cb2e988baeaaf"


@dataclass
class _Clients:
    cpg: Cpg
    quorum: Quorum
    nodeid: int
    configured: list[cmap.ConfiguredNode]
    votes: VoteInfo
    token_ms: int | None

    def close(self) -> None:
        for client in (self.cpg, self.quorum):
            client.close()


def _open_clients() -> _Clients:
    """Blocking: connect to corosync's libraries and join hbd's group.  Raises CorosyncError."""
    opened: list[Cpg | Quorum] = []
    try:
        cpg = Cpg()
        opened.append(cpg)
        quorum = Quorum()
        opened.append(quorum)
        clients = _Clients(cpg, quorum, cpg.local_nodeid(), cmap.configured_nodes(),
                           read_votes(), cmap.token_ms())
        cpg.join(CPG_GROUP)
    except CorosyncError:
        for client in opened:
            client.close()
        raise
    return clients


class CorosyncDaemon(ServiceBase):
    """The Controller (hbd.control) of an hbd whose cluster layer is Corosync."""

    _ROUTINE = (CpgSend,)

    def __init__(self, options: Options, config: ClusterConfig) -> None:
        super().__init__(options, config)
        self.placement = Placement(config)
        self.cpg: Cpg | None = None
        self.quorum: Quorum | None = None
        self.votes: VoteInfo | None = None
        self.configured: list[cmap.ConfiguredNode] = []
        self._readers: list[int] = []  # fds on the loop
        self._outbox: deque[bytes] = deque()  # at most OUTBOX_LIMIT
        self._overflowed = False  # a disconnect for a full outbox is on its way
        self._send_later: asyncio.TimerHandle | None = None
        self._reconnect_at: asyncio.TimerHandle | None = None
        self._delay = RECONNECT_FIRST
        self._failures = 0

    def _group_work(self) -> Placement:
        return self.placement

    # --- Corosync: connect, read, lose -----------------------------------------------------

    async def _connect(self) -> None:
        """Open the libraries and join the group (in a worker thread: those are requests
        that wait for corosync), then put the fds on the loop."""
        self._reconnect_at = None
        try:
            clients = await asyncio.to_thread(_open_clients)
        except CorosyncError as err:
            self._retry_later(err)
            return
        if self._stopping:
            clients.close()
            return
        self.cpg, self.quorum = clients.cpg, clients.quorum
        self.configured, self.votes = clients.configured, clients.votes
        now, _ = self._now()
        self._dispatch(self.placement.connect(clients.nodeid, os.getpid(), now,
                                              {n.name: n.nodeid for n in self.configured}))
        assert self._loop is not None
        try:
            for handle, reader in ((clients.cpg, self._on_cpg), (clients.quorum, self._on_quorum)):
                fd = handle.fd
                self._loop.add_reader(fd, reader)
                self._readers.append(fd)
        except CorosyncError as err:
            self._lost(err)
            return
        self._delay, self._failures = RECONNECT_FIRST, 0
        log.info("joined CPG group %r (corosync node id %d; corosync nodes: %s; token %s ms)",
                 CPG_GROUP, clients.nodeid, " ".join(f"{n.name}={n.nodeid}"
                                                     for n in self.configured) or "none",
                 clients.token_ms)

    def _retry_later(self, err: HbdError) -> None:
        level = logging.WARNING if self._failures == 0 else logging.DEBUG
        log.log(level, "cannot use corosync (%s); the groups stay stopped, retrying every "
                "%.1f s at most", err, RECONNECT_MAX)
        self._failures += 1
        assert self._loop is not None
        if not self._stopping:
            self._reconnect_at = self._loop.call_later(
                self._delay, lambda: self._spawn(self._connect()))
            self._delay = min(self._delay * 2, RECONNECT_MAX)

    def _lost(self, err: HbdError) -> None:
        """Corosync went away: drop every handle, stop the groups, reconnect."""
        self._close()
        self.votes = None
        self._outbox.clear()
        now, wall = self._now()
        self._dispatch(self.placement.disconnect(str(err), now, wall))
        self._arm()
        self._retry_later(err)

    def _close(self) -> None:
        assert self._loop is not None
        for fd in self._readers:
            self._loop.remove_reader(fd)
        self._readers.clear()
        for handle in (self.cpg, self.quorum):
            if handle is not None:
                handle.close()
        self.cpg = self.quorum = None

    def _read(self, work: Callable[[], list[Action]]) -> None:
        try:
            actions = work()
        except CorosyncError as err:
            self._lost(err)
            return
        self._dispatch(actions)
        self._arm()
        self._check_finished()

    def _on_cpg(self) -> None:
        def work() -> list[Action]:
            assert self.cpg is not None
            now, wall = self._now()
            actions: list[Action] = []
            for event in self.cpg.dispatch():
                if isinstance(event, tuple):
                    actions += self.placement.deliver(event[0], event[1], now, wall)
                elif isinstance(event, Confchg):
                    actions += self.placement.confchg(event, now, wall)
                else:
                    actions += self.placement.totem(event, now, wall)
                    self._spawn(self._refresh_votes())
            return actions

        self._read(work)

    def _on_quorum(self) -> None:
        def work() -> list[Action]:
            assert self.quorum is not None
            now, wall = self._now()
            actions: list[Action] = []
            for notice in self.quorum.dispatch():
                actions += self.placement.quorum_notice(notice, now, wall)
                self._spawn(self._refresh_votes())
            return actions

        self._read(work)

    async def _refresh_votes(self) -> None:
        """votequorum's numbers, after each quorum notice or ring change.

        Read on a connection of its own in a worker thread: votequorum_getinfo
        waits for corosync's answer.  (No votequorum fd on the loop: libqb may
        wait up to 2 s inside a dispatch while corosync shuts down, and every
        library on the loop adds that chance.)
        """
        try:
            votes = await asyncio.to_thread(read_votes)
        except CorosyncError as err:
            log.debug("cannot read the votes: %s", err)
            return
        if self.placement.connected:
            self.votes = votes
            self._publish()

    def _send(self, payload: bytes) -> None:
        if self.cpg is None or self._overflowed:
            return  # nobody would read it in order; after joining, the whole state goes out
        if len(self._outbox) >= OUTBOX_LIMIT:
            self._lose_later(CorosyncError("cpg_mcast_joined", CS_ERR_TRY_AGAIN,
                                           f"{OUTBOX_LIMIT} messages waiting, corosync "
                                           "takes none"))
            return
        self._outbox.append(payload)
        if self._send_later is None:
            self._flush()

    def _lose_later(self, err: CorosyncError) -> None:
        """Not _lost() at once: a send runs inside _dispatch, and a nested dispatch of the
        disconnect would run before the rest of this batch of actions."""
        if not self._overflowed:
            self._overflowed = True
            assert self._loop is not None
            self._loop.call_soon(self._lose, err)

    def _lose(self, err: CorosyncError) -> None:
        self._overflowed = False
        if self.cpg is not None:
            self._lost(err)

    def _flush(self) -> None:
        self._send_later = None
        while self._outbox and self.cpg is not None and not self._overflowed:
            try:
                sent = self.cpg.send(self._outbox[0])
            except CorosyncError as err:
                self._lose_later(err)
                return
            if not sent:  # flow control: the queue keeps the agreed order of our messages
                assert self._loop is not None
                self._send_later = self._loop.call_later(SEND_RETRY, self._flush)
                return
            self._outbox.popleft()

    # --- the stack's own actions ---------------------------------------------------------

    def _carry_out(self, action: Action) -> bool:
        if isinstance(action, CpgSend):
            self._send(action.payload)
        elif isinstance(action, Shutdown):
            self._finished.set()
        elif isinstance(action, QuorumChanged):
            log.log(logging.INFO if action.quorate else logging.WARNING,
                    "quorum: %s (corosync nodes %s)",
                    "quorate" if action.quorate else "NOT quorate: stopping every group",
                    " ".join(map(str, action.nodes)) or "none",
                    extra={"MESSAGE_ID": MSG_QUORUM, "HBD_QUORATE": str(action.quorate)})
        elif isinstance(action, MembershipChanged):
            log.info("hbd members: %s%s%s", " ".join(action.members) or "none",
                     f"; joined: {' '.join(action.joined)}" if action.joined else "",
                     f"; left: {' '.join(action.left)}" if action.left else "",
                     extra={"MESSAGE_ID": MSG_MEMBERSHIP})
        else:
            return False
        return True

    # --- what the single timer serves ---------------------------------------------------

    def _deadlines(self) -> Iterable[float | None]:
        return (self.placement.next_timer(),)

    def _timer_work(self, now: float, wall: float) -> list[Action]:
        return self.placement.handle_timer(now, wall)

    # --- the Controller protocol -------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        return corosync_snapshot(self.placement, self.config.node_name, self.config.hacf.nodes,
                                 {n.name: n.nodeid for n in self.configured}, self.votes,
                                 self._tracked())

    async def _apply(self, new: ClusterConfig) -> None:
        for warning in [*new.warnings, *order_problems(new)]:
            log.warning("%s", warning)
        now, wall = self._now()
        self._dispatch(self.placement.reconfigure(new, now, wall))
        assert self.runner is not None
        self.runner.update(new)
        await self.runner.prepare()
        self._retrack(new)  # the addresses just resolved

    def _publish_status(self) -> None:
        snap = self._snapshot()
        members = [n.name for n in snap.nodes if n.status == "active"]
        self.notifier.status(f"corosync {snap.quorum}; hbd members: {' '.join(members)}; "
                             f"holding: {snap.resources_held}")

    # --- the whole life ---------------------------------------------------------------------

    async def run(self) -> int:
        self._loop = loop = asyncio.get_running_loop()
        self._handle_signals(loop)
        self._configure_logging(self.config)
        log.info("hbd %s starting as node %s on the corosync stack", __version__,
                 self.options.node)
        for problem in order_problems(self.config):
            log.warning("%s", problem)
        await self._start_runner()
        await self._start_tracking()
        await self._connect()
        await self._start_bus()
        self._start_fifo()
        await self._start_api()
        self._start_respawn()
        self._publish()
        self._ready(f"corosync {'connected' if self.placement.connected else 'not reachable yet'}")
        self._arm()
        await self._serve_until_stopped()
        self._stop_fifo()
        await self._stop_api()
        await self._shut_down()
        return 0

    async def _shut_down(self) -> None:
        assert self._loop is not None
        deadline = self._loop.time() + DRAIN_TIMEOUT
        while self._outbox and self.cpg is not None and self._loop.time() < deadline:
            await asyncio.sleep(SEND_RETRY)
        self._cancel_timer()
        for handle in (self._reconnect_at, self._send_later):
            if handle is not None:
                handle.cancel()
        if self.cpg is not None:
            with contextlib.suppress(CorosyncError):
                self.cpg.leave()
        self._close()
        self._stop_tracking()
        if self.bus is not None:
            await self.bus.stop()
        self._report_pauses()
        log.info("hbd stopped")
