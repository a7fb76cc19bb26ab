"""Prometheus metrics on the Corosync stack: three real Corosync 3 nodes with hbd.

The cluster of tests/test_corosync.py (its `Cluster`: every node's group one
VIP, homed on it) with `metrics_listen 0.0.0.0:9817` on every node (each in
its own namespace); a node's metrics are scraped from another node's
namespace and parsed with prometheus_client's parser while nodes are lost.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.infra.corosync import corosync_unavailable
from tests.infra.fixtures import LabFactory
from tests.infra.netns import wait_for
from tests.test_corosync import Cluster, vip
from tests.test_metrics_netns import PORT, Samples, parse, value

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.fixture
def cluster(make_lab: LabFactory) -> Iterator[Cluster]:
    reason = corosync_unavailable()
    if reason:
        pytest.skip(reason)
    nodes = ("n1", "n2", "n3")
    made = Cluster(make_lab(nodes), nodes,
                   hbdconf=f"metrics_listen 0.0.0.0:{PORT}\nmetrics_interval 200ms\n")
    yield made
    made.close()


def scrape(c: Cluster, node: str, via: str) -> Samples:
    url = f"http://{c.lab.ip(node)}:{PORT}/metrics"
    result = c.lab.run(via, [sys.executable, "-m", "tests.metricsprobe", "scrape", url])
    return parse(result.stdout)


def test_metrics_follow_the_corosync_cluster(cluster: Cluster) -> None:
    c = cluster
    group3 = f"{vip(3)}/24/eth0"

    def settled() -> Samples | None:  # the placement is seen; n1's view follows within 0.2 s
        s = scrape(c, "n1", via="n2")
        return s if value(s, "hbd_group_owner", group=group3, node="n3") == 1 else None

    before = wait_for(settled, 10, "n3 owning its group in n1's metrics", interval=0.2)
    assert value(before, "hbd_quorate") == 1
    assert any(k[0] == "hbd_build_info" and ("stack", "corosync") in k[1] for k in before)
    assert value(before, "hbd_group_owner", group=group3, node="n3") == 1
    assert value(before, "hbd_node_state", node="n3", state="active") == 1
    c.power_off("n3")  # n3's order: n3 n1 n2
    c.wait({vip(1): "n1", vip(2): "n2", vip(3): "n1"})

    def counted() -> Samples | None:
        s = scrape(c, "n1", via="n2")
        return s if value(s, "hbd_failovers_total", group=group3, reason="peer_dead") else None

    after = wait_for(counted, 10, "n3's group's failover in n1's metrics", interval=0.2)
    assert value(after, "hbd_failovers_total", group=group3, reason="peer_dead") == 1
    assert value(after, "hbd_group_owner", group=group3, node="n1") == 1
    assert value(after, "hbd_node_state", node="n3", state="active") == 0
    took = value(after, "hbd_failover_duration_seconds_sum")
    assert took is not None and 0 < took < 5
    c.power_off("n2")  # 1 of 3 votes: no quorum

    def inquorate() -> Samples | None:
        s = scrape(c, "n1", via="n1")
        stopped = value(s, "hbd_group_state", group=group3, state="stopped") == 1
        return s if value(s, "hbd_quorate") == 0 and stopped else None

    # no quorum: n1 stops everything, and its metrics say both
    wait_for(inquorate, 15, "n1 inquorate with the group stopped in its metrics", interval=0.2)
    c.check_no_double_owner()
