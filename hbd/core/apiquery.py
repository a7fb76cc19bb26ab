"""A peer's client status query (cl_status clientstatus run on a Heartbeat node).

Heartbeat answers `clientstatus NODE CLIENT` for a remote NODE by asking it
over the wire (t=query-cstatus, cn=CLIENT, from_id=the asking client); the
node answers t=respond-cstatus with cs=online or offline (heartbeat.c:
HBDoMsg_T_QCSTATUS), which is routed back to the asking client by to_id.
Without an answer the asking cl_status times out.  `named_clients` is set by
the daemon: the named API clients signed on here (hbd.apiserver).
"""

from __future__ import annotations

from collections.abc import Mapping

from hbd.core.actions import Action
from hbd.core.engine import Engine, EngineComponent, Handler, Received

MAX_ID = 64  # a client name or id longer than this is not one Heartbeat would send


class ClientStatusResponder(EngineComponent):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.named_clients: frozenset[str] = frozenset()

    def message_handlers(self) -> Mapping[str, Handler]:
        return {"query-cstatus": self._on_query}

    def _on_query(self, rx: Received, now: float, wall: float) -> list[Action]:
        client = rx.message.get("cn")
        asker = rx.message.get("from_id")
        if not client or not asker or len(client) > MAX_ID or len(asker) > MAX_ID:
            return []
        status = "online" if client in self.named_clients else "offline"
        return [self.engine.send("respond-cstatus", [("result", "OK"), ("cn", client),
                                                      ("to_id", asker), ("cs", status)],
                                 wall, dest=rx.peer.name)]
