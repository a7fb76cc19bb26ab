"""Log handlers: the journal under systemd, stderr otherwise.

Only the daemon's entry point calls `setup()`; every other module just uses
`logging.getLogger(__name__)`.
"""

from __future__ import annotations

import logging
import os
import sys

STDERR_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"
_installed: list[logging.Handler] = []  # handlers setup() added, so a second call replaces them


def under_systemd() -> bool:
    """True when systemd started us with the journal as stdout/stderr."""
    return bool(os.environ.get("JOURNAL_STREAM")) or bool(os.environ.get("INVOCATION_ID"))


def setup(*, debug: bool = False, to_journal: bool | None = None) -> None:
    """Install hbd's handlers on the root logger (idempotent)."""
    root = logging.getLogger()
    while _installed:
        root.removeHandler(_installed.pop())
    if to_journal is None:
        to_journal = under_systemd()
    new: logging.Handler
    if to_journal:
        from systemd.journal import JournalHandler

        new = JournalHandler(SYSLOG_IDENTIFIER="hbd")
        new.setFormatter(logging.Formatter("%(message)s"))
    else:
        new = logging.StreamHandler(sys.stderr)
        new.setFormatter(logging.Formatter(STDERR_FORMAT))
    _installed.append(new)
    root.addHandler(new)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
