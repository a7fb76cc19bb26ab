"""What a node does about its groups' health on the Heartbeat stack: hand over, refuse.

Failover inherits this; the bookkeeping is hbd.core.health's, monitors, restarts
and the unfit-here entry points are hbd.core.monitoring's (shared with Placement).

* A monitor's failure (`failures` consecutive bad checks) restarts the group
  in place (stop, then start, through the ordinary group work) while its
  `restart` policy allows; beyond that the group becomes *unfit here*.
* Unfit here (`set_unfit`, also the entry point of link tracking): every
  RUNNING group with a reason is handed to the peer at once through
  Heartbeat's standby exchange (`ask_resources`), for the group's whole set
  (local or foreign: the protocol names sets, not groups, so healthy groups
  of the same set move along).  This node then never starts it (`_start`
  asks `_refusal`): not on the peer's death, its shutdown, auto_failback,
  a takeover...  and refuses the peer's standby of a set holding it.
* The peer refuses: Heartbeat's protocol has no "I cannot take it" answer
  (Heartbeat ignores a standby request it cannot serve, and the requester
  gives up after 10 s).  hbd answers with its `resource` message carrying
  the extra field `hbd_refused=SET` (Heartbeat ignores unknown fields), and
  an hbd requester cancels at once.
* Stranded (no live peer, legacy mode, or the peer refused): a group unfit
  for a monitor failure is stopped and left stopped, loudly; one unfit for
  another reason (a link) keeps running here, as nobody can do better.
* Cleared (`hbctl cleanup`, expiry, `clear_unfit`): a stopped group nobody
  runs is started here; with auto_failback on, a group homed here that the
  peer runs is asked back with `hb_takeover`.
"""

from __future__ import annotations

from hbd.core.actions import Action, GroupRecovery, Notice
from hbd.core.config import AutoFailback
from hbd.core.health import Health
from hbd.core.monitoring import Monitoring
from hbd.core.resources import Group, GroupState, Held
from hbd.core.rscstate import RscState, Standby
from hbd.core.standby import StandbyExchange
from hbd.errors import Busy

REFUSED_FIELD = "hbd_refused"  # in `resource`: the set we refuse to acquire
HANDOVER_RETRY = 2.0  # seconds between attempts while the exchange is busy
REFUSED_RETRY = 30.0  # after the peer refused (or cannot answer)


