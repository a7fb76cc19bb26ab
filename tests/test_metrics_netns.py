"""Prometheus metrics from real hbd daemons, scraped from a client namespace.

Two nodes and a client on one bridge; each node serves its metrics on its
own address (hbd.conf metrics_listen) and writes a textfile.  The client
scrapes over HTTP (tests/metricsprobe.py, run inside the client's netns)
and the text is parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.hbdproc import HbdNode, ha_cf
from tests.infra.fixtures import LabFactory
from tests.infra.netns import Lab, wait_for

pytestmark = [pytest.mark.netns]

VIP = "10.77.0.241"
GROUP = f"{VIP}/24/eth0"  # a group is named by its first resource
HARESOURCES = f"n1 {GROUP}\n"
PORT = 9817
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def lab(module_make_lab: LabFactory) -> Lab:
    return module_make_lab(("n1", "n2", "client"), networks=1)


@pytest.fixture
def cluster(lab: Lab) -> Iterator[list[HbdNode]]:
    made: list[HbdNode] = []
    yield made
    for node in made:
        node.kill()
    lab.restore("n1")
    for node in ("n1", "n2"):
        lab.run(node, ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)
        lab.run(node, ["nft", "flush", "ruleset"], check=False)


def start(lab: Lab, cluster: list[HbdNode], *, deadtime: str = "500ms",
          warntime: str = "300ms", interval: str = "200ms") -> tuple[HbdNode, HbdNode]:
    for name in ("n1", "n2"):
        node = HbdNode(lab, name, ha_cf("bcast eth0", deadtime=deadtime, warntime=warntime,
                                        extra="auto_failback off\n"), HARESOURCES)
        (node.config_dir / "hbd.conf").write_text(
            f"metrics_listen {lab.ip(name)}:{PORT}\n"
            f"metrics_textfile {node.dir}/hbd.prom\n"
            f"metrics_interval {interval}\n")
        cluster.append(node.start())
    n1, n2 = cluster
    n1.wait_log(r"Status update for node n2: status active")
    n1.wait_log(r"metrics served on http://")
    return n1, n2


def scrape(lab: Lab, node: str) -> Samples:
    url = f"http://{lab.ip(node)}:{PORT}/metrics"
    result = lab.run("client", [sys.executable, "-m", "tests.metricsprobe", "scrape", url])
    return parse(result.stdout)


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_scraped_metrics_follow_a_failover(lab: Lab, cluster: list[HbdNode]) -> None:
    n1, n2 = start(lab, cluster)
    n1.wait_log(r"group \S+ start done")

    def n1_runs() -> Samples | None:
        s = scrape(lab, "n1")
        return s if value(s, "hbd_group_state", group=GROUP, state="running") == 1 else None

    before = wait_for(n1_runs, 10, "n1 running the group in its metrics", interval=0.2)
    assert value(before, "hbd_group_owner", group=GROUP, node="n1") == 1
    assert value(before, "hbd_node_state", node="n2", state="active") == 1
    assert value(before, "hbd_link_up", node="n2", link="eth0") == 1
    assert value(before, "hbd_build_info", version=_version(before), stack="heartbeat",
                 python=_python(before)) == 1
    sent = value(before, "hbd_heartbeats_sent_total", link="eth0")
    assert sent is not None and sent > 0

    on_n2 = scrape(lab, "n2")
    assert value(on_n2, "hbd_group_state", group=GROUP, state="stopped") == 1
    assert value(on_n2, "hbd_failovers_total", group=GROUP, reason="peer_dead") is None
    assert value(on_n2, "hbd_failover_duration_seconds_count") == 0
    heard = value(on_n2, "hbd_heartbeats_received_total", node="n1", link="eth0")
    assert heard is not None and heard > 0

    lab.cut("n1")
    n2.wait_log(r"node n1: is dead")

    def n2_took_over() -> Samples | None:
        s = scrape(lab, "n2")
        return s if value(s, "hbd_failovers_total", group=GROUP, reason="peer_dead") == 1 else None

    after = wait_for(n2_took_over, 10, "the failover counted on n2", interval=0.2)
    assert value(after, "hbd_group_state", group=GROUP, state="running") == 1
    assert value(after, "hbd_group_owner", group=GROUP, node="n2") == 1
    assert value(after, "hbd_node_state", node="n1", state="dead") == 1
    assert value(after, "hbd_link_up", node="n1", link="eth0") == 0
    assert value(after, "hbd_failover_duration_seconds_count") == 1
    took = value(after, "hbd_failover_duration_seconds_sum")
    assert took is not None and 0 < took < 5  # from n1 declared dead to the VIP up here
    assert (value(after, "hbd_heartbeats_received_total", node="n1", link="eth0") or 0) >= heard
    # the same figures in n2's textfile
    needle = f'hbd_failovers_total{{group="{GROUP}",reason="peer_dead"}} 1.0'
    wait_for(lambda: needle in (n2.dir / "hbd.prom").read_text(), 5, "the textfile")


def test_a_takeover_request_is_a_timed_failover(lab: Lab, cluster: list[HbdNode]) -> None:
    """Heartbeat's own hb_takeover on n2 (through hbd's FIFO): counted as `request`."""
    n1, n2 = start(lab, cluster)
    n1.wait_log(r"group \S+ start done")
    mark = n2.mark()
    result = lab.run("n2", ["env", f"HA_FIFO={n2.heartbeat_dir / 'fifo'}",
                            "/usr/share/heartbeat/hb_takeover", "all"], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    n2.wait_log(r"group \S+ start done", since=mark)

    def counted() -> Samples | None:
        s = scrape(lab, "n2")
        return s if value(s, "hbd_failovers_total", group=GROUP, reason="request") else None

    after = wait_for(counted, 10, "the takeover counted on n2", interval=0.2)
    assert value(after, "hbd_failovers_total", group=GROUP, reason="request") == 1
    assert value(after, "hbd_group_owner", group=GROUP, node="n2") == 1
    took = value(after, "hbd_failover_duration_seconds_sum")
    assert took is not None and 0 < took < 5  # from the request to the VIP up on n2

    def released() -> Samples | None:  # n1 released it: no failover there
        s = scrape(lab, "n1")
        return s if value(s, "hbd_group_state", group=GROUP, state="stopped") == 1 else None

    on_n1 = wait_for(released, 5, "n1's metrics showing the group released", interval=0.2)
    assert value(on_n1, "hbd_failover_duration_seconds_count") == 0


def _version(samples: Samples) -> str:
    return next(dict(k[1])["version"] for k in samples if k[0] == "hbd_build_info")


def _python(samples: Samples) -> str:
    return next(dict(k[1])["python"] for k in samples if k[0] == "hbd_build_info")


def test_textfile_is_replaced_atomically(lab: Lab, cluster: list[HbdNode]) -> None:
    """A reader polling the textfile while it is rewritten every 100 ms never sees half."""
    n1, _ = start(lab, cluster, interval="100ms")
    path = n1.dir / "hbd.prom"
    wait_for(path.exists, 10, "the textfile")
    seen: list[str] = []
    bad: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            text = path.read_text()
            if text in seen[-1:]:
                continue
            seen.append(text)
            try:
                names = {f.name for f in text_string_to_metric_families(text)}
            except ValueError as err:
                bad.append(f"{err}: {text[-200:]!r}")
                continue
            if "hbd_build_info" not in names or "hbd_quorate" not in names:
                bad.append(f"incomplete: {text[-200:]!r}")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        time.sleep(3)
    finally:
        stop.set()
        reader.join()
    assert not bad, bad[:3]
    assert len(seen) >= 5  # it was rewritten meanwhile (the heartbeat counters move)
    assert n1.stop() == 0  # its last view written, the writer thread ended
    leftovers = [p.name for p in Path(n1.dir).iterdir() if p.name.endswith(".tmp")]
    assert not leftovers
    final = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    assert [s.labels["state"] for s in final["hbd_group_state"].samples if s.value == 1] == [
        "stopped"]  # the last view: the groups released


@pytest.mark.slow
def test_scrape_flood_delays_no_heartbeat(lab: Lab, cluster: list[HbdNode]) -> None:
    """100 scrapes a second for 30 s at keepalive 100 ms / deadtime 300 ms: no late
    heartbeat (warntime 200 ms), in hbd's own count and on the wire."""
    n1, n2 = start(lab, cluster, deadtime="300ms", warntime="200ms", interval="100ms")
    n1.wait_log(r"group \S+ start done")
    mark1, mark2 = n1.mark(), n2.mark()
    # hbd's own count, from before the flood: start-up may already have seen a late one
    counted = {name: value(scrape(lab, name), "hbd_heartbeats_late_total", node=peer) or 0
               for name, peer in (("n1", "n2"), ("n2", "n1"))}
    url = f"http://{lab.ip('n1')}:{PORT}/metrics"
    listener = lab.popen("client", [sys.executable, "-m", "tests.metricsprobe", "gaps", "694",
                                    "31"], stdout=-1, stderr=-1)
    flood = lab.run("client", [sys.executable, "-m", "tests.metricsprobe", "flood", url, "100",
                               "30"], timeout=90)
    out, err = listener.communicate(timeout=30)
    figures = json.loads(flood.stdout)
    gaps = json.loads(out)
    late = [line for node, mark in ((n1, mark1), (n2, mark2))
            for line in node.log()[mark:].splitlines() if re.search(r"[Ll]ate heartbeat", line)]
    now_counted = {name: value(scrape(lab, name), "hbd_heartbeats_late_total", node=peer) or 0
                   for name, peer in (("n1", "n2"), ("n2", "n1"))}
    print(f"flood: {figures}; heartbeats seen on the wire (count, max gap s): {gaps}")
    assert figures["ok"] >= 2900 and figures["failed"] == 0, figures
    assert not late, late
    assert now_counted == counted
    assert {lab.ip("n1"), lab.ip("n2")} <= set(gaps), (gaps, err)
    for source, (count, worst, _) in gaps.items():
        assert count >= 250, (source, count)  # ~10 a second for 30 s
        assert worst < 0.2, (source, worst)  # never as late as warntime


