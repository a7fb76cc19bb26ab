"""Notify hooks: how long after an event its hook starts, and what a hanging hook costs.

A two-node hbd cluster (keepalive 100 ms, deadtime 300 ms, nice -10 as in
the stall tests) in network namespaces; n2's cable is pulled and plugged
back `--cycles` times, so n1 sees `node n2 dead` and `node n2 up` events.
n1 has two hooks: the first records the event's HBD_TIME and its own start
time (the delay: queue, listing in a thread, fork and exec of /bin/sh); the
second, with `--slow`, sleeps past `notify_timeout` on every event, so the
queue is always busy.  Reported: the delay's median and 95th percentile
for the first hook of each event, and the late-heartbeat warnings n1 logged
(there must be none: a hook never delays a heartbeat).

    .venv/bin/python -m benchmarks.hooks [--cycles 20] [--slow]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

from benchmarks.common import median, save, table
from tests.hbdproc import HbdNode, ha_cf
from tests.infra.netns import Lab, wait_for

RECORD = '#!/bin/sh\necho "$HBD_SEQ $1 $2 $3 $HBD_TIME $(date +%s.%N)" >> {out}\n'


class NiceNode(HbdNode):
    def argv(self) -> list[str]:
        return ["nice", "-n", "-10", *super().argv()]


def run(cycles: int, slow: bool) -> dict[str, object]:
    lab = Lab(("n1", "n2"), networks=("10.77.0.0/24",))
    nodes: list[HbdNode] = []
    try:
        out = lab.workdir / "events"
        hacf = ha_cf("bcast eth0", deadtime="300ms", warntime="250ms", initdead="2",
                     extra="auto_failback off\n")
        for name in ("n1", "n2"):
            node = NiceNode(lab, name, hacf, "n1 10.77.0.240/24/eth0\n")
            nodes.append(node)
        n1 = nodes[0]
        hooks = n1.config_dir / "notify.d"
        hooks.mkdir()
        (hooks / "10-record").write_text(RECORD.format(out=out))
        (hooks / "10-record").chmod(0o755)
        if slow:
            (hooks / "20-slow").write_text("#!/bin/sh\nsleep 30\n")
            (hooks / "20-slow").chmod(0o755)
        (n1.config_dir / "hbd.conf").write_text("notify_timeout 200ms\n")
        for node in nodes:
            node.start()
        n1.wait_log(r"Status update for node n2: status active", 20)
        time.sleep(1.0)
        mark = n1.mark()
        for _ in range(cycles):
            lab.cut("n2")
            n1.wait_log(r"node n2: is dead", 10, since=n1.mark())
            lab.restore("n2")
            n1.wait_log(r"Status update for node n2: status active", 10, since=n1.mark())
            time.sleep(0.3)
        wait_for(lambda: out.read_text().count(" node n2 ") >= 2 * cycles + 1, 30,
                 "every node event's hook")
        delays = []
        for line in out.read_text().splitlines():
            _seq, _kind, _name, _state, event_at, hook_at = line.split()
            delays.append((float(hook_at) - float(event_at)) * 1000.0)
        late = len(re.findall(r"Late heartbeat", n1.log()[mark:]))
        return {"events": len(delays), "delay_ms_median": median(delays),
                "delay_ms_p95": statistics.quantiles(delays, n=20)[-1] if len(delays) > 1
                else delays[0], "late_heartbeats": late}
    finally:
        for node in nodes:
            node.kill()
        lab.teardown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--slow", action="store_true", help="add a hook that always times out")
    args = parser.parse_args()
    result = run(args.cycles, args.slow)
    print(table([["hooks", "events", "delay median (ms)", "delay p95 (ms)", "late heartbeats"],
                 ["record" + (" + 200 ms timeout" if args.slow else ""), str(result["events"]),
                  f"{result['delay_ms_median']:.1f}", f"{result['delay_ms_p95']:.1f}",
                  str(result["late_heartbeats"])]]))
    save("hooks-slow" if args.slow else "hooks", {"cycles": args.cycles, **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
