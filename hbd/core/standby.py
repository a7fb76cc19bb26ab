"""Standby and takeover: Heartbeat's ask_resources exchange (hb_standby, hb_takeover).

    requester R                          peer P
    ask_resources X info=me     ->
                                <-       ask_resources X info=other
    resource ... info=standby; release X
    ask_resources X info=done   ->       acquire mirror(X)
                                <-       ask_resources X info=done; resource isstable=1
    resource isstable=1

The scope X is from R's point of view (local = R's own groups); P acquires
the mirror set.  `hb_takeover X` on one node makes the other go standby for
the mapped scope (all->all, local->foreign, foreign->local, else all).
See docs/heartbeat-protocol.md §3.7.
"""

from __future__ import annotations

from hbd.core.actions import Action, Notice
from hbd.core.engine import Received
from hbd.core.fields import shown
from hbd.core.fsm import StateMachine
from hbd.core.groupwork import GroupWork
from hbd.core.resources import SCOPES, GroupState, Held, scope_set, takeover_request_scope
from hbd.core.rscstate import RscState, Standby
from hbd.errors import Busy, InvalidScope

STANDBY_REPLY_TIMEOUT = 10.0  # STANDBY_INIT_TO_MS
STANDBY_OTHER_TIMEOUT = 3600.0