def test_reload_starts_moves_and_stops_the_endpoint(lab: Lab, cluster: list[HbdNode]) -> None:
    node = HbdNode(lab, "n1", ha_cf("bcast eth0"), HARESOURCES)
    cluster.append(node.start())
    node.wait_log(r"ready: ")
    url = f"http://{lab.ip('n1')}:{PORT}/metrics"
    probe = [sys.executable, "-m", "tests.metricsprobe", "scrape"]
    assert lab.run("client", [*probe, url], check=False).returncode == 1  # off by default
    conf = node.config_dir / "hbd.conf"
    conf.write_text(f"metrics_listen {lab.ip('n1')}:{PORT}\n")
    mark = node.mark()
    node.signal(signal.SIGHUP)
    node.wait_log(r"metrics served on http://", since=mark)
    assert "hbd_build_info" in lab.run("client", [*probe, url]).stdout
    conf.write_text(f"metrics_listen {lab.ip('n1')}:{PORT + 1}\n")
    mark = node.mark()
    node.signal(signal.SIGHUP)
    node.wait_log(r"configuration reloaded", since=mark)
    moved = f"http://{lab.ip('n1')}:{PORT + 1}/metrics"
    assert "hbd_build_info" in lab.run("client", [*probe, moved]).stdout
    assert lab.run("client", [*probe, url], check=False).returncode == 1  # the old port closed
    conf.write_text("")
    mark = node.mark()
    node.signal(signal.SIGHUP)
    node.wait_log(r"configuration reloaded", since=mark)
    assert lab.run("client", [*probe, moved], check=False).returncode == 1
