"""A lost peer's groups: taken here at once, or only once it was fenced.

Failover inherits this (after Recovery); the fencing state machine is
hbd.core.fencing's.  Heartbeat's hb_rsc_recover_dead_resources: without a
fence device the dead peer's groups are started here at once and `stonith
node=N result=n_stnth` (or `unneeded`, when it held nothing) is announced.
With one (and a peer that did not stop gracefully), the groups start only
after a reset succeeded or an admin confirmed (`stonith ... result=OK`); the
continuation runs seconds later and re-checks that the peer is still lost
and that we are not stopping.  Groups unfit here stay stopped either way
(`_start` asks Recovery's `_refusal`).
"""

from __future__ import annotations

from hbd.core.actions import Action, Notice
from hbd.core.engine import Engine
from hbd.core.fencing import Fencing, race_delay
from hbd.core.groupwork import Then
from hbd.core.membership import Peer
from hbd.core.recovery import Recovery
from hbd.core.resources import GroupState
from hbd.core.rscstate import RscState


class PeerLoss(Recovery):
    """Taking a dead peer's groups, fenced first when a device is configured."""

    # provided by Failover
    engine: Engine
    fencing: Fencing
    peer_shut_down: bool  # it sent `shutdone`: its death needs no fencing

    def _tell_peer(self, *, stable: bool | None = None, info: str | None = None) -> Then:
        raise NotImplementedError

    def _take_lost_peer(self, peer: Peer, held_nothing: bool, theirs: int, now: float,
                        wall: float) -> list[Action]:
        """`peer` was declared dead; `theirs`: how many groups it held (the race delay)."""
        if self.fencing.configured and not self.peer_shut_down:
            def then(now: float, wall: float) -> list[Action]:
                actions = [self._send("stonith", [("node", peer.name), ("result", "OK")], wall)]
                if peer.alive:
                    return actions
                return actions + self._take_its_groups(f"{peer.name} is dead (fenced)", now,
                                                       wall)
            return self.fencing.begin(peer.name, self._race_delay(theirs), then, now)
        result = "unneeded" if held_nothing else "n_stnth"
        actions: list[Action] = []
        if held_nothing:
            actions.append(Notice("info", f"Dead node {peer.name} gave up resources."))
        else:
            actions.append(Notice("warning", "No STONITH device configured: taking over "
                                  f"{peer.name}'s groups without fencing it."))
        actions.append(self._send("stonith", [("node", peer.name), ("result", result)], wall))
        return actions + self._take_its_groups(f"{peer.name} is dead", now, wall)

    def _take_its_groups(self, reason: str, now: float, wall: float) -> list[Action]:
        if self.shutdown_requested:
            return []
        if self.state.state is not RscState.STABLE:
            self.state.move(RscState.STABLE)
        self.needs_failback = True
        self.foreign_claim = True  # hb_resource.c takeover_from_node: i_hold |= FOREIGN
        missing = [g for g in self.groups if g.state is GroupState.STOPPED]
        return self._start(missing, reason, self._tell_peer(stable=True, info="mach_down"),
                           now, wall)

    def _race_delay(self, theirs: int) -> float:
        ours = sum(1 for g in self.groups if g.state in (GroupState.RUNNING, GroupState.STARTING))
        nodes = self.engine.config.hacf.nodes
        return race_delay(ours, theirs, bool(nodes) and nodes[0] == self.node,
                          self.fencing.settings)

    def fencing_confirm(self, node: str, now: float, wall: float) -> list[Action]:
        """An admin confirms `node` is down (hbctl fence confirm); raises NotFencing."""
        return self.fencing.confirm(node, now, wall)
