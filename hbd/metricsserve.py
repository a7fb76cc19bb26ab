"""Serving the metrics: an HTTP endpoint and a node_exporter textfile, both off the loop.

The event loop only calls `Exporter.publish(view)` with an immutable
`hbd.metrics.MetricsView`; everything else runs in threads:

- the HTTP server (`metrics_listen`): one thread accepting, one per
  connection, at most MAX_CONNECTIONS at a time (more are closed at once),
  each with a socket timeout; every scrape is answered from bytes rendered
  once per view (`_Rendered`), so scraping costs no rendering and never
  touches engine state;
- the textfile writer (`metrics_textfile`): on each new view it renders and
  writes `PATH`'s content to a temporary file in the same directory, fsyncs
  it and renames it over PATH, so node_exporter never reads half a file.
  That directory is often writable by node_exporter's user: the temporary
  file is created anew (O_EXCL, O_NOFOLLOW), so a link planted under its
  name never makes root write through it.

The GIL is shared with the loop: keeping each scrape to a cached write keeps
what a flood of scrapes takes from the loop small (tests/test_metrics_netns.py
measures 100 scrapes a second at keepalive 100 ms).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hbd.core.config import HbdConf
from hbd.metrics import MetricsView, render

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16  # scrapes served at once; more are refused (closed)
SOCKET_TIMEOUT = 5.0  # seconds a client may take to send its request or read the answer
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class MetricsSettings:
    listen: tuple[str, int] | None  # (host, port) or None: no HTTP endpoint
    textfile: str  # "" for none
    interval: float  # seconds between views

    @classmethod
    def from_conf(cls, conf: HbdConf) -> MetricsSettings:
        return cls(conf.metrics_listen, conf.metrics_textfile, conf.metrics_interval_ms / 1000)

    @property
    def enabled(self) -> bool:
        return self.listen is not None or bool(self.textfile)


class _Rendered:
    """The latest view and its text, rendered at most once per view (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._view: MetricsView | None = None
        self._rendered_for: MetricsView | None = None
        self._bytes = b""

    def set(self, view: MetricsView) -> None:
        self._view = view  # one reference assignment: atomic

    def get(self) -> bytes | None:
        view = self._view
        return None if view is None else self.bytes_for(view)

    def bytes_for(self, view: MetricsView) -> bytes:
        """The text of `view`: rendered by the first thread that asks, then cached."""
        with self._lock:
            if self._rendered_for is not view:
                self._bytes = render(view)
                self._rendered_for = view
            return self._bytes


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = SOCKET_TIMEOUT
    protocol_version = "HTTP/1.0"  # one scrape per connection: nothing lingers

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in ("/metrics", "/"):
            self.send_error(404, "only /metrics here")
            return
        body = self.server.rendered.get()
        if body is None:
            self.send_error(503, "hbd is starting")
            return
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape is not news; errors surface as Prometheus' `up`


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = MAX_CONNECTIONS

    def __init__(self, host: str, port: int, rendered: _Rendered) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.rendered = rendered
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # hbd restarting must rebind at once; ThreadingHTTPServer's own server_bind
        # would also resolve our name (getfqdn: DNS, a blocking call we do not need)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()[:2]

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: refused, never queued behind the others
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _TextfileWriter:
    """Writes each new view to PATH atomically, from its own thread."""

    def __init__(self, path: str, rendered: _Rendered) -> None:
        self.path = path
        self._rendered = rendered  # shared with the HTTP server: one rendering per view
        self._wake = threading.Condition()
        self._view: MetricsView | None = None
        self._written: MetricsView | None = None
        self._closing = False
        self._failed = ""
        self._thread = threading.Thread(target=self._run, name="hbd-metrics-textfile",
                                        daemon=True)
        self._thread.start()

    def publish(self, view: MetricsView) -> None:
        with self._wake:
            self._view = view
            self._wake.notify()

    def close(self) -> None:
        """Stop after writing the latest view (blocking: call from a thread)."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._view is self._written and not self._closing:
                    self._wake.wait()
                view, closing = self._view, self._closing
            if view is not None and view is not self._written:
                self._write(view)
                self._written = view
            if closing:
                return

    def _write(self, view: MetricsView) -> None:
        directory, name = os.path.split(self.path)
        temp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
        try:
            data = self._rendered.bytes_for(view)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)  # a leftover, or a planted symlink: removed, not followed
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, self.path)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            if str(err) != self._failed:  # once per kind of failure, not every interval
                log.error("cannot write the metrics textfile %s: %s", self.path, err)
            self._failed = str(err)
            return
        if self._failed:
            log.info("metrics textfile %s written again", self.path)
        self._failed = ""


class Exporter:
    """The metrics' outputs for the settings given; publish() is all the loop calls."""

    def __init__(self) -> None:
        self.settings = MetricsSettings(None, "", 1.0)
        self._rendered = _Rendered()
        self._server: _Server | None = None
        self._server_thread: threading.Thread | None = None
        self._textfile: _TextfileWriter | None = None
        self._latest: MetricsView | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the HTTP endpoint listens (the port the kernel chose for port 0)."""
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def configure(self, settings: MetricsSettings) -> list[Any]:
        """Apply settings; returns what must be closed off the loop (old outputs).

        Binding a listening socket does not block; a failure to bind is logged
        (the cluster never waits for its metrics).  The new endpoint is bound
        before the old one closes, so a reload to an address that cannot be
        bound keeps serving on the old one (and the next reload tries again);
        only a move on the same port gives the old one up first.
        """
        old = self.settings
        self.settings = settings
        retired: list[Any] = []
        if settings.listen != old.listen or (settings.listen and self._server is None):
            previous = self._server
            if previous is not None and (settings.listen is None
                                         or settings.listen[1] == self._port()):
                retired.append(previous)  # the same port: the old one must let go first
                self._server = self._server_thread = previous = None
            server = self._bind(*settings.listen) if settings.listen is not None else None
            if previous is not None and server is None:
                self.settings = replace(settings, listen=old.listen)  # unchanged: retried
                host, port = previous.server_address[:2]
                log.error("metrics still served on %s", _shown(str(host), int(port)))
            elif previous is not None:
                retired.append(previous)
            if server is not None:
                self._serve(server)
        if settings.textfile != old.textfile:
            if self._textfile is not None:
                retired.append(self._textfile)
                self._textfile = None
            if settings.textfile:
                self._textfile = _TextfileWriter(settings.textfile, self._rendered)
                log.info("metrics written to %s every %.1f s when they change",
                         settings.textfile, settings.interval)
                if self._latest is not None:
                    self._textfile.publish(self._latest)
        return retired

    def _port(self) -> int | None:
        address = self.address
        return None if address is None else address[1]

    def _bind(self, host: str, port: int) -> _Server | None:
        try:
            return _Server(host, port, self._rendered)
        except OSError as err:
            log.error("cannot serve metrics on %s: %s", _shown(host, port),
                      err.strerror or err)
            return None

    def _serve(self, server: _Server) -> None:
        self._server = server
        self._server_thread = threading.Thread(target=server.serve_forever,
                                               kwargs={"poll_interval": 0.5},
                                               name="hbd-metrics-http", daemon=True)
        self._server_thread.start()
        address = self.address
        assert address is not None
        log.info("metrics served on http://%s/metrics", _shown(*address))

    def publish(self, view: MetricsView) -> None:
        """On the loop: hand over a new view (no rendering, no I/O here)."""
        self._latest = view
        self._rendered.set(view)
        if self._textfile is not None:
            self._textfile.publish(view)

    def close(self) -> list[Any]:
        return self.configure(MetricsSettings(None, "", self.settings.interval))


def retire(outputs: list[Any]) -> None:
    """Stop outputs that configure() replaced (blocking: call from a thread)."""
    for output in outputs:
        if isinstance(output, _Server):
            output.shutdown()
            output.server_close()
        else:
            output.close()


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
