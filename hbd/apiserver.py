"""Heartbeat's client API socket (/var/run/heartbeat/register), served on the event loop.

Debian's unmodified `cl_status` signs on here and asks its questions; the
conversation itself is hbd.core.hbapi's.  This adapter accepts connections
(a bounded number, and fewer per user), reads the peer's credentials
(SO_PEERCRED) for the signon checks and `apiauth`, feeds each framed message
to the client's session with a fresh view of the cluster, and writes the
answers.  A client that breaks the framing is disconnected with a log line;
nothing a client sends can block the loop or grow memory without bound.
A named client's other messages go to the daemon (`ClientEvents`, which
relays them: hbd.core.clientmsgs), and what the daemon has for the clients
(`observe`, `deliver`) is written to each without waiting; a client that
leaves more than MAX_PENDING bytes unread is disconnected.

The socket is open to every local user (apiauth decides at signon), so no
client may hold a connection for free: signon must be complete within
SIGNON_TIMEOUT of connecting, every later message within IDLE_TIMEOUT of the
previous one (an absolute deadline: trickling a frame's bytes does not extend
it), and an answer the client does not read within DRAIN_TIMEOUT drops it.
One uid holds at most MAX_CLIENTS_PER_UID of the MAX_CLIENTS connections, and
the warnings a client can cause at will are logged at most once per
LOG_INTERVAL each (with a count of those left out).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import socket
import stat
import struct
import syslog
import time
from collections.abc import Callable
from typing import Protocol

from hbd import __version__
from hbd.control import Snapshot
from hbd.core import hbparams
from hbd.core.actions import (
    DeliverToClients,
    LinkStatusChanged,
    NodeStatusChanged,
    PingNodeChanged,
)
from hbd.core.clientmsgs import ifstat_message, status_message
from hbd.core.config import ClusterConfig
from hbd.core.hbapi import (
    KEEPIT,
    ApiNode,
    ApiSession,
    ApiView,
    Fields,
    FrameError,
    FrameReader,
    Peer,
    SessionState,
    decode,
    encode,
)

log = logging.getLogger(__name__)

MAX_CLIENTS = 32
MAX_CLIENTS_PER_UID = 8  # one user (a loop of connects) cannot take every connection
SIGNON_TIMEOUT = 5.0  # seconds from connecting to a complete signon message
IDLE_TIMEOUT = 30.0  # seconds from one complete message (or the signon) to the next
DRAIN_TIMEOUT = 10.0  # seconds an answer may wait for the client to read it
MAX_PENDING = 256 * 1024  # bytes of cluster messages a client may leave unread
LOG_INTERVAL = 60.0  # seconds between two log lines of one kind a client can cause
AuthTable = dict[str, tuple[frozenset[int], frozenset[int]]]


def resolve_apiauth(config: ClusterConfig) -> AuthTable:
    """apiauth (with Heartbeat's defaults) as numeric ids.  Blocking (NSS): call off-loop."""
    table: AuthTable = {}
    for client, (users, groups) in hbparams.apiauth_table(config.hacf.apiauth).items():
        uids = {u for u in (_uid(name) for name in users) if u is not None}
        gids = {g for g in (_gid(name) for name in groups) if g is not None}
        table[client] = (frozenset(uids), frozenset(gids))
    return table


def _uid(name: str) -> int | None:
    if name.isdigit():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        log.warning("apiauth: no user %r", name)
        return None


def _gid(name: str) -> int | None:
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        log.warning("apiauth: no group %r", name)
        return None


def build_view(snapshot: Snapshot, config: ClusterConfig, relays: bool = False) -> ApiView:
    """What the API reports, from the daemon's snapshot and the configuration."""
    hacf = config.hacf
    status = {n.name: n.status for n in snapshot.nodes}
    pings = {p.name: p.status for p in snapshot.ping_nodes}
    links: dict[str, list[tuple[str, str]]] = {}
    for link in snapshot.links:
        links.setdefault(link.node, []).append((link.link, link.status))
    order = list(hacf.node_order) or [*hacf.nodes, *hacf.ping_nodes,
                                      *(g.name for g in hacf.ping_groups)]
    order += [name for name in status if name not in order]  # corosync's extra nodes
    nodes = []
    for name in order:
        if name in pings:
            up = pings[name] == "ping"
            own = () if name in {g.name for g in hacf.ping_groups} else (
                (name, "up" if up else "dead"),)
            nodes.append(ApiNode(name, "ping", pings[name], own))
        elif name in status:
            nodes.append(ApiNode(name, "normal", status[name], tuple(links.get(name, ()))))
    facility = hacf.logfacility
    # Heartbeat says "3.0.6 (node: <its changeset>)": the version its tools expect, then
    # which build this is
    version = f"{hbparams.HEARTBEAT_VERSION} (hbd {__version__})"
    return ApiView(
        node=snapshot.node_name, nodes=tuple(nodes), resources=snapshot.resources_held,
        deadtime_ms=hacf.timers.deadtime_ms, keepalive_ms=hacf.timers.keepalive_ms,
        logfacility=getattr(syslog, f"LOG_{facility.upper()}", 0) if facility else 0,
        parameters={**dict(hacf.parameters), "hbversion": version}, hbversion=version,
        relays=relays)


def _kind(refusal: str) -> str:
    """The log-line kind of a refusal: a flood's own, so it does not hide the others."""
    return "rate" if "rate limit" in refusal or "sending at once" in refusal else "relay"


class ClientEvents(Protocol):
    """What the daemon does with named clients (hbd.service): the relay of their
    messages (hbd.core.clientmsgs) and the cluster's view of who is signed on."""

    def clients_changed(self, named: frozenset[str]) -> None: ...

    def client_status(self, client: str, joined: bool, reason: str,
                      generation: int) -> None: ...

    def client_message(self, client: str, fields: Fields, generation: int) -> str | None:
        """Relay it; the refusal's reason (for a log line), or None."""

    def client_query(self, fields: Fields) -> str | None:
        """Ask the peer; the refusal's reason (for a log line), or None."""


class _NoEvents:
    def clients_changed(self, named: frozenset[str]) -> None:
        return None

    def client_status(self, client: str, joined: bool, reason: str,
                      generation: int) -> None:
        return None

    def client_message(self, client: str, fields: Fields, generation: int) -> str | None:
        return "this stack relays no client messages"

    def client_query(self, fields: Fields) -> str | None:
        return None


class ApiServer:
    """The registration socket and its clients."""

    def __init__(self, path: str, view: Callable[[], ApiView], auth: AuthTable,
                 events: ClientEvents | None = None) -> None:
        self.path = path
        self._events: ClientEvents = events if events is not None else _NoEvents()
        self._view = view
        self.auth = auth
        self._server: asyncio.AbstractServer | None = None
        self._sessions: set[ApiSession] = set()
        self._writers: dict[ApiSession, asyncio.StreamWriter] = {}
        self._generations: dict[ApiSession, int] = {}
        self._generation = 0  # hb_api.c's client generation: one per named signon
        self.delivered = 0  # messages handed to clients
        self.dropped_clients = 0  # clients dropped for not reading their messages
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_uid: dict[int, int] = {}
        self._logged: dict[str, float] = {}  # kind -> when its last line was logged
        self._unlogged: dict[str, int] = {}  # kind -> lines left out since then

    def _warn(self, kind: str, message: str, *args: object) -> None:
        """A warning a client can cause at will: at most one line per LOG_INTERVAL and kind."""
        now = time.monotonic()
        last = self._logged.get(kind)
        if last is not None and now - last < LOG_INTERVAL:
            self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
            return
        self._logged[kind] = now
        left_out = self._unlogged.pop(kind, 0)
        if left_out:
            message += " (and %d more like it not logged)"
            args = (*args, left_out)
        log.warning(message, *args)

    async def start(self) -> None:
        """Create the socket (replacing a stale one).  Raises OSError."""
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o755, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._client, path=self.path,
                                                       limit=64 * 1024)
        # who may talk is decided at signon from the peer's credentials, as in Heartbeat
        os.chmod(self.path, 0o777)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def deliver(self, fields: tuple[tuple[str, str], ...], to_id: str | None) -> None:
        """A cluster message for the clients: with `to_id` to that client alone, else to
        every named client that asked for them (setfilter).  Never waits: a client
        whose unread messages pass MAX_PENDING is disconnected, as Heartbeat drops a
        client whose queue is full."""
        frame: bytes | None = None
        for session, writer in list(self._writers.items()):
            if session.state is not SessionState.SIGNED_ON:
                continue
            if to_id is not None:
                if session.client_id != to_id:
                    continue
            elif session.casual or not session.fmask & KEEPIT:
                continue
            if frame is None:
                frame = encode(list(fields))
            transport = writer.transport
            if transport.is_closing():
                continue
            if transport.get_write_buffer_size() + len(frame) > MAX_PENDING:
                self._warn("unread", "API: client %s (pid %d) leaves its messages unread "
                           "(%d bytes waiting): disconnected", session.client_id,
                           session.peer.pid, transport.get_write_buffer_size())
                self.dropped_clients += 1
                transport.abort()
                continue
            writer.write(frame)
            self.delivered += 1
            if to_id is not None:
                break  # hb_api.c: a message for one client goes to no other

    def observe(self, action: object) -> None:
        """What the clients hear of the daemon's own events (heartbeat.c): a peer's
        status change (t=status), a link's (t=ifstat), a ping node's (both), and the
        messages the core addresses to them."""
        if isinstance(action, DeliverToClients):
            self.deliver(action.fields, action.to_id)
        elif isinstance(action, NodeStatusChanged) and not action.local:
            self._deliver(status_message(action.node, action.new))
        elif isinstance(action, LinkStatusChanged):
            self._deliver(ifstat_message(action.node, action.link, action.up))
        elif isinstance(action, PingNodeChanged):
            if not action.group:  # a ping node's one link is itself (a group has none)
                self._deliver(ifstat_message(action.name, action.name, action.up))
            self._deliver(status_message(action.name, "ping" if action.up else "dead"))

    def _deliver(self, message: DeliverToClients) -> None:
        if self._writers:
            self.deliver(message.fields, message.to_id)

    def named_clients(self) -> frozenset[str]:
        return frozenset(s.client_id for s in self._sessions
                         if s.state is SessionState.SIGNED_ON and not s.casual)

    def _authorize(self, client: str, casual: bool, peer: Peer, uid: int, gid: int) -> str | None:
        """hb_api.c api_check_client_authorization: anon for casual clients, else the
        client's own apiauth line, else `default`."""
        entry = self.auth.get("anon" if casual else client) or (
            None if casual else self.auth.get("default"))
        if entry is None:
            return "apiauth anon missing" if casual else "no default client auth"
        uids, gids = entry
        if peer.uid in uids or peer.gid in gids:
            return None
        return "client failed authorization"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SIGNON_TIMEOUT
        sock = writer.get_extra_info("socket")
        pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET,
                                                            socket.SO_PEERCRED, 12))
        if len(self._tasks) > MAX_CLIENTS:
            self._warn("full", "API: more than %d clients connected: refusing one (pid %d, "
                       "uid %d)", MAX_CLIENTS, pid, uid)
            return
        if self._per_uid.get(uid, 0) >= MAX_CLIENTS_PER_UID:
            self._warn("uid", "API: uid %d has %d clients connected: refusing another "
                       "(pid %d)", uid, MAX_CLIENTS_PER_UID, pid)
            return
        self._per_uid[uid] = self._per_uid.get(uid, 0) + 1
        session = ApiSession(Peer(pid, uid, gid), self._authorize, self.named_clients)
        self._sessions.add(session)
        self._writers[session] = writer
        frames = FrameReader()
        try:
            while True:
                try:
                    # a named client (ipfail) may stay silent for as long as it likes:
                    # apiauth let it in, and one uid holds few connections
                    named = session.state is SessionState.SIGNED_ON and not session.casual
                    async with asyncio.timeout_at(None if named else deadline):
                        data = await reader.read(4096)
                except TimeoutError:
                    if session.state is SessionState.NEW:
                        self._warn("signon", "API: client pid %d (uid %d) did not sign on "
                                   "within %gs: disconnected", pid, uid, SIGNON_TIMEOUT)
                    return
                if not data:
                    return
                try:
                    bodies = frames.feed(data)
                    for body in bodies:
                        before = session.state
                        answer = session.handle(decode(body), self._view())
                        if answer.log:
                            self._warn("session", "API: %s", answer.log)
                        if answer.relay is not None:
                            refused = self._events.client_message(
                                session.client_id, answer.relay,
                                self._generations.get(session, 0))
                            if refused is not None:
                                self._warn(_kind(refused), "API: message from client %s "
                                           "not relayed: %s", session.client_id, refused)
                        if answer.query is not None:
                            refused = self._events.client_query(answer.query)
                            if refused is not None:
                                self._warn(_kind(refused), "API: question of client %s for "
                                           "a peer not sent: %s", session.client_id, refused)
                        for fields in answer.frames:
                            writer.write(encode(fields))
                        if session.state is not before and not session.casual:
                            self._named_changed(session, before)  # after its answer
                        try:
                            # only an answer waits for the client; a relayed message
                            # does not (its own unread deliveries are bounded by
                            # MAX_PENDING in deliver())
                            if answer.frames:
                                async with asyncio.timeout(DRAIN_TIMEOUT):
                                    await writer.drain()
                        except TimeoutError:
                            self._warn("drain", "API: client pid %d (uid %d) did not read "
                                       "its answer within %gs: disconnected", pid, uid,
                                       DRAIN_TIMEOUT)
                            writer.transport.abort()
                            return
                        if answer.close:
                            return
                        deadline = loop.time() + IDLE_TIMEOUT
                except FrameError as err:
                    self._warn("frame", "API: client pid %d sent bad data (%s): disconnected",
                               pid, err)
                    return
        finally:
            self._sessions.discard(session)
            self._writers.pop(session, None)
            left = self._per_uid.pop(uid) - 1
            if left:
                self._per_uid[uid] = left
            if not session.casual and session.state is SessionState.SIGNED_ON:
                session.state = SessionState.CLOSED
                self._named_changed(session, SessionState.SIGNED_ON, "died")

    def _named_changed(self, session: ApiSession, before: SessionState,
                       reason: str = "signoff") -> None:
        """A named client signed on, or off (or went away): tell the daemon and the
        cluster (hb_api.c api_send_client_status: join with info=signon, leave)."""
        self._events.clients_changed(self.named_clients())
        if session.state is SessionState.SIGNED_ON:
            self._generation += 1
            self._generations[session] = self._generation
            self._events.client_status(session.client_id, True, "signon", self._generation)
        elif before is SessionState.SIGNED_ON:
            generation = self._generations.pop(session, 0)
            self._events.client_status(session.client_id, False, reason, generation)