class StandbyExchange(GroupWork):
    """The standby half of the resource protocol; Failover adds the rest."""

    # provided by Failover
    state: StateMachine[RscState]
    standby: StateMachine[Standby]
    standby_set: Held
    standby_deadline: float | None
    other_stable: bool
    other_holds: Held
    legacy: bool
    shutdown_requested: bool
    needs_failback: bool

    def _peer_alive(self) -> bool:
        raise NotImplementedError

    def _send(self, msgtype: str, fields: list[tuple[str, str]], wall: float,
              dest: str | None = None) -> Action:
        raise NotImplementedError

    def _resource_msg(self, wall: float, *, stable: bool | None = None,
                      info: str | None = None, refused: str | None = None) -> Action:
        raise NotImplementedError

    def _acquire_refusal(self, acquire: Held) -> str | None:
        """Why we must not acquire the set the peer wants to release (recovery.py)."""
        return None

    def _begin_standby(self, scope: str, now: float, wall: float) -> list[Action]:
        held = scope_set(scope)
        self.standby.move(Standby.ME)
        self.standby_set = held
        self.standby_deadline = now + STANDBY_REPLY_TIMEOUT
        self.other_stable = False
        return [Notice("info", f"{self.node} wants to go standby [{held.wire}]"),
                self._send("ask_resources", [("rsc_hold", held.wire), ("info", "me")], wall)]

    def _standby_refusal(self) -> str | None:
        if self.legacy:
            return "standby needs auto_failback on or off (Heartbeat: not in legacy mode)"
        if not self._peer_alive():
            return "no live peer to hand the groups to"
        if self.shutdown_requested:
            return "shutting down"
        if self.standby.state is not Standby.NOT:
            return "a standby exchange is already under way"
        if self.state.state is not RscState.STABLE or self.groups.busy():
            return "local resources are in flux"
        if not self.other_stable:
            return "the other side is in flux"
        return None

    def release(self, scope: str, now: float, wall: float) -> list[Action]:
        """Admin (hb_standby / Release): hand the scope's groups to the peer.

        Raises InvalidScope or Busy (nothing changes).
        """
        if scope not in SCOPES:
            raise InvalidScope(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        reason = self._standby_refusal()
        if reason:
            raise Busy(f"cannot go standby: {reason}")
        return self._begin_standby(scope, now, wall)

    def takeover(self, scope: str, now: float, wall: float) -> list[Action]:
        """Admin (hb_takeover / Takeover): ask the peer to hand over the scope's groups.

        Raises InvalidScope or Busy (nothing changes).
        """
        if scope not in SCOPES:
            raise InvalidScope(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        if self.legacy:
            raise Busy("takeover needs auto_failback on or off (Heartbeat: not in legacy mode)")
        if self.shutdown_requested:
            raise Busy("shutting down")
        if not self._peer_alive():
            missing = [g for g in self.groups if g.state is GroupState.STOPPED]
            return self._start(missing, "takeover with no live peer",
                               lambda n, w: [self._resource_msg(w)], now, wall)
        if self.standby.state is not Standby.NOT:
            raise Busy("a standby exchange is already under way")
        return [self._send("hb_takeover", [("rsc_hold", scope)], wall)]

    def _on_hb_takeover(self, rx: Received, now: float, wall: float) -> list[Action]:
        scope = takeover_request_scope(rx.message.get("rsc_hold") or "")
        reason = self._standby_refusal()
        if reason:
            return [Notice("warning", f"{rx.peer.name} asked to take over [{scope}]: "
                           f"ignored, {reason}")]
        return self._begin_standby(scope, now, wall)

    def _on_ask_resources(self, rx: Received, now: float, wall: float) -> list[Action]:
        info = rx.message.get("info")
        held = Held.parse(rx.message.get("rsc_hold")) or Held.NONE
        standby = self.standby.state
        peer = rx.peer.name
        if info == "me" and standby is Standby.NOT:
            if self.state.state is not RscState.STABLE or self.groups.busy():
                return [Notice("warning", f"standby request from {peer} ignored: "
                               "local resources in flux")]
            refusal = self._acquire_refusal(held.mirror())
            if refusal is not None:
                # Heartbeat has no refusal: it would ignore us.  hbd says so at once
                # with an extra field Heartbeat ignores (recovery.py).
                return [Notice("warning", f"standby request from {peer} refused: {refusal}"),
                        self._resource_msg(wall, refused=held.wire)]
            self.standby.move(Standby.OTHER)
            self.standby_set = held
            self.standby_deadline = now + STANDBY_OTHER_TIMEOUT
            self.other_stable = False
            return [Notice("info", f"{peer} wants to go standby [{held.wire}]"),
                    self._send("ask_resources", [("rsc_hold", held.wire), ("info", "other")],
                               wall)]
        if info == "other" and standby is Standby.ME:
            return self._go_standby_me(peer, now, wall)
        if info == "done" and standby is Standby.OTHER:
            return self._go_standby_other(peer, now, wall)
        if info == "done" and standby is Standby.DONE:
            self.standby.move(Standby.NOT)
            self.standby_deadline = None
            self.other_stable = True
            return [Notice("info", f"Other node completed standby takeover of "
                           f"{self.standby_set.wire} resources."),
                    self._resource_msg(wall, stable=True)]
        return [Notice("warning", f"Ignored standby message '{shown(info or '')}' "
                       f"from {peer} in state {standby.value}")]

    def _go_standby_me(self, peer: str, now: float, wall: float) -> list[Action]:
        """We asked to go standby and the peer agreed: release, then say done."""
        release = self.standby_set
        self.standby.move(Standby.DONE)
        self.standby_deadline = None
        if release & Held.LOCAL:
            self.local_claim = False
        if release & Held.FOREIGN:
            self.foreign_claim = False
        giving = [g for g in self.groups.in_set(release) if g.active]

        def then(now: float, wall: float) -> list[Action]:
            # The stops took seconds: if the exchange was cancelled meanwhile (the peer
            # died or shut down, or we are stopping), nobody will acquire what we released.
            if self.standby.state is not Standby.DONE:
                return self._standby_release_cancelled(release, now, wall)
            done: list[Action] = [
                Notice("info", f"Local standby process completed [{release.wire}].")]
            stuck = [g.key for g in giving if g.state is GroupState.BLOCKED]
            if stuck:
                # A group whose stop failed may still run here: say what we still hold
                # before `done`, so the peer acquires around it (it used to start it).
                done += [Notice("error", f"standby: group(s) {', '.join(stuck)} could not "
                                "be stopped and stay claimed here; the peer must not take "
                                "them"), self._resource_msg(wall)]
            return [*done, self._send("ask_resources", [("rsc_hold", release.wire),
                                                        ("info", "done")], wall)]

        actions: list[Action] = [
            Notice("info", f"standby: {peer} can take our {release.wire} resources")]
        # Announce first what we will hold afterwards (Heartbeat's go_standby order).
        remaining = self.held() & ~release
        actions.append(self._send("resource", [
            ("rsc_hold", Held(remaining).wire), ("rtype", "full"), ("isstable", "0"),
            ("info", "standby")], wall))
        return actions + self._stop(giving, f"standby [{release.wire}]", then, now, wall)

    def _standby_release_cancelled(self, release: Held, now: float,
                                   wall: float) -> list[Action]:
        """Our standby release finished after the exchange was cancelled.

        Whoever cancelled it (the peer's death, its `shutdone`) started the groups
        that were stopped at that moment, not the ones still stopping for us; with
        the peer gone they are ours again.  A shutdown of ours keeps them stopped.
        """
        notice = Notice("info", f"Local standby process of [{release.wire}] finished after "
                        "the exchange was cancelled.")
        if self.shutdown_requested:
            return [notice]
        if self._peer_alive() and not self.other_stable:
            return [notice, self._resource_msg(wall)]  # the peer is busy: let it decide
        missing = [g for g in self.groups if g.state is GroupState.STOPPED
                   and g.key not in self.retiring]
        self.local_claim = True
        return [notice, *self._start(missing, "standby cancelled: no peer to take them",
                                     self._announce, now, wall)]

    def _go_standby_other(self, peer: str, now: float, wall: float) -> list[Action]:
        """The peer released its groups: acquire the mirror set, then say done."""
        acquire = self.standby_set.mirror()
        self.standby.move(Standby.DONE)
        self.needs_failback = False  # handed over on request: auto_failback leaves it here
        if acquire & Held.LOCAL:
            self.local_claim = True
        if acquire & Held.FOREIGN:
            self.foreign_claim = True

        def then(now: float, wall: float) -> list[Action]:
            # The starts took seconds: the peer's death or a shutdown may have cancelled
            # the exchange meanwhile (standby is back to `not`; it used to move not -> not
            # and raise).  Only a live exchange is finished with `done`.
            if self.standby.state is not Standby.DONE:
                done: list[Action] = [Notice("info", f"Standby resource acquisition of "
                                             f"[{acquire.wire}] finished after the exchange "
                                             "was cancelled.")]
                if self.shutdown_requested:
                    return done  # the shutdown's own messages speak for us
                return [*done, self._resource_msg(wall)]
            self.standby.move(Standby.NOT)
            self.standby_deadline = None
            self.other_stable = True
            return [Notice("info", f"Standby resource acquisition done [{acquire.wire}]."),
                    self._send("ask_resources", [("rsc_hold", self.standby_set.wire),
                                                 ("info", "done")], wall),
                    self._resource_msg(wall, stable=True)]

        actions: list[Action] = [
            Notice("info", f"standby: acquire [{acquire.wire}] resources from {peer}")]
        # What the peer still claims (a group it could not stop) is not ours to start:
        # its resource message says so before its `done`.
        still_theirs = self.other_holds.mirror()
        return actions + self._start(self.groups.in_set(acquire & ~still_theirs),
                                     f"standby of {peer}", then, now, wall)

