"""The Corosync stack's send queue is bounded (issue 16, part 3).

Corosync's flow control (CS_ERR_TRY_AGAIN) makes hbd keep its state messages
in order until they go out.  A corosync that never takes them again must not
make that queue grow without end: past the bound, hbd treats corosync as
lost (stops its groups, reconnects, and sends its whole state again on the
new connection) rather than drop a message, which in an agreed-order
protocol would leave the other members deciding on a history hbd never sent.
Here a stand-in for libcpg that always answers "try again" drives the real
daemon object on a real event loop.
"""

from __future__ import annotations

import asyncio

from hbd import stack_corosync
from hbd.service import Options
from hbd.stack_corosync import CorosyncDaemon
from tests.simnet import make_config


class BusyCpg:
    """libcpg under flow control: every send is refused with CS_ERR_TRY_AGAIN."""

    fd = -1

    def __init__(self) -> None:
        self.attempts = 0
        self.closed = False

    def send(self, payload: bytes) -> bool:
        self.attempts += 1
        return False

    def close(self) -> None:
        self.closed = True


def test_a_full_send_queue_drops_the_connection_instead_of_growing() -> None:
    config = make_config("n1", nodes=("n1", "n2", "n3"), extra="cluster_stack corosync\n")
    options = Options(config_dir="/nonexistent", state_dir="/nonexistent",
                      runtime_dir="/nonexistent", node="n1", dbus=False, debug=False)

    async def scenario() -> tuple[int, bool, bool, bool]:
        daemon = CorosyncDaemon(options, config)
        daemon._loop = asyncio.get_running_loop()
        cpg = BusyCpg()
        daemon.cpg = cpg  # type: ignore[assignment]
        for i in range(5000):  # every state change while corosync refuses them
            daemon._send(b"hbd=1\ntype=state\nnode=n1\nseq=%d\n" % i)
            if daemon.cpg is None:
                break
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        queued = len(daemon._outbox)
        reconnecting = daemon._reconnect_at is not None
        for handle in (daemon._reconnect_at, daemon._send_later, daemon._timer):
            if handle is not None:
                handle.cancel()
        return queued, daemon.cpg is None, cpg.closed, reconnecting

    queued, disconnected, closed, reconnecting = asyncio.run(scenario())
    assert disconnected and closed and reconnecting  # lost: groups stop, hbd reconnects
    assert queued == 0  # the queue went with the connection; the state is re-sent whole
    assert stack_corosync.OUTBOX_LIMIT <= 1000
