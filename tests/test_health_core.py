"""Resource monitoring and "unfit here" in the sans-I/O core, on the simulated network.

A monitor's failure restarts the group in place, then (beyond `restart max=`)
hands it to the peer, where it stays until `hbctl cleanup` or the expiry; a
monitor waits while its group starts or stops; a hanging check fails at its
timeout; the peer refuses a group unfit on its side; a node alone stops a
failed group and leaves it stopped.
"""

from __future__ import annotations

from hbd.core.actions import GroupFailed, GroupRecovery, Notice, RunMonitor, Transmit
from hbd.core.resources import GroupState
from hbd.errors import Busy
from tests.simnet import SimNet, make_config

G1, G2 = "10.0.0.1", "10.0.0.2"
HARESOURCES = f"n1 {G1}\nn2 {G2}\n"
MONITOR = f"monitor {G1} interval=1s timeout=2s\nmonitor {G2} interval=1s timeout=2s\n"


def cluster(hbdconf: str = MONITOR, failback: str = "on") -> SimNet:
    def cfg(node: str) -> object:
        return make_config(node, haresources=HARESOURCES, extra=f"auto_failback {failback}\n",
                           hbdconf=hbdconf)
    net = SimNet({"n1": cfg("n1"), "n2": cfg("n2")})  # type: ignore[dict-item]
    net.run_for(1.5)
    assert net.holders(G1) == ["n1"] and net.holders(G2) == ["n2"]
    return net


def recoveries(net: SimNet, node: str, what: str, since: float = 0.0) -> list[float]:
    return [t for t, a in net.events(node, GroupRecovery, since) if a.what == what]


def test_a_failed_monitor_restarts_the_group_in_place() -> None:
    net = cluster(MONITOR + f"restart {G1} max=2 window=10min\n")
    broke_at = net.now
    net.nodes["n1"].runner.broken.add(G1)
    net.run_for(3.0)
    assert net.holders(G1) == ["n1"]  # restarted here, not moved
    failed = [(t, a) for t, a in net.events("n1", GroupFailed, broke_at)]
    assert failed and failed[0][1].operation == "monitor"
    assert "not running" in failed[0][1].detail
    assert failed[0][0] - broke_at <= 1.0 + 0.05  # within one interval
    assert len(recoveries(net, "n1", "restart", broke_at)) == 1
    assert net.nodes["n1"].failover.health.of(G1).fail_count == 1
    assert net.nodes["n1"].failover.health.of(G1).last_result == "ok"  # healthy again
    assert recoveries(net, "n1", "move") == []


def test_beyond_the_restarts_the_group_moves_and_stays_moved() -> None:
    net = cluster(MONITOR + f"restart {G1} max=1 window=10min\n")
    net.nodes["n1"].runner.broken.add(G1)
    net.nodes["n1"].runner.stays_broken.add(G1)  # a restart does not help
    net.run_for(5.0)
    assert net.holders(G1) == ["n2"]
    assert len(recoveries(net, "n1", "restart")) == 1
    assert len(recoveries(net, "n1", "move")) == 1
    n1 = net.nodes["n1"].failover
    assert [r.name for r in n1.unfit_reasons(G1)] == ["monitor"]
    # auto_failback on: nothing brings it back here, not even n2 restarting gracefully
    net.run_for(20.0)
    assert net.holders(G1) == ["n2"]
    net.command("n2", "shutdown")
    net.run_for(2.0)
    assert net.holders(G1) == [] and net.holders(G2) == ["n1"]  # n1 takes only its fit group
    refused = [a.text for _, a in net.events("n1", Notice) if "not starting group" in a.text]
    assert refused and "unfit here" in refused[-1]
    # n2 comes back: G1 runs nowhere, so n1 offers it (a standby of a set it does not
    # hold) and n2 takes it; auto_failback gives G2 back to n2 as usual
    net.nodes["n2"].alive = False
    net.add_node("n2", make_config("n2", haresources=HARESOURCES, extra="auto_failback on\n",
                                   hbdconf=MONITOR), generation=200)
    net.run_for(5.0)
    assert net.holders(G1) == ["n2"]
    assert net.holders(G2) == ["n2"]


def test_cleanup_lets_the_group_return_with_auto_failback() -> None:
    net = cluster()  # no restart line: the first failure hands the group over
    net.nodes["n1"].runner.broken.add(G1)
    net.nodes["n1"].runner.stays_broken.add(G1)
    net.run_for(3.0)
    assert net.holders(G1) == ["n2"] and recoveries(net, "n1", "restart") == []
    net.nodes["n1"].runner.stays_broken.clear()  # the admin repaired it
    net.command("n1", "cleanup", G1)
    net.run_for(2.0)
    assert net.holders(G1) == ["n1"] and net.holders(G2) == ["n2"]
    assert net.nodes["n1"].failover.unfit_reasons(G1) == []
    assert net.nodes["n1"].failover.health.of(G1).fail_count == 0
    # nothing left to clean up: refused, nothing changes
    try:
        net.command("n1", "cleanup", G1)
    except Busy as err:
        assert "no failures recorded" in str(err)
    else:
        raise AssertionError("cleanup of a healthy group must be refused")


