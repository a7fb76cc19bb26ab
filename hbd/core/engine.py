"""The heartbeat engine: one message's path from bytes to decisions.

Sans-I/O (like h11 and aioquic): the daemon feeds it received datagrams and
frames (`receive`), the passage of time (`handle_timer`) and admin commands,
always with `now` (monotonic seconds) and `wall` (Unix time, only for the
`ts` field).  It answers with actions (transmit, start/stop a group, events)
and says when it next wants to be woken (`next_timer`).

Membership rules live in membership.py, sequence tracking in seqtrack.py,
message building in outbox.py, the components' interface in component.py
and the resource protocol in resources.py; this module routes between them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from hbd.core import auth, fields, wire
from hbd.core.actions import (
    Action,
    LateHeartbeat,
    LinkStatusChanged,
    LostPackets,
    NodeStatusChanged,
    Notice,
    PartitionHealed,
    PeerRestarted,
    PersistPeerGeneration,
    Transmit,
)
from hbd.core.badpackets import BadPacketLog, claimed_sender
from hbd.core.component import EngineComponent as EngineComponent
from hbd.core.component import Handler as Handler
from hbd.core.component import Received as Received
from hbd.core.config import ClusterConfig, SerialLink
from hbd.core.fsm import StateMachine
from hbd.core.membership import LOCAL_TRANSITIONS, LinkStatus, NodeStatus, Peer, parse_status
from hbd.core.outbox import NOSEQ_PREFIX, Outbox, remember
from hbd.core.seqtrack import Verdict
from hbd.core.wire import Message
from hbd.errors import AuthError, WireError

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "1"
REQNODES_RETRY = 1.0  # heartbeat.c: send_reqnodes_msg re-asks every second
# A peer's datagram arrives on each of its links within milliseconds; a byte-identical
# copy later than this is no longer taken as a cheap duplicate (it may be a replay).
DUPLICATE_WINDOW = 0.25
PHASE_LOCK = 0.3  # send our status early if it is due within this part of a keepalive


# What the engine answers itself; no component may claim these.
_ENGINE_TYPES = frozenset({"status", "NS_ackmsg", "NS_rexmit", "reqnodes", "repnodes"})


class Engine:
    """Heartbeat membership for one node; resource handling plugs in as components."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        uuid: bytes,
        generation: int,
        now: float,
        peer_generations: dict[str, int] | None = None,
    ) -> None:
        self.config = config
        self.node = config.node_name
        self.link_names = [link.name for link in config.hacf.links]
        self._set_timers(config)
        self.outbox = Outbox(
            node=self.node, uuid=uuid, generation=generation, keys=config.auth,
            ttl=config.hacf.hopfudge + len(config.hacf.nodes),
        )
        self.outbox.classic = _has_serial(config)
        self.status = StateMachine(f"node {self.node} (local)", NodeStatus.INIT,
                                   LOCAL_TRANSITIONS)
        self.peers: dict[str, Peer] = {
            name: Peer.new(name, self.link_names, self.deadtime) for name in config.peers
        }
        for name, gen in (peer_generations or {}).items():
            if name in self.peers:
                self.peers[name].seq.generation = gen
        self.last_sender: str | None = None  # see receive()
        self.own_links: dict[int, float] = {}  # our own echoes seen per link (bcast loops back)
        # Byte-identical copies need no second parse: our own broadcasts coming back,
        # and the same datagram from a peer over its other link.  Both are checked
        # against exact bytes we sent or already verified, so nothing unverified passes.
        self._accepted_recent: dict[bytes, tuple[Peer, float, int]] = {}  # when, generation
        self.bad = BadPacketLog()
        self.internal_errors: dict[str, int] = {}  # bugs contained outside the packet path
        self.started_at = now
        self.comm_up = False  # every node heard from or declared dead
        self.reqnodes_pending = False
        self.next_reqnodes: float | None = None
        self.next_status: float = now
        self.components: tuple[EngineComponent, ...] = ()  # see attach()
        self._handlers: dict[str, Handler] = {}  # message type -> a component's handler
        self.stopped = False
        # After we ourselves did not run (SIGSTOP, a paused VM), nobody is judged dead
        # before this time: see handle_timer.
        self.judge_after = -float("inf")

    def _set_timers(self, config: ClusterConfig) -> None:
        timers = config.hacf.timers
        self.keepalive = timers.keepalive_ms / 1000.0
        self.deadtime = timers.deadtime_ms / 1000.0
        self.warntime = timers.warntime_ms / 1000.0
        self.initdead = timers.initdead_ms / 1000.0
        self.rexmit_delay = timers.max_rexmit_delay_ms / 1000.0

    def reconfigure(self, config: ClusterConfig, now: float) -> None:
        """Apply a reloaded ha.cf/authkeys: timers, keys, links and nodes.

        Raises ValueError if the new configuration names another node for us.
        Link and peer state carry over by name, so nothing that stays is reset.
        """
        if config.node_name != self.node:
            raise ValueError("the node name cannot change on reload")
        old_deadtime = self.deadtime
        self._set_timers(config)
        self.next_status = min(self.next_status, now + self.keepalive)
        self.outbox.keys = config.auth
        self.outbox.classic = _has_serial(config)
        self.outbox.ttl = config.hacf.hopfudge + len(config.hacf.nodes)
        self.link_names = [link.name for link in config.hacf.links]
        peers: dict[str, Peer] = {}
        for name in config.peers:
            old = self.peers.get(name)
            fresh = Peer.new(name, self.link_names, self.deadtime)
            if old is None:
                peers[name] = fresh
                continue
            by_name = {state.name: state for state in old.links.values()}
            old.links = {i: by_name.get(n, fresh.links[i]) for i, n in enumerate(self.link_names)}
            if old.deadtime == old_deadtime:  # not a value the peer announced itself
                old.deadtime = self.deadtime
            peers[name] = old
        self.peers = peers
        self.own_links.clear()
        self._accepted_recent.clear()
        self.config = config

    def attach(self, *components: EngineComponent) -> None:
        """Plug in the layers above membership, in the order the engine consults them.

        Called once, before `start`.  Raises ValueError, attaching nothing, when
        components are already attached or two of them (or one and the engine)
        claim the same message type.
        """
        if self.components:
            raise ValueError("the engine's components are attached once")
        handlers: dict[str, Handler] = {}
        for component in components:
            for msgtype, handler in component.message_handlers().items():
                if msgtype in handlers or msgtype in _ENGINE_TYPES:
                    raise ValueError(f"message type {msgtype!r} is claimed twice")
                handlers[msgtype] = handler
        self.components = components
        self._handlers = handlers

    # --- public entry points -----------------------------------------------------

    def start(self, now: float, wall: float) -> list[Action]:
        """Links are open: announce ourselves as up."""
        actions = self._set_local_status(NodeStatus.UP, now, wall)
        if not self.peers:
            actions += self._comm_now_up(now, wall)
        return actions

    def next_timer(self) -> float:
        candidates = [self.next_status]
        for peer in self.peers.values():
            if not peer.dead:
                candidates.append(self._silence_deadline(peer))
            for state in peer.links.values():
                if state.fsm.state is LinkStatus.UP and state.last_heard is not None:
                    candidates.append(max(state.last_heard + peer.deadtime,
                                          self.judge_after))
            if peer.seq.next_rexmit_request is not None:
                candidates.append(peer.seq.next_rexmit_request)
        if self.next_reqnodes is not None:
            candidates.append(self.next_reqnodes)
        bad = self.bad.next_timer()
        if bad is not None:
            candidates.append(bad)
        for component in self.components:
            due = component.next_timer()
            if due is not None:
                candidates.append(due)
        return min(candidates)

    def handle_timer(self, now: float, wall: float) -> list[Action]:
        """The single timer fired: heartbeats, deadtime, retransmissions, components.

        Never raises: a failure (a bug) is contained and the actions built before it
        are kept, because the daemon re-arms the timer only when this returns.
        """
        actions: list[Action] = []
        try:
            self._timer_work(now, wall, actions)
        except Exception as err:  # the backstop of the timer path
            actions += self._internal_error("the timer", err)
        return actions

    def _timer_work(self, now: float, wall: float, actions: list[Action]) -> None:
        if now - self.next_timer() > self.keepalive and now >= self.judge_after + self.deadtime:
            # This timer comes more than a keepalive late: we were not running.  What
            # the peers sent meanwhile still waits unread in our sockets, and an event
            # loop resumed by SIGCONT fires the late timer before reading them (epoll
            # returns EINTR).  Judge nobody dead before that backlog is read, or the
            # stalled node would declare its live peer dead.  Once per deadtime at most.
            self.judge_after = now + self.keepalive
        if now >= self.next_status and not self.stopped:
            actions.append(self._status_message(now, wall))
            self.next_status = now + self.keepalive
        for peer in self.peers.values():
            actions += self._check_peer(peer, now, wall)
            actions += self._request_rexmit(peer, now, wall)
        if self.next_reqnodes is not None and now >= self.next_reqnodes:
            actions += self._send_reqnodes(now, wall)
        actions += self.bad.flush(now)
        for component in self.components:
            due = component.next_timer()
            if due is not None and now >= due:
                actions += component.handle_timer(now, wall)

    def receive(self, data: bytes, link: int, now: float, wall: float) -> list[Action]:
        """One datagram or serial frame arrived on link `link`.

        Afterwards `last_sender` names the peer it authenticated as (a fresh message
        or a copy of one on another link), or is None.
        """
        self.last_sender = None
        if data in self.outbox.recent:
            self.own_links[link] = now
            return []
        known = self._accepted_recent.get(data)
        if known is not None:  # a copy of a message already taken: not parsed again
            if now - known[1] <= DUPLICATE_WINDOW:
                return self._link_heard(known[0], link, now)
            if known[2] == known[0].seq.generation:  # a replay: as its sequence would be,
                return []  # dropped without a word; an older generation's is reported
            return self.bad.record("old generation (replay?)", known[0].name,
                                   self._link_name(link), now)
        link_name = self._link_name(link)
        try:
            signed = auth.precheck_netstring(data, self.config.auth)
        except AuthError as err:
            return self.bad.record(str(err), claimed_sender(data), link_name, now)
        try:
            packet = wire.decode(data)
        except WireError as err:
            return self.bad.record(f"malformed: {err}", "?", link_name, now)
        message = packet.message
        src = message.get("src") or "?"
        if signed is None or packet.signed != signed:
            try:
                auth.verify(packet, self.config.auth)
            except AuthError as err:
                return self.bad.record(str(err), src, link_name, now)
        if src == self.node:
            return self._own_echo(message, link, link_name, now)
        peer = self.peers.get(src)
        if peer is None:
            return self.bad.record("unknown sender", src, link_name, now)
        msgtype = message.type
        if not msgtype or not message.get("ts"):
            return self.bad.record("missing type or timestamp", src, link_name, now)
        # Validate before anything moves: a number out of range is one bad packet that
        # changes nothing (it used to raise after the sequence state had moved).
        bad_number = fields.bad_number(message, msgtype)
        if bad_number is not None:
            return self.bad.record(bad_number, src, link_name, now)
        actions: list[Action] = []
        try:
            self._receive_from(peer, message, msgtype, link, now, wall, data, actions)
        except Exception as err:  # the backstop of the packet path: see _contain
            actions += self._contain(err, msgtype, src, link_name, now)
        return actions

    # --- receive path ------------------------------------------------------------------

    def _own_echo(self, message: Message, link: int, link_name: str,
                  now: float) -> list[Action]:
        """Our own broadcasts come back to us; anything else using our name is an impostor."""
        seq = fields.number(message, "", "seq")
        gen = fields.number(message, "", "hg")
        if (message.raw("srcuuid") == self.outbox.uuid and gen == self.outbox.generation
                and (seq is None or seq <= self.outbox.history.hiseq)):
            self.own_links[link] = now
            return []
        return self.bad.record("packet claims to be from this node", self.node, link_name, now)

    def _contain(self, err: Exception, msgtype: str, src: str, link_name: str,
                 now: float) -> list[Action]:
        """An unexpected failure while handling an authenticated message.

        Everything is validated before it moves, so this is a bug; the message
        counts as a bad packet, the actions built before the failure still go
        out (an ack, a persisted generation: they describe state that did move),
        and the traceback is logged once per kind of message, not per packet.
        """
        reason = f"internal error handling {fields.shown(msgtype, 32)!r}"
        if reason not in self.bad.totals:
            log.error("%s from %s: %s", reason, fields.shown(src), err, exc_info=err)
        return self.bad.record(reason, src, link_name, now)

    def _receive_from(self, peer: Peer, message: Message, msgtype: str, link: int,
                      now: float, wall: float, packet_bytes: bytes,
                      actions: list[Action]) -> None:
        """Process one authenticated, validated message, appending to `actions` as it
        goes, so whatever was built before an unexpected failure is kept."""
        healed = False
        dest = message.get("dest")
        dest_uuid = message.raw("destuuid")
        if dest_uuid is not None:
            to_us = dest_uuid == self.outbox.uuid
        else:
            to_us = dest is None or dest == self.node
        uuid = message.raw("srcuuid")
        if uuid is not None:
            peer.uuid = uuid
        seq = 0
        if msgtype.startswith(NOSEQ_PREFIX):
            verdict = Verdict.KEEP if to_us else Verdict.DROP
        else:
            seq_value = fields.number(message, msgtype, "seq")
            gen = fields.number(message, msgtype, "hg") or 0
            if seq_value is None:
                actions += self.bad.record("bad sequence number", peer.name,
                                           self._link_name(link), now)
                return
            seq = seq_value
            old_gen = peer.seq.generation
            result = peer.seq.classify(
                seq, gen, is_status=msgtype == "status", peer_dead=peer.dead, now=now,
                first_request_delay=min(0.05, self.rexmit_delay),
            )
            if result.replay:
                actions += self.bad.record("old generation (replay?)", peer.name,
                                           self._link_name(link), now)
                return
            if peer.seq.generation != old_gen:
                actions.append(PersistPeerGeneration(peer.name, peer.seq.generation))
            if result.restarted:
                actions.append(PeerRestarted(peer.name, peer.seq.generation))
            if result.healed:
                actions.append(PartitionHealed(peer.name))
                healed = True
            if result.lost is not None:
                actions.append(LostPackets(peer.name, *result.lost))
            if result.ack is not None:
                actions.append(self._ack(peer, result.ack, wall))
            verdict = result.verdict
            if verdict is not Verdict.DROP and not to_us:
                verdict = Verdict.DROP  # sequence bookkeeping done; not for us
        if verdict is Verdict.DROP:
            return
        if packet_bytes:
            remember(self._accepted_recent, packet_bytes, (peer, now, peer.seq.generation))
        actions += self._link_heard(peer, link, now)
        peer.heard_from = True
        if verdict is Verdict.DUPLICATE:
            return
        received = Received(message, peer, link, seq)
        if healed:
            for component in self.components:
                actions += component.partition_healed(peer, now, wall)
        if msgtype == "status":
            actions += self._on_status(received, now, wall)
        elif msgtype == "NS_ackmsg":
            ackseq = fields.number(message, msgtype, "ackseq")
            if ackseq is not None and peer.ackseq < ackseq <= self.outbox.history.hiseq:
                peer.ackseq = ackseq
        elif msgtype == "NS_rexmit":
            actions += self._on_rexmit(received, now, wall)
        elif msgtype == "reqnodes":
            actions.append(self._repnodes(peer, wall))
        elif msgtype == "repnodes":
            if self.reqnodes_pending:
                actions += self._comm_now_up(now, wall)
        else:
            handler = self._handlers.get(msgtype)
            if handler is not None:
                actions += handler(received, now, wall)
            for component in self.components:
                actions += component.message_seen(received, now, wall)
        if not self.comm_up:
            actions += self._check_comm(now, wall)

    def _link_heard(self, peer: Peer, link: int, now: float) -> list[Action]:
        self.last_sender = peer.name
        state = peer.links.get(link)
        if state is None:
            return []
        state.last_heard = now
        state.heard += 1
        if state.fsm.state is not LinkStatus.UP:
            state.fsm.move(LinkStatus.UP)
            return [LinkStatusChanged(peer.name, state.name, True)]
        return []

    def _on_status(self, received: Received, now: float, wall: float) -> list[Action]:
        peer, message = received.peer, received.message
        new = parse_status(message.get("st"))
        if new is None or received.seq < peer.seq.status_seqno:
            return []  # unknown status, or an older one refilled by retransmission
        actions: list[Action] = []
        if peer.last_status_at is not None and not peer.dead:
            gap = now - peer.last_status_at
            if gap > self.warntime:
                actions.append(LateHeartbeat(peer.name, int(gap * 1000), gap > peer.deadtime))
        dt = fields.number(message, "status", "dt")
        if dt is not None:
            peer.deadtime = dt / 1000.0
        peer.last_status_at = now
        peer.seq.status_seqno = max(peer.seq.status_seqno, received.seq)
        for component in self.components:
            component.status_seen(received, now)
        if not self.stopped and self.next_status - now < self.keepalive * PHASE_LOCK:
            # Our own status is nearly due: send it now, while we are awake anyway.
            # The two nodes' timers lock in phase and each wakes half as often;
            # sending early never lengthens the gap the peer sees.
            actions.append(self._status_message(now, wall))
            self.next_status = now + self.keepalive
        actions += self._set_peer_status(peer, new, now, wall)
        return actions

    def _set_peer_status(self, peer: Peer, new: NodeStatus, now: float,
                         wall: float) -> list[Action]:
        old = peer.status.state
        if old is new:
            return []
        peer.status.move(new)
        last_heard = peer.last_status_at if new is NodeStatus.DEAD else None
        actions: list[Action] = [NodeStatusChanged(peer.name, old.value, new.value,
                                                   last_heard=last_heard)]
        if new is NodeStatus.DEAD:
            peer.heard_from = False
            peer.seq.reset()
            for state in peer.links.values():
                if state.fsm.state is LinkStatus.UP:
                    state.fsm.move(LinkStatus.DEAD)
                    actions.append(LinkStatusChanged(peer.name, state.name, False))
        for component in self.components:
            # A component's failure must not lose the events of the move that did happen.
            actions += self._contained("a peer-status hook", functools.partial(
                component.peer_status, peer, old, new, now, wall))
        return actions

    def _contained(self, what: str, call: Callable[[], list[Action]]) -> list[Action]:
        try:
            return call()
        except Exception as err:  # a bug in a component: see _internal_error
            return self._internal_error(what, err)

    def _internal_error(self, what: str, err: Exception) -> list[Action]:
        """A bug outside the packet path: logged with its traceback once per place,
        reported as one error notice; the caller keeps what it built."""
        count = self.internal_errors.get(what, 0)
        self.internal_errors[what] = count + 1
        if count:
            return []
        log.error("internal error in %s: %s", what, err, exc_info=err)
        return [Notice("error", f"internal error in {what} ({type(err).__name__}: "
                       f"{fields.shown(str(err))}); hbd goes on, see the log")]

    def _on_rexmit(self, received: Received, now: float, wall: float) -> list[Action]:
        """A peer asks for our messages firstseq..lastseq again (decimal, as Heartbeat)."""
        message, peer = received.message, received.peer
        first = fields.number(message, "NS_rexmit", "firstseq")
        last = fields.number(message, "NS_rexmit", "lastseq")
        if first is None or last is None or not 0 < first <= last:
            return []
        actions: list[Action] = []
        for seq in range(first, min(last, first + 49) + 1):  # MAX_REXMIT_BATCH
            if seq <= peer.ackseq:
                continue
            again = self.outbox.retransmission(seq, now, self.rexmit_delay - 0.01)
            if again is not None:
                actions.append(again)
            elif self.outbox.history.get(seq) is None and seq <= self.outbox.history.hiseq:
                actions.append(self.outbox.build(
                    "NS_nak_rexmit", [("firstseq", f"{seq:x}"), ("info", "seqno not found")],
                    wall=wall, dest=peer.name, dest_uuid=peer.uuid))
        return actions

    # --- timers ----------------------------------------------------------------------

    def _silence_deadline(self, peer: Peer) -> float:
        deadtime = peer.deadtime if self.comm_up else max(self.initdead, peer.deadtime)
        since = peer.last_status_at if peer.last_status_at is not None else self.started_at
        return max(since + deadtime, self.judge_after)

    def _check_peer(self, peer: Peer, now: float, wall: float) -> list[Action]:
        actions: list[Action] = []
        if not peer.dead and now >= self._silence_deadline(peer):
            actions += self._set_peer_status(peer, NodeStatus.DEAD, now, wall)
            if not self.comm_up:
                actions += self._check_comm(now, wall)
        for state in peer.links.values():
            if state.fsm.state is not LinkStatus.UP or state.last_heard is None:
                continue
            if now >= max(state.last_heard + peer.deadtime, self.judge_after):
                state.fsm.move(LinkStatus.DEAD)
                actions.append(LinkStatusChanged(peer.name, state.name, False))
        return actions

    def _request_rexmit(self, peer: Peer, now: float, wall: float) -> list[Action]:
        due = peer.seq.next_rexmit_request
        if due is None or now < due:
            return []
        if not peer.alive:
            peer.seq.next_rexmit_request = None
            return []
        peer.seq.next_rexmit_request = now + self.rexmit_delay
        return [
            self.outbox.build("NS_rexmit", [("firstseq", str(first)), ("lastseq", str(last))],
                              wall=wall, dest=peer.name, dest_uuid=peer.uuid)
            for first, last in peer.seq.missing_ranges()
        ]

    # --- our own status and the comm-up handshake ------------------------------------------

    def _status_message(self, now: float, wall: float) -> Transmit:
        fields = [("st", self.status.state.value), ("dt", f"{int(self.deadtime * 1000):x}"),
                  ("protocol", PROTOCOL_VERSION)]
        for component in self.components:
            fields += component.status_fields(now)
        return self.outbox.build("status", fields, wall=wall)

    def _set_local_status(self, new: NodeStatus, now: float, wall: float) -> list[Action]:
        old = self.status.move(new)
        self.next_status = now + self.keepalive
        return [NodeStatusChanged(self.node, old.value, new.value, local=True),
                self._status_message(now, wall)]

    def _check_comm(self, now: float, wall: float) -> list[Action]:
        """heartbeat.c: check_comm_isup -> send_reqnodes_msg -> comm_now_up."""
        if self.comm_up or self.reqnodes_pending:
            return []
        if all(p.heard_from or p.dead for p in self.peers.values()):
            self.reqnodes_pending = True
            return self._send_reqnodes(now, wall)
        return []

    def _send_reqnodes(self, now: float, wall: float) -> list[Action]:
        target = next((p for p in self.peers.values() if not p.dead), None)
        if target is None:
            return self._comm_now_up(now, wall)
        self.next_reqnodes = now + REQNODES_RETRY
        return [self.outbox.build("reqnodes", [], wall=wall, dest=target.name,
                                  dest_uuid=target.uuid)]

    def _comm_now_up(self, now: float, wall: float) -> list[Action]:
        if self.comm_up:
            return []
        self.comm_up = True
        self.reqnodes_pending = False
        self.next_reqnodes = None
        actions = self._set_local_status(NodeStatus.ACTIVE, now, wall)
        for component in self.components:
            actions += component.comm_up(now, wall)
        return actions

    def _repnodes(self, peer: Peer, wall: float) -> Transmit:
        # Always the full configured list: a Heartbeat peer drops nodes missing from it.
        nodelist = "".join(f"{n} " for n in self.config.hacf.nodes)
        return self.outbox.build(
            "repnodes", [("nodelist", nodelist), ("delnodelist", " ")],
            wall=wall, dest=peer.name, dest_uuid=peer.uuid)

    def _ack(self, peer: Peer, seq: int, wall: float) -> Transmit:
        return self.outbox.build("NS_ackmsg", [("ackseq", f"{seq:x}")], wall=wall,
                                 dest=peer.name, dest_uuid=peer.uuid)

    # --- helpers ---------------------------------------------------------------------

    def _link_name(self, link: int) -> str:
        return self.link_names[link] if 0 <= link < len(self.link_names) else f"link{link}"

    def send(self, msgtype: str, fields: list[tuple[str, str]], wall: float,
             dest: str | None = None) -> Transmit:
        """Build a message for the resource layer (and others) to transmit."""
        peer = self.peers.get(dest) if dest else None
        return self.outbox.build(msgtype, fields, wall=wall, dest=dest,
                                 dest_uuid=peer.uuid if peer else None)

    def stop_heartbeats(self) -> None:
        self.stopped = True



def _has_serial(config: ClusterConfig) -> bool:
    return any(isinstance(link, SerialLink) for link in config.hacf.links)
