"""A 30 s flood of 10,000 junk packets/s against a live two-node hbd cluster.

The same scenario as tests/test_hostile.py::test_flood_10000_packets_per_second
(which floods for 8 s in CI), at full length: an attacker namespace on the
heartbeat bridge broadcasts packets forged without the key (wrong MAC,
unknown key index, garbage netstrings, classic frames).  Measured: each
daemon's CPU (utime + stime over the flood, per second of wall time), the
lines each logged, and whether the cluster noticed anything (membership,
links, the VIP on n1 answering the client throughout).

    .venv/bin/python -m benchmarks.flood [--seconds 30] [--rate 10000]

Needs root (network namespaces).  Results go to benchmarks/results/flood.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks.common import save
from tests.infra.netns import Lab
from tests.test_hostile import FLOOD_RATE, run_flood, start_cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=FLOOD_RATE, help="packets per second")
    args = parser.parse_args(argv)
    with Lab(("n1", "n2", "client", "attacker")) as lab, \
            tempfile.TemporaryDirectory(prefix="hbd-flood-") as scratch:
        cluster = start_cluster(lab, Path(scratch))
        try:
            marks = cluster.marks()
            result = run_flood(cluster, args.seconds, args.rate)
            disturbed = ""
            try:
                cluster.assert_undisturbed(marks)
            except AssertionError as err:
                disturbed = str(err)[:2000]
            drops = [line for line in cluster.n1.log()[marks[0]:].splitlines()
                     if "dropped" in line]
        finally:
            cluster.stop()
    print(f"{result.sent} packets in {result.seconds:.1f} s "
          f"({result.sent / result.seconds:.0f}/s); CPU n1 {result.cpu['n1']:.0%}, "
          f"n2 {result.cpu['n2']:.0%} of a core; log lines n1 {result.log_lines['n1']}, "
          f"n2 {result.log_lines['n2']}; VIP answered by {sorted(set(result.answers))}; "
          f"{'DISTURBED: ' + disturbed if disturbed else 'cluster undisturbed'}")
    path = save("flood", {
        "rate": args.rate, "seconds": round(result.seconds, 2), "sent": result.sent,
        "send_errors": result.send_errors,
        "cpu_per_second": {k: round(v, 3) for k, v in result.cpu.items()},
        "log_lines": result.log_lines, "vip_answers": result.answers,
        "undisturbed": not disturbed, "disturbance": disturbed, "n1_drop_lines": drops,
    })
    print(f"saved {path}")
    return 1 if disturbed or set(result.answers) != {"n1"} else 0


if __name__ == "__main__":
    sys.exit(main())
