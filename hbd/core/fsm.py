"""A small named state machine: an enum of states and a table of legal moves.

Node, link and resource-group state in hbd all use this.  A move the table
does not allow raises TransitionError and leaves the state unchanged; a
legal move is logged `old -> new` at debug level (the engine reports the
interesting ones as events).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import Generic, TypeVar

from hbd.errors import TransitionError

log = logging.getLogger(__name__)

S = TypeVar("S", bound=enum.Enum)


class StateMachine(Generic[S]):
    """Holds one state; `move()` enforces the transition table."""

    __slots__ = ("_state", "name", "table")

    def __init__(self, name: str, initial: S, table: Mapping[S, frozenset[S]]) -> None:
        self.name = name
        self.table = table
        self._state = initial

    @property
    def state(self) -> S:
        return self._state

    def can_move(self, new: S) -> bool:
        return new in self.table.get(self._state, frozenset())

    def move(self, new: S) -> S:
        """Move to `new`; return the old state.

        Raises TransitionError (state unchanged) when the table forbids it.
        Moving to the current state is allowed only if the table lists it.
        """
        old = self._state
        if not self.can_move(new):
            raise TransitionError(f"{self.name}: illegal move {old.value} -> {new.value}")
        self._state = new
        log.debug("%s: %s -> %s", self.name, old.value, new.value)
        return old

    def __repr__(self) -> str:
        return f"StateMachine({self.name!r}, {self._state.value})"