def test_failure_expiry_lets_the_group_return() -> None:
    net = cluster(MONITOR + f"failure_expiry {G1} 5s\n")
    net.nodes["n1"].runner.broken.add(G1)
    net.nodes["n1"].runner.stays_broken.add(G1)
    net.run_for(3.0)
    assert net.holders(G1) == ["n2"]
    moved_at = recoveries(net, "n1", "move")[0]
    net.nodes["n1"].runner.stays_broken.clear()
    net.run_until(moved_at + 4.5)
    assert net.holders(G1) == ["n2"]  # not yet
    net.run_until(moved_at + 7.0)
    assert net.holders(G1) == ["n1"]
    assert recoveries(net, "n1", "fit")


def test_failure_without_expiry_or_failback_stays_put() -> None:
    net = cluster(failback="off")
    net.nodes["n1"].runner.broken.add(G1)
    net.run_for(3.0)
    assert net.holders(G1) == ["n2"]
    net.command("n1", "cleanup", G1)  # off: the group stays where it runs now
    net.run_for(3.0)
    assert net.holders(G1) == ["n2"]
    assert not net.nodes["n1"].failover.unfit_reasons(G1)


def test_a_monitor_waits_while_the_group_starts() -> None:
    def cfg(node: str) -> object:
        return make_config(node, haresources=HARESOURCES, extra="auto_failback on\n",
                           hbdconf=MONITOR)
    net = SimNet({"n1": cfg("n1"), "n2": cfg("n2")})  # type: ignore[dict-item]
    net.nodes["n1"].runner.start_delay[G1] = 4.0
    net.run_for(8.0)
    started = [t for t, a in net.events("n1", GroupRecovery)]
    assert started == []
    running_at = next(t for t, a in net.nodes["n1"].actions
                      if type(a).__name__ == "GroupStateChanged" and a.group == G1
                      and a.new == "running")
    checks = [t for t, a in net.events("n1", RunMonitor) if a.group == G1]
    assert checks and min(checks) >= running_at + 1.0 - 1e-9  # rescheduled after the start


def test_a_monitor_in_flight_when_the_group_stops_is_ignored() -> None:
    net = cluster()
    n1 = net.nodes["n1"]
    n1.runner.monitor_delay = 0.5
    n1.runner.broken.add(G1)
    while not any(a.group == G1 for _, a in net.events("n1", RunMonitor)):
        net.run_for(0.01)
    net.run_for(0.1)  # a check is in flight now
    net.command("n1", "release", "local")  # the group goes away meanwhile
    net.run_for(2.0)
    assert net.events("n1", GroupFailed) == []  # the stale failure changed nothing
    assert net.holders(G1) == ["n2"]


def test_a_hanging_monitor_fails_at_its_timeout() -> None:
    net = cluster()
    hung_at = net.now
    net.nodes["n1"].runner.hang_monitor.add(G1)
    net.run_for(5.0)
    failed = net.events("n1", GroupFailed, hung_at)
    assert failed and "timed out" in failed[0][1].detail
    assert 2.0 <= failed[0][0] - hung_at <= 3.1  # the next check, then its 2 s timeout
    assert net.holders(G1) == ["n2"]


def test_the_peer_dies_during_a_restart() -> None:
    net = cluster(MONITOR + f"restart {G1} max=3 window=1h\n")
    n1 = net.nodes["n1"]
    n1.runner.stop_delay[G1] = 1.0
    n1.runner.broken.add(G1)
    net.run_for(1.3)  # the restart's stop is under way
    assert n1.failover.groups.groups[G1].state is GroupState.STOPPING
    net.nodes["n2"].alive = False
    net.run_for(3.0)
    assert net.holders(G1) == ["n1"] and G2 in n1.running
    assert len(recoveries(net, "n1", "restart")) == 1


def test_the_peer_refuses_a_group_unfit_on_its_side() -> None:
    net = cluster()
    # n2 had its own failure of G1 earlier (a link, say): it must not take G1
    net._apply(net.nodes["n2"], net.nodes["n2"].failover.set_unfit(
        [G1], "link:eth9", net.now, net.wall, detail="eth9 has no carrier"))
    broke_at = net.now
    net.nodes["n1"].runner.broken.add(G1)
    net.nodes["n1"].runner.stays_broken.add(G1)
    net.run_for(3.0)
    refusals = [t for t, a in net.nodes["n2"].actions if isinstance(a, Transmit)
                and b"hbd_refused" in a.netstring]
    assert refusals
    # refused at once (no 10 s standby timeout): n1 stops its failed copy, G2 stays
    stopped = recoveries(net, "n1", "stop", broke_at)
    assert stopped and stopped[0] - broke_at < 2.0
    assert net.holders(G1) == [] and net.holders(G2) == ["n2"]
    assert net.nodes["n2"].failover.standby.state.value == "not"


