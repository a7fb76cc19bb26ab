"""A simulated Corosync for the N-node placement core (hbd.core.placement).

Each node has an hbd (a Placement) and a corosync; `partition` splits the
corosyncs into components.  What real Corosync guarantees is modelled, and
nothing more:

* CPG: every hbd in a component gets the same sequence of membership changes
  and messages (a message is appended, when sent, to the CPG channel of every
  hbd in the sender's component; a membership change likewise);
* libquorum: a separate channel per node, in no fixed order with CPG: a
  random scheduler picks the next event among every node's CPG channel,
  quorum channel and finished group work, so every interleaving the real
  daemons could see is possible.  The scheduler is seeded.

Quorum is votequorum's simple majority of the configured nodes.  Group work
finishes OK unless listed in `fail_start`/`fail_stop`.  Monitors (hbd.conf's
`monitor` lines) wait in `checks` until the test answers them with `check`.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from hbd.core.actions import Action, CpgSend, RunMonitor, StartGroup, StopGroup
from hbd.core.assemble import ConfigTexts, assemble
from hbd.core.config import ClusterConfig
from hbd.core.cpgview import Confchg, CpgMember, QuorumNotice, Reason, TotemChange
from hbd.core.placement import Placement
from hbd.core.resources import GroupState

Event = tuple[str, object]  # ("confchg"|"totem"|"deliver"|"quorum", payload)


def make_config(node: str, nodes: tuple[str, ...], haresources: str,
                extra: str = "", hbdconf: str | None = None) -> ClusterConfig:
    hacf = f"cluster_stack corosync\nnode {' '.join(nodes)}\n{extra}"
    return assemble(ConfigTexts("ha.cf", hacf, "haresources", haresources, "authkeys",
                                "auth 1\n1 sha1 sim\n", 0o100600, hbdconf=hbdconf),
                    node_name=node)


@dataclass
class SimNode:
    name: str
    nodeid: int
    config: ClusterConfig
    placement: Placement | None = None  # None: hbd not running
    pid: int = 0
    corosync: bool = True
    joined: bool = False  # hbd is a member of the CPG group
    cpg: deque[Event] = field(default_factory=deque)
    quorum: deque[Event] = field(default_factory=deque)
    work: deque[tuple[str, str]] = field(default_factory=deque)  # (key, "start"|"stop")
    actions: list[Action] = field(default_factory=list)
    checks: dict[str, RunMonitor] = field(default_factory=dict)  # group -> check in flight

    @property
    def member(self) -> CpgMember:
        return CpgMember(self.nodeid, self.pid)


class SimCorosync:
    def __init__(self, nodes: tuple[str, ...], haresources: str, *, extra: str = "",
                 seed: int = 1, hbdconf: str | None = None) -> None:
        self.rng = random.Random(seed)
        self.names = nodes
        self.nodes = {n: SimNode(n, i, make_config(n, nodes, haresources, extra, hbdconf))
                      for i, n in enumerate(nodes, start=1)}
        self.components: list[set[str]] = [set(nodes)]
        self.seq = 0
        self.rings: dict[str, tuple[int, int]] = {}
        self.fail_start: set[tuple[str, str]] = set()  # (node, key)
        self.fail_stop: set[tuple[str, str]] = set()
        self.started: list[tuple[str, str]] = []  # (node, key) in start order
        self.violations: list[str] = []
        self.now = 0.0
        self._pids = 100
        self._new_rings()

    # --- topology ----------------------------------------------------------------------

    def component(self, name: str) -> set[str]:
        return next((c for c in self.components if name in c), set())

    def hbds(self, names: Iterable[str]) -> list[SimNode]:
        """The nodes among `names` whose hbd is in the CPG group."""
        return [self.nodes[n] for n in sorted(names)
                if self.nodes[n].placement is not None and self.nodes[n].joined]

    def _members(self) -> dict[str, set[CpgMember]]:
        return {n: {m.member for m in self.hbds(self.component(n))} for n in self.names}

    def quorate(self, comp: set[str]) -> bool:
        return len(comp) > len(self.names) // 2

    def _new_rings(self) -> None:
        for comp in self.components:
            self.seq += 4
            ring = (min(self.nodes[n].nodeid for n in comp), self.seq)
            for n in comp:
                self.rings[n] = ring

    def _ring_events(self, comp: set[str], before: dict[str, set[CpgMember]]) -> None:
        """Membership of a component changed: CPG confchg + totem, and a quorum notice."""
        members = tuple(n.member for n in self.hbds(comp))
        ids = tuple(sorted(self.nodes[n].nodeid for n in comp))
        for node in self.hbds(comp):
            old = before.get(node.name, set())
            left = tuple(CpgMember(m.nodeid, m.pid, Reason.NODEDOWN)
                         for m in sorted(old - set(members), key=lambda m: m.id))
            joined = tuple(CpgMember(m.nodeid, m.pid, Reason.NODEUP)
                           for m in members if m not in old)
            if left or joined:
                node.cpg.append(("confchg", Confchg(members, left, joined)))
            node.cpg.append(("totem", TotemChange(self.rings[node.name], ids)))
            node.quorum.append(("quorum", QuorumNotice(self.quorate(comp),
                                                       self.rings[node.name], ids)))

    def partition(self, *groups: Iterable[str],
                  before: dict[str, set[CpgMember]] | None = None) -> None:
        """New components (nodes whose corosync is down are left out)."""
        before = self._members() if before is None else before
        up = {n for n in self.names if self.nodes[n].corosync}
        self.components = [set(g) & up for g in groups if set(g) & up]
        self._new_rings()
        for comp in self.components:
            self._ring_events(comp, before)

    def heal(self) -> None:
        self.partition([n for n in self.names if self.nodes[n].corosync])

    def power_off(self, name: str) -> None:
        """The node dies: hbd and corosync with it (its resources stop counting)."""
        before = self._members()
        node = self.nodes[name]
        node.placement = None
        node.corosync = node.joined = False
        node.cpg.clear()
        node.quorum.clear()
        node.work.clear()
        self.partition(*[c - {name} for c in self.components], before=before)

    def corosync_stop(self, name: str) -> None:
        """Corosync exits under a running hbd, which must treat it as losing quorum."""
        before = self._members()
        node = self.nodes[name]
        node.corosync = node.joined = False
        node.cpg.clear()
        node.quorum.clear()
        if node.placement is not None:
            self._apply(node, node.placement.disconnect("CS_ERR_LIBRARY", self.now, self.now))
        self.partition(*[c - {name} for c in self.components], before=before)

    def corosync_shutdown(self, name: str) -> None:
        """`systemctl stop corosync`: CPG is unloaded first (PROCDOWN), then the node leaves."""
        node = self.nodes[name]
        before = self._members()
        if node.joined:
            self._leave_cpg(name, Reason.PROCDOWN)  # what the others see first
            before = self._members()
        if node.placement is not None:
            self._apply(node, node.placement.disconnect("CS_ERR_LIBRARY", self.now, self.now))
        node.corosync = False
        self.partition(*[c - {name} for c in self.components], before=before)

    def advance(self, seconds: float) -> None:
        """Let time pass: every hbd whose timer comes due handles it."""
        self.now += seconds
        for node in self.nodes.values():
            p = node.placement
            due = p.next_timer() if p is not None else None
            if p is not None and due is not None and due <= self.now:
                self._apply(node, p.handle_timer(self.now, self.now))

    def corosync_start(self, name: str) -> None:
        """Corosync is back and joins the largest component; hbd reconnects."""
        self.nodes[name].corosync = True
        largest = max(self.components, key=len, default=set())
        self.partition(*[c | {name} if c is largest else c for c in self.components]
                       if largest else [{name}])
        if self.nodes[name].placement is not None:
            self._join(self.nodes[name])

    def start_hbd(self, name: str) -> None:
        node = self.nodes[name]
        node.placement = Placement(node.config)
        if node.corosync:
            self._join(node)

    def kill_hbd(self, name: str, reason: Reason = Reason.PROCDOWN) -> None:
        """hbd dies (PROCDOWN: its resources stay up) or leaves (LEAVE); corosync stays."""
        self._leave_cpg(name, reason)
        self.nodes[name].placement = None

    def _leave_cpg(self, name: str, reason: Reason) -> None:
        node = self.nodes[name]
        gone = node.member
        node.joined = False
        node.cpg.clear()
        node.quorum.clear()
        for other in self.hbds(self.component(name)):
            members = tuple(n.member for n in self.hbds(self.component(name)))
            other.cpg.append(("confchg", Confchg(members, (CpgMember(gone.nodeid, gone.pid,
                                                                     reason),), ())))

    def _join(self, node: SimNode) -> None:
        assert node.placement is not None
        self._pids += 1
        node.pid = self._pids
        node.joined = True
        ids = {n.name: n.nodeid for n in self.nodes.values()}
        self._apply(node, node.placement.connect(node.nodeid, node.pid, self.now, ids))
        comp = self.component(node.name)
        ids = tuple(sorted(self.nodes[n].nodeid for n in comp))
        node.cpg.append(("totem", TotemChange(self.rings[node.name], ids)))
        members = tuple(n.member for n in self.hbds(comp))
        joined = (CpgMember(node.nodeid, node.pid, Reason.JOIN),)
        for other in self.hbds(comp):
            other.cpg.append(("confchg", Confchg(members, (), joined)))
        node.quorum.append(("quorum", QuorumNotice(self.quorate(comp), self.rings[node.name],
                                                   ids)))

    # --- running -------------------------------------------------------------------------

    def _apply(self, node: SimNode, actions: list[Action]) -> None:
        node.actions += actions
        for action in actions:
            if isinstance(action, CpgSend):
                if not node.corosync:
                    continue
                for other in self.hbds(self.component(node.name)):
                    other.cpg.append(("deliver", (node.member.id, action.payload)))
            elif isinstance(action, StartGroup):
                node.work.append((action.group, "start"))
                comp = self.component(node.name)
                if not self.quorate(comp):
                    self.violations.append(f"{node.name} started {action.group} without quorum")
                self.started.append((node.name, action.group))
            elif isinstance(action, StopGroup):
                node.work.append((action.group, "stop"))
            elif isinstance(action, RunMonitor):
                node.checks[action.group] = action
        self._check()

    def _check(self) -> None:
        for comp in self.components:
            for key in {k for n in self.hbds(comp) for k in n.placement.groups.groups}:  # type: ignore[union-attr]
                holders = [n.name for n in self.hbds(comp)
                           if n.placement and key in n.placement.groups.groups
                           and n.placement.groups.groups[key].state in (
                               GroupState.STARTING, GroupState.RUNNING, GroupState.STOPPING)]
                if len(holders) > 1:
                    self.violations.append(f"{key} active on {holders} at once")

    def step(self) -> bool:
        """Run one event picked at random; False when nothing is left."""
        ready = []
        for node in self.nodes.values():
            if node.placement is None:
                continue
            for queue in (node.cpg, node.quorum, node.work):
                if queue:
                    ready.append((node, queue))
        if not ready:
            return False
        node, queue = self.rng.choice(ready)
        item = queue.popleft()
        p = node.placement
        assert p is not None
        if queue is node.work:
            key, op = item  # type: ignore[misc]
            ok = (node.name, key) not in (self.fail_start if op == "start" else self.fail_stop)
            detail = "" if ok else "simulated"
            self._apply(node, p.group_done(key, op, ok, detail, self.now, self.now))
            return True
        kind, payload = item  # type: ignore[misc]
        if kind == "confchg":
            actions = p.confchg(payload, self.now, self.now)  # type: ignore[arg-type]
        elif kind == "totem":
            actions = p.totem(payload, self.now, self.now)  # type: ignore[arg-type]
        elif kind == "quorum":
            actions = p.quorum_notice(payload, self.now, self.now)  # type: ignore[arg-type]
        else:
            sender, data = payload  # type: ignore[misc]
            actions = p.deliver(sender, data, self.now, self.now)
        self._apply(node, actions)
        return True

    def settle(self, limit: int = 20000) -> None:
        for _ in range(limit):
            if not self.step():
                assert not self.violations, self.violations
                return
        raise AssertionError("the simulation did not settle")

    def check(self, name: str, key: str, ok: bool, detail: str = "") -> None:
        """Answer the check of `key` in flight on `name` (the daemon's monitor_done)."""
        node = self.nodes[name]
        run = node.checks.pop(key)
        assert node.placement is not None
        self._apply(node, node.placement.monitor_done(key, run.token, ok, detail or
                                                      ("ok" if ok else "simulated"),
                                                      self.now, self.now))

    # --- looking ------------------------------------------------------------------------

    def holders(self, key: str, states: tuple[GroupState, ...] = (GroupState.RUNNING,)
                ) -> list[str]:
        return [n.name for n in self.nodes.values() if n.placement is not None
                and key in n.placement.groups.groups
                and n.placement.groups.groups[key].state in states]

    def placement(self) -> dict[str, list[str]]:
        keys = [g.key for g in next(iter(self.nodes.values())).config.groups]
        return {key: self.holders(key) for key in keys}
