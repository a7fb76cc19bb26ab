"""Named API clients' messages (ipfail, api_test): Heartbeat's relay, without I/O.

Heartbeat 3.0.6 (hb_api.c api_process_request) lets a named client put any
message on the cluster: the daemon stamps it with `from_id` and `to_id`, both
the client's own name, and sends it like its own messages (to every node, or
to the node named in `dest`).  Every node, the sender included, hands each
message it keeps to its clients (api_heartbeat_monitor): one with a `to_id`
only to the client of that name, one without to every client.  So ipfail
talks to ipfail on the other node and nobody else, and its `t=ask_resources`
reaches the sender's own resource code as a standby request.  The daemon
adds messages of its own: a peer's status change (`t=status`, src, st), a
link's (`t=ifstat`, node, ifname, st) and a client's signon and signoff
(`t=hbapi-clstat`, st=join/leave, from_id and to_id the client's name),
which also goes to the cluster so that the same client on other nodes hears
of it.

`ClientRelay` is the engine component for this: `from_client` turns a
client's message into a transmission (or a standby/takeover request, or a
refusal), `client_status` announces a signon or signoff, and
`message_seen` turns a kept message from a peer into `DeliverToClients`.
What reaches a client is checked here (`fields.client_fields`): string
fields with printable ASCII names and values, bounded in number and length;
anything else is dropped and counted, never half-delivered.  The adapter
(hbd.apiserver) queues each delivery per client, bounded.

What clients put on the wire is rate-limited here (Heartbeat bounds only each
client's queue): each client name has a token bucket and all clients share
one, a message costing one token per started KiB, so an authorised client
(or a casual one asking remote `clientstatus` questions) cannot flood the
peers; a message over the limit is refused, and the adapter logs that at
most once per interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hbd.core import fields
from hbd.core.actions import Action, DeliverToClients, Notice
from hbd.core.config import DEFAULT_API_CLIENT_RATE, DEFAULT_API_CLIENTS_RATE
from hbd.core.engine import Engine, EngineComponent, Handler, Received
from hbd.core.fifomsg import FifoCommand, FifoMessage, FifoRejected, interpret

T_APICLISTAT = "hbapi-clstat"  # hb_api.c api_send_client_status
JOIN, LEAVE = "join", "leave"
# Message types hbd's own protocol speaks: a client's message of one of these would be
# taken by the peers as hbd's (or Heartbeat's) own word, so none goes out as it is.  The
# FIFO's interpretation applies to them instead (ask_resources: ipfail's giveup).
PROTOCOL_TYPES = frozenset({
    "status", "NS_ackmsg", "NS_rexmit", "NS_nak_rexmit", "NS_st", "reqnodes", "repnodes",
    "starting", "resource", "ask_resources", "hb_takeover", "shutdone", "ip-request",
    "ip-request-resp", "stonith", T_APICLISTAT, "query-cstatus", "respond-cstatus",
    "hbapi-req", "hbapi-resp", "addnode", "delnode", "setweight", "setsite",
})
# Fields the daemon sets on a relayed message: a client's own values are dropped.
STAMPED = frozenset({"src", "seq", "hg", "ts", "ttl", "auth", "srcuuid", "destuuid", "ld",
                     "dt", "from_id", "to_id", "client_gen", "dest"})
# Delivered to no client (Heartbeat's handlers for these do not pass them on).
NOT_DELIVERED = frozenset({"query-cstatus"})

ClientFields = tuple[tuple[str, str], ...]
MESSAGE_MAX = 32 * 1024  # bytes of a client's fields: with the daemon's own, one datagram
# The wire budget of clients' messages, in tokens (one per started KiB of a message):
# ipfail sends a few short messages per ping node event, far below these.  The rates are
# hbd.conf's api_client_rate / api_clients_rate; a bucket saves up BURST_SECONDS of its
# rate, and at least two of the largest messages (one client) or four (all)
BURST_SECONDS = 3.2
CLIENT_BURST_MIN = 2 * MESSAGE_MAX / 1024
TOTAL_BURST_MIN = 4 * MESSAGE_MAX / 1024
BUCKETS_MAX = 64  # client names with a bucket kept; full ones are forgotten first
NOTE_INTERVAL = 60.0  # seconds between two warnings of announcements left out


@dataclass
class TokenBucket:
    """`rate` tokens a second, at most `burst` saved; `take` spends them or refuses."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    stamp: float | None = None

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def resize(self, rate: float, burst: float) -> None:
        """New rate and size: a bucket never used is full, another keeps what it saved
        (up to its new size)."""
        self.rate, self.burst = rate, burst
        self.tokens = burst if self.stamp is None else min(self.tokens, burst)

    def refill(self, now: float) -> None:
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        if self.stamp is None or now > self.stamp:
            self.stamp = now

    def take(self, cost: float, now: float) -> bool:
        self.refill(now)
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True

    def full(self, now: float) -> bool:
        self.refill(now)
        return self.tokens >= self.burst


