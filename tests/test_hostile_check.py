"""tests/test_hostile.py's "nothing moved" check can fail (issue 16, part 3).

It used to look for `starting group`, words hbd never logs, so a group moving
during an attack would have passed.  Here the lines hbd really writes (the
core's actions through hbd.eventlog, as the daemon logs them) for a takeover,
a standby release and a membership change must each trip DISTURBED, and the
lines of an attack that changes nothing (dropped packets) must not.
"""

from __future__ import annotations

import logging

import pytest

from hbd import eventlog
from hbd.core.actions import Action
from tests.simnet import SimNet, make_config
from tests.test_hostile import DISTURBED

HARESOURCES = "n1 10.0.0.1\nn2 10.0.0.2\n"


def logged(caplog: pytest.LogCaptureFixture, actions: list[Action]) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        for action in actions:
            eventlog.log_event(action)
    return [r.getMessage() for r in caplog.records]


def cluster() -> SimNet:
    kw = dict(haresources=HARESOURCES, extra="auto_failback off\n")
    net = SimNet({n: make_config(n, **kw) for n in ("n1", "n2")})  # type: ignore[arg-type]
    net.run_for(2.0)
    return net


def since(net: SimNet, node: str, mark: float) -> list[Action]:
    return [a for t, a in net.nodes[node].actions if t >= mark]


def test_a_takeover_after_a_death_trips_the_check(caplog: pytest.LogCaptureFixture) -> None:
    net = cluster()
    mark = net.now
    net.nodes["n1"].alive = False
    net.run_for(2.0)
    lines = logged(caplog, since(net, "n2", mark))
    group_lines = [line for line in lines if "group 10.0.0.1" in line]
    assert any("taking over" in line for line in group_lines)  # n2 took n1's group
    assert all(DISTURBED.search(line) for line in group_lines), group_lines
    assert all(DISTURBED.search(line) for line in lines if "is dead" in line)


def test_a_standby_release_trips_the_check_on_both_nodes(
        caplog: pytest.LogCaptureFixture) -> None:
    net = cluster()
    mark = net.now
    net.command("n1", "release", "all")
    net.run_for(2.0)
    assert net.holders("10.0.0.1") == ["n2"]
    for node in ("n1", "n2"):
        lines = logged(caplog, since(net, node, mark))
        starts_or_stops = [line for line in lines if "group 10.0.0.1" in line]
        assert starts_or_stops and all(DISTURBED.search(line) for line in starts_or_stops)


def test_the_lines_of_a_harmless_attack_do_not_trip_it(
        caplog: pytest.LogCaptureFixture) -> None:
    net = cluster()
    mark = net.now
    for _ in range(50):
        net.inject("n2", b"###\ngarbage")
        net.inject("n2", b">>>\nt=status\nsrc=n1\n<<<\n")
    net.run_for(1.0)
    lines = logged(caplog, since(net, "n2", mark))
    assert any("dropped" in line for line in lines)
    assert [line for line in lines if DISTURBED.search(line)] == []
