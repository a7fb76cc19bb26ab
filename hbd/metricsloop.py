"""The event loop's side of the metrics: build a view now and then, hand it over.

Imported by hbd.service only when hbd.conf asks for metrics (it loads
prometheus_client through hbd.metrics).  A view is built at most every
`metrics_interval`, and as soon as that allows after something admins see
changed (`state_changed`, from the service's publishing); building one
copies a snapshot and a few counters, which is all the loop ever spends on
metrics.  Rendering and serving are hbd.metricsserve's, in threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from hbd.metrics import MetricsView
from hbd.metricsserve import Exporter, MetricsSettings, retire

log = logging.getLogger(__name__)


class MetricsLoop:
    def __init__(self, loop: asyncio.AbstractEventLoop,
                 build: Callable[[], MetricsView]) -> None:
        self._loop = loop
        self._build = build
        self.exporter = Exporter()
        self._handle: asyncio.TimerHandle | None = None
        self._built_at = float("-inf")
        self._last: MetricsView | None = None

    @property
    def settings(self) -> MetricsSettings:
        return self.exporter.settings

    async def configure(self, settings: MetricsSettings) -> None:
        """Start, change or stop the outputs (a reload); old ones stop in a thread."""
        retired = self.exporter.configure(settings)
        if retired:
            await asyncio.to_thread(retire, retired)
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if settings.enabled:
            self._tick()

    def state_changed(self) -> None:
        """Something admins see changed: a view as soon as the interval allows."""
        if not self.settings.enabled:
            return
        due = self._built_at + self.settings.interval
        if self._loop.time() >= due:
            self._tick()

    def _tick(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_later(self.settings.interval, self._tick)
        self._built_at = self._loop.time()
        try:
            view = self._build()
        except Exception:  # metrics must never take the daemon down
            log.exception("could not build the metrics view")
            return
        if view != self._last:
            self._last = view
            self.exporter.publish(view)

    async def close(self) -> None:
        """Publish the last view (the textfile shows the groups stopped), then stop."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self.settings.enabled:
            try:
                self.exporter.publish(self._build())
            except Exception:
                log.exception("could not build the metrics view")
        retired: list[Any] = self.exporter.close()
        await asyncio.to_thread(retire, retired)
