"""cl_status answer time: Debian's cl_status against hbd and against Heartbeat 3.0.6.

One mixed cluster (hbd n1, Heartbeat n2, bcast eth0, keepalive 100 ms, a ping
node); each query runs `--runs` times on each node, alternating, and the
median wall time of the whole cl_status process (exec, signon, question,
signoff) is reported, plus hbd's own Python cl_status on the hbd node.
Monitoring checks run these every few seconds: the target is to be no
slower than Heartbeat.

    .venv/bin/python -m benchmarks.clstatus [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from benchmarks.common import ROOT, median, save, table
from tests.hbdproc import HbdNode, ha_cf
from tests.infra import commands
from tests.infra.hbpeer import HeartbeatPeer
from tests.infra.netns import Lab, wait_for

QUERIES = [("nodestatus", "n2"), ("listnodes", "-v"), ("rscstatus",)]


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    commands.run(argv, capture_output=True, timeout=30, env=env)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    runs = parser.parse_args().runs
    with Lab(["n1", "n2", "client"]) as lab:
        conf = ha_cf("bcast eth0", deadtime="1", warntime="500ms", initdead="3",
                     extra=f"auto_failback on\ncrm no\nping {lab.ip('client')}\n")
        haresources = "n1 10.77.0.240/24/eth0\n"
        heartbeat = HeartbeatPeer(lab, "n2", ha_cf=conf, haresources=haresources)
        heartbeat.start(daemon=True)
        hbd = HbdNode(lab, "n1", conf, haresources).start()
        try:
            heartbeat.wait_status("n1", "active", timeout=30)
            hbd.wait_log(r"Status update for node n2: status active", 30)
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            ours = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /run && exec "$@"',
                    str(hbd.api_run), sys.executable, "-m", "hbd.cli.clstatus"]
            wait_for(lambda: heartbeat.cl_status("nodestatus", "n1", check=False) == "active",
                     15, "heartbeat up")
            rows = [["query", "hbd (Debian's cl_status)", "Heartbeat 3.0.6", "hbd (ours)"]]
            data = {}
            for query in QUERIES:
                times: dict[str, list[float]] = {"hbd": [], "heartbeat": [], "ours": []}
                for _ in range(runs):
                    times["hbd"].append(timed(lab.argv("n1", hbd.cl_status_argv(*query))))
                    assert heartbeat.iso is not None
                    times["heartbeat"].append(timed(heartbeat.iso.nsenter_argv(
                        ["cl_status", *query])))
                    times["ours"].append(timed(lab.argv("n1", [*ours, *query]), env))
                medians = {k: median(v) * 1000 for k, v in times.items()}
                data[" ".join(query)] = medians
                rows.append([" ".join(query), f"{medians['hbd']:.1f} ms",
                             f"{medians['heartbeat']:.1f} ms", f"{medians['ours']:.1f} ms"])
            print(table(rows))
            save("clstatus", {"runs": runs, "median_ms": data})
        finally:
            hbd.kill()
            heartbeat.kill()


if __name__ == "__main__":
    main()
