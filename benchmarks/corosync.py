"""hbd on Corosync at five nodes: from a node's loss to every group re-placed.

Five lab nodes, each running Debian's corosync (hbd's exported corosync.conf)
and hbd, with four VIP groups homed on every node.  The victim n1's four
groups have `group_order` lines sending each to a different survivor (n2,
n3, n4, n5), so "every group re-placed" means four nodes each took one.
The loss: n1's cable is cut, then its hbd and corosync are SIGKILLed (a power
loss).  Each survivor runs `ip -ts monitor address` from before the loss, so
the time a VIP appears is the kernel's address event as `ip` saw it, not a
poll.  Reported per run:

  detected   loss -> the survivors' hbd hears from CPG that n1 left (log line)
  replaced   loss -> the last of n1's four VIPs is up on its new node
  token      what corosync runs with (runtime.config.totem.token, via cmap),
             and consensus (1.2 x token by default)

After each run n1 comes back (cable, corosync, hbd) and takes its groups back
(auto_failback on) before the next one.

Cases (corosync.conf totem section):
  token1000       token 1000, token_coefficient 0 (runtime token 1000 ms)
  token1000-coef  token 1000 with the default token_coefficient 650: corosync
                  adds 650 ms per node beyond two (runtime token 2950 ms)
  token3000       token 3000, token_coefficient 0

    .venv/bin/python -m benchmarks.corosync [--runs 3] [--cases token1000,...]
"""

from __future__ import annotations

import argparse
import datetime
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import median, save, table
from tests.infra.corosync import CorosyncCluster, CorosyncHbd, corosync_unavailable, hacf_text
from tests.infra.netns import Lab, wait_for

NODES = ("n1", "n2", "n3", "n4", "n5")
PER_NODE = 4
VICTIM = "n1"
MONITOR = re.compile(r"^\[(\S+)\] (Deleted )?\d+: \S+\s+inet (\d+\.\d+\.\d+\.\d+)/")


@dataclass(frozen=True)
class Case:
    name: str
    token_ms: int
    coefficient_ms: int | None  # None: corosync's default (650)


CASES = {c.name: c for c in (Case("token1000", 1000, 0), Case("token1000-coef", 1000, None),
                             Case("token3000", 3000, 0))}


def vip(node: int, k: int) -> str:
    return f"10.77.0.{100 + 10 * node + k}"


def configuration() -> tuple[str, str, dict[str, str]]:
    """ha.cf, haresources, and where each of the victim's VIPs must go."""
    lines, orders, expected = [], [], {}
    for i, node in enumerate(NODES, start=1):
        for k in range(PER_NODE):
            key = f"{vip(i, k)}/24/eth0"
            lines.append(f"{node} {key}")
            if node == VICTIM:
                target = NODES[1 + k]
                rest = [n for n in NODES if n not in (VICTIM, target)]
                orders.append(f"group_order {key} {VICTIM} {target} {' '.join(rest)}")
                expected[vip(i, k)] = target
    hacf = hacf_text(NODES, extra="initdead 4\n" + "\n".join(orders) + "\n")
    return hacf, "\n".join(lines) + "\n", expected


def _wall(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp).timestamp()


def _log_time(line: str) -> float:
    return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


