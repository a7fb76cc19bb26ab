"""Who runs which group: Heartbeat 3.0.6's resource protocol, in the core.

The rules follow hb_resource.c (see docs/heartbeat-protocol.md §3.5-§3.9):

* `auto_failback on|off` (nice_failback): after comm-up a node sends
  `starting`, answers every `starting` with `resource rsc_hold=… rtype=full
  isstable=…`, and takes its own (local) groups once the peer is stable, or
  10 s after the peer's first `resource` when it never becomes stable;
* `auto_failback legacy`: no starting/resource; a node asks for each of its
  groups with `ip-request` and the holder releases it (`ip-request-resp`);
* standby (hb_standby / Release) and takeover (hb_takeover / Takeover):
  the `ask_resources` exchange, in standby.py;
* graceful stop: release everything, then `shutdone`, after which the peer
  takes over at once without waiting for deadtime;
* a dead peer's groups are taken (`resource … info=mach_down`) and
  `stonith node=… result=…` is announced; with fence devices configured,
  only after the peer was fenced (peerloss.py, fencing.py);
* split brain: see `_resolve_contest`.

Group work (start/stop) goes out as actions; the daemon reports back with
`group_done()`.  A `_Job` waits for the groups of one step and then runs
that step's continuation.
"""

from __future__ import annotations

import logging

from hbd.core.actions import (
    Action,
    AnnounceGroup,
    Notice,
    SplitBrain,
)
from hbd.core.config import AutoFailback, ClusterConfig
from hbd.core.engine import Engine, EngineComponent, Handler, Received
from hbd.core.fencing import Fencing
from hbd.core.fields import shown
from hbd.core.fsm import StateMachine
from hbd.core.groupwork import BLOCKED_RETRY, Then
from hbd.core.health import Health
from hbd.core.membership import NodeStatus, Peer
from hbd.core.peerloss import PeerLoss
from hbd.core.recovery import REFUSED_FIELD
from hbd.core.resources import (
    Group,
    GroupState,
    GroupTable,
    Held,
)
from hbd.core.rscstate import RSC_TRANSITIONS, STANDBY_TRANSITIONS, RscState, Standby

log = logging.getLogger(__name__)

RQSTDELAY = 10.0  # hb_resource.c: wait for an unstable peer before taking our groups
DECLARED_DEAD_FIELD = "hbd_declared_dead"
CONTEST_SETTLE = 5.0  # after a heal, how long both sides' "declared dead" views are kept


