"""sd_notify for systemd's Type=notify: readiness, status, reload, stop, watchdog.

A thin adapter over systemd-python's `daemon.notify`; without NOTIFY_SOCKET
(not started by systemd) every call is a no-op.  The watchdog interval comes
from WATCHDOG_USEC (and WATCHDOG_PID, when set, must be ours); the daemon
feeds it from its single timer, so a wedged event loop stops feeding it and
systemd restarts hbd.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.watchdog_interval: float | None = None
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if self.enabled and usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            # Feed at half the interval, as sd_watchdog_enabled(3) recommends.
            self.watchdog_interval = int(usec) / 1e6 / 2
        self._status = ""

    def _send(self, text: str) -> None:
        if not self.enabled:
            return
        try:
            from systemd import daemon

            daemon.notify(text)
        except (OSError, ImportError) as err:
            log.debug("sd_notify failed: %s", err)

    def ready(self) -> None:
        self._send("READY=1")

    def reloading(self) -> None:
        self._send("RELOADING=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def status(self, text: str) -> None:
        text = " ".join(text.split())  # one line
        if text != self._status:
            self._status = text
            self._send(f"STATUS={text}")

    def errno(self, number: int) -> None:
        self._send(f"ERRNO={number}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")
