"""Where hbd's log lines go: the journal, syslog, Heartbeat-style log files, stderr.

Only the daemon's entry point calls `setup()`/`configure()`; every module
just uses `logging.getLogger(__name__)` (key events carry MESSAGE_ID and
HBD_* fields in `extra=`).

* Under systemd, lines go to the journal as structured entries
  (SYSLOG_IDENTIFIER=hbd, MESSAGE_ID, HBD_NODE/LINK/GROUP/RESOURCE) tagged with
  ha.cf's `logfacility`; journald hands each entry to the syslog daemon once
  (ForwardToSyslog, or rsyslog's imjournal), so writing to /dev/log as well
  would put every line in the journal twice.
* Without systemd (SysV init), lines go to /dev/log with that facility,
  formatted as Heartbeat's are (`hbd: [pid]: info: ...`), and to stderr.
* `logfile` and `debugfile` get Heartbeat's file format; debugfile also gets
  debug lines.  Files are reopened after logrotate moves them.

Nothing here runs on the event loop but a `put_nowait`: a frozen journald or
rsyslog, a full disk or a stuck terminal would otherwise stall heartbeats.
The root logger has one handler that puts each record on a bounded queue;
one daemon thread (the drainer) owns the sinks above and writes to them.
When the queue is full the record is dropped and counted, and once the
drainer has room again it says so in a line of its own ("N log lines
dropped (log sink stalled)"); `dropped_lines()` keeps the total.  A sink
that fails (ENOSPC, a vanished socket) is reported once to the other sinks,
and again with its count of lost lines when it works again.  `configure()`
hands the new sinks to the drainer, so queued lines go to them, never lost;
at exit the queue is drained for at most `EXIT_FLUSH_SECONDS`.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import logging
import logging.handlers
import os
import queue
import socket
import sys
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from hbd.journalsend import JournalSocket

STDERR_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"
QUEUE_LIMIT = 10_000  # records; ~30 s of a busy --debug daemon, a few MB at most
EXIT_FLUSH_SECONDS = 2.0  # the last lines ("hbd stopped") are worth that much, not more
# Outside systemd, also send the journal's structured entries to this socket (journald's
# native protocol): the demo's nodes have no journald, the demo catches them for
# `hbctl history`.
JOURNAL_SOCKET_ENV = "HBD_JOURNAL_SOCKET"

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}
# Heartbeat's level words (cl_log.c), kept so log watchers written for it still match
LEVEL_WORDS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "WARN",
               logging.ERROR: "ERROR", logging.CRITICAL: "CRIT"}


def level_word(levelno: int) -> str:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return LEVEL_WORDS[level]
    return "debug"


class _HeartbeatFormat(logging.Formatter):
    """`hbd: [pid]: info: text`, optionally after a syslog-style time and host."""

    def __init__(self, with_time: bool) -> None:
        super().__init__(datefmt="%b %d %H:%M:%S")
        self.with_time = with_time
        self.host = socket.gethostname().split(".")[0]

    def format(self, record: logging.LogRecord) -> str:
        text = f"[{record.process}]: {level_word(record.levelno)}: {record.getMessage()}"
        short = getattr(record, "exc_short", None)  # set by _QueueHandler.emit
        if short and record.levelno >= logging.ERROR:
            text += f" ({short})"
        if self.with_time:
            return f"{self.formatTime(record, self.datefmt)} {self.host} hbd: {text}"
        return text


class _Sink(logging.Handler):
    """A destination the drainer writes to; only the drainer thread touches it.

    A failed write is counted here instead of printing a traceback to stderr
    (itself possibly the stalled journal stream): the drainer reports the
    failure once through the other sinks.  `logging.shutdown()` at exit runs
    in the main thread and would wait on the lock of a sink the drainer is
    stuck in, so outside the drainer locking, flushing and closing do nothing
    (the drainer flushes after every line and closes the sinks it retires).
    """

    what = "a log sink"  # for the report: "the journal", "syslog", the file's path
    failing: str | None = None  # why the last write failed, while it keeps failing
    lost = 0  # lines this sink could not take since it started failing

    def handleError(self, record: logging.LogRecord) -> None:
        self.failing = str(sys.exc_info()[1]) or "write failed"
        self.lost += 1

    def acquire(self) -> None:
        if _owned():
            super().acquire()

    def release(self) -> None:
        if _owned():
            super().release()

    def flush(self) -> None:
        if _owned():
            super().flush()

    def close(self) -> None:
        if _owned():
            super().close()


class JournalSink(_Sink):
    """Structured journal entries with only the fields that mean something."""

    def __init__(self, facility: int | None, path: str = "") -> None:
        super().__init__()
        self.what = f"the journal socket {path}" if path else "the journal"
        # not systemd-python's journal.send: it holds the GIL while journald makes it wait
        self._journal = JournalSocket(path) if path else JournalSocket()
        self.facility = facility

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {
                "PRIORITY": str(_priority(record.levelno)),
                "SYSLOG_IDENTIFIER": "hbd",
                "CODE_FILE": record.pathname, "CODE_LINE": record.lineno,
                "CODE_FUNC": record.funcName, "LOGGER": record.name,
            }
            if self.facility is not None:
                fields["SYSLOG_FACILITY"] = str(self.facility)
            for key, value in record.__dict__.items():
                if key == "MESSAGE_ID" or key.startswith("HBD_"):
                    fields[key] = str(value)
            fields["MESSAGE"] = f"{level_word(record.levelno)}: {record.getMessage()}"
            self._journal.send(fields)
        except Exception:  # the journal going away must never break the daemon
            self.handleError(record)

    def close(self) -> None:
        if _owned():
            self._journal.close()
        super().close()


def _priority(levelno: int) -> int:
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def under_systemd() -> bool:
    """True when systemd started us with the journal as stdout/stderr."""
    return bool(os.environ.get("JOURNAL_STREAM")) or bool(os.environ.get("INVOCATION_ID"))


class _StderrSink(_Sink, logging.StreamHandler):  # type: ignore[type-arg]
    what = "stderr"


class _SyslogSink(_Sink, logging.handlers.SysLogHandler):
    what = "syslog (/dev/log)"


class _FileSink(_Sink, logging.handlers.WatchedFileHandler):
    pass


@dataclass(frozen=True)
class Want:
    """One sink configure() asks for.  The drainer opens it, off the loop, or keeps the
    one it has with the same `key` (a reload must not lose a failing sink's count)."""

    kind: str  # "journal", "stderr", "syslog" or "file"
    level: int
    target: str = ""  # the file's path; a journal's socket ("": journald's)
    facility: int | None = None  # syslog facility, also tagged on journal entries

    @property
    def key(self) -> Hashable:
        return (self.kind, self.target, self.facility)

    def make(self) -> _Sink:
        """Raises OSError (no /dev/log)."""
        sink: _Sink
        if self.kind == "journal":
            sink = JournalSink(self.facility, self.target)
        elif self.kind == "stderr":
            sink = _StderrSink(sys.stderr)
            sink.setFormatter(logging.Formatter(STDERR_FORMAT))
        elif self.kind == "syslog":
            assert self.facility is not None
            syslog = _SyslogSink(address="/dev/log", facility=self.facility)
            syslog.ident = "hbd: "
            syslog.setFormatter(_HeartbeatFormat(with_time=False))
            sink = syslog
        else:
            # delay: opened at its first line; an open that fails is reported like
            # any failing sink
            sink = _FileSink(self.target, encoding="utf-8", delay=True)
            sink.what = self.target
            sink.setFormatter(_HeartbeatFormat(with_time=True))
        return sink


class SinkSpec(Protocol):
    """What the drainer needs of a Want (tests hand it their own sinks this way)."""

    @property
    def key(self) -> Hashable: ...

    @property
    def level(self) -> int: ...

    def make(self) -> _Sink: ...


# --- the queue and its drainer ----------------------------------------------------------


@dataclass
class _Flush:
    """A marker: the drainer sets `done` once every line queued before it is written."""

    done: threading.Event


class _Pipeline:
    """The bounded queue, the drainer thread and the sinks it owns."""

    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self.limit = limit
        self.queue: queue.Queue[logging.LogRecord | _Flush] = queue.Queue(limit)
        self.sinks: dict[Hashable, _Sink] = {}  # by their Want's key, in order
        self._wanted: list[SinkSpec] | None = None  # handed over by configure()
        self._lock = threading.Lock()  # guards the hand-over and the counters, never I/O
        self.thread: _Drainer | None = None
        self.dropped = 0  # every line the full queue refused, since the start
        self._unreported = 0  # of those, not yet reported by a line of their own
        self.unheard = 0  # lines logged by the sinks themselves, inside the drainer

    # --- any thread (the event loop above all): never waits on I/O

    def put(self, record: logging.LogRecord) -> None:
        if self.thread is None:
            self.start()
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.count_dropped()

    def count_dropped(self) -> None:
        with self._lock:
            self.dropped += 1
            self._unreported += 1

    def use(self, wanted: list[SinkSpec]) -> None:
        """Make these the destinations; the drainer opens and retires sinks itself."""
        with self._lock:
            self._wanted = wanted
        if self.thread is None:
            self.start()
        else:  # wake it even when nothing else is logged
            self.flush(timeout=0)

    def flush(self, timeout: float) -> bool:
        """Wait at most `timeout` s until every line queued so far is written."""
        marker = _Flush(threading.Event())
        try:
            self.queue.put(marker, block=timeout > 0, timeout=timeout if timeout > 0 else None)
        except queue.Full:
            return False
        return marker.done.wait(timeout)

    def start(self) -> None:
        self.thread = _Drainer(self._drain)
        self.thread.start()

    def after_fork(self) -> None:
        """In a forked child (--daemonize): the drainer did not come along; its queue's
        lock may be held by it forever.  Keep the queued lines in a fresh queue."""
        pending = list(self.queue.queue)
        self.queue = queue.Queue(self.limit)
        for item in pending:
            if isinstance(item, logging.LogRecord):
                self.queue.put_nowait(item)
        self._lock = threading.Lock()
        self.thread = None

    # --- the drainer thread: the only one that touches a sink

    def _drain(self) -> None:
        while True:
            item = self.queue.get()
            try:
                self._step(item)
            except Exception:  # a bug here must not silence the daemon for good
                self.unheard += 1
                if isinstance(item, _Flush):
                    item.done.set()

    def _step(self, item: logging.LogRecord | _Flush) -> None:
        self._take_new_sinks()
        if isinstance(item, _Flush):
            item.done.set()
            return
        self._deliver(item)
        if self._unreported and self.queue.qsize() < self.limit // 2:
            with self._lock:
                count, self._unreported = self._unreported, 0
            self._deliver(_record(logging.WARNING, "%d log lines dropped (log sink stalled)",
                                  count))

    def _take_new_sinks(self) -> None:
        with self._lock:
            wanted, self._wanted = self._wanted, None
        if wanted is None:
            return
        old, self.sinks = self.sinks, {}
        problems = []
        for want in wanted:
            sink = old.pop(want.key, None)
            if sink is None:
                try:
                    sink = want.make()
                except OSError as err:
                    problems.append(_record(logging.WARNING, "cannot log to %s: %s",
                                            getattr(want, "kind", want.key), err))
                    continue
            sink.setLevel(want.level)
            self.sinks[want.key] = sink
        for sink in old.values():
            # e.g. ENOSPC flushing a file's buffer: every later line goes through this
            # thread, it must not die of a retired sink
            with contextlib.suppress(Exception):
                sink.close()
        for problem in problems:
            self._deliver(problem)

    def _deliver(self, record: logging.LogRecord) -> None:
        for sink in self.sinks.values():
            if record.levelno < sink.level:
                continue
            was_failing = sink.failing
            lost = sink.lost
            try:
                sink.emit(record)  # not handle(): no lock to share, no filters on sinks
            except Exception:  # emit() catches its own; this thread must live regardless
                sink.handleError(record)
            if sink.lost > lost and was_failing is None:
                self._tell_others(sink, _record(
                    logging.ERROR, "log sink %s failing (%s): its lines are lost until "
                    "it works again", sink.what, sink.failing))
            elif sink.lost == lost and was_failing is not None:
                self._tell_others(sink, _record(
                    logging.WARNING, "log sink %s works again; %d line(s) were lost",
                    sink.what, sink.lost))
                sink.failing, sink.lost = None, 0

    def _tell_others(self, failed: _Sink, record: logging.LogRecord) -> None:
        for sink in self.sinks.values():
            if sink is not failed and record.levelno >= sink.level:
                sink.emit(record)


class _Drainer(threading.Thread):
    def __init__(self, target: Callable[[], None]) -> None:
        super().__init__(target=target, name="hbd-log", daemon=True)


def _owned() -> bool:
    """True in a drainer thread, the only one that may touch a sink."""
    return isinstance(threading.current_thread(), _Drainer)


def _record(level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(__name__, level, __file__, 0, msg, args, None)


class _QueueHandler(logging.Handler):
    """The root logger's only handler: hands records to the drainer, never waits."""

    def __init__(self, pipeline: _Pipeline) -> None:
        super().__init__()
        self.pipeline = pipeline

    def emit(self, record: logging.LogRecord) -> None:
        if _owned():
            # a sink (or a library under it) logging from inside the drainer: feeding it
            # back would loop for as long as the sink keeps failing (its failures are
            # reported by the drainer itself)
            self.pipeline.unheard += 1  # only the drainer thread writes it
            return
        try:
            message = record.getMessage()
        except Exception as err:
            # a bad format string: any handler formatting it would print to stderr (here
            # and now, on the loop), so the record itself is mended for all of them
            record.msg = f"unformattable log line {record.msg!r} {record.args!r}: {err}"
            record.args, record.exc_info = None, None
            message = record.msg
        # A copy, rendered now (its arguments may change before the drainer gets to
        # them); other handlers on the way up (pytest's caplog, a library's) still see
        # the record as it was logged, exc_info included.
        queued = copy.copy(record)
        queued.msg, queued.args = message, None
        if queued.exc_info:
            queued.exc_text = logging.Formatter().formatException(queued.exc_info)
            queued.__dict__["exc_short"] = str(queued.exc_info[1])
            queued.exc_info = None
        self.pipeline.put(queued)


_pipeline = _Pipeline()
_handler = _QueueHandler(_pipeline)
os.register_at_fork(after_in_child=_pipeline.after_fork)


def dropped_lines() -> int:
    """Lines dropped because the queue was full (a stalled sink), since the start."""
    return _pipeline.dropped


def flush(timeout: float = EXIT_FLUSH_SECONDS) -> bool:
    """Wait at most `timeout` s for the queued lines to be written; True if they were."""
    if _pipeline.thread is None:
        return True
    return _pipeline.flush(timeout)


atexit.register(flush)  # registered after logging's own shutdown hook, so runs before it


def configure(*, debug: bool = False, logfacility: str | None = None,
              logfile: str | None = None, debugfile: str | None = None,
              to_journal: bool | None = None) -> None:
    """Choose hbd's sinks, replacing those of a previous call (queued lines go to the new).

    Nothing is opened here (this runs on the loop at a reload): the drainer does it.
    """
    if to_journal is None:
        to_journal = under_systemd()
    facility = FACILITIES.get(logfacility) if logfacility else None
    level = logging.DEBUG if debug else logging.INFO
    wanted: list[SinkSpec] = []
    if to_journal:
        wanted.append(Want("journal", level, facility=facility))
    else:
        wanted.append(Want("stderr", level))
        if facility is not None:
            wanted.append(Want("syslog", level, facility=facility))
        if os.environ.get(JOURNAL_SOCKET_ENV):  # the demo's stand-in for journald
            wanted.append(Want("journal", level, target=os.environ[JOURNAL_SOCKET_ENV],
                               facility=facility))
    if logfile and logfile != "/dev/null":
        wanted.append(Want("file", logging.INFO, target=logfile))
    if debugfile and debugfile != "/dev/null":
        wanted.append(Want("file", logging.DEBUG, target=debugfile))
    root = logging.getLogger()
    if _handler not in root.handlers:
        root.addHandler(_handler)
        logging.captureWarnings(True)  # not printed to stderr: that may be a journal stream
    wants_debug = debug or bool(debugfile and debugfile != "/dev/null")
    root.setLevel(logging.DEBUG if wants_debug else logging.INFO)
    _pipeline.use(wanted)


def setup(*, debug: bool = False, to_journal: bool | None = None) -> None:
    """Early logging, before the configuration (and its logfacility) is known."""
    configure(debug=debug, to_journal=to_journal)
