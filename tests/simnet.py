"""A simulated network of engines with a fake clock (loss, delay, reordering, cuts).

Each node's engine is driven exactly as the daemon drives it: `start`, then
`handle_timer` whenever `next_timer` comes due, and `receive` for every
datagram delivered.  Links are numbered as in ha.cf; a Transmit goes out on
each link to every other node (and, like a real bcast socket, back to the
sender).  Everything runs in simulated time, so seconds of protocol take
milliseconds.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from hbd.core.actions import (
    Action,
    CheckFenceDevices,
    FenceNode,
    RunMonitor,
    SendPing,
    StartGroup,
    StopGroup,
    Transmit,
)
from hbd.core.assemble import ConfigTexts, assemble
from hbd.core.config import ClusterConfig
from hbd.core.engine import Engine, EngineComponent
from hbd.core.failover import Failover
from hbd.core.pingnodes import PingNodes

WALL0 = 1_800_000_000.0


def make_config(node: str, *, nodes: tuple[str, ...] = ("n1", "n2"), links: int = 2,
                keepalive: str = "100ms", deadtime: str = "500ms", warntime: str = "300ms",
                initdead: str = "1", extra: str = "", haresources: str = "",
                authkeys: str = "auth 1\n1 sha1 simsecret\n",
                hbdconf: str | None = None) -> ClusterConfig:
    media = "".join(f"bcast eth{i}\n" for i in range(links))
    hacf = (f"keepalive {keepalive}\ndeadtime {deadtime}\nwarntime {warntime}\n"
            f"initdead {initdead}\n{media}node {' '.join(nodes)}\n{extra}")
    return assemble(ConfigTexts("ha.cf", hacf, "haresources", haresources, "authkeys",
                                authkeys, 0o100600, "hbd.conf", hbdconf), node_name=node)


@dataclass
class LinkRules:
    loss: float = 0.0  # probability a datagram is dropped
    delay: float = 0.001  # seconds
    jitter: float = 0.0  # extra uniform random delay (reorders packets)
    cut: bool = False


@dataclass
class GroupRunner:
    """How simulated resource agents behave: durations, failures and hangs per group.

    A hanging agent never answers; the real runner (hbd/agents.py) kills it when
    its operation's timeout runs out and reports the operation failed, so here a
    hang is a failure `timeout` seconds later.
    """

    delay: float = 0.005  # how long a start or stop takes, unless set per group below
    start_delay: dict[str, float] = field(default_factory=dict)  # group key -> seconds
    stop_delay: dict[str, float] = field(default_factory=dict)
    fail_start: set[str] = field(default_factory=set)  # group keys whose start fails
    fail_stop: set[str] = field(default_factory=set)  # group keys whose stop fails
    hang_start: set[str] = field(default_factory=set)  # group keys whose start never ends
    hang_stop: set[str] = field(default_factory=set)
    timeout: float = 60.0  # --start-timeout / --stop-timeout: a hang fails after this
    # monitors: a group in `broken` fails its checks until a start repairs it (unless it is
    # also in `stays_broken`); `hang_monitor` checks never answer (a failure at timeout)
    broken: set[str] = field(default_factory=set)
    stays_broken: set[str] = field(default_factory=set)
    hang_monitor: set[str] = field(default_factory=set)
    monitor_delay: float = 0.002

    def check(self, monitor: RunMonitor) -> tuple[float, bool, str]:
        """(seconds until the runner reports, ok, detail) for one monitor."""
        if monitor.group in self.hang_monitor:
            return monitor.timeout, False, f"monitor timed out after {monitor.timeout:g}s"
        if monitor.group in self.broken:
            return self.monitor_delay, False, "monitor: not running (rc=7)"
        return self.monitor_delay, True, "monitor: running (rc=0)"

    def outcome(self, group: str, start: bool) -> tuple[float, bool, str]:
        """(seconds until the runner reports, ok, detail) for one operation."""
        operation = "start" if start else "stop"
        if group in (self.hang_start if start else self.hang_stop):
            return self.timeout, False, f"{operation} timed out after {self.timeout:g} s"
        delay = (self.start_delay if start else self.stop_delay).get(group, self.delay)
        if group in (self.fail_start if start else self.fail_stop):
            return delay, False, "simulated failure"
        return delay, True, ""


@dataclass
class SimNode:
    name: str
    engine: Engine
    failover: Failover
    pings: PingNodes
    actions: list[tuple[float, Action]] = field(default_factory=list)
    unreachable: set[str] = field(default_factory=set)  # ping addresses this node cannot reach
    alive: bool = True  # False: crashed (no timers, packets to it are lost)
    frozen: bool = False  # SIGSTOP: no timers; packets wait in its socket buffer
    inbox: list[tuple[int, bytes]] = field(default_factory=list)
    runner: GroupRunner = field(default_factory=GroupRunner)
    running: set[str] = field(default_factory=set)  # groups whose resources are up here


class SimNet:
    def __init__(self, configs: dict[str, ClusterConfig], *, seed: int = 1,
                 make_engine: Callable[[ClusterConfig, float, int], Engine] | None = None) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.nodes: dict[str, SimNode] = {}
        self.rules: dict[tuple[str, int], LinkRules] = {}  # (node, link) -> rules for its port
        self._queue: list[tuple[float, int, str, int, bytes]] = []
        # group work in flight: (due, counter, node, group, operation, ok, detail); the
        # node itself, not its name: a node crashed and added again is another process
        self._work: list[tuple[float, int, SimNode, str, str, bool, str]] = []
        # drop(sender, receiver, link, payload) -> True drops that copy
        self.drop: Callable[[str, str, int, bytes], bool] | None = None
        # a simulated power switch: a reset takes fence_delay s and powers the target off
        # (a reset issued is carried out even if its issuer dies meanwhile); resets of
        # the nodes in fence_fail fail
        self.fence_delay = 0.05
        self.fence_fail: set[str] = set()
        self.fenced: list[tuple[float, str, str]] = []  # (when, by, target) resets done
        self._fences: list[tuple[float, int, SimNode, str, int]] = []
        self._counter = 0
        self._make = make_engine or (lambda cfg, now, gen: Engine(
            cfg, uuid=cfg.node_name.encode().ljust(16, b"\0"), generation=gen, now=now))
        for name, cfg in configs.items():
            self.add_node(name, cfg)

    def add_node(self, name: str, cfg: ClusterConfig, generation: int = 100,
                 extra: tuple[EngineComponent, ...] = ()) -> SimNode:
        """A node built as the daemon builds it; `extra` components come after its own."""
        engine = self._make(cfg, self.now, generation)
        failover = Failover(engine, cfg)
        pings = PingNodes(cfg.hacf, failover)
        engine.attach(failover, pings, *extra)
        node = SimNode(name, engine, failover, pings)
        self.nodes[name] = node
        self._apply(node, engine.start(self.now, self.wall))
        return node

    @property
    def wall(self) -> float:
        return WALL0 + self.now

    def rule(self, node: str, link: int) -> LinkRules:
        return self.rules.setdefault((node, link), LinkRules())

    def cut(self, node: str, link: int | None = None, cut: bool = True) -> None:
        links = range(len(self.nodes[node].engine.link_names)) if link is None else [link]
        for i in links:
            self.rule(node, i).cut = cut

    def _apply(self, node: SimNode, actions: list[Action]) -> None:
        for action in actions:
            node.actions.append((self.now, action))
            if isinstance(action, Transmit):
                self._transmit(node, action)
            elif isinstance(action, SendPing):
                if action.address not in node.unreachable:
                    node.pings.ping_reply(action.address, self.now + 0.001)
            elif isinstance(action, FenceNode):
                self._counter += 1
                heapq.heappush(self._fences, (self.now + self.fence_delay, self._counter, node,
                                              action.node, action.attempt))
            elif isinstance(action, CheckFenceDevices):
                self._apply(node, node.failover.fencing.devices_checked(True, "ok", self.now))
            elif isinstance(action, RunMonitor):
                delay, ok, detail = node.runner.check(action)
                self._counter += 1
                heapq.heappush(self._work, (self.now + delay, self._counter, node, action.group,
                                            f"monitor:{action.token}", ok, detail))
            elif isinstance(action, StartGroup | StopGroup):
                start = isinstance(action, StartGroup)
                delay, ok, detail = node.runner.outcome(action.group, start)
                self._counter += 1
                heapq.heappush(self._work, (self.now + delay, self._counter, node,
                                            action.group, "start" if start else "stop", ok,
                                            detail))

    def _finish_work(self) -> None:
        _, _, node, group, operation, ok, detail = heapq.heappop(self._work)
        if not node.alive or self.nodes.get(node.name) is not node:
            return
        if node.frozen:  # finishes after the thaw
            self._counter += 1
            heapq.heappush(self._work, (self.now + 0.001, self._counter, node, group,
                                        operation, ok, detail))
            return
        if operation.startswith("monitor:"):
            token = int(operation.partition(":")[2])
            self._apply(node, node.failover.monitor_done(group, token, ok, detail,
                                                         self.now, self.wall))
            return
        if operation == "start":
            if ok:
                node.running.add(group)
                if group not in node.runner.stays_broken:
                    node.runner.broken.discard(group)
        elif ok:
            node.running.discard(group)
        self._apply(node, node.failover.group_done(group, operation, ok, detail,
                                                   self.now, self.wall))

    def _finish_fence(self) -> None:
        _, _, issuer, target, attempt = heapq.heappop(self._fences)
        ok = target not in self.fence_fail
        victim = self.nodes.get(target)
        if ok and victim is not None:
            victim.alive = False  # powered off: its resources are gone with it
            victim.running.clear()
            self.fenced.append((self.now, issuer.name, target))
        if issuer.alive and self.nodes.get(issuer.name) is issuer:
            self._apply(issuer, issuer.failover.fencing.fence_done(
                target, attempt, ok, "" if ok else "simulated device failure", self.now,
                self.wall))

    def holders(self, group: str) -> list[str]:
        """Nodes where the group's resources are up right now."""
        return sorted(n.name for n in self.nodes.values() if group in n.running)

    def command(self, node: str, method: str, *args: object) -> list[Action]:
        """Call a Failover command (release/takeover/shutdown/cleanup) as the daemon does."""
        target = self.nodes[node]
        actions: list[Action] = getattr(target.failover, method)(*args, self.now, self.wall)
        self._apply(target, actions)
        return actions

    def _transmit(self, sender: SimNode, tx: Transmit) -> None:
        for link in range(len(sender.engine.link_names)):
            if tx.links is not None and link not in tx.links:
                continue
            out_rule = self.rule(sender.name, link)
            for other in self.nodes.values():
                in_rule = self.rule(other.name, link)
                if other is not sender and (out_rule.cut or in_rule.cut):
                    continue
                if other is not sender and self.rng.random() < max(out_rule.loss, in_rule.loss):
                    continue
                if self.drop is not None and self.drop(sender.name, other.name, link,
                                                       tx.netstring):
                    continue
                delay = out_rule.delay + in_rule.delay
                jitter = max(out_rule.jitter, in_rule.jitter)
                if jitter:
                    delay += self.rng.uniform(0, jitter)
                self._counter += 1
                heapq.heappush(self._queue, (self.now + delay, self._counter, other.name, link,
                                             tx.netstring))

    def inject(self, node: str, data: bytes, link: int = 0) -> None:
        self._counter += 1
        heapq.heappush(self._queue, (self.now, self._counter, node, link, data))

    def run_until(self, end: float) -> None:
        inf = float("inf")
        steps = 0
        while True:
            steps += 1
            assert steps < 5_000_000, "simulation does not advance"
            timer_at, timer_node = self._next_timer()
            packet_at = self._queue[0][0] if self._queue else inf
            work_at = self._work[0][0] if self._work else inf
            t_at = timer_at if timer_at is not None else inf
            fence_at = self._fences[0][0] if self._fences else inf
            nxt = min(packet_at, t_at, work_at, fence_at)
            if nxt > end:
                self.now = end
                return
            self.now = max(self.now, nxt)
            if fence_at <= min(packet_at, t_at, work_at):
                self._finish_fence()
            elif work_at <= min(packet_at, t_at):
                self._finish_work()
            elif packet_at <= t_at:
                _, _, name, link, data = heapq.heappop(self._queue)
                node = self.nodes[name]
                if node.frozen:
                    node.inbox.append((link, data))
                elif node.alive:
                    self._apply(node, node.engine.receive(data, link, self.now, self.wall))
            elif timer_node is not None:
                node = self.nodes[timer_node]
                self._apply(node, node.engine.handle_timer(self.now, self.wall))

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def freeze(self, node: str) -> None:
        self.nodes[node].frozen = True

    def thaw(self, node: str) -> None:
        """SIGCONT: queued datagrams are read before any late timer fires (as asyncio does)."""
        target = self.nodes[node]
        target.frozen = False
        inbox, target.inbox = target.inbox, []
        for link, data in inbox:
            self._apply(target, target.engine.receive(data, link, self.now, self.wall))

    def _next_timer(self) -> tuple[float | None, str | None]:
        best: tuple[float | None, str | None] = (None, None)
        for node in self.nodes.values():
            if not node.alive or node.frozen:
                continue
            at = node.engine.next_timer()
            if best[0] is None or at < best[0]:
                best = (at, node.name)
        return best

    def events(self, node: str, kind: type, since: float = 0.0) -> list[tuple[float, Action]]:
        return [(t, a) for t, a in self.nodes[node].actions if isinstance(a, kind) and t >= since]

    def status_of(self, node: str, peer: str) -> str:
        return self.nodes[node].engine.peers[peer].status.state.value
