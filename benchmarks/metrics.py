"""What Prometheus metrics cost a live two-node hbd cluster, and whether scrapes delay it.

Two hbd nodes at keepalive 100 ms / deadtime 300 ms / warntime 200 ms in
network namespaces; n1 serves its metrics (hbd.conf `metrics_listen`,
`metrics_interval 100ms`), n2 has none.  A client namespace on the same
bridge listens to both nodes' heartbeats (the gaps between status messages
on the wire) while it scrapes n1: first not at all, then 100 scrapes a
second, then as fast as SCRAPERS parallel clients can.  Measured per phase:
scrapes answered, n1's CPU per second of wall time, the largest and the
99th-percentile heartbeat gap of each node, late-heartbeat warnings; and
the memory metrics add (n1's RSS and PSS beside n2's, the same daemon with
and without prometheus-client loaded).  Beside them, in the same run and
with the same timers, a Heartbeat 3.0.6 pair in a lab of its own (no
metrics: it has none) whose heartbeat gaps show what the machine's load
alone does to a C daemon's timing while hbd is scraped.

    .venv/bin/python -m benchmarks.metrics [--seconds 20]

Needs root (network namespaces).  Results go to benchmarks/results/metrics.json.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from typing import Any

from benchmarks.common import cpu_seconds, pss_bytes, rss_bytes, save, table, tree
from tests.hbdproc import HbdNode, ha_cf
from tests.infra.hbpeer import HeartbeatPeer, find_heartbeat, render_ha_cf
from tests.infra.netns import Lab

PORT = 9817
SCRAPERS = 4


PROBE = [sys.executable, "-m", "tests.metricsprobe"]


def _listen(lab: Lab, client: str, seconds: float) -> subprocess.Popen[bytes]:
    return lab.popen(client, [*PROBE, "gaps", "694", str(seconds + 1)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _gaps(lab: Lab, listener: subprocess.Popen[bytes], seconds: float,
          names: tuple[str, str]) -> dict[str, dict[str, float]]:
    out, _ = listener.communicate(timeout=seconds + 30)
    by_ip = {lab.ip(n): n for n in names}
    return {by_ip.get(source, source): {"heartbeats": count, "max_s": round(worst, 4),
                                        "p99_s": round(p99, 4)}
            for source, (count, worst, p99) in json.loads(out).items()}


def _phase(lab: Lab, n1: HbdNode, n2: HbdNode, seconds: float, rate: float | None,
           reference: Lab | None) -> dict[str, Any]:
    url = f"http://{lab.ip('n1')}:{PORT}/metrics"
    probe = PROBE
    marks = n1.mark(), n2.mark()
    listener = _listen(lab, "client", seconds)
    beside = _listen(reference, "hclient", seconds) if reference is not None else None
    cpu_before = cpu_seconds(tree(n1.pid))
    floods: list[subprocess.Popen[bytes]] = []
    if rate is None:  # as fast as SCRAPERS clients go
        floods = [lab.popen("client", [*probe, "flood", url, "100000", str(seconds)],
                            stdout=subprocess.PIPE) for _ in range(SCRAPERS)]
    elif rate > 0:
        floods = [lab.popen("client", [*probe, "flood", url, str(rate), str(seconds)],
                            stdout=subprocess.PIPE)]
    scraped = failed = 0
    worst_scrape = 0.0
    for proc in floods:
        out, _ = proc.communicate(timeout=seconds + 60)
        figures = json.loads(out)
        scraped += figures["ok"]
        failed += figures["failed"]
        worst_scrape = max(worst_scrape, figures["max_s"])
    cpu = cpu_seconds(tree(n1.pid)) - cpu_before
    gaps = _gaps(lab, listener, seconds, ("n1", "n2"))
    heartbeat = (_gaps(reference, beside, seconds, ("h1", "h2"))
                 if reference is not None and beside is not None else {})
    late = sum(len(re.findall(r"[Ll]ate heartbeat", node.log()[mark:]))
               for node, mark in zip((n1, n2), marks, strict=True))
    return {"scrapes": scraped, "scrape_failures": failed, "scrapes_per_s": scraped / seconds,
            "slowest_scrape_s": round(worst_scrape, 4),
            "n1_cpu_per_s": round(cpu / seconds, 4),
            "gaps": gaps, "heartbeat_3_0_6_gaps": heartbeat,
            "late_heartbeat_warnings": late}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    reference: Lab | None = None
    peers: list[HeartbeatPeer] = []
    if find_heartbeat():
        reference = Lab(("h1", "h2", "hclient"))
        conf = render_ha_cf(("h1", "h2"), keepalive="100ms", deadtime="300ms",
                            warntime="200ms")
        peers = [HeartbeatPeer(reference, n, ha_cf=conf).start() for n in ("h1", "h2")]
        peers[0].wait_status("h2", "active", timeout=30)
    else:
        print("heartbeat not installed: no reference pair", file=sys.stderr)
    try:
        result = _measure(args.seconds, reference)
    finally:
        for peer in peers:
            peer.kill()
        if reference is not None:
            reference.teardown()
    return result


def _measure(seconds: float, reference: Lab | None) -> int:
    hacf = ha_cf("bcast eth0", keepalive="100ms", deadtime="300ms", warntime="200ms")
    with Lab(("n1", "n2", "client")) as lab:
        n1 = HbdNode(lab, "n1", hacf, "n1 10.77.0.240/24/eth0\n")
        (n1.config_dir / "hbd.conf").write_text(f"metrics_listen {lab.ip('n1')}:{PORT}\n"
                                                "metrics_interval 100ms\n")
        n2 = HbdNode(lab, "n2", hacf, "n1 10.77.0.240/24/eth0\n")
        try:
            n1.start()
            n2.start()
            n1.wait_log(r"group \S+ start done")
            n1.wait_log(r"metrics served on")
            phases = {"no scrapes": _phase(lab, n1, n2, seconds, 0, reference),
                      "100 scrapes/s": _phase(lab, n1, n2, seconds, 100, reference),
                      f"{SCRAPERS} clients flat out": _phase(lab, n1, n2, seconds, None, reference)}
            memory = {"n1_with_metrics": {"rss": rss_bytes([n1.pid]), "pss": pss_bytes([n1.pid])},
                      "n2_without": {"rss": rss_bytes([n2.pid]), "pss": pss_bytes([n2.pid])}}
        finally:
            n1.stop()
            n2.stop()
    rows = [["phase", "scrapes/s", "n1 CPU", "n1 gap max/p99 ms", "n2 gap max/p99 ms", "late",
             "Heartbeat h1/h2 gap max ms"]]

    def gap(g: dict[str, float]) -> str:
        return f"{g.get('max_s', 0) * 1000:.0f}/{g.get('p99_s', 0) * 1000:.0f}"

    for name, p in phases.items():
        hb = p["heartbeat_3_0_6_gaps"]
        rows.append([name, f"{p['scrapes_per_s']:.0f}", f"{p['n1_cpu_per_s']:.1%}",
                     gap(p["gaps"].get("n1", {})), gap(p["gaps"].get("n2", {})),
                     str(p["late_heartbeat_warnings"]),
                     "/".join(f"{hb.get(n, {}).get('max_s', 0) * 1000:.0f}"
                              for n in ("h1", "h2")) if hb else "-"])
    print(table(rows))
    extra = memory["n1_with_metrics"]["rss"] - memory["n2_without"]["rss"]
    print(f"memory: n1 (metrics on) RSS {memory['n1_with_metrics']['rss'] / 2**20:.1f} MiB, "
          f"n2 (off) {memory['n2_without']['rss'] / 2**20:.1f} MiB: +{extra / 2**20:.1f} MiB")
    path = save("metrics", {"seconds": seconds, "keepalive_ms": 100, "deadtime_ms": 300,
                            "warntime_ms": 200, "phases": phases, "memory": memory})
    print(f"saved {path}")
    late = sum(p["late_heartbeat_warnings"] for p in phases.values())
    return 1 if late else 0


if __name__ == "__main__":
    sys.exit(main())
