"""The states of Heartbeat's resource protocol, with their transition tables.

RscState is hb_resource.c's hb_rsc_state (where start-up stands); Standby is
its going_standby (where a standby exchange stands).
"""

from __future__ import annotations

import enum
from typing import Final


class RscState(enum.Enum):
    """hb_resource.c's hb_rsc_state."""

    INIT = "init"
    STARTING = "starting"
    BOTHSTARTING = "bothstarting"
    RSCRCVD = "rscrcvd"
    STABLE = "stable"
    SHUTDOWN = "shutdown"


RSC_TRANSITIONS: Final[dict[RscState, frozenset[RscState]]] = {
    RscState.INIT: frozenset({RscState.STARTING, RscState.STABLE, RscState.SHUTDOWN}),
    RscState.STARTING: frozenset({RscState.BOTHSTARTING, RscState.RSCRCVD, RscState.STABLE,
                                  RscState.SHUTDOWN}),
    RscState.BOTHSTARTING: frozenset({RscState.RSCRCVD, RscState.STABLE, RscState.SHUTDOWN}),
    RscState.RSCRCVD: frozenset({RscState.STABLE, RscState.SHUTDOWN}),
    RscState.STABLE: frozenset({RscState.SHUTDOWN}),
    RscState.SHUTDOWN: frozenset(),
}


class Standby(enum.Enum):
    """hb_resource.c's going_standby: where a standby exchange is."""

    NOT = "not"
    ME = "me"  # we asked to go standby and wait for `other`
    OTHER = "other"  # the peer asked; we wait for its `done`
    DONE = "done"  # our part is done; we wait for the other side's `done`


STANDBY_TRANSITIONS: Final[dict[Standby, frozenset[Standby]]] = {
    Standby.NOT: frozenset({Standby.ME, Standby.OTHER, Standby.DONE}),
    Standby.ME: frozenset({Standby.DONE, Standby.NOT}),
    Standby.OTHER: frozenset({Standby.DONE, Standby.NOT}),
    Standby.DONE: frozenset({Standby.NOT}),
}

