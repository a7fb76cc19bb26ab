"""Heartbeat's client API socket (/var/run/heartbeat/register), served on the event loop.

Debian's unmodified `cl_status` signs on here and asks its questions; the
conversation itself is hbd.core.hbapi's.  This adapter accepts connections
(a bounded number), reads the peer's credentials (SO_PEERCRED) for the
signon checks and `apiauth`, feeds each framed message to the client's
session with a fresh view of the cluster, and writes the answers.  A client
that breaks the framing is disconnected with a log line; nothing a client
sends can block the loop or grow memory without bound.
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
from collections.abc import Callable

from hbd import __version__
from hbd.control import Snapshot
from hbd.core import hbparams
from hbd.core.config import ClusterConfig
from hbd.core.hbapi import (
    ApiNode,
    ApiSession,
    ApiView,
    FrameError,
    FrameReader,
    Peer,
    SessionState,
    decode,
    encode,
)

log = logging.getLogger(__name__)

MAX_CLIENTS = 32
IDLE_TIMEOUT = 30.0  # seconds a client may stay connected without a complete message
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


def build_view(snapshot: Snapshot, config: ClusterConfig) -> ApiView:
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
        parameters={**dict(hacf.parameters), "hbversion": version}, hbversion=version)


class ApiServer:
    """The registration socket and its clients."""

    def __init__(self, path: str, view: Callable[[], ApiView], auth: AuthTable,
                 on_clients: Callable[[frozenset[str]], None] = lambda named: None) -> None:
        self.path = path
        self._on_clients = on_clients
        self._view = view
        self.auth = auth
        self._server: asyncio.AbstractServer | None = None
        self._sessions: set[ApiSession] = set()
        self._tasks: set[asyncio.Task[None]] = set()

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
        sock = writer.get_extra_info("socket")
        if len(self._tasks) > MAX_CLIENTS:
            log.warning("API: more than %d clients connected: refusing one", MAX_CLIENTS)
            return
        pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET,
                                                            socket.SO_PEERCRED, 12))
        session = ApiSession(Peer(pid, uid, gid), self._authorize, self.named_clients)
        self._sessions.add(session)
        frames = FrameReader()
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(4096), IDLE_TIMEOUT)
                except TimeoutError:
                    return
                if not data:
                    return
                try:
                    bodies = frames.feed(data)
                    for body in bodies:
                        before = session.state
                        answer = session.handle(decode(body), self._view())
                        if session.state is not before and not session.casual:
                            self._on_clients(self.named_clients())
                        if answer.log:
                            log.warning("API: %s", answer.log)
                        for fields in answer.frames:
                            writer.write(encode(fields))
                        await writer.drain()
                        if answer.close:
                            return
                except FrameError as err:
                    log.warning("API: client pid %d sent bad data (%s): disconnected", pid, err)
                    return
        finally:
            self._sessions.discard(session)
            if not session.casual:
                self._on_clients(self.named_clients())
