"""Resource monitoring as group work: what both stacks do about a group's health.

The bookkeeping is hbd.core.health's; this class turns it into group work
and leaves the one stack-specific question, *how the group leaves this
node*, to its subclass:

* Failover (hbd.core.recovery): Heartbeat's standby exchange hands the
  group's set to the peer, or the group is stranded.
* Placement (hbd.core.placement): the node announces the group among the
  ones it may not run (cpgwire's `failed`); every member's agreed view then
  places it on the next node of its order, and this node stops it through
  the ordinary move.

Both get the same entry points: set_unfit / clear_unfit (link tracking
calls them), monitor_done (the daemon's check results) and the health part
of cleanup.  A subclass provides `health` and the hooks `_hand_over`,
`_after_clear`, `_recovery_busy`, `_restart_blocked` and `_restarted`.
"""

from __future__ import annotations

from hbd.core.actions import Action, GroupFailed, GroupRecovery, Notice
from hbd.core.groupwork import GroupWork, Then
from hbd.core.health import MONITOR_REASON, Health, UnfitReason
from hbd.core.resources import Group, GroupState


class Monitoring(GroupWork):
    """Monitors, restarts in place and "unfit here", on either stack."""

    health: Health

    # --- hooks of the stack ------------------------------------------------------------

    def _hand_over(self, now: float, wall: float) -> list[Action]:
        """Get every RUNNING unfit group off this node (or strand it)."""
        raise NotImplementedError

    def _after_clear(self, keys: list[str], now: float, wall: float) -> list[Action]:
        """Groups whose reasons were cleared: run them again where an admin expects."""
        raise NotImplementedError

    def _recovery_busy(self) -> str | None:
        """Why a failed monitor is left alone now (the group is leaving anyway)."""
        return None

    def _restart_blocked(self, group: Group) -> bool:
        """After a restart's stop: whether the start must not follow (things changed)."""
        return False

    def _restarted(self, now: float, wall: float) -> list[Action]:
        """What follows a restart's start (tell the peers)."""
        raise NotImplementedError

    # --- the general mechanism (link tracking calls these) ------------------------------

    def set_unfit(self, keys: list[str], reason: str, now: float, wall: float, *,
                  detail: str = "", expires_after: float | None = None,
                  stop_when_stranded: bool = False,
                  admin_clears: bool = False) -> list[Action]:
        """Mark groups unfit here for `reason`; hand the RUNNING ones over now.

        `keys`: group keys (unknown ones are skipped); `reason`: a short name such as
        "link:eth0" (setting it again replaces it); `expires_after`: seconds, None for
        until clear_unfit(); `stop_when_stranded`: when no node can take the group, stop
        it (True) or keep it running here (False); `admin_clears`: `hbctl cleanup`
        removes it.  Never raises.
        """
        actions: list[Action] = []
        for key in keys:
            if key not in self.groups.groups:
                continue
            expires = None if expires_after is None else now + expires_after
            self.health.of(key).unfit[reason] = UnfitReason(
                reason, detail or reason, wall, expires, stop_when_stranded, admin_clears)
            actions.append(GroupRecovery(key, "unfit", f"{reason}: {detail}" if detail
                                         else reason))
        return actions + self._hand_over(now, wall)

    def clear_unfit(self, keys: list[str], reason: str, now: float,
                    wall: float) -> list[Action]:
        """Remove `reason` from groups; a group with no reason left may run here again.

        What then runs where is the stack's (see _after_clear).  Never raises.
        """
        cleared = []
        for key in keys:
            health = self.health.groups.get(key)
            if health is not None and health.unfit.pop(reason, None) is not None:
                cleared.append(key)
        actions: list[Action] = [GroupRecovery(k, "fit", f"{reason} cleared") for k in cleared]
        return actions + self._after_clear(cleared, now, wall)

    def unfit_reasons(self, key: str) -> list[UnfitReason]:
        return self.health.unfit(key)

    def _refusal(self, group: Group) -> str | None:
        reasons = self.health.unfit(group.key)
        if not reasons:
            return None
        return "unfit here (" + "; ".join(r.detail for r in reasons) + ")"

    # --- monitors ----------------------------------------------------------------------

    def _running(self) -> set[str]:
        return {g.key for g in self.groups if g.state is GroupState.RUNNING}

    def monitor_done(self, key: str, token: int, ok: bool, detail: str, now: float,
                     wall: float) -> list[Action]:
        """The daemon finished a RunMonitor.  A stale result (the group stopped or
        restarted meanwhile) is ignored.  Never raises."""
        group = self.groups.groups.get(key)
        if group is None or group.state is not GroupState.RUNNING:
            self.health.sync(self._running(), now)
            return []
        failed = self.health.result(key, token, ok, detail, now, wall)
        if failed is None or ok:
            return []
        actions: list[Action] = [GroupFailed(key, "monitor", detail)]
        if not failed:
            return actions
        busy = self._recovery_busy()
        if busy is not None:
            return [*actions, Notice("warning", f"group {key} failed its monitor while {busy}: "
                                     "left to that")]
        if self.health.may_restart(key, now):
            actions.append(GroupRecovery(key, "restart", detail))
            return actions + self._stop([group], "monitor failed: restarting in place",
                                        self._restart(group), now, wall)
        expiry = self.health.expiry.get(key)
        until = "until 'hbctl cleanup " + key + "'" + (
            f" or {expiry:g} s" if expiry else "")
        return actions + self.set_unfit(
            [key], MONITOR_REASON, now, wall, detail=f"monitor failed: {detail} ({until})",
            expires_after=expiry, stop_when_stranded=True, admin_clears=True)

    def _restart(self, group: Group) -> Then:
        def then(now: float, wall: float) -> list[Action]:
            # Seconds later: a shutdown, a handover or a reload may have come meanwhile.
            if (group.state is not GroupState.STOPPED
                    or self.groups.groups.get(group.key) is not group
                    or self._restart_blocked(group)):
                return [Notice("info", f"group {group.key}: restart not finished (the "
                               "group is being handed over or stopped)"),
                        *self._restarted(now, wall)]
            return self._start([group], "restart after a failed monitor", self._restarted,
                               now, wall)
        return then

    # --- timers ------------------------------------------------------------------------

    def _health_timer(self, now: float, wall: float) -> list[Action]:
        """Expired reasons (then _after_clear) and the checks now due."""
        actions: list[Action] = []
        cleared = []
        for key, reason in self.health.expired(now):
            cleared.append(key)
            actions.append(GroupRecovery(key, "fit", f"{reason.name} expired"))
        actions += self._after_clear(cleared, now, wall)
        running = self._running()
        self.health.sync(running, now)
        return actions + self.health.due(running, now)

    # --- admin -------------------------------------------------------------------------

    def _health_recorded(self, key: str) -> bool:
        health = self.health.groups.get(key)
        return health is not None and (health.fail_count > 0 or bool(health.restarts)
                                       or any(r.admin_clears for r in health.unfit.values()))

    def _cleanup_health(self, key: str) -> list[Action]:
        """`hbctl cleanup`'s health half: forget the failures (the caller re-places)."""
        if not self._health_recorded(key):
            return []
        self.health.clear_failures(key)
        return [GroupRecovery(key, "fit", "failures cleaned up by the admin")]
