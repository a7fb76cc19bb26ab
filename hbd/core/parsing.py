"""Helpers shared by the three config parsers: problem collection, lines, times."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from hbd.core.config import Problem, Severity


@dataclass
class Problems:
    """Collects every problem of one parse, so all are reported at once."""

    file: str
    items: list[Problem] = field(default_factory=list)

    def error(self, line: int, message: str) -> None:
        self.items.append(Problem(self.file, line, message, Severity.ERROR))

    def warning(self, line: int, message: str) -> None:
        self.items.append(Problem(self.file, line, message, Severity.WARNING))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.items if p.severity is Severity.WARNING]


def one_value(problems: Problems, line: int, name: str, args: list[str]) -> str | None:
    """The single value of a `directive value` line, or None after reporting why not."""
    if len(args) != 1:
        problems.error(line, f"{name}: needs exactly one value, got {len(args)}")
        return None
    return args[0]


def content_lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield (line number, text) for lines that are not blank or comments.

    As Heartbeat does, everything from `#` to the end of the line is a comment
    and surrounding white space is dropped.  Lines end at a newline only, as
    fgets() reads them: str.splitlines() also breaks at a lone CR, form feed,
    vertical tab and Unicode separators, and line numbers would miss the editor's.
    """
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            yield number, line


def joined_lines(text: str) -> Iterator[tuple[int, str]]:
    """Like content_lines but joins lines ending in a backslash (haresources).

    The line number reported is the line where the logical line starts.
    """
    start = 0
    parts: list[str] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.split("#", 1)[0].rstrip()
        if not parts:
            start = number
        if line.endswith("\\"):
            parts.append(line[:-1])
            continue
        parts.append(line)
        joined = " ".join(p.strip() for p in parts).strip()
        parts = []
        if joined:
            yield start, joined
    joined = " ".join(p.strip() for p in parts).strip()
    if joined:
        yield start, joined


def is_decimal(text: str) -> bool:
    """A plain decimal number int() accepts: ASCII digits, and not absurdly long.

    str.isdigit() alone also says yes to "²" and to 5000 digits, where int() raises.
    """
    return text.isascii() and text.isdigit() and len(text) <= 18


_TIME = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|us|usec)?\s*$", re.IGNORECASE)


def parse_time_ms(value: str) -> int | None:
    """Parse a Heartbeat time value into milliseconds, or None if invalid.

    Like cluster-glue's cl_get_msec: a plain number is seconds (`2`, `1.5`),
    `ms` means milliseconds, `us`/`usec` microseconds; the result is rounded.
    """
    match = _TIME.match(value)
    if match is None:
        return None
    number = float(match.group(1))
    unit = (match.group(2) or "").lower()
    if unit == "ms":
        ms = number
    elif unit in ("us", "usec"):
        ms = number / 1000.0
    else:
        ms = number * 1000.0
    if not math.isfinite(ms):  # "9" * 400 is a float infinity
        return None
    return int(ms + 0.5)


_TRUE = {"on", "yes", "true", "y", "1"}
_FALSE = {"off", "no", "false", "n", "0"}


def parse_bool(value: str) -> bool | None:
    """Heartbeat's cl_str_to_boolean: on/off, yes/no, true/false, y/n, 1/0."""
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None
