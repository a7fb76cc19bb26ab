"""The ha.cf parser's working state, shared by hacf.py and the media directives (hacfmedia.py)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from hbd.core.config import (
    DEFAULT_BAUD,
    DEFAULT_UDPPORT,
    ApiAuth,
    Link,
    PingGroup,
    Respawn,
    StonithDevice,
)
from hbd.core.parsing import Problems, is_decimal


@dataclass
class State:
    """Mutable accumulator while walking the file; frozen into HaCf at the end."""

    problems: Problems
    local_addresses: Collection[str]
    nodes: list[str] = field(default_factory=list)
    node_lines: list[int] = field(default_factory=list)  # the line of each name in `nodes`
    links: list[Link] = field(default_factory=list)
    ping_nodes: list[str] = field(default_factory=list)
    ping_groups: list[PingGroup] = field(default_factory=list)
    times: dict[str, int] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)  # directive -> last line seen
    last_values: dict[str, str] = field(default_factory=dict)  # directive -> last argument
    apiauth: list[ApiAuth] = field(default_factory=list)
    order: list[tuple[int, str]] = field(default_factory=list)  # (line, node or ping node)
    values: dict[str, object] = field(default_factory=dict)
    udpport: int = DEFAULT_UDPPORT
    baud: int = DEFAULT_BAUD
    first_udp_media_line: int = 0
    first_serial_line: int = 0
    bad_times: set[str] = field(default_factory=set)  # skip cross-checks on these
    stonith: list[StonithDevice] = field(default_factory=list)
    respawn: list[Respawn] = field(default_factory=list)


Handler = Callable[[State, int, list[str]], None]


def need_args(st: State, line: int, name: str, args: list[str], count: int) -> bool:
    if len(args) < count:
        st.problems.error(line, f"{name}: needs {count} value(s), got {len(args)}")
        return False
    return True


def udp_port(st: State, line: int, value: str, what: str) -> int | None:
    if not is_decimal(value) or not 0 < int(value) < 65536:
        st.problems.error(line, f"{what}: bad UDP port '{value}' (1-65535)")
        return None
    return int(value)