class Failover(PeerLoss, EngineComponent):
    """The resource side of one node: a component of the Engine (see Engine.attach)."""

    def __init__(self, engine: Engine, config: ClusterConfig) -> None:
        super().__init__(config.node_name, GroupTable(config.node_name, config.groups))
        self.engine = engine
        self.auto_failback = config.hacf.auto_failback
        self.legacy = self.auto_failback is AutoFailback.LEGACY
        self.state = StateMachine("resources", RscState.INIT, RSC_TRANSITIONS)
        self.standby = StateMachine("standby", Standby.NOT, STANDBY_TRANSITIONS)
        self.standby_set = Held.NONE
        self.standby_deadline: float | None = None
        self.rscrcvd_at: float | None = None
        self.other_stable = False
        self.other_holds = Held.NONE
        self.starting_pending = False  # a `starting` arrived before our comm-up
        self.we_declared_peer_dead = False
        self.peer_declared_us_dead = False
        self.kept_in_contest: set[str] = set()  # groups we kept in the current contest
        self.contest_settles_at: float | None = None  # then both views above are forgotten
        self.shutdown_requested = False
        # Heartbeat's rsc_needs_failback: set when we took groups from a dead or
        # stopped peer (not by standby), so auto_failback returns only those.
        self.needs_failback = False
        self.fencing = Fencing(config)
        self.peer_shut_down = False  # it sent `shutdone`: its death needs no fencing
        self.health = Health(config)  # monitors and "unfit here" (recovery.py)

    # --- EngineComponent: what the engine asks of us (comm_up, peer_status,
    # partition_healed, next_timer and handle_timer are further down) ----------------

    def message_handlers(self) -> dict[str, Handler]:
        return {
            "starting": self._on_starting, "resource": self._on_resource,
            "ask_resources": self._on_ask_resources, "hb_takeover": self._on_hb_takeover,
            "shutdone": self._on_shutdone, "ip-request": self._on_ip_request,
            "ip-request-resp": self._on_ip_request_resp, "stonith": self._on_stonith,
        }

    # --- derived views ------------------------------------------------------------

    @property
    def peer(self) -> Peer | None:
        return next(iter(self.engine.peers.values()), None)

    def rscstatus(self) -> str:
        """cl_status rscstatus: none/local/foreign/all, or transition while anything moves."""
        if self.groups.busy() or self.standby.state is not Standby.NOT or self.state.state in (
                RscState.STARTING, RscState.BOTHSTARTING, RscState.RSCRCVD):
            return "transition"
        return self.held().wire

    def _peer_alive(self) -> bool:
        peer = self.peer
        return peer is not None and peer.alive

    # --- ResourceHolder (hbd.core.pingnodes): what ipfail's rule asks of us ------------

    def live_peer(self) -> str | None:
        return self.peer.name if self.peer is not None and self.peer.alive else None

    def holds_groups(self) -> bool:
        return self.held().value != 0

    def release_refusal(self) -> str | None:
        return self._standby_refusal()

    # --- messages we send ------------------------------------------------------------

    def _send(self, msgtype: str, fields: list[tuple[str, str]], wall: float,
              dest: str | None = None) -> Action:
        return self.engine.send(msgtype, fields, wall, dest)

    def _resource_msg(self, wall: float, *, stable: bool | None = None,
                      info: str | None = None, refused: str | None = None) -> Action:
        if stable is None:
            stable = self.state.state is RscState.STABLE and not self.groups.busy()
        fields = [("rsc_hold", self.held().wire), ("rtype", "full"),
                  ("isstable", "1" if stable else "0")]
        if info:
            fields.append(("info", info))
        if self.we_declared_peer_dead:
            # hbd's extension (Heartbeat ignores unknown fields): tells the peer we had
            # declared it dead, which settles who keeps contested groups.
            fields.append((DECLARED_DEAD_FIELD, "1"))
        if refused:
            fields.append((REFUSED_FIELD, refused))
        return self._send("resource", fields, wall)

    def _tell_peer(self, *, stable: bool | None = None, info: str | None = None) -> Then:
        """The continuation that tells the peer what we hold once a step's groups are up.

        It runs seconds later: if a shutdown began meanwhile, its own `resource
        ... info=shutdown` and `shutdone` speak for us, and a claim to be stable
        holding the groups would contradict them.
        """
        def then(now: float, wall: float) -> list[Action]:
            if self.shutdown_requested:
                return []
            return [self._resource_msg(wall, stable=stable, info=info)]
        return then

    def _retake_if_alone(self, now: float, wall: float) -> list[Action]:
        """After stopping groups for the peer: if it died meanwhile, they are ours again.

        Its death started what was stopped at that moment, not what was still
        stopping for it; without this, nobody would run those groups.
        """
        if self.shutdown_requested or self._peer_alive() or self.state.state is not RscState.STABLE:
            return []
        missing = [g for g in self.groups if g.state is GroupState.STOPPED
                   and g.key not in self.retiring]
        if not missing:
            return []
        actions: list[Action] = [Notice("warning", "the peer died before taking the groups "
                                        "we stopped for it: taking them back")]
        return actions + self._start(missing, "the peer died before taking it",
                                     self._tell_peer(stable=True), now, wall)

    # --- reload -----------------------------------------------------------------------

    def reconfigure(self, config: ClusterConfig, now: float, wall: float) -> list[Action]:
        """Apply a reloaded haresources/ha.cf without touching groups that stay.

        A group that stays keeps running where it runs (a changed definition
        applies at its next start); a removed group is stopped, then forgotten;
        a new group is started here if it is ours (or the peer is dead).
        """
        self.auto_failback = config.hacf.auto_failback
        self.legacy = self.auto_failback is AutoFailback.LEGACY
        self.fencing.reconfigure(config)
        wanted = {g.key: g for g in config.groups}
        table = self.groups.groups
        for key, group in table.items():
            if key in wanted:
                group.config = wanted[key]
        added = [Group(cfg) for key, cfg in wanted.items() if key not in table]
        removed = [g for key, g in table.items() if key not in wanted]
        for group in added:
            table[group.key] = group
        self.health.configure(config)
        self.health.sync(self._running(), now)
        actions: list[Action] = []
        for group in removed:
            if group.state is GroupState.STOPPED:
                del table[group.key]
            else:
                self.retiring.add(group.key)
                actions.append(Notice("info", f"group {group.key} left haresources: stopping it"))
        actions += self._stop([g for g in removed if g.key in self.retiring],
                              "removed from haresources", None, now, wall)
        if self.state.state is RscState.STABLE and not self.shutdown_requested:
            peer_dead = not self._peer_alive()
            ours = [g for g in added if g.home == self.node or peer_dead]
            if ours:
                actions += self._start(ours, "added to haresources", self._announce, now, wall)
        return actions

    def group_done(self, key: str, operation: str, ok: bool, detail: str,
                   now: float, wall: float) -> list[Action]:
        actions = super().group_done(key, operation, ok, detail, now, wall)
        actions += self._recovery_sync(now, wall)
        if self.shutdown_requested:
            actions += self._finish_shutdown(now, wall)
        return actions

    # --- hooks for group work -----------------------------------------------------

    def _announce(self, now: float, wall: float) -> list[Action]:
        actions = [self._resource_msg(wall)]
        if self.shutdown_requested:
            actions += self._finish_shutdown(now, wall)
        return actions

    def _after_failed_start(self, group: Group) -> Then:
        def then(now: float, wall: float) -> list[Action]:
            if self.shutdown_requested:  # stopping: the shutdown hands everything over
                return [Notice("warning", f"group {group.key} failed to start here")]
            if group.state is not GroupState.STOPPED or not self._peer_alive():
                return [Notice("error", f"group {group.key} failed to start here and no peer "
                               "can take it")]
            local = group.home == self.node
            scope = "local" if local else "foreign"
            actions: list[Action] = [Notice("warning", f"group {group.key} failed to start: "
                                            f"handing the {scope} groups to the peer")]
            if self.legacy or self.standby.state is not Standby.NOT:
                return [*actions, self._resource_msg(wall)]
            return actions + self._begin_standby(scope, now, wall)
        return then

    # --- timers ----------------------------------------------------------------------

    def next_timer(self) -> float | None:
        due = [t for t in (self.standby_deadline, self.next_blocked_retry,
                           self.contest_settles_at, self.fencing.next_timer(),
                           self.health.next_timer()) if t is not None]
        if self.rscrcvd_at is not None and self.state.state is RscState.RSCRCVD:
            due.append(self.rscrcvd_at + RQSTDELAY)
        return min(due) if due else None

    def handle_timer(self, now: float, wall: float) -> list[Action]:
        actions: list[Action] = self.fencing.handle_timer(now, wall)
        if self.contest_settles_at is not None and now >= self.contest_settles_at:
            self.contest_settles_at = None
            self.we_declared_peer_dead = self.peer_declared_us_dead = False
            self.kept_in_contest.clear()
        if (self.state.state is RscState.RSCRCVD and self.rscrcvd_at is not None
                and now >= self.rscrcvd_at + RQSTDELAY):
            self.rscrcvd_at = None
            actions.append(Notice("info", "local resource transition completed."))
            actions += self._become_stable(now, wall)
        if self.standby_deadline is not None and now >= self.standby_deadline:
            self.standby_deadline = None
            if self.standby.state is not Standby.NOT:
                self.standby.move(Standby.NOT)
                self.other_stable = True
                actions.append(Notice("warning",
                                      "No reply to standby request.  Standby request cancelled."))
        if self.next_blocked_retry is not None and now >= self.next_blocked_retry:
            blocked = self.groups.blocked()
            self.next_blocked_retry = now + BLOCKED_RETRY if blocked else None
            if blocked and not self.jobs:
                actions += self._stop(blocked, "retry after a failed stop",
                                      self._after_blocked_retry, now, wall)
        return actions + self._recovery_timer(now, wall)

    def _after_blocked_retry(self, now: float, wall: float) -> list[Action]:
        actions: list[Action] = [self._resource_msg(wall)]
        if self.shutdown_requested:
            actions += self._finish_shutdown(now, wall)
        return actions

    # --- start-up ---------------------------------------------------------------------

    def comm_up(self, now: float, wall: float) -> list[Action]:
        """Heartbeat's comm_up_resource_action: communication with every node settled."""
        self.fencing.start(now)  # the device status check, then periodically
        if self.state.state is not RscState.INIT:
            return []
        if not self._peer_alive():
            # Alone (the peer is dead or never came): everything is ours, once the
            # peer, which may hold any of it, is fenced (Heartbeat: anypacketsyet).
            self.state.move(RscState.STABLE)
            if self.peer is not None and self.fencing.configured:
                def take(now: float, wall: float) -> list[Action]:
                    if self.shutdown_requested or self._peer_alive():
                        return []
                    return self._take_everything("no peer at start-up", now, wall)
                return self.fencing.begin(self.peer.name, self._race_delay(0), take, now)
            return self._take_everything("no peer at start-up", now, wall)
        if self.legacy:
            self.state.move(RscState.STABLE)
            return self._legacy_request_ours(now, wall)
        self.state.move(RscState.STARTING)
        actions: list[Action] = [self._send("starting", [], wall)]
        if self.starting_pending:
            self.starting_pending = False
            actions += self._answer_starting(now, wall)
        return actions

    def _become_stable(self, now: float, wall: float) -> list[Action]:
        """req_our_resources: take our local groups unless the peer holds them."""
        if self.state.state in (RscState.STABLE, RscState.SHUTDOWN):
            return []
        self.state.move(RscState.STABLE)
        self.local_claim = True
        ours = [] if self.other_holds & Held.FOREIGN else self.groups.in_set(Held.LOCAL)
        actions: list[Action] = [self._resource_msg(wall, stable=True)]
        return actions + self._start(ours, "our own groups at start-up",
                                     self._tell_peer(info="req_our_resources()"), now, wall)

    def _take_everything(self, reason: str, now: float, wall: float) -> list[Action]:
        self.local_claim = self.foreign_claim = True
        return self._start(list(self.groups), reason, self._tell_peer(stable=True), now, wall)

    # --- the starting/resource exchange ------------------------------------------------

    def _answer_starting(self, now: float, wall: float) -> list[Action]:
        state = self.state.state
        self.other_stable = False
        self.other_holds = Held.NONE  # a node that is starting holds nothing
        if state is RscState.STARTING:
            self.state.move(RscState.BOTHSTARTING)
            return [self._resource_msg(wall, stable=False)]
        if state in (RscState.BOTHSTARTING, RscState.RSCRCVD):
            return [self._resource_msg(wall, stable=False)]
        return [self._resource_msg(wall)]

    def _on_starting(self, rx: Received, now: float, wall: float) -> list[Action]:
        if self.state.state is RscState.INIT:
            self.starting_pending = True  # answered at our comm-up (Heartbeat would drop it)
            return []
        self.we_declared_peer_dead = self.peer_declared_us_dead = False
        return self._answer_starting(now, wall)

    def _on_resource(self, rx: Received, now: float, wall: float) -> list[Action]:
        message = rx.message
        held = Held.parse(message.get("rsc_hold"))
        actions: list[Action] = []
        if held is None:
            text = shown(message.get("rsc_hold") or "")
            actions.append(Notice("warning", f"bad resource type '{text}' "
                                  f"from {rx.peer.name}: read as none"))
            held = Held.NONE
        if message.get("rtype") == "full" or held is Held.NONE:
            self.other_holds = held
        else:
            self.other_holds |= held
        rx.peer.rsc_hold = self.other_holds.wire
        refused = message.get(REFUSED_FIELD)
        if refused is not None:
            refused_set = Held.parse(refused)
            if refused_set is None:
                actions.append(Notice("warning", f"bad {REFUSED_FIELD} '{shown(refused)}' "
                                      f"from {rx.peer.name}: ignored"))
            else:
                actions += self._standby_refused(rx.peer.name, refused_set.wire, now, wall)
        was_stable = self.other_stable
        stable = message.get("isstable")
        if stable is not None:
            self.other_stable = stable.strip() == "1"
        if message.get("info") == "mach_down" or message.get(DECLARED_DEAD_FIELD) == "1":
            self.peer_declared_us_dead = True  # it had declared us dead (and took our groups)
            if self.contest_settles_at is None:
                self.contest_settles_at = now + CONTEST_SETTLE
        actions += self._resolve_contest(now, wall)
        state = self.state.state
        if state in (RscState.STARTING, RscState.BOTHSTARTING):
            self.state.move(RscState.RSCRCVD)
            self.rscrcvd_at = now
        if self.other_stable and not was_stable:
            actions.append(Notice("info", "remote resource transition completed."))
            if self.state.state is not RscState.STABLE:
                actions += self._become_stable(now, wall)
            else:
                actions.append(self._resource_msg(wall))
        elif self.state.state is RscState.RSCRCVD and message.get("rtype") == "full":
            # Heartbeat waits RQSTDELAY (10 s) for an unstable peer.  A full report of
            # what the peer holds is all we need: take our groups unless it holds them.
            actions += self._become_stable(now, wall)
        if self.other_stable and self.state.state is RscState.STABLE:
            actions += self._maybe_failback(now, wall)
            actions += self._recovery_on_peer_report(now, wall)
        return actions

    def _maybe_failback(self, now: float, wall: float) -> list[Action]:
        """auto_failback on: hand back the peer's groups once it is back and stable."""
        if (self.auto_failback is not AutoFailback.ON or not self.needs_failback
                or self.standby.state is not Standby.NOT or self.shutdown_requested
                or self.groups.busy()):
            return []
        if not any(g.active for g in self.groups.in_set(Held.FOREIGN)):
            # nothing to hand back: the class is released without an exchange
            self.foreign_claim = False
            return []
        self.needs_failback = False
        actions: list[Action] = [Notice("info", "auto_failback: giving the peer's groups back")]
        return actions + self._begin_standby("foreign", now, wall)

    # --- graceful stop --------------------------------------------------------------

    def shutdown(self, now: float, wall: float) -> list[Action]:
        """Release everything, then tell the peer with `shutdone` so it takes over at once."""
        if self.shutdown_requested:
            return []
        self.shutdown_requested = True
        if self.state.state is not RscState.SHUTDOWN:
            self.state.move(RscState.SHUTDOWN)
        if self.standby.state is not Standby.NOT:
            self.standby.move(Standby.NOT)
            self.standby_deadline = None
        self.local_claim = self.foreign_claim = False
        actions: list[Action] = [self._send("resource", [
            ("rsc_hold", "none"), ("rtype", "full"), ("isstable", "0"), ("info", "shutdown")],
            wall)]
        return actions + self._stop([g for g in self.groups if g.active], "shutdown",
                                    self._finish_shutdown, now, wall)

    def _finish_shutdown(self, now: float, wall: float) -> list[Action]:
        if self.shutdown_done or self.jobs:
            return []
        # A group still starting when the stop was asked for has finished by now: stop
        # it too, so shutdown always converges on nothing held.
        running = [g for g in self.groups if g.state is GroupState.RUNNING]
        if running:
            return self._stop(running, "shutdown", self._finish_shutdown, now, wall)
        blocked = self.groups.blocked()
        if blocked:
            names = ", ".join(g.key for g in blocked)
            return [Notice("error", f"not stopping: group(s) {names} could not be stopped; "
                           "hbd keeps running and claiming them until they are cleaned up")]
        self.shutdown_done = True
        return [self._send("shutdone", [("st", "dead")], wall)]

    def _on_shutdone(self, rx: Received, now: float, wall: float) -> list[Action]:
        """The peer stopped gracefully and released everything: take over now."""
        self.other_holds = Held.NONE
        rx.peer.rsc_hold = "none"
        self.other_stable = True
        self.peer_shut_down = True
        if self.standby.state is not Standby.NOT:
            self.standby.move(Standby.NOT)
            self.standby_deadline = None
        actions: list[Action] = [Notice("info", f"Received shutdown notice from '{rx.peer.name}'.")]
        if self.shutdown_requested:
            return actions
        if self.state.state is not RscState.STABLE:
            self.state.move(RscState.STABLE)
        self.needs_failback = True
        return actions + self._take_everything(f"{rx.peer.name} shut down", now, wall)

    # --- a peer dies, restarts or comes back ---------------------------------------

    def peer_status(self, peer: Peer, old: NodeStatus, new: NodeStatus, now: float,
                    wall: float) -> list[Action]:
        if new is not NodeStatus.DEAD:
            self.peer_shut_down = False
            return self.fencing.peer_alive(peer.name)
        held_nothing = self.other_holds is Held.NONE
        theirs = len(self.groups.in_set(self.other_holds.mirror()))
        self.other_holds = Held.NONE
        self.other_stable = True
        self.we_declared_peer_dead = True
        actions: list[Action] = []
        if self.standby.state is not Standby.NOT:
            self.standby.move(Standby.NOT)
            self.standby_deadline = None
            actions.append(Notice("warning", "standby cancelled: the peer died"))
        return actions + self._take_lost_peer(peer, held_nothing, theirs, now, wall)

    def partition_healed(self, peer: Peer, now: float, wall: float) -> list[Action]:
        """A node we declared dead is back without a restart: tell it what we hold."""
        self.contest_settles_at = now + CONTEST_SETTLE
        return [self._resource_msg(wall, stable=True)]

    def _on_stonith(self, rx: Received, now: float, wall: float) -> list[Action]:
        if rx.message.get("node") == self.node:
            self.peer_declared_us_dead = True
            self.contest_settles_at = now + CONTEST_SETTLE
            return self._resolve_contest(now, wall)
        return []

    def _resolve_contest(self, now: float, wall: float) -> list[Action]:
        """Split brain: the peer claims groups we run too.  Exactly one keeps each.

        The rule (docs/operations.md):
        1. if only one side declared the other dead, the side that was declared
           dead (it stalled or lost every link) stops the contested groups: the
           other side has been serving clients meanwhile;
        2. if both did (a true partition) or neither, each contested group stays
           on its haresources node.
        Each side learns the other's view from `info=mach_down`, `stonith
        node=<us>` or hbd's `hbd_declared_dead=1` field in `resource`.
        The keeper re-announces its addresses (gratuitous ARP) so clients and
        switches relearn the right MAC.
        """
        if self.standby.state is not Standby.NOT or self.shutdown_requested:
            return []
        contested = [g for g in self.groups.in_set(self.other_holds.mirror())
                     if g.state in (GroupState.RUNNING, GroupState.STARTING)]
        if not contested:
            self.kept_in_contest.clear()
            return []
        if self.peer_declared_us_dead and not self.we_declared_peer_dead:
            keep_here = set()
            rule = "the peer declared us dead and kept serving"
        elif self.we_declared_peer_dead and not self.peer_declared_us_dead:
            keep_here = {g.key for g in contested}
            rule = "we declared the peer dead and kept serving"
        else:
            keep_here = {g.key for g in contested if g.home == self.node}
            rule = "each group stays on its haresources node"
        peer = self.peer.name if self.peer else "?"
        # Whatever we took from the "dead" peer is settled here, not by auto_failback.
        self.needs_failback = False
        actions: list[Action] = []
        stopping = []
        for group in contested:
            if group.key in keep_here:
                if group.key in self.kept_in_contest:
                    continue  # already settled; the peer's older claim is still arriving
                self.kept_in_contest.add(group.key)
                actions.append(SplitBrain(group.key, self.node, rule))
                actions.append(AnnounceGroup(group.key))
            else:
                actions.append(SplitBrain(group.key, peer, rule))
                stopping.append(group)

        def then(now: float, wall: float) -> list[Action]:
            return self._retake_if_alone(now, wall) or self._tell_peer(stable=True)(now, wall)

        return actions + self._stop(stopping, "split brain: the peer keeps it", then, now, wall)

    # --- legacy mode: ip-request / ip-request-resp ----------------------------------

    def _legacy_request_ours(self, now: float, wall: float) -> list[Action]:
        self.local_claim = True
        return [self._send("ip-request", [("ipaddr", g.key)], wall)
                for g in self.groups.in_set(Held.LOCAL)]

    def _on_ip_request(self, rx: Received, now: float, wall: float) -> list[Action]:
        key = rx.message.get("ipaddr") or ""
        group = self.groups.groups.get(key)
        peer = rx.peer.name

        def reply(weown: str) -> Then:
            def then(now: float, wall: float) -> list[Action]:
                retaken = self._retake_if_alone(now, wall)
                if retaken:
                    return retaken  # the peer that asked is dead: no reply to give
                return [self._send("ip-request-resp", [("ipaddr", key), ("weown", weown),
                                                       ("ok", "OK")], wall, dest=peer)]
            return then

        if group is None or group.state is GroupState.STOPPED:
            return reply("no")(now, wall)
        if group.state is GroupState.BLOCKED:
            return [Notice("error", f"{peer} asks for {key}, which could not be stopped here: "
                           "refused")]
        return self._stop([group], f"{peer} asked for it (ip-request)", reply("yes"), now, wall)

    def _on_ip_request_resp(self, rx: Received, now: float, wall: float) -> list[Action]:
        message = rx.message
        if message.get("dest") != self.node or message.get("ok") != "OK":
            return []
        group = self.groups.groups.get(message.get("ipaddr") or "")
        if group is None or group.state is not GroupState.STOPPED:
            return []
        return self._start([group], f"{rx.peer.name} released it", None, now, wall)
