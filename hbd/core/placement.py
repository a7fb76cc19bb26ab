"""Which groups this node runs on the Corosync stack, and when it starts and stops them.

The adapter (hbd.stack_corosync) feeds in what Corosync reports — the hbd
process group's membership changes and messages (CPG), the totem ring, and
the quorum decision (libquorum) — and carries out the actions.  The agreed
ownership and the placement rule live in hbd.core.cpgview; this module adds
the local half:

* Quorum.  Groups start only while this partition is quorate *for the
  current ring*: the quorum notice must name the ring CPG last reported, and
  no node may have come or gone since.  Corosync delivers the two on
  different channels in no fixed order; until they agree nothing starts or
  moves.  A notice saying "not quorate", or losing Corosync altogether,
  stops every running group at once and withdraws every claim.
* Claims.  When the agreed placement puts a group here and nobody owns it,
  this node announces a claim and starts the group when its claim comes
  back accepted (and the group still belongs here).  So a group never starts
  before its previous owner released it or left the membership.
* Start-up.  For ha.cf's initdead after hbd first reaches Corosync, a group
  is not taken while a node placed before us is in the ring but its hbd has
  not joined yet (it is probably starting): no shuffle when a cluster boots.
* In doubt.  An owner whose hbd left the group while its node stays in the
  ring (hbd crashed, or corosync is shutting down: it unloads CPG before it
  leaves the ring) may still have the group up.  Nobody claims it until
  ha.cf's deadtime has passed, or LEAVE_SETTLE after that node left the
  ring: its corosync is exiting, and its hbd stops the group when the IPC
  closes, a little after the leave (~0.1 s on Debian 12; libqb's client may
  wait up to 2 s, QB_IPC_MAX_WAIT_MS, on a server going away).
* Moves.  A running group whose agreed placement is elsewhere (failback, a
  takeover, a standby, a graceful stop) is stopped and announced stopped;
  the new node claims it then.
* Health (hbd.core.monitoring): a failed monitor restarts the group in
  place (it stays owned here throughout); beyond its restarts, or on
  set_unfit, the group is announced in `failed`, so every member's view
  drops this node from its candidates, and the ordinary move takes it to
  the next node of its order.  This node never claims it until cleanup,
  expiry or clear_unfit.
* Commands: release (standby) declines a scope's groups here until a
  takeover; takeover clears that and puts this node first for the scope;
  cleanup retries a blocked stop and forgets a failed start.
"""

from __future__ import annotations

from hbd.core.actions import (
    Action,
    CpgSend,
    GroupRecovery,
    MembershipChanged,
    Notice,
    QuorumChanged,
    Shutdown,
    SplitBrain,
)
from hbd.core.config import AutoFailback, ClusterConfig, ClusterStack
from hbd.core.cpgview import (
    ClaimOutcome,
    Confchg,
    CpgMember,
    MemberId,
    Outcome,
    OwnerConflict,
    QuorumNotice,
    Reason,
    RingId,
    TotemChange,
    View,
    preference_order,
)
from hbd.core.cpgwire import Announced, NodeState, decode, encode
from hbd.core.groupwork import BLOCKED_RETRY, Then
from hbd.core.health import Health
from hbd.core.monitoring import Monitoring
from hbd.core.resources import SCOPES, Group, GroupState, GroupTable, scope_set
from hbd.errors import Busy, InvalidScope, WireError

LEAVE_SETTLE = 2.5  # seconds; see "In doubt" above
# startup_until once the start-up wait has ended: over for good (reconnects do not wait
# again), and no longer a deadline.
STARTUP_OVER = -1.0

_ANNOUNCED = {GroupState.STARTING: Announced.STARTING, GroupState.RUNNING: Announced.RUNNING,
              GroupState.STOPPING: Announced.STOPPING, GroupState.BLOCKED: Announced.BLOCKED}


def group_orders(config: ClusterConfig) -> dict[str, tuple[str, ...]]:
    """Every group's preference order (see cpgview.preference_order)."""
    overrides = dict(config.hacf.group_orders)
    return {g.key: preference_order(g, config.hacf.nodes, overrides) for g in config.groups}


