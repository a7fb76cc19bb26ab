"""What the demo prints: permanent lines, and a small status view that stays current.

On a terminal that understands ANSI escapes, the status view is a block of
lines at the bottom that is redrawn in place (cursor up, clear, print) and
permanent lines scroll above it.  Anywhere else (a pipe, CI, TERM=dumb) the
view is a plain line printed only when what it says changes, so a log of
the run reads top to bottom.  No curses: nothing to restore if the demo dies.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

CSI = "\x1b["


def ansi_capable(stream: TextIO) -> bool:
    term = os.environ.get("TERM", "")
    return stream.isatty() and term not in ("", "dumb") and "NO_COLOR" not in os.environ


class Screen:
    def __init__(self, live: bool, stream: TextIO = sys.stdout) -> None:
        self.live = live
        self.stream = stream
        self._shown = 0  # lines of the status block currently on screen
        self._block: list[str] = []
        self._plain_last = ""

    def _erase(self) -> None:
        if self._shown:
            # to the start of the block's first line, then clear to the end of the screen
            self.stream.write(f"{CSI}{self._shown}F{CSI}J")
            self._shown = 0

    def _draw(self) -> None:
        for line in self._block:
            self.stream.write(line + "\n")
        self._shown = len(self._block)

    def say(self, text: str = "") -> None:
        """Permanent output (one or more lines)."""
        if self.live:
            self._erase()
            self.stream.write(text + "\n")
            self._draw()
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def bold(self, text: str) -> str:
        return f"{CSI}1m{text}{CSI}0m" if self.live else text

    def status(self, block: list[str], plain: str) -> None:
        """Show the status view: `block` redrawn in place when live, else `plain` when
        it differs from the last one printed."""
        if self.live:
            self._erase()
            self._block = block
            self._draw()
        elif plain != self._plain_last:
            self._plain_last = plain
            self.stream.write(f"  [status] {plain}\n")
        self.stream.flush()

    def line_typed(self) -> None:
        """The terminal echoed a line the user typed (Enter) below the block."""
        if self.live and self._shown:
            self._shown += 1

    def drop_status(self) -> None:
        """Remove the live block (before the summary and at exit)."""
        if self.live:
            self._erase()
            self._block = []
            self.stream.flush()
