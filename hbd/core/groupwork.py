"""Starting and stopping groups as steps of the protocol.

The engine's failover logic asks for groups to be started or stopped; the
daemon does the work and answers with `group_done()`.  A job waits for the
groups of one protocol step and then runs that step's continuation (send
`done`, send `shutdone`, ...).  Failed stops leave a group BLOCKED and are
retried every BLOCKED_RETRY; an admin can retry at once with `cleanup()`.

A continuation runs seconds after the step that built it, when the peer may
have died, a shutdown begun or the exchange been cancelled: each one checks
the state it assumed before acting on it, and must not raise.  As a backstop,
`_continue` contains a failure: the group states already moved and the
actions built for them are kept, and the failure becomes an error notice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from hbd.core.actions import (
    Action,
    GroupFailed,
    GroupStateChanged,
    Notice,
    ResourcesHeldChanged,
    StartGroup,
    StopGroup,
)
from hbd.core.resources import Group, GroupState, GroupTable, Held
from hbd.errors import Busy, TransitionError

log = logging.getLogger(__name__)

BLOCKED_RETRY = 10.0  # how often a group whose stop failed is tried again

Then = Callable[[float, float], list[Action]]


@dataclass
class _Job:
    """Groups being started or stopped for one protocol step, and what comes after."""

    operation: str  # "start" or "stop"
    waiting: set[str]
    then: Then | None
    failed: list[str] = field(default_factory=list)




class GroupWork:
    """Group states, jobs and holdings; the protocol subclass adds the messages."""

    def __init__(self, node: str, groups: GroupTable) -> None:
        self.node = node
        self.groups = groups
        self.jobs: list[_Job] = []
        self.local_claim = False  # Heartbeat says `local` once it asked for its groups
        # ...and `foreign` once it took over the peer's (its death, its shutdown, a standby
        # handing them to us), whether or not any group is homed there: Heartbeat's
        # i_hold_resources counts resource classes, not groups
        self.foreign_claim = False
        self.next_blocked_retry: float | None = None
        self._last_held = Held.NONE
        self.retiring: set[str] = set()  # removed from haresources by a reload, stopping
        self.shutdown_done = False  # every group is down after shutdown(): the daemon may exit

    def shutdown(self, now: float, wall: float) -> list[Action]:
        """Graceful stop: release every group; sets shutdown_done once all are down."""
        raise NotImplementedError

    # hooks for the protocol layer
    def _after_failed_start(self, group: Group) -> Then:
        raise NotImplementedError

    def _announce(self, now: float, wall: float) -> list[Action]:
        raise NotImplementedError

    def _refusal(self, group: Group) -> str | None:
        """Why this node must not start the group (hbd.core.recovery); None: it may."""
        return None

    def held(self) -> Held:
        held = self.groups.claimed()
        if self.local_claim and not self.groups.in_set(Held.LOCAL):
            held |= Held.LOCAL  # Heartbeat's quirk for a node with no local groups
        if self.foreign_claim and not self.groups.in_set(Held.FOREIGN):
            held |= Held.FOREIGN  # the same quirk for the peer's class
        return held

    def _held_changed(self) -> list[Action]:
        held = self.held()
        if held == self._last_held:
            return []
        old, self._last_held = self._last_held, held
        return [ResourcesHeldChanged(old.wire, held.wire)]

    def _start(self, groups: list[Group], reason: str, then: Then | None,
               now: float, wall: float) -> list[Action]:
        actions: list[Action] = []
        waiting: set[str] = set()
        for group in groups:
            if group.state is not GroupState.STOPPED:
                continue
            refusal = self._refusal(group)
            if refusal is not None:
                actions.append(Notice("error", f"not starting group {group.key} here ({reason}):"
                                      f" {refusal}"))
                continue
            actions += self._move(group, GroupState.STARTING)
            actions.append(StartGroup(group.key, reason))
            waiting.add(group.key)
        return actions + self._job("start", waiting, then, now, wall)

    def _stop(self, groups: list[Group], reason: str, then: Then | None,
              now: float, wall: float) -> list[Action]:
        actions: list[Action] = []
        waiting: set[str] = set()
        for group in groups:
            if group.state not in (GroupState.RUNNING, GroupState.BLOCKED):
                continue
            actions += self._move(group, GroupState.STOPPING)
            actions.append(StopGroup(group.key, reason))
            waiting.add(group.key)
        return actions + self._job("stop", waiting, then, now, wall)

    def _job(self, operation: str, waiting: set[str], then: Then | None,
             now: float, wall: float) -> list[Action]:
        if waiting:
            self.jobs.append(_Job(operation, waiting, then))
            return self._held_changed()
        actions = self._held_changed()
        if then is not None:
            actions += self._continue(then, now, wall)
        return actions

    def _continue(self, then: Then, now: float, wall: float) -> list[Action]:
        """Run a step's continuation; a failure (a bug) is contained, not raised.

        The caller has already moved the group states and built their events:
        raising here would lose those and leave the daemon's view behind ours.
        """
        try:
            return then(now, wall)
        except Exception as err:  # the backstop of group work: see the module docstring
            log.error("internal error in the continuation of a group step: %s", err,
                      exc_info=err)
            return [Notice("error", f"internal error after group work ({type(err).__name__}: "
                           f"{err}); the groups' states are kept, the step's messages may "
                           "be missing")]

    def _move(self, group: Group, new: GroupState) -> list[Action]:
        old = group.fsm.move(new)
        owner = self.node if new is not GroupState.STOPPED else ""
        return [GroupStateChanged(group.key, old.value, new.value, owner)]

    def group_done(self, key: str, operation: str, ok: bool, detail: str,
                   now: float, wall: float) -> list[Action]:
        """The daemon finished a StartGroup/StopGroup.  Raises KeyError for unknown groups."""
        group = self.groups.groups[key]
        actions: list[Action] = []
        if operation == "start":
            if group.state is not GroupState.STARTING:
                raise TransitionError(f"group {key}: start finished while {group.state.value}")
            if ok:
                actions += self._move(group, GroupState.RUNNING)
            else:
                # The runner already stopped what it had started; a failed cleanup
                # arrives as a failed stop.  The group is given up to the peer.
                group.detail = detail
                actions.append(GroupFailed(key, "start", detail))
                actions += self._move(group, GroupState.STOPPING)
                actions.append(StopGroup(key, "clean up after a failed start"))
                self.jobs.append(_Job("stop", {key}, self._after_failed_start(group)))
        else:
            if group.state is not GroupState.STOPPING:
                raise TransitionError(f"group {key}: stop finished while {group.state.value}")
            if ok:
                group.detail = ""
                actions += self._move(group, GroupState.STOPPED)
            else:
                group.detail = detail
                actions.append(GroupFailed(key, "stop", detail))
                actions += self._move(group, GroupState.BLOCKED)
                actions.append(Notice("error", (
                    f"group {key} could not be stopped and may still be running: hbd keeps "
                    "claiming it so the peer will not start it; fix it, then run "
                    f"'hbctl cleanup {key}' (retrying every {BLOCKED_RETRY:.0f} s)")))
                if self.next_blocked_retry is None:
                    self.next_blocked_retry = now + BLOCKED_RETRY
        for job in list(self.jobs):
            if key in job.waiting and job.operation == operation:
                job.waiting.discard(key)
                if not ok:
                    job.failed.append(key)
                if not job.waiting:
                    self.jobs.remove(job)
                    actions += self._held_changed()
                    if job.then is not None:
                        actions += self._continue(job.then, now, wall)
                break
        current = self.groups.groups.get(key)  # a callback above may have changed the table
        if key in self.retiring and current is not None and current.state is GroupState.STOPPED:
            self.retiring.discard(key)  # a retired group is forgotten once it is down
            del self.groups.groups[key]
        return actions + self._held_changed()

    def adopt_blocked(self, key: str, now: float) -> list[Action]:
        """Start-up found the group active and could not stop it: claim it as BLOCKED.

        Raises KeyError for an unknown group.
        """
        group = self.groups.groups[key]
        group.detail = "found active at start-up and would not stop"
        actions = self._move(group, GroupState.STARTING) + self._move(group, GroupState.STOPPING)
        actions += self._move(group, GroupState.BLOCKED)
        if self.next_blocked_retry is None:
            self.next_blocked_retry = now + BLOCKED_RETRY
        return actions + self._held_changed()

    def cleanup(self, key: str, now: float, wall: float) -> list[Action]:
        """Admin: retry stopping a BLOCKED group now.  Raises KeyError, Busy."""
        group = self.groups.groups[key]
        if group.state is not GroupState.BLOCKED:
            raise Busy(f"group {key} is {group.state.value}, not blocked")
        return self._stop([group], "admin cleanup", self._announce, now, wall)