def order_problems(config: ClusterConfig) -> list[str]:
    """`group_order` lines naming no haresources group (ha.cf cannot know the keys)."""
    keys = {g.key for g in config.groups}
    return [f"ha.cf: group_order {key}: no haresources group has that key (keys: "
            f"{', '.join(sorted(keys)) or 'none'})"
            for key, _ in config.hacf.group_orders if key not in keys]


class Placement(Monitoring):
    """This node's side of N-node placement; every entry point returns actions."""

    def __init__(self, config: ClusterConfig) -> None:
        super().__init__(config.node_name, GroupTable(config.node_name, config.groups))
        self.config = config
        self.failback = config.hacf.auto_failback is not AutoFailback.OFF
        self.orders = group_orders(config)
        self.view = View(self.orders)
        self.nodeid: int | None = None  # our corosync node id while connected
        self.own_pid = 0
        self.me: MemberId | None = None  # our member id in the CPG group, once seen
        self.ring: RingId | None = None  # the totem ring CPG last reported
        self.ring_pending = False  # nodes came or went; the new ring is not reported yet
        self.ring_nodes: tuple[int, ...] = ()
        self.in_doubt: dict[str, tuple[int, float]] = {}  # group -> (node id, until)
        self.grace = config.hacf.timers.deadtime_ms / 1000.0
        self.initdead = config.hacf.timers.initdead_ms / 1000.0
        self.startup_until: float | None = None  # end of the start-up wait, once connected
        self.node_ids: dict[str, int] = {}  # corosync's nodelist: name -> node id
        self.quorum: QuorumNotice | None = None
        self.claims: set[str] = set()  # claimed, our claim not delivered back yet
        self.declined: set[str] = set()
        self.preferred: set[str] = set()
        self.failed: set[str] = set()  # start failed here (until cleanup)
        self.health = Health(config)  # monitors and "unfit here" (monitoring.py)
        self.leaving = False
        self._blocked_noted = False
        self._seq = 0
        self._sent: NodeState | None = None

    # --- questions -----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.nodeid is not None

    def quorum_lost(self) -> bool:
        """Definitely not allowed to run groups: no Corosync, or it says not quorate."""
        return not self.connected or (self.quorum is not None and not self.quorum.quorate)

    def quorate(self) -> bool | None:
        """For admins: True/False, None while connected with no decision yet."""
        if not self.connected:
            return False
        return None if self.quorum is None else self.quorum.quorate

    def _settled(self) -> bool:
        """The agreed view is complete and quorum is known for the current ring."""
        return (self.me is not None and self.me in self.view.members and self.view.synced()
                and not self.ring_pending and self.ring is not None
                and self.quorum is not None and self.quorum.ring == self.ring)

    def owner_name(self, key: str) -> str:
        owner = self.view.owner.get(key)
        return (self.view.name(owner) or f"node {owner[0]}") if owner is not None else ""

    def _label(self, member: CpgMember | MemberId) -> str:
        mid = member.id if isinstance(member, CpgMember) else member
        name = self.view.name(mid) or next(
            (n for n, i in self.node_ids.items() if i == mid[0]), None)
        return name or f"node {mid[0]}"

    # --- connection ----------------------------------------------------------------------

    def connect(self, nodeid: int, pid: int, now: float,
                node_ids: dict[str, int] | None = None) -> list[Action]:
        """Connected to Corosync as `nodeid`; hbd is joining the CPG group as `pid`.

        `node_ids`: corosync's nodelist (name -> node id), for names in logs and
        for the start-up wait.
        """
        self._reset()
        self.nodeid, self.own_pid = nodeid, pid
        self.node_ids = dict(node_ids or {})
        if self.startup_until is None:
            self.startup_until = now + self.initdead
        return [Notice("info", f"connected to corosync as node id {nodeid}")]

    def disconnect(self, reason: str, now: float, wall: float) -> list[Action]:
        """Corosync went away (or could not be reached): as good as losing quorum."""
        was = self.connected
        self._reset()
        actions: list[Action] = []
        if was:
            actions += [QuorumChanged(False, ()),
                        Notice("error", f"lost corosync ({reason}): stopping every group; "
                               "reconnecting")]
        return actions + self._evaluate(now, wall)

    def _reset(self) -> None:
        self.nodeid = self.me = self.ring = self.quorum = self._sent = None
        self.ring_pending = False
        self.ring_nodes = ()
        self.in_doubt.clear()
        self.view = View(self.orders)
        self.claims.clear()

    # --- what Corosync reports -----------------------------------------------------------

    def confchg(self, change: Confchg, now: float, wall: float) -> list[Action]:
        if not self.connected:
            return []
        left = tuple(self._label(m) for m in change.left)  # names known before removal
        if self.me is None:
            self.me = self._find_me(change)
        for member in change.left:
            if member.reason in (Reason.PROCDOWN, Reason.LEAVE) \
                    and member.nodeid in self.ring_nodes:
                for key, owner in self.view.owner.items():
                    if owner == member.id:
                        self.in_doubt[key] = (member.nodeid, now + self.grace)
        outcomes = self.view.confchg(change)
        if change.ring_changed:
            self.ring_pending = True
        actions: list[Action] = [MembershipChanged(
            tuple(self._label(m) for m in change.members),
            tuple(self._label(m) for m in change.joined), left)]
        if self.me is not None and self.me not in self.view.members:
            return actions + self.disconnect("left the CPG group", now, wall)
        actions += self._outcomes(outcomes, now, wall)
        # Whoever joined knows nothing yet: everybody repeats its whole state.
        return actions + self._evaluate(now, wall, force=bool(change.joined))

    def _find_me(self, change: Confchg) -> MemberId | None:
        exact = [m.id for m in change.members
                 if (m.nodeid, m.pid) == (self.nodeid, self.own_pid)]
        if exact:
            return exact[0]
        joined = [m.id for m in change.joined if m.nodeid == self.nodeid]
        return joined[0] if len(joined) == 1 else None  # corosync in another PID namespace

    def totem(self, change: TotemChange, now: float, wall: float) -> list[Action]:
        if not self.connected:
            return []
        self.ring, self.ring_pending, self.ring_nodes = change.ring, False, change.nodes
        for key, (nodeid, until) in list(self.in_doubt.items()):
            if nodeid not in change.nodes:  # its corosync left: its hbd hears it shortly
                self.in_doubt[key] = (nodeid, min(until, now + LEAVE_SETTLE))
        return self._evaluate(now, wall)

    def quorum_notice(self, notice: QuorumNotice, now: float, wall: float) -> list[Action]:
        if not self.connected:
            return []
        old, self.quorum = self.quorum, notice
        actions: list[Action] = []
        if old is None or (old.quorate, old.nodes) != (notice.quorate, notice.nodes):
            actions.append(QuorumChanged(notice.quorate, notice.nodes))
        return actions + self._evaluate(now, wall)

    def deliver(self, sender: MemberId, payload: bytes, now: float,
                wall: float) -> list[Action]:
        """One message of the CPG group, in agreed order (our own ones included)."""
        if not self.connected:
            return []
        try:
            state = decode(payload)
        except WireError as err:
            return [Notice("warning", f"ignored a message from node id {sender[0]}: {err}")]
        before = self.view.members.get(sender)
        if sender != self.me:  # another node took groups over: the last takeover wins
            self.preferred -= state.preferred - (before.preferred if before else frozenset())
        outcomes = self.view.deliver(sender, state)
        return self._outcomes(outcomes, now, wall) + self._evaluate(now, wall)

    def _outcomes(self, outcomes: list[Outcome], now: float, wall: float) -> list[Action]:
        actions: list[Action] = []
        for outcome in outcomes:
            if isinstance(outcome, OwnerConflict):
                actions.append(SplitBrain(outcome.group, self._label(outcome.keeper),
                                          f"{self._label(outcome.other)} holds it as well "
                                          "and must stop it"))
            elif outcome.member == self.me and outcome.group in self.claims:
                actions += self._claim_decided(outcome, now, wall)
        return actions

    def _claim_decided(self, outcome: ClaimOutcome, now: float, wall: float) -> list[Action]:
        key = outcome.group
        self.claims.discard(key)
        if not outcome.accepted:
            return [Notice("info", f"group {key}: {self.owner_name(key)} asked first")]
        group = self.groups.groups.get(key)
        if (group is None or group.state is not GroupState.STOPPED or self.leaving
                or not self._settled() or self.quorum is None or not self.quorum.quorate
                or self.view.desired(key, self.failback) != self.me):
            return []  # things changed meanwhile: our next state releases it
        return self._start([group], self._start_reason(key), None, now, wall)

    def _start_reason(self, key: str) -> str:
        order = self.orders.get(key, ())
        before = order[:order.index(self.node)] if self.node in order else order
        if key in self.preferred:
            return "taken over"
        if not before:
            return "first in its order"
        return f"placed here: {', '.join(before)} cannot run it (order {' '.join(order)})"

    # --- the decision pass ---------------------------------------------------------------

    def _evaluate(self, now: float, wall: float, *, force: bool = False) -> list[Action]:
        actions: list[Action] = []
        lost = self.quorum_lost()
        settled = self._settled()
        if lost or self.leaving:
            self.claims.clear()
        may_claim = settled and not lost and not self.leaving and bool(
            self.quorum and self.quorum.quorate)
        for group in list(self.groups):
            key = group.key
            owner = self.view.owner.get(key)
            if group.state is GroupState.RUNNING:
                stop = self._stop_reason(key, owner, lost, settled)
                if stop:
                    why, recovery = stop
                    actions += [recovery] if recovery else []
                    actions += self._stop([group], why, None, now, wall)
            elif (group.state is GroupState.STOPPED and may_claim and owner is None
                  and key not in self.claims and key not in self.retiring
                  and key not in self.in_doubt and not self.health.unfit(key)
                  and self.view.desired(key, self.failback) == self.me
                  and not self._awaited(key, now)):
                self.claims.add(key)
        self.health.sync(self._running(), now)
        return actions + self._announce_state(force) + self._check_shutdown()

    def _awaited(self, key: str, now: float) -> bool:
        """At start-up: a node before us in the order runs corosync but no hbd yet."""
        if self.startup_until is None or now >= self.startup_until:
            return False
        order = self.orders.get(key, ())
        for name in order[:order.index(self.node)] if self.node in order else ():
            if self.node_ids.get(name) in self.ring_nodes and self.view.by_name(name) is None:
                return True
        return False

    def _stop_reason(self, key: str, owner: MemberId | None, lost: bool,
                     settled: bool) -> tuple[str, GroupRecovery | None] | None:
        """Why a RUNNING group must stop here, with the health event it means, if any."""
        if self.leaving:
            return "hbd is stopping", None
        if key in self.retiring:
            return "removed from haresources", None
        if lost:
            return ("no quorum" if self.connected else "lost corosync"), None
        if not settled:
            return None
        if owner is not None and owner != self.me:
            return f"{self._label(owner)} holds it", None
        desired = self.view.desired(key, self.failback)
        if desired == self.me:
            return None
        unfit = self.health.unfit(key)
        details = "; ".join(r.detail for r in unfit)
        if desired is None:
            if not unfit:
                return "no node may run it (declined or failed everywhere)", None
            if not any(r.stop_when_stranded for r in unfit):
                return None  # unfit here (a link, say), but no other node can do better
            return (f"failed here ({details}) and no other node may run it",
                    GroupRecovery(key, "stop", "no other node may run it"))
        if unfit:
            return (f"unfit here ({details}): moving to {self._label(desired)}",
                    GroupRecovery(key, "move", f"{details}; next in its order: "
                                  f"{self._label(desired)}"))
        return f"moving to {self._label(desired)}", None

    def _announce_state(self, force: bool) -> list[Action]:
        if not self.connected or self.me is None:
            return []
        groups = [(g.key, _ANNOUNCED[g.state]) for g in self.groups if g.state in _ANNOUNCED]
        groups += [(key, Announced.CLAIM) for key in self.claims
                   if key in self.groups.groups
                   and self.groups.groups[key].state is GroupState.STOPPED]
        state = NodeState(node=self.node, seq=self._seq + 1, groups=tuple(sorted(groups)),
                          declined=frozenset(self.declined),
                          preferred=frozenset(self.preferred),
                          failed=frozenset(self.failed | self._unfit_keys()),
                          leaving=self.leaving)
        if not force and state.same_as(self._sent):
            return []
        self._seq += 1
        self._sent = state
        return [CpgSend(encode(state), f"state #{state.seq}")]

    def _unfit_keys(self) -> set[str]:
        # Announced in `failed`: every member's view then leaves this node out of the
        # group's candidates, exactly as after a failed start (hbd 1 peers agree too).
        return {k for k in self.groups.groups if self.health.unfit(k)}

    # --- health (hbd.core.monitoring's hooks) --------------------------------------------

    def monitor_done(self, key: str, token: int, ok: bool, detail: str, now: float,
                     wall: float) -> list[Action]:
        actions = super().monitor_done(key, token, ok, detail, now, wall)
        return actions + self._evaluate(now, wall) if actions else actions

    def _hand_over(self, now: float, wall: float) -> list[Action]:
        # The next state announces the group unfit here; once that message comes back
        # in agreed order, _evaluate stops it ("moving to ...") and the next node in its
        # order claims it.
        self.health.handover_at = None
        return self._evaluate(now, wall)

    def _after_clear(self, keys: list[str], now: float, wall: float) -> list[Action]:
        return self._evaluate(now, wall) if keys else []

    def _recovery_busy(self) -> str | None:
        return "hbd is stopping" if self.leaving else None

    def _restart_blocked(self, group: Group) -> bool:
        return (self.leaving or self.quorum_lost() or not self._settled()
                or self.view.desired(group.key, self.failback) != self.me)

    def _restarted(self, now: float, wall: float) -> list[Action]:
        return self._evaluate(now, wall)

    # --- group work ----------------------------------------------------------------------

    def group_done(self, key: str, operation: str, ok: bool, detail: str,
                   now: float, wall: float) -> list[Action]:
        """The runner finished a start/stop.  Raises KeyError, TransitionError."""
        if operation == "start" and not ok:
            self.failed.add(key)  # not a candidate here until `hbctl cleanup`
        actions = super().group_done(key, operation, ok, detail, now, wall)
        return actions + self._evaluate(now, wall)

    def _announce(self, now: float, wall: float) -> list[Action]:
        return self._evaluate(now, wall)

    def _after_failed_start(self, group: Group) -> Then:
        def then(now: float, wall: float) -> list[Action]:
            return [Notice("warning", f"group {group.key} failed to start here; the next "
                           "node in its order may take it ('hbctl cleanup' makes this node "
                           "a candidate again)")]
        return then

    def _startup_end(self) -> float | None:
        """When the start-up wait ends; None before it began and once it is over."""
        return None if self.startup_until == STARTUP_OVER else self.startup_until

    def next_timer(self) -> float | None:
        due = [until for _, until in self.in_doubt.values()]
        end = self._startup_end()
        if end is not None and self.connected:
            due.append(end)
        if self.next_blocked_retry is not None:
            due.append(self.next_blocked_retry)
        health = self.health.next_timer()
        if health is not None:
            due.append(health)
        return min(due) if due else None

    def handle_timer(self, now: float, wall: float) -> list[Action]:
        actions: list[Action] = []
        end = self._startup_end()
        if end is not None and now >= end:
            self.startup_until = STARTUP_OVER
            actions += self._evaluate(now, wall)
        expired = [key for key, (_, until) in self.in_doubt.items() if now >= until]
        for key in expired:
            nodeid = self.in_doubt.pop(key)[0]
            if nodeid in self.ring_nodes:
                actions.append(Notice("warning", f"group {key}: its owner's hbd on node id "
                                      f"{nodeid} is gone for {self.grace:.1f} s (deadtime) "
                                      "while its node stays in the ring: taking it over"))
        if expired:
            actions += self._evaluate(now, wall)
        return actions + self._retry_blocked(now, wall) + self._health_timer(now, wall)

    def _retry_blocked(self, now: float, wall: float) -> list[Action]:
        if self.next_blocked_retry is None or now < self.next_blocked_retry:
            return []
        blocked = self.groups.blocked()
        self.next_blocked_retry = now + BLOCKED_RETRY if blocked else None
        if not blocked or self.jobs:
            return []
        return self._stop(blocked, "retry after a failed stop", self._announce, now, wall)

    # --- commands ------------------------------------------------------------------------

    def _scope(self, scope: str) -> set[str]:
        if scope not in SCOPES:
            raise InvalidScope(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        if self.leaving:
            raise Busy("hbd is stopping")
        return {g.key for g in self.groups.in_set(scope_set(scope))}

    def release(self, scope: str, now: float, wall: float) -> list[Action]:
        """Admin (standby): decline the scope's groups here.  Raises InvalidScope, Busy."""
        keys = self._scope(scope)
        held = [g.key for g in self.groups if g.key in keys and g.state is not GroupState.STOPPED]
        if self._settled():
            stranded = [k for k in held
                        if not [c for c in self.view.candidates(k) if c != self.me]]
            if stranded:
                raise Busy(f"no other node may run {', '.join(stranded)} now")
        self.declined |= keys
        self.preferred -= keys
        note = Notice("info", f"standby [{scope}]: declining {len(keys)} group(s) here until "
                      "a takeover")
        return [note, *self._evaluate(now, wall)]

    def takeover(self, scope: str, now: float, wall: float) -> list[Action]:
        """Admin: run the scope's groups here first.  Raises InvalidScope, Busy."""
        keys = self._scope(scope)
        self.declined -= keys
        self.preferred |= keys
        note = Notice("info", f"takeover [{scope}]: this node comes first for {len(keys)} "
                      "group(s)")
        return [note, *self._evaluate(now, wall)]

    def cleanup(self, key: str, now: float, wall: float) -> list[Action]:
        """Admin: retry a blocked stop, forget a failed start and the monitor's failures.

        Raises KeyError, Busy; nothing changes then.
        """
        group = self.groups.groups[key]
        if group.state is GroupState.BLOCKED:
            actions = super().cleanup(key, now, wall)
        elif key in self.failed or self._health_recorded(key):
            actions = []
        else:
            raise Busy(f"group {key} is {group.state.value}, neither blocked nor failed here")
        actions = self._cleanup_health(key) + actions
        self.failed.discard(key)
        group.detail = ""
        return actions + self._evaluate(now, wall)

    def shutdown(self, now: float, wall: float) -> list[Action]:
        """Graceful stop: release every group, then Shutdown once all are stopped."""
        self.leaving = True
        return self._evaluate(now, wall, force=True)

    def _check_shutdown(self) -> list[Action]:
        if not self.leaving or self.shutdown_done or self.jobs:
            return []
        if any(g.state in (GroupState.STARTING, GroupState.RUNNING, GroupState.STOPPING)
               for g in self.groups):
            return []
        blocked = self.groups.blocked()
        if blocked:
            if self._blocked_noted:
                return []
            self._blocked_noted = True
            return [Notice("error", f"not stopping: group(s) {', '.join(g.key for g in blocked)}"
                           " could not be stopped; hbd keeps running and claiming them until "
                           "they are cleaned up")]
        self.shutdown_done = True
        return [Shutdown()]

    # --- reload --------------------------------------------------------------------------

    def reconfigure(self, config: ClusterConfig, now: float, wall: float) -> list[Action]:
        """A new configuration: orders, failback and the group list."""
        actions: list[Action] = []
        if config.hacf.cluster_stack is not ClusterStack.COROSYNC:
            actions.append(Notice("warning", "cluster_stack changed: restart hbd to switch "
                                  "stacks; staying on corosync"))
        self.config = config
        self.failback = config.hacf.auto_failback is not AutoFailback.OFF
        self.orders.clear()
        self.orders.update(group_orders(config))  # the view shares this dict
        self.health.configure(config)
        wanted = {g.key: g for g in config.groups}
        for key, definition in wanted.items():
            if key in self.groups.groups:
                self.groups.groups[key].config = definition
            else:
                self.groups.groups[key] = Group(definition)
        for key, group in list(self.groups.groups.items()):
            if key in wanted:
                self.retiring.discard(key)
            elif group.state is GroupState.STOPPED:
                del self.groups.groups[key]
            else:
                self.retiring.add(key)
        return actions + self._evaluate(now, wall, force=True)
