"""Resource monitoring on the Corosync stack, in the sans-I/O core (tests/cpgsim.py).

A failed monitor restarts the group in place while the `restart` policy allows;
beyond that the node announces the group among those it may not run, every
member's agreed view places it on the next node of its order, and it stays
away until `hbctl cleanup` or the expiry.  Each scenario runs under several
seeds (random interleavings of CPG, quorum and group work); the simulation
checks after every event that no group is active on two nodes at once.
"""

from __future__ import annotations

import pytest

from hbd import snapshot
from hbd.core.actions import CpgSend, GroupFailed, GroupRecovery, RunMonitor
from hbd.core.cpgwire import decode
from hbd.core.placement import Placement
from hbd.core.resources import GroupState
from hbd.errors import Busy
from tests.cpgsim import SimCorosync, make_config

N3 = ("n1", "n2", "n3")
SEEDS = range(1, 5)
G1 = "10.0.0.1"
MONITOR = f"monitor {G1} interval=1s timeout=1s\n"


def cluster(seed: int, hbdconf: str = MONITOR, extra: str = "") -> SimCorosync:
    resources = "".join(f"{n} 10.0.0.{i}\n" for i, n in enumerate(N3, start=1))
    sim = SimCorosync(N3, resources, seed=seed, hbdconf=hbdconf, extra=extra)
    for name in N3:
        sim.start_hbd(name)
    sim.settle()
    assert sim.placement()[G1] == ["n1"]
    return sim


def placement(sim: SimCorosync, name: str) -> Placement:
    p = sim.nodes[name].placement
    assert p is not None
    return p


def fail_once(sim: SimCorosync, name: str) -> None:
    """Let the check on `name` come due and fail it; run everything that follows."""
    sim.advance(1.0)
    assert G1 in sim.nodes[name].checks, f"no check of {G1} in flight on {name}"
    sim.check(name, G1, ok=False, detail="service gone")
    sim.settle()


def starts(sim: SimCorosync) -> list[str]:
    return [node for node, key in sim.started if key == G1]


def announced_failed(sim: SimCorosync, name: str) -> frozenset[str]:
    sends = [a for a in sim.nodes[name].actions if isinstance(a, CpgSend)]
    return decode(sends[-1].payload).failed


@pytest.mark.parametrize("seed", SEEDS)
def test_a_failed_monitor_moves_the_group_to_the_next_node_until_cleanup(seed: int) -> None:
    sim = cluster(seed)
    fail_once(sim, "n1")
    assert sim.placement()[G1] == ["n2"]
    n1 = placement(sim, "n1")
    recoveries = [a for a in sim.nodes["n1"].actions if isinstance(a, GroupRecovery)]
    assert [a.what for a in recoveries] == ["unfit", "move"]
    assert recoveries[1].detail.endswith("next in its order: n2")
    assert any(isinstance(a, GroupFailed) and a.operation == "monitor"
               for a in sim.nodes["n1"].actions)
    assert G1 in announced_failed(sim, "n1")  # every member's view leaves n1 out
    assert n1.health.of(G1).fail_count == 1
    # it stays away: time passes, n2 is healthy, n1 never claims it back (auto_failback on)
    for _ in range(5):
        sim.advance(10.0)
        if G1 in sim.nodes["n2"].checks:
            sim.check("n2", G1, ok=True)
        sim.settle()
    assert sim.placement()[G1] == ["n2"]
    assert starts(sim) == ["n1", "n2"]
    # hbctl cleanup on n1: a candidate again, and first in the order: it comes back
    sim._apply(sim.nodes["n1"], n1.cleanup(G1, sim.now, sim.now))
    sim.settle()
    assert sim.placement()[G1] == ["n1"]
    assert G1 not in announced_failed(sim, "n1")
    assert n1.health.of(G1).fail_count == 0
    with pytest.raises(Busy):  # nothing left to clean up; nothing changes
        n1.cleanup(G1, sim.now, sim.now)


@pytest.mark.parametrize("seed", SEEDS)
def test_restart_in_place_then_move(seed: int) -> None:
    sim = cluster(seed, MONITOR + f"restart {G1} max=1 window=1h\n")
    fail_once(sim, "n1")
    assert sim.placement()[G1] == ["n1"]
    assert starts(sim) == ["n1", "n1"]  # stopped and started here; nobody else claimed it
    whats = [a.what for a in sim.nodes["n1"].actions if isinstance(a, GroupRecovery)]
    assert whats == ["restart"]
    fail_once(sim, "n1")  # beyond the policy: it moves
    assert sim.placement()[G1] == ["n2"]
    assert starts(sim) == ["n1", "n1", "n2"]


