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
  formatted as Heartbeat's are (`hbd: [pid]: info: ...`), and to stderr
  when it is a terminal.
* `logfile` and `debugfile` get Heartbeat's file format; debugfile also gets
  debug lines.  Files are reopened after logrotate moves them.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import sys
from typing import Any

STDERR_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"
_installed: list[logging.Handler] = []  # handlers we added, so a reconfigure replaces them

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
        if record.exc_info and record.levelno >= logging.ERROR:
            text += " (" + str(record.exc_info[1]) + ")"
        if self.with_time:
            return f"{self.formatTime(record, self.datefmt)} {self.host} hbd: {text}"
        return text


class JournalSink(logging.Handler):
    """Structured journal entries with only the fields that mean something."""

    def __init__(self, facility: int | None) -> None:
        super().__init__()
        from systemd import journal

        self._send = journal.send
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
            message = f"{level_word(record.levelno)}: {record.getMessage()}"
            self._send(message, **fields)
        except Exception:  # the journal going away must never break the daemon
            self.handleError(record)


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


def _syslog_sink(facility: int) -> logging.Handler | None:
    try:
        handler = logging.handlers.SysLogHandler(address="/dev/log", facility=facility)
    except OSError as err:
        print(f"hbd: cannot reach the syslog socket /dev/log: {err}", file=sys.stderr)
        return None
    handler.ident = "hbd: "
    handler.setFormatter(_HeartbeatFormat(with_time=False))
    return handler


def _file_sink(path: str, level: int) -> logging.Handler | None:
    try:
        handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    except OSError as err:
        logging.getLogger(__name__).error("cannot open log file %s: %s", path, err)
        return None
    handler.setLevel(level)
    handler.setFormatter(_HeartbeatFormat(with_time=True))
    return handler


def configure(*, debug: bool = False, logfacility: str | None = None,
              logfile: str | None = None, debugfile: str | None = None,
              to_journal: bool | None = None) -> None:
    """Install hbd's handlers on the root logger, replacing any from a previous call."""
    root = logging.getLogger()
    while _installed:
        old = _installed.pop()
        root.removeHandler(old)
        old.close()
    if to_journal is None:
        to_journal = under_systemd()
    facility = FACILITIES.get(logfacility) if logfacility else None
    handlers: list[logging.Handler | None] = []
    if to_journal:
        sink = JournalSink(facility)
        sink.setLevel(logging.DEBUG if debug else logging.INFO)
        handlers.append(sink)
    else:
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(logging.Formatter(STDERR_FORMAT))
        stderr.setLevel(logging.DEBUG if debug else logging.INFO)
        handlers.append(stderr)
        if facility is not None:
            syslog = _syslog_sink(facility)
            if syslog is not None:
                syslog.setLevel(logging.DEBUG if debug else logging.INFO)
            handlers.append(syslog)
    if logfile and logfile != "/dev/null":
        handlers.append(_file_sink(logfile, logging.INFO))
    if debugfile and debugfile != "/dev/null":
        handlers.append(_file_sink(debugfile, logging.DEBUG))
    for handler in handlers:
        if handler is not None:
            _installed.append(handler)
            root.addHandler(handler)
    wants_debug = debug or bool(debugfile and debugfile != "/dev/null")
    root.setLevel(logging.DEBUG if wants_debug else logging.INFO)


def setup(*, debug: bool = False, to_journal: bool | None = None) -> None:
    """Early logging, before the configuration (and its logfacility) is known."""
    configure(debug=debug, to_journal=to_journal)
