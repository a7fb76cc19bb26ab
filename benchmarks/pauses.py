"""hbd's own pauses: loop lag and garbage collection with admin traffic, realtime on and off.

Two hbd nodes (keepalive 100 ms, deadtime 500 ms, `bcast eth0`, n1 holding a
VIP) run for the window while n1 is kept busy the way admins and monitoring
keep it busy: a full D-Bus-like status build many times a second is not
possible without a bus here, so SIGHUP reloads every `--reload-every`
seconds (configuration read, logging reconfigured, snapshot published) stand
in for the heaviest run-time work.  At the end n1 is stopped and its own
summary line is read: the worst loop lag, how many timer firings were later
than 5 ms, and each garbage-collector generation's count and worst pause.
Twice: ha.cf `realtime on` (the default) and `realtime off`, one after the
other in the same run; RSS and VmLck of n1 are read before it stops.

A second part measures what gc.freeze() after start-up saves: in a fresh
interpreter that has imported what the daemon imports and built a parsed
configuration, the time of a full collection (generation 2) before and after
gc.freeze().

    .venv/bin/python benchmarks/pauses.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from pathlib import Path

from benchmarks.common import rss_bytes, save, table, tree
from tests.hbdproc import HbdNode, ha_cf
from tests.infra import commands
from tests.infra.netns import Lab

SUMMARY = re.compile(r"loop lag since start: worst (?P<worst>[\d.]+) ms, (?P<firings>\d+) "
                     r"timer firings, (?P<late>\d+) later than 5 ms \((?P<hist>[^)]*)\); "
                     r"garbage collection: (?P<gc>.*)")

FREEZE_PROBE = r"""
import gc, time
import hbd.daemon, hbd.stack_heartbeat, hbd.bus.service, hbd.apiserver, hbd.fifo
from hbd.core.hacf import parse_hacf
conf = parse_hacf("keepalive 100ms\ndeadtime 500ms\nbcast eth0\nnode n1 n2\n")
def full():
    best = 1e9
    for _ in range(5):
        t = time.perf_counter(); gc.collect(2); best = min(best, time.perf_counter() - t)
    return best
before = full()
tracked = len(gc.get_objects())
gc.freeze()
after = full()
print(f"{before * 1000:.2f} {after * 1000:.2f} {tracked}")
"""


def vm_kb(pid: int, field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


def run_pair(realtime: str, seconds: float, reload_every: float) -> dict[str, object]:
    lab = Lab(("n1", "n2"), networks=("10.77.0.0/24",))
    nodes: list[HbdNode] = []
    try:
        for name in ("n1", "n2"):
            nodes.append(HbdNode(lab, name, ha_cf("bcast eth0", extra=f"realtime {realtime}\n"),
                                 "n1 10.77.0.240/24/eth0\n").start())
        n1 = nodes[0]
        n1.wait_log("Status update for node n2: status active", 20)
        n1.wait_log(r"group \S+ start done", 20)
        end = time.monotonic() + seconds
        reloads = 0
        while time.monotonic() < end:
            time.sleep(reload_every)
            n1.signal(signal.SIGHUP)
            reloads += 1
        rss = rss_bytes(tree(n1.pid)) / 1e6
        locked = vm_kb(n1.pid, "VmLck") / 1000
        n1.stop()
        match = SUMMARY.search(n1.log())
        assert match, n1.log()[-2000:]
        return {"realtime": realtime, "worst_ms": float(match["worst"]),
                "firings": int(match["firings"]), "late_5ms": int(match["late"]),
                "histogram": match["hist"],
                "gc": match["gc"], "reloads": reloads, "rss_mb": rss, "vmlck_mb": locked}
    finally:
        for node in nodes:
            node.stop()
        lab.teardown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--reload-every", type=float, default=2.0)
    args = parser.parse_args()
    results = [run_pair(rt, args.seconds, args.reload_every) for rt in ("on", "off")]
    probe = commands.run([sys.executable, "-c", FREEZE_PROBE], capture_output=True,
                         text=True, check=True).stdout.split()
    rows = [["realtime", "worst lag ms", "firings", ">5 ms", "reloads", "RSS MB",
             "VmLck MB", "garbage collection"]]
    for r in results:
        rows.append([str(r["realtime"]), f"{r['worst_ms']:.1f}", str(r["firings"]),
                     str(r["late_5ms"]), str(r["reloads"]), f"{r['rss_mb']:.1f}",
                     f"{r['vmlck_mb']:.1f}", str(r["gc"])])
    print(f"hbd n1, keepalive 100 ms, {args.seconds:.0f} s, SIGHUP every "
          f"{args.reload_every:g} s")
    print(table(rows))
    print(f"full collection (gen2) in the daemon's import set: {probe[0]} ms before "
          f"gc.freeze(), {probe[1]} ms after ({probe[2]} tracked objects frozen)")
    save("pauses", {"pairs": results, "gen2_before_ms": float(probe[0]),
                    "gen2_after_ms": float(probe[1]), "frozen_objects": int(probe[2])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