class Recovery(StandbyExchange, Monitoring):
    """The health half of the resource side; Failover adds the rest of the protocol."""

    health: Health
    auto_failback: AutoFailback

    # --- hooks of Monitoring -------------------------------------------------------------

    def _recovery_busy(self) -> str | None:
        if self.shutdown_requested or self.standby.state is not Standby.NOT:
            return "it is being handed over"
        return None

    def _restart_blocked(self, group: Group) -> bool:
        return self.shutdown_requested or self.standby.state is not Standby.NOT

    def _restarted(self, now: float, wall: float) -> list[Action]:
        return self._announce(now, wall)

    # --- timers and hooks Failover calls ---------------------------------------------

    def _recovery_sync(self, now: float, wall: float) -> list[Action]:
        """After any group work: (re)schedule checks; finish a pending handover."""
        self.health.sync(self._running(), now)
        if self.health.handover_at is None and self._unplaced():
            # e.g. a restart refused to start a group marked unfit meanwhile
            self.health.handover_at = now + HANDOVER_RETRY
        if self.health.handover_at is not None and now >= self.health.handover_at:
            return self._hand_over(now, wall)
        return []

    def _recovery_timer(self, now: float, wall: float) -> list[Action]:
        actions = self._health_timer(now, wall)
        if self.health.handover_at is not None and now >= self.health.handover_at:
            actions += self._hand_over(now, wall)
        return actions

    def _acquire_refusal(self, acquire: Held) -> str | None:
        """Why we refuse the peer's standby: a group of the set is unfit here."""
        unfit = [g.key for g in self.groups.in_set(acquire) if self.health.unfit(g.key)]
        if not unfit:
            return None
        return f"group(s) {', '.join(unfit)} unfit here"

    def _standby_refused(self, peer: str, refused: str, now: float,
                         wall: float) -> list[Action]:
        """The peer answered our standby request with hbd_refused: cancel, stay stranded."""
        if self.standby.state is not Standby.ME:
            return []
        self.standby.move(Standby.NOT)
        self.standby_deadline = None
        self.other_stable = True
        actions: list[Action] = [Notice("warning", f"{peer} refuses to take [{refused}]: "
                                        "the group(s) are unfit there too")]
        running = [g for g in self.groups if g.state is GroupState.RUNNING
                   and self.health.unfit(g.key)]
        self.health.handover_at = now + REFUSED_RETRY
        return actions + self._stranded(running, f"{peer} refuses it", now, wall)

    # --- handing over ------------------------------------------------------------------

    def _unplaced(self) -> list[Group]:
        """Unfit here, stopped here, and the live peer does not hold its set: it runs
        nowhere (the peer restarted, say), though the peer could run it."""
        if self.legacy or not self._peer_alive():
            return []
        peer_has = self.other_holds.mirror()
        return [g for g in self.groups if g.state is GroupState.STOPPED
                and self.health.unfit(g.key) and g.key not in self.retiring
                and not peer_has & (Held.LOCAL if g.home == self.node else Held.FOREIGN)]

    def _recovery_on_peer_report(self, now: float, wall: float) -> list[Action]:
        """The peer said what it holds: offer it the unfit groups nobody runs."""
        if self.health.handover_at is not None and now < self.health.handover_at:
            return []  # an offer is under way, or the peer refused a moment ago
        if not self._unplaced():
            return []
        return self._hand_over(now, wall)

    def _hand_over(self, now: float, wall: float) -> list[Action]:
        """Give every RUNNING unfit group to the peer (its whole set), or strand it; offer
        the peer the unfit groups that run nowhere (a standby of a set we do not hold
        makes Heartbeat's peer acquire it)."""
        self.health.handover_at = None
        if self.shutdown_requested:
            return []
        unfit = [g for g in self.groups if g.state is GroupState.RUNNING
                 and self.health.unfit(g.key)]
        unplaced = self._unplaced()
        if not unfit and not unplaced:
            return []
        if self.legacy or not self._peer_alive():
            why = ("auto_failback legacy has no standby to hand it over" if self.legacy
                   else "no live peer can take it")
            self.health.handover_at = now + REFUSED_RETRY
            return self._stranded(unfit, why, now, wall)
        busy = self._standby_refusal()
        if busy is not None:
            self.health.handover_at = now + HANDOVER_RETRY
            return []
        held = Held.NONE
        for group in [*unfit, *unplaced]:
            held |= Held.LOCAL if group.home == self.node else Held.FOREIGN
        actions: list[Action] = [
            GroupRecovery(g.key, "move", "; ".join(r.detail for r in self.health.unfit(g.key)))
            for g in [*unfit, *unplaced]]
        others = [g.key for g in self.groups.in_set(held) if g.active and g not in unfit]
        if others:
            actions.append(Notice("warning", f"handing [{held.wire}] to the peer: "
                                  f"{', '.join(others)} move along (Heartbeat's protocol "
                                  "hands over sets of groups)"))
        self.health.handover_at = now + HANDOVER_RETRY + 10.0  # retry if it goes nowhere
        return actions + self._begin_standby(held.wire, now, wall)

    def _stranded(self, groups: list[Group], why: str, now: float,
                  wall: float) -> list[Action]:
        """Nobody can take these unfit groups: stop the failed ones, keep the others."""
        stop = [g for g in groups if any(r.stop_when_stranded for r in self.health.unfit(g.key))]
        actions: list[Action] = []
        for group in stop:
            actions.append(GroupRecovery(group.key, "stop", why))
            actions.append(Notice("error", f"group {group.key} failed here and {why}: "
                                  "stopping it and leaving it stopped until 'hbctl cleanup "
                                  f"{group.key}'"))
        if not stop:
            return actions
        return actions + self._stop(stop, f"failed here, {why}", self._announce, now, wall)

    def _after_clear(self, keys: list[str], now: float, wall: float) -> list[Action]:
        """Groups that became fit: run them again where an admin expects them."""
        if (not keys or self.shutdown_requested or self.state.state is not RscState.STABLE):
            return []
        fit = [self.groups.groups[k] for k in keys if k in self.groups.groups
               and not self.health.unfit(k)]
        peer_alive = self._peer_alive()
        peer_has = self.other_holds.mirror() if peer_alive else Held.NONE
        start = [g for g in fit if g.state is GroupState.STOPPED
                 and not peer_has & (Held.LOCAL if g.home == self.node else Held.FOREIGN)]
        actions: list[Action] = []
        if start:
            actions += self._start(start, "failure cleared and nobody runs it",
                                   self._announce, now, wall)
        back = [g for g in fit if g.state is GroupState.STOPPED and g not in start
                and g.home == self.node]
        if (back and self.auto_failback is AutoFailback.ON and peer_alive and not self.legacy
                and self.standby.state is Standby.NOT):
            actions.append(Notice("info", f"failure of {', '.join(g.key for g in back)} "
                                  "cleared: auto_failback asks the peer for our groups"))
            actions.append(self._send("hb_takeover", [("rsc_hold", "local")], wall))
        return actions

    # --- admin -------------------------------------------------------------------------

    def cleanup(self, key: str, now: float, wall: float) -> list[Action]:
        """Admin: forget the group's failures here; retry a BLOCKED group's stop.

        Raises KeyError (unknown group), Busy (nothing to clean up); nothing changes then.
        """
        group = self.groups.groups[key]
        if group.state is not GroupState.BLOCKED and not self._health_recorded(key):
            raise Busy(f"group {key} is {group.state.value}, not blocked, and has no "
                       "failures recorded")
        actions = self._cleanup_health(key)
        if group.state is GroupState.BLOCKED:
            return actions + super().cleanup(key, now, wall)
        return actions + self._after_clear([key], now, wall)