@pytest.mark.parametrize("seed", SEEDS)
def test_the_failure_expires(seed: int) -> None:
    sim = cluster(seed, MONITOR + f"failure_expiry {G1} 30s\n")
    fail_once(sim, "n1")
    assert sim.placement()[G1] == ["n2"]
    sim.advance(20.0)
    sim.settle()
    assert sim.placement()[G1] == ["n2"]
    sim.advance(10.0)
    sim.settle()
    assert sim.placement()[G1] == ["n1"]
    assert placement(sim, "n1").health.of(G1).fail_count == 0


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_failed_everywhere_is_stopped_and_a_cleanup_lets_one_node_run_it(seed: int) -> None:
    sim = cluster(seed)
    fail_once(sim, "n1")
    fail_once(sim, "n2")
    assert sim.placement()[G1] == ["n3"]
    fail_once(sim, "n3")
    assert sim.placement()[G1] == []
    assert sim.holders(G1, tuple(GroupState)) == ["n1", "n2", "n3"]  # all stopped
    assert all(sim.holders(G1, (s,)) == [] for s in GroupState if s is not GroupState.STOPPED)
    n2 = placement(sim, "n2")
    sim._apply(sim.nodes["n2"], n2.cleanup(G1, sim.now, sim.now))
    sim.settle()
    assert sim.placement()[G1] == ["n2"]  # n1, first in the order, is still unfit


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_set_unfit_and_clear_unfit_move_the_group_and_back(seed: int) -> None:
    sim = cluster(seed, hbdconf="")
    n1 = placement(sim, "n1")
    sim._apply(sim.nodes["n1"], n1.set_unfit([G1, "nonesuch"], "link:eth0", sim.now, sim.now,
                                             detail="eth0 lost carrier"))
    sim.settle()
    assert sim.placement()[G1] == ["n2"]
    assert n1.unfit_reasons(G1)[0].detail == "eth0 lost carrier"
    sim._apply(sim.nodes["n1"], n1.clear_unfit([G1], "link:eth0", sim.now, sim.now))
    sim.settle()
    assert sim.placement()[G1] == ["n1"]


def test_stranded_a_link_reason_keeps_running_a_monitor_failure_stops() -> None:
    sim = cluster(1, extra=f"group_order {G1} n1\n")
    n1 = placement(sim, "n1")
    sim._apply(sim.nodes["n1"], n1.set_unfit([G1], "link:eth0", sim.now, sim.now))
    sim.settle()
    assert sim.placement()[G1] == ["n1"]  # nobody can do better: it keeps running
    fail_once(sim, "n1")  # the monitor says the service is dead: stop it
    assert sim.placement()[G1] == []
    whats = [a.what for a in sim.nodes["n1"].actions if isinstance(a, GroupRecovery)]
    assert whats == ["unfit", "unfit", "stop"]
    assert starts(sim) == ["n1"]


def test_a_check_of_a_group_that_stopped_meanwhile_is_ignored() -> None:
    sim = cluster(1)
    sim.advance(1.0)
    run = sim.nodes["n1"].checks[G1]
    assert isinstance(run, RunMonitor) and run.resources == (G1,)
    n1 = placement(sim, "n1")
    sim._apply(sim.nodes["n1"], n1.release("local", sim.now, sim.now))
    sim.settle()
    assert sim.placement()[G1] == ["n2"]
    assert n1.monitor_done(G1, run.token, False, "late", sim.now, sim.now) == []
    assert n1.health.of(G1).fail_count == 0


def test_health_in_the_corosync_snapshot() -> None:
    sim = cluster(1)
    fail_once(sim, "n1")
    snap = snapshot.corosync(placement(sim, "n1"), "n1", N3, {}, None)
    row = next(g for g in snap.groups if g.key == G1)
    assert row.owner == "n2" and row.fail_count == 1
    assert row.last_monitor == "failed: service gone"
    assert row.unfit.startswith("monitor failed: service gone (until 'hbctl cleanup")


def test_a_reload_adds_a_monitor_to_a_running_group() -> None:
    sim = cluster(1, hbdconf="")
    n1 = placement(sim, "n1")
    sim.advance(5.0)
    assert not sim.nodes["n1"].checks  # no monitor lines: nothing is checked
    resources = "".join(f"{n} 10.0.0.{i}\n" for i, n in enumerate(N3, start=1))
    new = make_config("n1", N3, resources, hbdconf=MONITOR)
    sim._apply(sim.nodes["n1"], n1.reconfigure(new, sim.now, sim.now))
    sim.settle()
    fail_once(sim, "n1")
    assert sim.placement()[G1] == ["n2"]