class Bench:
    def __init__(self, lab: Lab, case: Case) -> None:
        self.lab = lab
        self.hacf, self.haresources, self.expected = configuration()
        self.cluster = CorosyncCluster(lab, NODES, hacf=self.hacf, haresources=self.haresources,
                                       token_ms=case.token_ms,
                                       token_coefficient_ms=case.coefficient_ms)
        self.cluster.start()
        self.hbd = {n: CorosyncHbd(self.cluster.nodes[n], self.hacf, self.haresources)
                    for n in NODES}
        for node in self.hbd.values():
            node.start()
        self.wait_home()
        out = self.cluster.nodes["n2"].run(["corosync-cmapctl", "-g",
                                            "runtime.config.totem.token"]).stdout
        self.token_ms = int(out.split("=")[-1])
        out = self.cluster.nodes["n2"].run(["corosync-cmapctl", "-g",
                                            "runtime.config.totem.consensus"]).stdout
        self.consensus_ms = int(out.split("=")[-1])

    def home(self) -> bool:
        """Every VIP on its home node and on no other."""
        held = {n: {a.split("/")[0] for a in self.lab.addresses(n)} for n in NODES}
        return all({n for n in NODES if vip(i, k) in held[n]} == {node}
                   for i, node in enumerate(NODES, start=1) for k in range(PER_NODE))

    def wait_home(self) -> None:
        wait_for(self.home, 60, "every group on its home node", interval=0.1)

    def one_run(self) -> dict[str, Any]:
        survivors = [n for n in NODES if n != VICTIM]
        monitors, files = [], {}
        for node in survivors:
            files[node] = self.lab.workdir / f"monitor-{node}.txt"
            with open(files[node], "w") as out:
                monitors.append(self.lab.popen(node, ["ip", "-ts", "monitor", "address"],
                                               stdout=out))
        marks = {n: self.hbd[n].mark() for n in survivors}
        time.sleep(0.5)
        lost_at = time.time()
        self.lab.cut(VICTIM)
        self.hbd[VICTIM].kill()
        self.cluster.nodes[VICTIM].stop(signal.SIGKILL)
        wait_for(lambda: all(self.lab.has_address(node, v) for v, node in self.expected.items()),
                 60, "the victim's groups re-placed", interval=0.05)
        time.sleep(0.3)
        for proc in monitors:
            self.lab.stop(proc)
        up: dict[str, float] = {}
        for node, path in files.items():
            for line in path.read_text().splitlines():
                m = MONITOR.match(line)
                if m and not m.group(2) and m.group(3) in self.expected \
                        and self.expected[m.group(3)] == node:
                    up.setdefault(m.group(3), _wall(m.group(1)))
        left = [_log_time(line) for n in survivors
                for line in self.hbd[n].log()[marks[n]:].splitlines()
                if re.search(r"hbd members: .*; left: .*\bn1\b", line)]
        if not left:
            raise RuntimeError("no survivor logged n1 leaving:\n" + "\n".join(
                self.hbd[n].log()[marks[n]:][-1500:] for n in survivors))
        detected = min(left)
        result = {"detected_ms": round((detected - lost_at) * 1000),
                  "replaced_ms": round((max(up.values()) - lost_at) * 1000),
                  "first_vip_ms": round((min(up.values()) - lost_at) * 1000)}
        self.restore()
        return result

    def restore(self) -> None:
        """n1 boots again: no addresses left over, cable back, corosync, hbd."""
        for k in range(PER_NODE):
            self.lab.run(VICTIM, ["ip", "addr", "del", f"{vip(1, k)}/24", "dev", "eth0"],
                         check=False)
        self.lab.restore(VICTIM)
        self.cluster.nodes[VICTIM].start()
        self.hbd[VICTIM].start()
        self.wait_home()
        time.sleep(1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    reason = corosync_unavailable()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    results: dict[str, dict[str, Any]] = {}
    for name in args.cases.split(","):
        case = CASES[name]
        lab = Lab(NODES)
        try:
            bench = Bench(lab, case)
            runs = []
            for n in range(args.runs):
                run = bench.one_run()
                print(f"{name:15} run {n + 1}: detected {run['detected_ms']} ms, all "
                      f"re-placed {run['replaced_ms']} ms (runtime token {bench.token_ms} ms)",
                      flush=True)
                runs.append(run)
            results[name] = {
                "token_ms": bench.token_ms, "consensus_ms": bench.consensus_ms,
                "detected_median_ms": median([r["detected_ms"] for r in runs]),
                "replaced_median_ms": median([r["replaced_ms"] for r in runs]),
                "runs": runs}
        finally:
            lab.teardown()
    rows = [["case", "token", "consensus", "detected", "all re-placed", "re-placed / token"]]
    for name, r in results.items():
        rows.append([name, f"{r['token_ms']} ms", f"{r['consensus_ms']} ms",
                     f"{r['detected_median_ms']:.0f} ms", f"{r['replaced_median_ms']:.0f} ms",
                     f"{r['replaced_median_ms'] / r['token_ms']:.2f}"])
    print(f"\nfive nodes, n1 lost with {PER_NODE} groups spread over the 4 survivors "
          f"(medians of {args.runs} runs)")
    print(table(rows))
    path = save("corosync", {"runs": args.runs, "nodes": len(NODES),
                             "groups_per_node": PER_NODE, "results": results})
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