def test_alone_a_failed_group_is_stopped_and_left_stopped() -> None:
    net = cluster()
    net.nodes["n2"].alive = False
    net.run_for(2.0)
    assert net.holders(G2) == ["n1", "n2"]  # n1 took n2's group (n2's copy: a crashed view)
    net.nodes["n1"].runner.broken.add(G1)
    net.nodes["n1"].runner.stays_broken.add(G1)
    net.run_for(3.0)
    assert "n1" not in net.holders(G1)
    errors = [a.text for _, a in net.events("n1", Notice) if a.level == "error"]
    assert any("leaving it stopped" in e for e in errors)
    net.run_for(60.0)
    assert "n1" not in net.holders(G1)


def test_set_unfit_hands_over_and_clear_unfit_brings_it_back() -> None:
    net = cluster(hbdconf="")
    n1 = net.nodes["n1"]
    net._apply(n1, n1.failover.set_unfit([G1], "link:eth0", net.now, net.wall,
                                         detail="eth0 lost carrier"))
    net.run_for(0.5)
    assert net.holders(G1) == ["n2"]
    net._apply(n1, n1.failover.clear_unfit([G1], "link:eth0", net.now, net.wall))
    net.run_for(1.0)
    assert net.holders(G1) == ["n1"]


def test_a_stale_or_unknown_result_changes_nothing() -> None:
    net = cluster()
    failover = net.nodes["n1"].failover
    assert failover.monitor_done(G1, 999, False, "x", net.now, net.wall) == []
    assert failover.monitor_done("nosuch", 1, False, "x", net.now, net.wall) == []
    assert failover.health.of(G1).fail_count == 0


def test_a_reload_with_monitor_lines_starts_checking_running_groups() -> None:
    net = cluster(hbdconf="")
    assert net.events("n1", RunMonitor) == []
    n1 = net.nodes["n1"]
    new = make_config("n1", haresources=HARESOURCES, extra="auto_failback on\n",
                      hbdconf=f"monitor {G1} interval=500ms timeout=1s\n")
    reloaded_at = net.now
    net._apply(n1, n1.failover.reconfigure(new, net.now, net.wall))
    net.run_for(1.2)
    checks = [t for t, a in net.events("n1", RunMonitor) if a.group == G1]
    assert len(checks) == 2 and checks[0] >= reloaded_at + 0.5 - 1e-9
    # and a reload without them stops checking
    net._apply(n1, n1.failover.reconfigure(make_config(
        "n1", haresources=HARESOURCES, extra="auto_failback on\n"), net.now, net.wall))
    before = len(net.events("n1", RunMonitor))
    net.run_for(2.0)
    assert len(net.events("n1", RunMonitor)) == before


def test_a_bad_or_unexpected_refusal_changes_nothing() -> None:
    net = cluster()
    n2 = net.nodes["n2"]
    since = net.now
    for value in ("bogus\x01", "local"):  # malformed; well formed but no standby asked
        tx = n2.engine.send("resource", [("rsc_hold", "local"), ("rtype", "full"),
                                         ("isstable", "1"), ("hbd_refused", value)], net.wall)
        net._apply(n2, [tx])
        net.run_for(0.5)
    warnings = [a.text for _, a in net.events("n1", Notice, since) if "hbd_refused" in a.text]
    assert len(warnings) == 1 and "ignored" in warnings[0] and "\x01" not in warnings[0]
    assert net.holders(G1) == ["n1"] and net.holders(G2) == ["n2"]
    assert net.events("n1", GroupRecovery, since) == []
    assert net.nodes["n1"].failover.standby.state.value == "not"


def test_unfit_during_a_restart_hands_the_group_over_after_the_stop() -> None:
    net = cluster(MONITOR + f"restart {G1} max=3 window=1h\n")
    n1 = net.nodes["n1"]
    n1.runner.stop_delay[G1] = 1.0
    n1.runner.broken.add(G1)
    while n1.failover.groups.groups[G1].state is not GroupState.STOPPING:
        net.run_for(0.05)
    # a link tracker marks it unfit while the restart's stop runs
    net._apply(n1, n1.failover.set_unfit([G1], "link:eth0", net.now, net.wall))
    net.run_for(5.0)
    assert net.holders(G1) == ["n2"]
