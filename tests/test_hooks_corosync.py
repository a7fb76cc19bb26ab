"""Notify hooks on the corosync stack: membership is `node NAME up|dead`, groups as ever.

Three nodes on real Corosync 3 (tests/infra/corosync.py), each homing one VIP;
n1's hook records every call.  n3 loses power: n1 must be told `node n3
dead`, then take n3's group (its order: n3 n1 n2) — `starting`, `running`.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.corosync import CorosyncCluster, CorosyncHbd, corosync_unavailable, hacf_text
from tests.infra.fixtures import LabFactory
from tests.infra.netns import Lab, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow]

NODES = ("n1", "n2", "n3")
RECORD = '#!/bin/sh\necho "$1 $2 $3 old=$HBD_OLD_STATE status=$HBD_NODE_STATUS" >> {out}\n'


def vip(i: int) -> str:
    return f"10.77.0.{100 + i}"


@pytest.fixture
def lab(make_lab: LabFactory) -> Lab:
    reason = corosync_unavailable()
    if reason:
        pytest.skip(reason)
    return make_lab(NODES)


@pytest.fixture
def hbds(lab: Lab) -> Iterator[dict[str, CorosyncHbd]]:
    haresources = "".join(f"{n} {vip(i)}/24/eth0\n" for i, n in enumerate(NODES, 1))
    hacf = hacf_text(NODES, extra="initdead 4\n")
    cluster = CorosyncCluster(lab, NODES, hacf=hacf, haresources=haresources,
                              token_coefficient_ms=0)
    cluster.start()
    made = {n: CorosyncHbd(cluster.nodes[n], hacf, haresources) for n in NODES}
    try:
        yield made
    finally:
        for node in made.values():
            node.kill()
        for n in NODES:
            cluster.nodes[n].stop(signal.SIGKILL)


def _events(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_membership_and_groups_reach_the_hooks(lab: Lab, hbds: dict[str, CorosyncHbd]) -> None:
    out = lab.workdir / "corosync-events"
    hook = hbds["n1"].config_dir / "notify.d" / "10-record"
    hook.parent.mkdir()
    hook.write_text(RECORD.format(out=out))
    hook.chmod(0o755)
    for node in hbds.values():
        node.start()
    wait_for(lambda: all(lab.has_address(n, vip(i)) for i, n in enumerate(NODES, 1)), 30,
             "every VIP on its home node")
    key1, key3 = f"{vip(1)}/24/eth0", f"{vip(3)}/24/eth0"
    # the peers join in any order, before or after n1's group starts (once quorate)
    wait_for(lambda: f"group {key1} running old=starting status=" in _events(out)
             and len(_events(out)) >= 4, 15, f"n1's group running, peers up: {_events(out)}")
    first = _events(out)
    assert sorted(e for e in first if e.startswith("node")) == [
        "node n2 up old=left status=member", "node n3 up old=left status=member"]
    groups = [e for e in first if e.startswith("group")]
    assert groups == [f"group {key1} starting old=stopped status=",
                      f"group {key1} running old=starting status="]
    # n3 loses power
    lab.cut("n3")
    hbds["n3"].kill()
    wait_for(lambda: lab.has_address("n1", vip(3)), 20, "n1 to take n3's VIP")
    wait_for(lambda: len(_events(out)) >= len(first) + 3, 15, f"n1's hooks: {_events(out)}")
    assert _events(out)[len(first):] == [
        "node n3 dead old=member status=left",
        f"group {key3} starting old=stopped status=",
        f"group {key3} running old=starting status=",
    ]
