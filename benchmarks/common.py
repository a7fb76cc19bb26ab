"""Shared helpers for the benchmarks: process-tree CPU and memory, result files."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from tests.infra import commands

# A benchmark is held to the tests' command table too: starting a program that
# tests/infra/commands.py does not declare (with its package) raises at once.
commands.install_audit_hook()

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return kids
    for task in tasks:
        try:
            kids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def tree(pid: int) -> list[int]:
    """pid and all its descendants (alive now)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the given processes, in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (after state)
    return total / CLK_TCK


def runtime_seconds(pids: list[int]) -> float:
    """CPU time of every thread of the processes, from the scheduler's exact
    per-task runtime (/proc/PID/task/TID/schedstat), in seconds."""
    total = 0
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                continue
    return total / 1e9


def rss_bytes(pids: list[int]) -> int:
    """Sum of VmRSS of the processes (what `ps` shows as RSS)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def pss_bytes(pids: list[int]) -> int:
    """Sum of proportional set size (shared pages split between processes)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": os.uname().nodename, "kernel": os.uname().release,
            "cpus": os.cpu_count(), **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def installed_impls(text: str) -> list[str]:
    """The comma-separated implementations asked for, less the reference peers this
    machine lacks (each named on stderr): hbd always runs."""
    from tests.infra.hbpeer import find_heartbeat
    from tests.infra.kapeer import find_keepalived

    present = {"heartbeat": find_heartbeat, "keepalived": find_keepalived}
    impls = []
    for impl in (i for i in text.split(",") if i):
        if impl in present and not present[impl]():
            print(f"{impl} not installed: skipped", file=sys.stderr)
            continue
        impls.append(impl)
    return impls
