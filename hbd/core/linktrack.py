"""Link tracking: a group is unfit here while an interface it needs is not up.

The interfaces a group needs are those its addresses live on (unless
hbd.conf says `link_tracking off`) and those hbd.conf's `track_interface`
lines name.  The netlink adapter (hbd.net.linkwatch) reports every
interface's state; this module decides, and does so through the general
"unfit here" mechanism of hbd.core.monitoring (Failover's on the Heartbeat
stack, Placement's on Corosync):

* A tracked interface that loses carrier, is set down or disappears makes
  its groups unfit here (reason `link:IFACE`) at once: a RUNNING one is
  handed to the peer without waiting for any deadtime (heartbeats may still
  flow over another link), and this node refuses the peer's standby of a set
  holding one (on Corosync: announced as failed here, the agreed view moves it
  to the next node of its order).  Nobody able to take it: it keeps running
  here.
* The interface back up: after `SETTLE` seconds of staying up the reason is
  cleared (a flapping cable does not bounce groups), and the group may run
  here again (started when nobody runs it; asked back with auto_failback on).
* An address of a RUNNING group removed by someone else (hbd removes
  addresses only while the group is stopping) makes the group unfit here
  (reason `address:IP`) until `hbctl cleanup`: judged `ADDRESS_GRACE` later,
  so that an interface going down or away (which takes its addresses with
  it) counts as the link, and an address put back meanwhile counts as nothing.

Interface states: `up` (administratively up with carrier), `no-carrier`, `down`
(administratively), `absent` (no such interface, or renamed), `unknown` (not
reported yet).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hbd.core.actions import Action, AddressRemoved, TrackedLinkChanged
from hbd.core.monitoring import Monitoring
from hbd.core.resources import GroupState

SETTLE = 1.0  # seconds an interface must stay up before its groups may run here again
ADDRESS_GRACE = 0.2  # seconds between an address's removal and judging it


class LinkState(enum.Enum):
    UNKNOWN = "unknown"
    UP = "up"
    NO_CARRIER = "no-carrier"
    DOWN = "down"
    ABSENT = "absent"

    @property
    def bad(self) -> bool:
        return self in (LinkState.NO_CARRIER, LinkState.DOWN, LinkState.ABSENT)


_DETAIL = {LinkState.NO_CARRIER: "lost carrier", LinkState.DOWN: "is down (admin)",
           LinkState.ABSENT: "does not exist"}


def link_reason(interface: str) -> str:
    return f"link:{interface}"


def address_reason(address: str) -> str:
    return f"address:{address}"


@dataclass(frozen=True)
class TrackedLink:
    """One tracked interface as an admin sees it."""

    interface: str
    state: str  # a LinkState value
    groups: tuple[str, ...]  # the groups that need it


class LinkTracker:
    """Interface states in, unfit-here reasons out (through Monitoring)."""

    def __init__(self, recovery: Monitoring) -> None:
        self.recovery = recovery
        self.needs: dict[str, tuple[str, ...]] = {}  # interface -> group keys needing it
        self.addresses: dict[str, tuple[str, str]] = {}  # address -> (group key, interface)
        self.states: dict[str, LinkState] = {}  # every interface reported, tracked or not
        self.clear_at: dict[str, float] = {}  # interface back up -> when its reason goes
        self.pending: dict[str, tuple[float, str]] = {}  # removed address -> (due, interface)
        self.listed = False  # a full dump came: an interface never reported does not exist

    # --- configuration -----------------------------------------------------------------

    def configure(self, needs: Mapping[str, Iterable[str]], addresses: Mapping[str, str],
                  address_interfaces: Mapping[str, str], now: float,
                  wall: float) -> list[Action]:
        """(Re)set what is tracked: `needs` interface -> group keys, `addresses` address ->
        group key (with the interface it lives on in `address_interfaces`).

        A group that no longer needs an interface loses that reason; one that newly
        needs an interface already down becomes unfit at once.  Never raises.
        """
        new = {name: tuple(sorted(set(keys))) for name, keys in needs.items() if keys}
        actions: list[Action] = []
        for name, keys in self.needs.items():
            gone = [k for k in keys if k not in new.get(name, ())]
            if gone:
                actions += self.recovery.clear_unfit(gone, link_reason(name), now, wall)
        old, self.needs = self.needs, new
        for name, keys in new.items():
            state = self.states.get(name, LinkState.UNKNOWN)
            if state is LinkState.UNKNOWN and self.listed:
                actions += self.link(name, LinkState.ABSENT, now, wall)  # all of its groups
                continue
            added = [k for k in keys if k not in old.get(name, ())]
            if added and state.bad:
                actions += self._unfit(name, state, added, now, wall)
        self.clear_at = {n: t for n, t in self.clear_at.items() if n in new}
        self.addresses = {a: (k, address_interfaces.get(a, "")) for a, k in addresses.items()}
        self.pending = {a: p for a, p in self.pending.items() if a in self.addresses}
        return actions

    # --- what the adapter reports ------------------------------------------------------

    def link(self, interface: str, state: LinkState, now: float, wall: float) -> list[Action]:
        """An interface's state as netlink reported it (repeats are harmless)."""
        old = self.states.get(interface, LinkState.UNKNOWN)
        if state is LinkState.UNKNOWN or old is state:
            return []
        self.states[interface] = state
        keys = self.needs.get(interface)
        if not keys:
            return []
        actions: list[Action] = []
        if not (old is LinkState.UNKNOWN and state is LinkState.UP):
            actions.append(TrackedLinkChanged(interface, old.value, state.value, keys))
        if state.bad:
            self.clear_at.pop(interface, None)
            if not old.bad:
                actions += self._unfit(interface, state, list(keys), now, wall)
        elif old.bad:
            self.clear_at[interface] = now + SETTLE
        return actions

    def synced(self, present: Iterable[str], now: float, wall: float) -> list[Action]:
        """The adapter's full dump is in (at start, or after lost events): the interfaces
        it did not list do not exist."""
        self.listed = True
        seen = set(present)
        actions: list[Action] = []
        for name in sorted({*self.needs, *self.states} - seen):
            actions += self.link(name, LinkState.ABSENT, now, wall)
        return actions

    def address_removed(self, address: str, interface: str, now: float) -> None:
        """RTM_DELADDR of an address: judged at ADDRESS_GRACE (handle_timer).

        Only while its group is RUNNING: hbd removes a group's addresses while the
        group is stopping, and a quick restart must not look like someone else's doing.
        """
        if self._running_group(address) is not None:
            self.pending[address] = (now + ADDRESS_GRACE, interface)

    def _running_group(self, address: str) -> str | None:
        entry = self.addresses.get(address)
        if entry is None:
            return None
        group = self.recovery.groups.groups.get(entry[0])
        return entry[0] if group is not None and group.state is GroupState.RUNNING else None

    def address_added(self, address: str) -> None:
        self.pending.pop(address, None)

    # --- the timer ---------------------------------------------------------------------

    def next_timer(self) -> float | None:
        due = [*self.clear_at.values(), *(t for t, _ in self.pending.values())]
        return min(due) if due else None

    def handle_timer(self, now: float, wall: float) -> list[Action]:
        actions: list[Action] = []
        for name, at in list(self.clear_at.items()):
            if at > now:
                continue
            del self.clear_at[name]
            if self.states.get(name) is LinkState.UP:
                actions += self.recovery.clear_unfit(list(self.needs.get(name, ())),
                                                     link_reason(name), now, wall)
        for address, (at, interface) in list(self.pending.items()):
            if at <= now:
                del self.pending[address]
                actions += self._judge_removal(address, interface, now, wall)
        return actions

    def _judge_removal(self, address: str, interface: str, now: float,
                       wall: float) -> list[Action]:
        # Re-checked now, not when netlink spoke: the group may have been stopped by
        # hbd meanwhile, or the interface may have gone down (the link reason covers it).
        key = self._running_group(address)
        if key is None:
            return []
        home = self.addresses[address][1]
        if self.states.get(interface or home, LinkState.UP) is not LinkState.UP:
            return []
        where = interface or home or "its interface"
        return [AddressRemoved(key, address, where), *self.recovery.set_unfit(
            [key], address_reason(address), now, wall,
            detail=f"{address} was removed from {where} by someone else (until 'hbctl "
                   f"cleanup {key}')", admin_clears=True)]

    def _unfit(self, interface: str, state: LinkState, keys: list[str], now: float,
               wall: float) -> list[Action]:
        return self.recovery.set_unfit(keys, link_reason(interface), now, wall,
                                       detail=f"{interface} {_DETAIL[state]}")

    # --- for snapshots -----------------------------------------------------------------

    def tracked(self) -> tuple[TrackedLink, ...]:
        return tuple(TrackedLink(name, self.states.get(name, LinkState.UNKNOWN).value, keys)
                     for name, keys in sorted(self.needs.items()))
