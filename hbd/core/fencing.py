"""Fencing a dead peer before its groups are taken over (STONITH), in the core.

Heartbeat 3.0.6's rules (hb_resource.c, hb_rsc_recover_dead_resources and
Initiate_Reset), with hbd's changes marked:

* a peer declared dead (not one that sent `shutdone`: a graceful stop never
  fences) is reset through the fence devices before any of its groups is
  started here ("Resetting node N with [TYPE]", "node N now reset.");
* a failed reset is retried after a delay ("STONITH of N failed.
  Retrying...", 5 s in Heartbeat, `fence_retry_interval` in hbd.conf); there
  is no takeover until one succeeds, or an admin confirms the node is down
  (`hbctl fence confirm NODE`; with meatware, `meatclient -c NODE`);
* the devices are checked at start and then periodically (hourly in
  Heartbeat: `fence_status_interval`);
* hbd: a peer is fenced even when it said it held nothing (Heartbeat skips
  it: "unneeded").  In a partition that peer is alive and about to fence us;
* hbd: the fence race.  When every link is cut both sides fence.  The side
  that held fewer groups (on a tie, the one listed later in ha.cf's `node`
  lines) first waits `fence_race_delay`, so the active node resets the other
  first and keeps serving (Pacemaker's priority-fencing-delay).

Notify hooks get every FenceStateChanged as `fence NODE STATE`
(hbd/core/hookevents.py).

Transitions are the table below; a move it does not allow raises and leaves
the state as it was.  Results come back through `fence_done` with the
attempt's number: a late result of an attempt that was cancelled is ignored.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from hbd.core.actions import (
    Action,
    CancelFence,
    CheckFenceDevices,
    FenceDeviceStatus,
    FenceNode,
    FenceStateChanged,
    Notice,
)
from hbd.core.config import ClusterConfig, FenceSettings, StonithDevice
from hbd.core.fsm import StateMachine
from hbd.core.groupwork import Then
from hbd.errors import NotFencing


class FenceState(enum.Enum):
    NONE = "none"  # nothing to do (the peer is alive, or was never lost)
    DELAYED = "delayed"  # waiting fence_race_delay before the first attempt
    FENCING = "fencing"  # a device is resetting the node
    CONFIRM = "waiting-confirmation"  # meatware: an operator must confirm (meatclient -c)
    FAILED = "failed"  # the last attempt failed; retrying; `hbctl fence confirm` releases
    FENCED = "fenced"  # reset (or confirmed down): its groups may be taken


_RUNNING = frozenset({FenceState.FENCING, FenceState.CONFIRM})
_STARTS = frozenset({FenceState.DELAYED, FenceState.FENCING, FenceState.CONFIRM})
TRANSITIONS: Final[dict[FenceState, frozenset[FenceState]]] = {
    FenceState.NONE: _STARTS,
    FenceState.DELAYED: frozenset({*_RUNNING, FenceState.FENCED, FenceState.NONE}),
    FenceState.FENCING: frozenset({FenceState.FENCED, FenceState.FAILED, FenceState.NONE}),
    FenceState.CONFIRM: frozenset({FenceState.FENCED, FenceState.FAILED, FenceState.NONE}),
    FenceState.FAILED: frozenset({*_RUNNING, FenceState.FENCED, FenceState.NONE}),
    FenceState.FENCED: frozenset({FenceState.NONE, *_STARTS}),
}


def race_delay(ours: int, theirs: int, we_are_first: bool, settings: FenceSettings) -> float:
    """Seconds to wait before fencing a peer, so the side that served wins the race.

    `ours`/`theirs`: groups each side ran when the peer was lost; `we_are_first`:
    we come first in ha.cf's `node` lines (the tie-break).
    """
    if ours > theirs or (ours == theirs and we_are_first):
        return 0.0
    return settings.race_delay_ms / 1000


@dataclass
class _Target:
    """One node we must fence: where it stands and what waits for it."""

    fsm: StateMachine[FenceState]
    then: Then | None = None  # the takeover, run once the node is fenced
    attempt: int = 0
    due: float | None = None  # end of the race delay, or the next retry
    failures: int = 0
    detail: str = ""


class Fencing:
    """Every peer's fencing, for one node.  Failover hooks it into its takeover path."""

    def __init__(self, config: ClusterConfig) -> None:
        self.targets: dict[str, _Target] = {}
        self.status_due: float | None = None  # next device status check
        self.status_running = False
        self.device_ok: bool | None = None  # last status check (None: not yet)
        self.device_detail = ""
        self.reconfigure(config)

    def reconfigure(self, config: ClusterConfig) -> None:
        """A reload: new devices apply to the next attempt, a pending fencing stays."""
        self.node = config.node_name
        self.first = bool(config.hacf.nodes) and config.hacf.nodes[0] == self.node
        self.device: StonithDevice | None = config.hacf.stonith_for(self.node)
        self.settings = config.hbd.fencing
        if not self.configured:
            self.status_due = None
            self.device_ok = None

    @property
    def configured(self) -> bool:
        return self.device is not None or bool(self.settings.agents)

    @property
    def manual(self) -> bool:
        """Only a meatware device: every reset waits for an operator."""
        return (self.device is not None and self.device.type == "meatware"
                and not self.settings.agents)

    def state_of(self, node: str) -> FenceState:
        target = self.targets.get(node)
        return target.fsm.state if target is not None else FenceState.NONE

    def pending(self, node: str) -> bool:
        """A takeover of `node`'s groups is waiting for its fencing."""
        return self.state_of(node) not in (FenceState.NONE, FenceState.FENCED)

    def _move(self, node: str, target: _Target, new: FenceState, detail: str) -> Action:
        old = target.fsm.move(new)
        target.detail = detail
        return FenceStateChanged(node, old.value, new.value, detail)

    # --- the takeover path ----------------------------------------------------------

    def begin(self, node: str, delay: float, then: Then, now: float) -> list[Action]:
        """`node` was lost: fence it (after `delay` seconds), then run `then`.

        A fencing already under way for it keeps going; only the continuation
        is replaced (the latest takeover decision is the one that matters).
        """
        target = self.targets.get(node)
        if target is None:
            target = self.targets[node] = _Target(
                StateMachine(f"fencing {node}", FenceState.NONE, TRANSITIONS))
        target.then = then
        if self.pending(node):
            return []
        target.failures = 0
        if delay > 0:
            target.due = now + delay
            return [self._move(node, target, FenceState.DELAYED,
                               f"fence race: waiting {delay:g} s before fencing (the peer "
                               "held more groups)"),
                    Notice("warning", f"node {node} lost: fencing it in {delay:g} s "
                           "(fence_race_delay)")]
        return self._attempt(node, target)

    def _attempt(self, node: str, target: _Target) -> list[Action]:
        target.attempt += 1
        target.due = None
        if not self.configured:  # a reload removed every device while this one waited
            return [self._move(node, target, FenceState.CONFIRM,
                               "no fence device any more: run 'hbctl fence confirm "
                               f"{node}' once it is down"),
                    Notice("error", f"Cannot reset node {node}: no STONITH device is "
                           "configured any more; waiting for manual confirmation")]
        if self.manual:
            return [self._move(node, target, FenceState.CONFIRM,
                               "waiting for an operator: run 'meatclient -c "
                               f"{node}' or 'hbctl fence confirm {node}' once it is down"),
                    Notice("warning", f"Resetting node {node} with [meatware]: waiting for "
                           "manual confirmation"),
                    FenceNode(node, target.attempt)]
        kind = self.device.type if self.device is not None else self.settings.agents[0].agent
        return [self._move(node, target, FenceState.FENCING, f"attempt {target.attempt}"),
                Notice("info", f"Resetting node {node} with [{kind}]"),
                FenceNode(node, target.attempt)]

    def fence_done(self, node: str, attempt: int, ok: bool, detail: str, now: float,
                   wall: float) -> list[Action]:
        """The adapter finished FenceNode(node, attempt)."""
        target = self.targets.get(node)
        if target is None or attempt != target.attempt or target.fsm.state not in _RUNNING:
            return []  # cancelled, confirmed by hand or superseded meanwhile
        if ok:
            actions = [self._move(node, target, FenceState.FENCED, detail or "reset"),
                       Notice("info", f"node {node} now reset.")]
            return actions + self._release(target, now, wall)
        target.failures += 1
        target.due = now + self.settings.retry_ms / 1000
        return [self._move(node, target, FenceState.FAILED,
                           f"{target.failures} failed attempt(s), last: {detail}; retrying; "
                           f"'hbctl fence confirm {node}' if it is down"),
                Notice("error", f"Host {node} not reset!"),
                Notice("error", f"STONITH of {node} failed.  Retrying...")]

    def confirm(self, node: str, now: float, wall: float) -> list[Action]:
        """An admin says `node` is down: release the takeover.

        Raises NotFencing (nothing changed) when no fencing of `node` is waiting.
        """
        target = self.targets.get(node)
        if target is None or not self.pending(node):
            raise NotFencing(f"no fencing of {node!r} is waiting for confirmation")
        running = target.fsm.state in _RUNNING
        actions: list[Action] = [CancelFence(node)] if running else []
        target.attempt += 1  # a late result of the cancelled attempt is ignored
        actions += [self._move(node, target, FenceState.FENCED, "confirmed down by an admin"),
                    Notice("warning", f"node {node} confirmed down by an admin: taking over "
                           "without a reset")]
        return actions + self._release(target, now, wall)

    def _release(self, target: _Target, now: float, wall: float) -> list[Action]:
        then, target.then, target.due = target.then, None, None
        return then(now, wall) if then is not None else []

    def peer_alive(self, node: str) -> list[Action]:
        """`node` is heard from again: a fencing not yet under way is no longer needed.

        One running keeps going (it cannot be taken back); its continuation
        re-checks the peer's state before taking anything over.
        """
        target = self.targets.get(node)
        if target is None or target.fsm.state in (FenceState.NONE, *_RUNNING):
            return []
        was_fenced = target.fsm.state is FenceState.FENCED
        target.then = target.due = None
        change = self._move(node, target, FenceState.NONE,
                            "rejoined" if was_fenced else "heard from again: fencing cancelled")
        if was_fenced:
            return [change]
        return [change, Notice("warning", f"node {node} is back: fencing cancelled")]

    # --- the device status check --------------------------------------------------

    def start(self, now: float) -> None:
        """Check the devices at start (Heartbeat: when the config is read)."""
        if self.configured:
            self.status_due = now

    def devices_checked(self, ok: bool, detail: str, now: float) -> list[Action]:
        self.status_running = False
        interval = self.settings.status_interval_ms / 1000
        self.status_due = now + interval if interval and self.configured else None
        changed = ok is not self.device_ok
        self.device_ok, self.device_detail = ok, detail
        if ok and not changed:
            return []
        actions: list[Action] = [FenceDeviceStatus(ok, detail)]
        if not ok:
            actions += [Notice("error", "STONITH status operation failed."),
                        Notice("info", "This may mean that the STONITH device has failed!")]
        return actions

    # --- the timer -------------------------------------------------------------------

    def next_timer(self) -> float | None:
        due = [t.due for t in self.targets.values() if t.due is not None]
        if self.status_due is not None and not self.status_running:
            due.append(self.status_due)
        return min(due) if due else None

    def handle_timer(self, now: float, wall: float) -> list[Action]:
        actions: list[Action] = []
        for node, target in self.targets.items():
            if target.due is not None and now >= target.due and target.fsm.state in (
                    FenceState.DELAYED, FenceState.FAILED):
                actions += self._attempt(node, target)
        if self.status_due is not None and now >= self.status_due and not self.status_running:
            self.status_running = True
            actions.append(CheckFenceDevices())
        return actions
