"""Heartbeat's client API, as `cl_status` speaks it: framing, messages, answers.

Heartbeat 3.0.6 serves its API on a unix stream socket
(/var/run/heartbeat/register).  What travels there is libplumb's socket IPC
(cluster-glue ipcsocket.c): every message is a native-endian header
{int32 length, uint32 magic 0xabcd} followed by `length` bytes of an ha_msg
in the classic text format, NUL included:

    >>>\\nt=hbapi-req\\nreqtype=signon\\ndest=n1\\npid=390\\nfrom_id=390\\nuid=0\\ngid=105\\n<<<\\n\\0

A client signs on (casual clients name themselves by their pid; named
clients such as ipfail by their name), then asks one question per message;
a named client may also send any other message, which the daemon relays to
the cluster (hbd.core.clientmsgs) and receives the cluster's messages for it;
the daemon answers with t=hbapi-resp, the request type echoed and
result=OK (ok/more for all but the last row of a list) or badreq with a
comment.  The questions and answers are those of hb_api.c's
query_handler_list; this module serves the ones cl_status uses and says
`Unknown API request` to the others, as Heartbeat does to unknown ones.

Everything here is pure: `FrameReader` cuts bytes into messages (bounded),
`ApiSession` answers one client's messages from an `ApiView` of the
cluster, `encode` builds a frame.  Credentials and authorization are
checked by the caller's `Authorizer` (given the socket's peer credentials).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

MAGIC = 0xABCD
HEADER = struct.Struct("=iI")
MAX_BODY = 64 * 1024  # requests are a few hundred bytes; Heartbeat allows 256 KiB
MAX_FIELDS = 64
MAX_VALUE = 1024

T_APIREQ = "hbapi-req"
T_APIRESP = "hbapi-resp"
API_OK = "OK"
API_MORE = "ok/more"
API_BADREQ = "badreq"

Fields = list[tuple[str, str]]


class FrameError(Exception):
    """The byte stream is not libplumb IPC: the connection must be closed."""


def encode(fields: Fields) -> bytes:
    """One frame: header, then the classic ha_msg text with its NUL."""
    body = ">>>\n" + "".join(f"{k}={v}\n" for k, v in fields) + "<<<\n"
    data = body.encode() + b"\0"
    return HEADER.pack(len(data), MAGIC) + data


def decode(body: bytes) -> Fields:
    """A classic ha_msg body -> its fields.  Raises FrameError."""
    text = body.rstrip(b"\0")
    try:
        lines = text.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise FrameError("message is not ASCII") from None
    if lines[-1] == "":
        lines.pop()
    if len(lines) < 2 or lines[0] != ">>>" or lines[-1] != "<<<":
        raise FrameError("message is not framed by >>> and <<<")
    if len(lines) - 2 > MAX_FIELDS:
        raise FrameError(f"more than {MAX_FIELDS} fields")
    out: Fields = []
    for line in lines[1:-1]:
        name, sep, value = line.partition("=")
        if not sep or not name or len(value) > MAX_VALUE or not value.isprintable():
            raise FrameError("a field that is not name=value")
        out.append((name, value))
    return out


class FrameReader:
    """Bytes in, message bodies out; a bad header or an oversized body raises FrameError."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        out = []
        while len(self._buffer) >= HEADER.size:
            length, magic = HEADER.unpack_from(self._buffer)
            if magic != MAGIC:
                raise FrameError(f"bad magic {magic:#x}")
            if not 0 < length <= MAX_BODY:
                raise FrameError(f"bad length {length}")
            if len(self._buffer) < HEADER.size + length:
                break
            out.append(bytes(self._buffer[HEADER.size:HEADER.size + length]))
            del self._buffer[:HEADER.size + length]
        return out


@dataclass(frozen=True)
class ApiNode:
    name: str
    kind: str  # "normal" or "ping"
    status: str  # what cl_status nodestatus prints: active, up, init, dead, ping
    links: tuple[tuple[str, str], ...] = ()  # (link name, up/dead); a ping node's is itself


