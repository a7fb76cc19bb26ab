"""The front ends hbd serves beside D-Bus: Heartbeat's tools and Prometheus.

Heartbeat's FIFO (`hb_standby`, `hb_takeover`), its client API socket
(`cl_status`, ipfail and other named clients), ha.cf's `respawn` programs, and
the metrics outputs (hbd.conf `metrics_listen`/`metrics_textfile`).  A part of
`hbd.service.ServiceBase` (a mixin kept apart for size): it uses the service's
configuration, loop and commands and holds the adapters' handles.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, ClassVar

from hbd.core.config import ClusterConfig
from hbd.core.fifomsg import FifoCommand
from hbd.errors import HbdError

if TYPE_CHECKING:
    from hbd.control import Snapshot
    from hbd.core.telemetry import Telemetry
    from hbd.looplag import LoopLag
    from hbd.service import Options

log = logging.getLogger("hbd.service")


class FrontEnds:
    """FIFO, client API, respawned clients and metrics of a running service."""

    # provided by ServiceBase
    options: Options
    config: ClusterConfig
    telemetry: Telemetry
    loop_lag: LoopLag
    _loop: asyncio.AbstractEventLoop | None
    _stopping: bool

    def __init__(self) -> None:
        self.fifo: Any = None  # hbd.fifo.HeartbeatFifo: Heartbeat's scripts' requests
        self.api: Any = None  # hbd.apiserver.ApiServer: Heartbeat's client API (cl_status)
        self.respawner: Any = None  # hbd.respawn.Respawner: ha.cf's `respawn` programs
        # Prometheus outputs (hbd.metricsloop.MetricsLoop): only while hbd.conf asks for them
        self.metrics: Any = None

    def snapshot(self) -> Snapshot:
        raise NotImplementedError

    def _command(self, method: str, *args: str) -> None:
        raise NotImplementedError

    def _start_fifo(self) -> None:
        """Read Heartbeat's FIFO, so hb_standby and hb_takeover work unchanged."""
        if not self.options.heartbeat_dir:
            return
        from hbd.fifo import HeartbeatFifo

        assert self._loop is not None
        fifo = HeartbeatFifo(self.options.heartbeat_dir, self._fifo_command)
        try:
            fifo.open(self._loop)
        except OSError as err:
            log.error("cannot open Heartbeat's FIFO %s (%s): hb_standby and hb_takeover "
                      "will not work; hbctl does", fifo.path, err.strerror or err)
            return
        self.fifo = fifo

    def _stop_fifo(self) -> None:
        if self.fifo is not None:
            self.fifo.close()
            self.fifo = None

    async def _start_api(self) -> None:
        """Serve Heartbeat's client API, so cl_status works unchanged."""
        if not self.options.api_socket:
            return
        from hbd.apiserver import ApiServer, build_view, resolve_apiauth

        table = await asyncio.to_thread(resolve_apiauth, self.config)  # NSS may block
        server = ApiServer(self.options.api_socket,
                           lambda: build_view(self.snapshot(), self.config, self._RELAYS),
                           table, self)
        try:
            await server.start()
        except OSError as err:
            log.error("cannot serve Heartbeat's client API on %s (%s): cl_status will not "
                      "work; hbctl does", server.path, err.strerror or err)
            return
        self.api = server

    # --- Heartbeat's named API clients (hbd.apiserver.ClientEvents) -------------------

    _RELAYS: ClassVar[bool] = False  # the stack carries clients' messages to its peers

    def clients_changed(self, named: frozenset[str]) -> None:
        """The named API clients signed on here changed."""

    def client_status(self, client: str, joined: bool, reason: str, generation: int) -> None:
        """A named client signed on or off here (a stack may tell its peers)."""

    def client_message(self, client: str, fields: list[tuple[str, str]],
                       generation: int) -> str | None:
        return "this cluster stack relays no API client messages"

    def client_query(self, fields: list[tuple[str, str]]) -> str | None:
        """A client's question for a peer (clientstatus of a remote client); the
        refusal's reason, or None."""
        return None

    def _start_respawn(self) -> None:
        """ha.cf's `respawn` programs, once the API socket they sign on to is open."""
        hacf = self.config.hacf
        if not hacf.respawn:
            return
        from hbd.respawn import Respawner, client_env

        self.respawner = Respawner(client_env(self.options.node, hacf.logfacility,
                                              hacf.logfile, hacf.debugfile, hacf.debug_level),
                                   self._respawn_ended)
        self.respawner.start(hacf.respawn)

    def _respawn_ended(self, entry: Any) -> None:
        """A `respawn` line's program will not be started again until a reload."""
        log.error("respawn (ha.cf line %d): \"%s\" is not restarted any more; a reload "
                  "(systemctl reload hbd) tries it again", entry.line, entry.command)

    async def _stop_respawn(self) -> None:
        if self.respawner is not None:
            await self.respawner.stop()

    async def _stop_api(self) -> None:
        if self.api is not None:
            await self.api.stop()
            self.api = None

    def _fifo_command(self, request: FifoCommand) -> None:
        """hb_standby / hb_takeover through the FIFO: as the same D-Bus command would."""
        if self._stopping:
            log.warning("%s [%s] ignored: hbd is stopping", request.tool, request.scope)
            return
        try:
            self._command(request.command, request.scope)
        except HbdError as err:
            log.error("%s [%s] refused: %s", request.tool, request.scope, err)

    # --- Prometheus metrics (hbd.metricsloop; the library is loaded only when asked for) ---

    async def _configure_metrics(self, config: ClusterConfig) -> None:
        hbd = config.hbd
        if self.metrics is None and hbd.metrics_listen is None and not hbd.metrics_textfile:
            return
        assert self._loop is not None
        try:
            from hbd.metricsloop import MetricsLoop
            from hbd.metricsserve import MetricsSettings
        except ImportError as err:
            log.error("metrics asked for in hbd.conf, but %s: install prometheus-client "
                      "(Debian: python3-prometheus-client)", err)
            return
        if self.metrics is None:
            self.metrics = MetricsLoop(self._loop, self._metrics_view)
        try:
            await self.metrics.configure(MetricsSettings.from_conf(hbd))
        except Exception:  # the metrics must never fail a start or a reload
            log.exception("could not configure the metrics")

    def _metrics_view(self) -> Any:
        """The metrics' immutable view (hbd.metrics.MetricsView), built on the loop."""
        from hbd import __version__
        from hbd.metrics import MetricsView, fold_bad, lag_figures

        sent, received, bad = self._metrics_traffic()
        lag, lag_max = lag_figures(self.loop_lag)
        return MetricsView(__version__, self.snapshot(), self.telemetry.counters(),
                           heartbeats_sent=sent, heartbeats_received=received,
                           bad_packets=fold_bad(bad), loop_lag=lag, loop_lag_max=lag_max)

    def _metrics_traffic(self) -> tuple[tuple[tuple[str, int], ...],
                                        tuple[tuple[tuple[str, str], int], ...],
                                        tuple[tuple[str, int], ...]]:
        """Heartbeats sent per link, received per (node, link), bad packets by reason
        text: the stacks with links of their own say."""
        return (), (), ()