def _burst(rate: float, least: float) -> float:
    return max(rate * BURST_SECONDS, least)


def _cost(pairs: list[tuple[str, str]] | ClientFields) -> float:
    size = sum(len(k) + len(v) + 2 for k, v in pairs)
    return float(max(1, -(-size // 1024)))


@dataclass(frozen=True)
class Refused:
    """A client message hbd does not relay, and why (for one log line)."""

    reason: str


def status_message(node: str, status: str) -> DeliverToClients:
    """heartbeat.c: a node's status change as its clients see it (t=status)."""
    return DeliverToClients((("t", "status"), ("src", node), ("st", status)), None)


def ifstat_message(node: str, link: str, up: bool) -> DeliverToClients:
    """heartbeat.c change_link_status: t=ifstat for a link that came up or died."""
    return DeliverToClients((("t", "ifstat"), ("node", node), ("ifname", link),
                             ("st", "up" if up else "dead")), None)


class ClientRelay(EngineComponent):
    """The engine component carrying named clients' messages (hb_api.c's relay)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dropped = 0  # messages from peers no client could be given (malformed)
        self.rate_limited = 0  # client messages refused for going over their budget
        self._buckets: dict[str, TokenBucket] = {}
        self.client_rate = float(DEFAULT_API_CLIENT_RATE)
        self._total = TokenBucket(float(DEFAULT_API_CLIENTS_RATE),
                                  _burst(DEFAULT_API_CLIENTS_RATE, TOTAL_BURST_MIN))
        self._unannounced = 0  # signon/signoff announcements over the budget, not yet told
        self._announce_noted: float | None = None

    @property
    def node(self) -> str:
        return self.engine.node

    def configure(self, client_rate: int, clients_rate: int) -> None:
        """hbd.conf's api_client_rate and api_clients_rate (KiB/s), at start and reload:
        the buckets keep what they saved, up to their new size."""
        self.client_rate = float(client_rate)
        for bucket in self._buckets.values():
            bucket.resize(self.client_rate, _burst(client_rate, CLIENT_BURST_MIN))
        self._total.resize(float(clients_rate), _burst(clients_rate, TOTAL_BURST_MIN))

    # --- client -> cluster -----------------------------------------------------------

    def _within_budget(self, client: str, cost: float, now: float) -> Refused | None:
        """Spend `cost` tokens of `client`'s bucket and of the shared one, or refuse
        (spending nothing)."""
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= BUCKETS_MAX:
                for name in [n for n, b in self._buckets.items() if b.full(now)]:
                    del self._buckets[name]
            if len(self._buckets) >= BUCKETS_MAX:
                self.rate_limited += 1
                return Refused("too many clients sending at once")
            bucket = self._buckets[client] = TokenBucket(
                self.client_rate, _burst(self.client_rate, CLIENT_BURST_MIN))
        bucket.refill(now)
        self._total.refill(now)
        if bucket.tokens < cost:
            self.rate_limited += 1
            return Refused(f"over its rate limit ({bucket.rate:g} KiB/s)")
        if self._total.tokens < cost:
            self.rate_limited += 1
            return Refused(f"API clients over their shared rate limit "
                           f"({self._total.rate:g} KiB/s)")
        bucket.take(cost, now)
        self._total.take(cost, now)
        return None

    def from_client(self, client: str, message: ClientFields, generation: int,
                    now: float, wall: float) -> list[Action] | FifoCommand | Refused:
        """A named client's message that is not an API request (sendclustermsg or
        sendnodemsg).  Returns the transmission and the local delivery, the admin
        command a protocol message amounts to, or why it is not relayed."""
        if fields.client_id(client) is None:
            return Refused("bad client name")
        body = [(k, v) for k, v in message if k not in STAMPED and k != "t"]
        msgtype = next((v for k, v in message if k == "t"), None)
        dest = next((v for k, v in message if k == "dest"), None)
        if not msgtype or fields.client_fields([*body, ("t", msgtype)]) is None:
            return Refused("malformed message")
        if sum(len(k) + len(v) + 2 for k, v in body) > MESSAGE_MAX:
            return Refused(f"larger than {MESSAGE_MAX} bytes (one UDP datagram carries it)")
        over = self._within_budget(client, _cost(body), now)
        if over is not None:
            return over
        if msgtype in PROTOCOL_TYPES:
            meant = interpret(FifoMessage((("t", msgtype), *body)))
            if isinstance(meant, FifoRejected):
                return Refused(meant.reason)
            return FifoCommand(meant.command, meant.scope, f"API client {client}")
        stamped = [*body, ("from_id", client), ("to_id", client),
                   ("client_gen", str(generation))]
        if dest is not None and dest != self.node and dest not in self.engine.peers:
            return Refused(f"no node {fields.shown(dest)!r} to send it to")
        actions: list[Action] = []
        if dest is None or dest != self.node:
            actions.append(self.engine.send(msgtype, stamped, wall, dest=dest))
        if dest is None or dest == self.node:
            # Heartbeat hears its own broadcast and delivers it here too
            actions.append(self._local(msgtype, stamped, dest))
        return actions

    def client_status(self, client: str, joined: bool, reason: str, generation: int,
                      now: float, wall: float) -> list[Action]:
        """A named client signed on or off here: tell the cluster and the same client
        name here (hb_api.c api_send_client_status).  A client that signs on and off
        in a loop pays for the announcements from its budget: over it, they are told
        here only (one warning a minute)."""
        if fields.client_id(client) is None:
            return []
        body = [("st", JOIN if joined else LEAVE), ("from_id", client), ("to_id", client),
                ("info", reason), ("client_gen", str(generation))]
        local: list[Action] = [self._local(T_APICLISTAT, body, None)]
        if self._within_budget(client, 1.0, now) is None:
            return [self.engine.send(T_APICLISTAT, body, wall), *local]
        self._unannounced += 1
        if self._announce_noted is not None and now - self._announce_noted < NOTE_INTERVAL:
            return local
        self._announce_noted, count = now, self._unannounced
        self._unannounced = 0
        return [*local, Notice("warning", f"API client {client} signs on and off faster "
                               f"than its rate limit: {count} signon/signoff announcement(s) "
                               "not sent to the cluster")]

    def query(self, message: ClientFields, now: float, wall: float) -> list[Action] | Refused:
        """cl_status clientstatus of a client on a live peer (hb_api.c api_clientstatus):
        t=query-cstatus to that node; its answer comes back addressed to the asker.
        Any local user may ask (casual clients too): the asker's budget pays for it."""
        values = dict(message)
        node, client, asker = values.get("dest"), values.get("cn"), values.get("from_id")
        if (node not in self.engine.peers or client is None or asker is None
                or fields.client_id(client) is None or fields.client_id(asker) is None):
            return []
        over = self._within_budget(asker, 1.0, now)
        if over is not None:
            return over
        return [self.engine.send("query-cstatus", [("cn", client), ("from_id", asker)], wall,
                                 dest=node)]

    def _local(self, msgtype: str, body: list[tuple[str, str]],
               dest: str | None) -> DeliverToClients:
        head = [("t", msgtype), ("src", self.node)] + ([("dest", dest)] if dest else [])
        return DeliverToClients((*head, *body), dict(body).get("to_id"))

    # --- cluster -> clients ----------------------------------------------------------

    def message_handlers(self) -> Mapping[str, Handler]:
        return {}

    def message_seen(self, received: Received, now: float, wall: float) -> list[Action]:
        message = received.message
        if message.type in NOT_DELIVERED:
            return []
        pairs = fields.client_message(message)
        to_id = message.get("to_id")
        if pairs is None or (to_id is not None and fields.client_id(to_id) is None):
            self.dropped += 1
            return [Notice("debug", f"message t={fields.shown(message.type or '?')} from "
                           f"{received.peer.name} not passed to API clients (malformed)")]
        return [DeliverToClients(pairs, to_id)]