@dataclass(frozen=True)
class ApiView:
    """The cluster as the API reports it; built by the daemon from its snapshot."""

    node: str  # this node
    nodes: tuple[ApiNode, ...]  # Heartbeat's node table order (ha.cf order)
    resources: str  # rscstatus: none, local, foreign, all, transition
    deadtime_ms: int
    keepalive_ms: int
    logfacility: int
    parameters: Mapping[str, str] = field(default_factory=dict)
    hbversion: str = "3.0.6"
    relays: bool = False  # the stack carries clients' messages to its peers

    def find(self, name: str | None) -> ApiNode | None:
        if name is None:
            return None
        wanted = name.lower()
        for node in self.nodes:
            if node.name.lower() == wanted:
                return node
        return None


@dataclass(frozen=True)
class Peer:
    """The connecting process, from SO_PEERCRED."""

    pid: int
    uid: int
    gid: int


# (client, peer, claimed uid, claimed gid) -> None if allowed, else the refusal reason
Authorizer = Callable[[str, bool, Peer, int, int], str | None]


class SessionState(enum.Enum):
    NEW = "new"  # nothing received yet: only signon is accepted
    SIGNED_ON = "signed-on"
    CLOSED = "closed"  # signed off or refused: the connection is closed


@dataclass
class Answer:
    frames: list[Fields]
    close: bool = False
    log: str | None = None  # something worth a log line
    relay: Fields | None = None  # a named client's message for the cluster (clientmsgs)
    query: Fields | None = None  # a question for a peer (t=query-cstatus), sent as it is


def _get(fields: Fields, name: str) -> str | None:
    for key, value in fields:
        if key == name:
            return value
    return None


class ApiSession:
    """One client connection's conversation (hb_api.c: api_process_registration_msg and
    api_process_request), answering from the view it is given for each message."""

    def __init__(self, peer: Peer, authorize: Authorizer,
                 signed_on: Callable[[], frozenset[str]]) -> None:
        self.peer = peer
        self.state = SessionState.NEW
        self.client_id = ""
        self.casual = True
        self._authorize = authorize
        self._signed_on = signed_on  # named clients signed on now (clientstatus)
        self.fmask = KEEPIT  # setfilter: the kinds of cluster messages it wants
        self.signal = 0  # setsignal: hbd signals no client; recorded, as Heartbeat checks it

    def handle(self, fields: Fields, view: ApiView) -> Answer:
        if self.state is SessionState.NEW:
            return self._signon(fields, view)
        if self.state is SessionState.CLOSED:
            return Answer([], close=True)
        if _get(fields, "t") != T_APIREQ:
            # A named client's other messages go to the cluster (hb_api.c
            # api_process_request); a casual client is thrown out for sending one.
            if not self.casual:
                return Answer([], relay=fields)
            self.state = SessionState.CLOSED
            return Answer([], close=True, log=f"casual client {self.client_id} sent a "
                          "cluster message: disconnected")
        reqtype = _get(fields, "reqtype")
        if reqtype is None or (_get(fields, "from_id") is None and _get(fields, "pid") is None):
            return Answer([], log="request without reqtype or from_id/pid: ignored")
        if _get(fields, "pid") not in (None, str(self.peer.pid)):
            return Answer([], log=f"client {self.client_id}: pid mismatch (impersonation?)")
        resp: Fields = [("t", T_APIRESP), ("reqtype", reqtype)]
        if reqtype == "signoff":
            self.state = SessionState.CLOSED
            return Answer([], close=True)
        handler = _HANDLERS.get(reqtype)
        if handler is None:
            return Answer([[*resp, ("result", API_BADREQ)]],
                          log=f"client {self.client_id}: unknown API request {reqtype!r}")
        result = handler(self, fields, view, resp)
        if isinstance(result, Relay):
            return Answer([], query=result.fields)
        if isinstance(result, str):
            return Answer([[*resp, ("result", API_BADREQ), ("info", result)]])
        return Answer(result)

    def _signon(self, fields: Fields, view: ApiView) -> Answer:
        resp: Fields = [("t", T_APIRESP), ("reqtype", "signon")]
        if _get(fields, "t") != T_APIREQ or _get(fields, "reqtype") != "signon":
            self.state = SessionState.CLOSED
            return Answer([], close=True, log="first message is not a signon: disconnected")
        pid_s, fromid = _get(fields, "pid"), _get(fields, "from_id")
        reason = None
        pid = int(pid_s) if pid_s is not None and pid_s.isdigit() else 0
        try:
            uid, gid = int(_get(fields, "uid") or ""), int(_get(fields, "gid") or "")
        except ValueError:
            uid = gid = -1
        if pid <= 0 or pid != self.peer.pid:
            reason = "bad pid"
        elif uid < 0 or gid < 0:
            reason = "invalid id info"
        elif uid != self.peer.uid or gid != self.peer.gid:
            reason = "incorrect/false credentials"
        else:
            self.client_id = (fromid or str(pid))[:31]
            self.casual = self.client_id == str(pid)
            if not self.casual and self.client_id in self._signed_on():
                reason = "duplicate add request"
            else:
                reason = self._authorize(self.client_id, self.casual, self.peer, uid, gid)
        if reason is None:
            self.state = SessionState.SIGNED_ON
            resp.append(("result", API_OK))
        else:
            self.state = SessionState.CLOSED
            resp += [("info", reason), ("result", API_BADREQ)]
        resp += [("deadtime", f"{view.deadtime_ms:x}"), ("keepalive", f"{view.keepalive_ms:x}"),
                 ("node", view.node), ("hbversion", view.hbversion),
                 ("pacemaker", view.parameters.get("pacemaker", "false")),
                 ("logfacility", str(view.logfacility))]
        log = None if reason is None else (
            f"API client {fromid or pid_s} (pid {self.peer.pid}, uid {self.peer.uid}) "
            f"refused: {reason}")
        return Answer([resp], close=reason is not None, log=log)


@dataclass(frozen=True)
class Relay:
    """A handler's question for a peer, answered later through the client's messages."""

    fields: Fields


Handler = Callable[[ApiSession, Fields, ApiView, Fields], "list[Fields] | str | Relay"]
KEEPIT = 0x01  # hb_api_core.h: the kinds of message a client may ask for (setfilter)
DEBUG_TREATMENTS = 0x3E  # DROPIT, DUPLICATE, APICALL, NOCHANGE, PROTOCOL: never sent by hbd
ALL_TREATMENTS = KEEPIT | DEBUG_TREATMENTS


def _nodelist(s: ApiSession, f: Fields, view: ApiView, resp: Fields) -> list[Fields] | str:
    rows = []
    for i, node in enumerate(view.nodes):
        last = i == len(view.nodes) - 1
        rows.append([*resp, ("node", node.name), ("nodetype", node.kind),
                     ("st", node.status), ("result", API_OK if last else API_MORE)])
    return rows


def _node_or_einval(f: Fields, view: ApiView) -> ApiNode | str:
    node = view.find(_get(f, "node"))
    return "EINVAL" if node is None else node


def _nodestatus(s: ApiSession, f: Fields, view: ApiView, resp: Fields) -> list[Fields] | str:
    node = _node_or_einval(f, view)
    return node if isinstance(node, str) else [[*resp, ("st", node.status), ("result", API_OK)]]


def _nodetype(s: ApiSession, f: Fields, view: ApiView, resp: Fields) -> list[Fields] | str:
    node = _node_or_einval(f, view)
    return node if isinstance(node, str) else [
        [*resp, ("nodetype", node.kind), ("result", API_OK)]]


def _nodeweight(s: ApiSession, f: Fields, view: ApiView, resp: Fields) -> list[Fields] | str:
    node = _node_or_einval(f, view)  # hbd has no weights: Heartbeat's default for every node
    return node if isinstance(node, str) else [[*resp, ("weight", "100"), ("result", API_OK)]]


def _nodesite(s: ApiSession, f: Fields, view: ApiView, resp: Fields) -> list[Fields] | str:
    node = _node_or_einval(f, view)  # no sites either: Heartbeat's empty default
    return node if isinstance(node, str) else [[*resp, ("site", ""), ("result", API_OK)]]


def _numnodes(s: ApiSession, f: Fields, view: ApiView, resp: Fields) -> list[Fields] | str:
    count = sum(1 for n in view.nodes if n.kind == "normal")
    return [[*resp, ("numnodes", str(count)), ("result", API_OK)]]


def _iflist(s: ApiSession, f: Fields, view: ApiView, resp: Fields) -> list[Fields] | str:
    node = _node_or_einval(f, view)
    if isinstance(node, str):
        return node
    if not node.links:
        return "UhOh" if node.kind == "ping" else []  # Heartbeat sends nothing for no links
    rows = []
    for i, (name, status) in enumerate(node.links):
        last = i == len(node.links) - 1
        rows.append([*resp, ("ifname", name), ("st", status),
                     ("result", API_OK if last else API_MORE)])
    return rows


def _ifstatus(s: ApiSession, f: Fields, view: ApiView, resp: Fields) -> list[Fields] | str:
    node = _node_or_einval(f, view)
    if isinstance(node, str):
        return node
    ifname = _get(f, "ifname")
    for name, status in node.links:
        if name == ifname:
            return [[*resp, ("st", status), ("result", API_OK)]]
    return "EINVAL"


def _clientstatus(s: ApiSession, f: Fields, view: ApiView,
                  resp: Fields) -> list[Fields] | str | Relay:
    node = view.find(_get(f, "node"))
    client = _get(f, "cn")
    if node is None or client is None or _get(f, "from_id") is None:
        return "EINVAL"
    if node.name != view.node and node.status == "active" and view.relays:
        # hb_api.c api_clientstatus: ask the node; its t=respond-cstatus, addressed to
        # this client (to_id), is the answer
        return Relay([("t", "query-cstatus"), ("dest", node.name), ("cn", client),
                      ("from_id", s.client_id)])
    online = node.name == view.node and client in s._signed_on()
    return [[*resp, ("subt", "respond-cstatus"), ("cs", "online" if online else "offline"),
             ("result", API_OK)]]


def _setfilter(s: ApiSession, f: Fields, view: ApiView, resp: Fields) -> list[Fields] | str:
    try:
        mask = int(_get(f, "fmask") or "", 16)
    except ValueError:
        return "EINVAL"
    if not mask & ALL_TREATMENTS > 0 or mask > 0xFFFFFFFF:
        return "EINVAL"
    if mask & DEBUG_TREATMENTS and s.peer.uid != 0:
        return "EPERM"  # Heartbeat: debug treatments only for root (and its own uid)
    s.fmask = mask
    return [[*resp, ("result", API_OK)]]


def _setsignal(s: ApiSession, f: Fields, view: ApiView, resp: Fields) -> list[Fields] | str:
    value = _get(f, "signal") or ""
    if not value.isdigit() or int(value) in (9, 19) or int(value) >= 32:
        return "EINVAL"
    s.signal = int(value)
    return [[*resp, ("result", API_OK)]]


def _getrsc(s: ApiSession, f: Fields, view: ApiView, resp: Fields) -> list[Fields] | str:
    return [[*resp, ("rsc_hold", view.resources), ("result", API_OK)]]


def _getparm(s: ApiSession, f: Fields, view: ApiView, resp: Fields) -> list[Fields] | str:
    name = _get(f, "pname")
    if name is None:
        return "EINVAL"
    value = view.parameters.get("pacemaker" if name == "crm" else name)
    return [[*resp, *([("pvalue", value)] if value is not None else []), ("result", API_OK)]]


def _ignored(s: ApiSession, f: Fields, view: ApiView, resp: Fields) -> list[Fields] | str:
    return []  # set_sendqlen: Heartbeat answers nothing (I_API_IGN)


_HANDLERS: dict[str, Handler] = {
    "nodelist": _nodelist,
    "nodestatus": _nodestatus,
    "nodetype": _nodetype,
    "nodeweight": _nodeweight,
    "nodesite": _nodesite,
    "numnodes": _numnodes,
    "iflist": _iflist,
    "ifstatus": _ifstatus,
    "clientstatus": _clientstatus,
    "getrsc": _getrsc,
    "getparm": _getparm,
    "set_sendqlen": _ignored,
    "setfilter": _setfilter,
    "setsignal": _setsignal,
}
