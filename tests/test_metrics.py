"""The metrics without namespaces: settings, counting, rendering, serving, docs.

The cluster-level proofs (a failover seen in scraped metrics, the textfile's
atomic replacement under a reader, a scrape flood against heartbeats) are in
tests/test_metrics_netns.py.
"""

from __future__ import annotations

import http.client
import itertools
import os
import re
import socket
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hbd import metrics as m
from hbd import metricsserve
from hbd.configfiles import describe
from hbd.control import (
    FenceInfo,
    GroupInfo,
    LinkInfo,
    NodeInfo,
    PingInfo,
    Snapshot,
    TrackedLinkInfo,
)
from hbd.core.actions import (
    FenceStateChanged,
    GroupFailed,
    GroupStateChanged,
    LateHeartbeat,
    NodeStatusChanged,
    SplitBrain,
    StartGroup,
    TrackedLinkChanged,
)
from hbd.core.hbdconf import parse_hbdconf, parse_listen
from hbd.core.telemetry import FAILOVER_BUCKETS, Histogram, Telemetry
from tests.infra import commands

ROOT = Path(__file__).resolve().parent.parent
G = "10.0.0.9/24/eth0"


# --- hbd.conf ------------------------------------------------------------------------------


def test_metrics_are_off_by_default() -> None:
    conf, problems = parse_hbdconf("")
    assert conf.metrics_listen is None and conf.metrics_textfile == ""
    assert conf.metrics_interval_ms == 1000 and not problems.errors


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:9817", ("127.0.0.1", 9817)),
    ("0.0.0.0:1", ("0.0.0.0", 1)),
    ("[::1]:9817", ("::1", 9817)),
    ("[::]:65535", ("::", 65535)),
    ("[fe80:0::1]:80", ("fe80::1", 80)),
    ("::1:9817", None),  # IPv6 needs its brackets
    ("[10.0.0.1]:80", None),  # IPv4 has none
    ("10.0.0.1:0", None),
    ("10.0.0.1:65536", None),
    ("10.0.0.300:80", None),
    ("localhost:80", None),  # an address, not a name (no resolver at start)
    ("10.0.0.1", None),
])
def test_listen_addresses(text: str, expected: tuple[str, int] | None) -> None:
    assert parse_listen(text) == expected


def test_metrics_settings_are_read() -> None:
    conf, problems = parse_hbdconf("metrics_listen [::1]:9817\n"
                                   "metrics_textfile /var/lib/node/hbd.prom\n"
                                   "metrics_interval 250ms\n")
    assert not problems.errors
    assert conf.metrics_listen == ("::1", 9817)
    assert conf.metrics_textfile == "/var/lib/node/hbd.prom"
    assert conf.metrics_interval_ms == 250
    off, problems = parse_hbdconf("metrics_listen off\nmetrics_textfile off\n")
    assert not problems.errors and off.metrics_listen is None and off.metrics_textfile == ""


def test_bad_metrics_settings_name_their_line() -> None:
    _, problems = parse_hbdconf("metrics_listen ::1:9817\n"
                                "metrics_textfile hbd.prom\n"
                                "metrics_textfile /x/hbd.txt\n"
                                "metrics_interval 10ms\n"
                                "\n"
                                "metrics_listen 127.0.0.1:1\n")
    messages = [str(p) for p in problems.errors]
    assert messages[0].startswith("hbd.conf:1: metrics_listen: '::1:9817' is not ADDRESS:PORT")
    assert messages[1] == "hbd.conf:2: metrics_textfile: 'hbd.prom' is not an absolute path"
    assert messages[2] == "hbd.conf:3: metrics_textfile: already set at line 2"
    assert messages[3].startswith("hbd.conf:4: metrics_interval: bad time '10ms'")
    assert messages[4] == "hbd.conf:6: metrics_listen: already set at line 1"
    assert len(messages) == 5
    _, problems = parse_hbdconf("metrics_textfile /x/hbd.txt\n")
    assert [str(p) for p in problems.errors] == [
        "hbd.conf:1: metrics_textfile: '/x/hbd.txt' does not end in .prom (node_exporter "
        "reads only those)"]


def test_check_config_shows_the_metrics() -> None:
    from hbd.core.assemble import check
    from tests.test_hbdconf import _texts

    config, problems = check(_texts("metrics_listen [::1]:9817\n"
                                    "metrics_textfile /run/hbd.prom\n"), node_name="n1")
    assert config is not None, [str(p) for p in problems.errors]
    assert ("metrics: served on http://[::1]:9817/metrics and written to /run/hbd.prom; "
            "refreshed every 1000 ms at most") in describe(config).splitlines()
    config, _ = check(_texts(None), node_name="n1")
    assert config is not None and "metrics: off" in describe(config).splitlines()


# --- counting (hbd.core.telemetry) ----------------------------------------------------------


def _running(group: str = G) -> GroupStateChanged:
    return GroupStateChanged(group, "starting", "running", "n2")


def test_a_failover_is_timed_from_the_peer_declared_dead() -> None:
    t = Telemetry("n2")
    t.feed([NodeStatusChanged("n1", "active", "dead")], 100.0)
    t.feed([GroupStateChanged(G, "stopped", "starting", "n2"),
            StartGroup(G, "the peer died before taking it")], 100.2)
    t.feed([_running()], 101.5)
    c = t.counters()
    assert c.failovers == (((G, "peer_dead"), 1),)
    assert c.failover_seconds.count == 1
    assert c.failover_seconds.sum_s == pytest.approx(1.5)
    assert c.failover_seconds.counts[FAILOVER_BUCKETS.index(2.5)] == 1


def test_a_peer_death_is_timed_from_its_last_heartbeat() -> None:
    """The deadtime spent noticing the silence is part of the failover."""
    t = Telemetry("n2")
    t.feed([NodeStatusChanged("n1", "active", "dead", last_heard=99.7)], 100.0)
    t.feed([StartGroup(G, "the peer died before taking it")], 100.01)
    t.feed([_running()], 100.05)
    assert t.counters().failover_seconds.sum_s == pytest.approx(0.35)
    taken = t.take_failover(G)
    assert taken is not None and (taken.reason, taken.seconds) == ("peer_dead",
                                                                   pytest.approx(0.35))


def test_a_standby_here_or_another_group_s_failure_is_not_a_later_start_s_trigger() -> None:
    """A standby here moves groups to the peer; a monitor failure restarts its own group.
    Neither made a later start of another group here: that is timed from its start."""
    t = Telemetry("n1")
    t.command("release", 0.0)
    t.feed([StartGroup(G, "n2 released it")], 120.0)
    t.feed([_running()], 120.5)
    assert t.counters().failovers == (((G, "request"), 1),)
    assert t.counters().failover_seconds.sum_s == pytest.approx(0.5)
    t.feed([GroupFailed("other", "monitor", "exit 7")], 200.0)
    t.feed([StartGroup(G, "n2 released it")], 230.0)
    t.feed([_running()], 230.25)
    assert t.counters().failover_seconds.sum_s == pytest.approx(0.75)
    t.feed([StartGroup("other", "restart after a monitor failure")], 231.0)
    t.feed([_running("other")], 232.0)  # its own restart: from the failure
    assert t.counters().failover_seconds.sum_s == pytest.approx(32.75)
    assert dict(t.counters().failovers)[("other", "monitor")] == 1


def test_a_tracked_link_back_up_is_no_longer_a_trigger() -> None:
    """The group left when the link went; coming home after it is back (auto_failback,
    the peer's release) is not the link's failover."""
    t = Telemetry("n1")
    t.feed([TrackedLinkChanged("eth1", "up", "no-carrier", (G,))], 0.0)
    t.feed([TrackedLinkChanged("eth1", "no-carrier", "up", (G,))], 30.0)
    t.feed([StartGroup(G, "n2 released it")], 60.0)
    t.feed([_running()], 60.2)
    assert t.counters().failovers == (((G, "request"), 1),)
    assert t.counters().failover_seconds.sum_s == pytest.approx(0.2)


def test_start_up_and_failed_starts_are_not_failovers() -> None:
    t = Telemetry("n1")
    t.feed([StartGroup(G, "our own groups at start-up")], 1.0)
    t.feed([_running()], 2.0)
    t.feed([NodeStatusChanged("n2", "active", "dead")], 3.0)
    t.feed([StartGroup("other", "the peer died before taking it")], 3.1)
    t.feed([GroupStateChanged("other", "starting", "stopped", ""),
            GroupFailed("other", "start", "exit 1")], 4.0)
    c = t.counters()
    assert c.failovers == () and c.failover_seconds.count == 0
    assert c.group_failures == ((("other", "start"), 1),)


@pytest.mark.parametrize("trigger,reason", [
    (lambda t: t.command("takeover", 10.0), "request"),
    (lambda t: t.feed([GroupFailed(G, "monitor", "exit 7")], 10.0), "monitor"),
    (lambda t: t.feed([TrackedLinkChanged("eth1", "up", "no-carrier", (G,))], 10.0), "link"),
])
def test_each_trigger_names_the_failover(trigger: object, reason: str) -> None:
    t = Telemetry("n1")
    trigger(t)  # type: ignore[operator]
    t.feed([StartGroup(G, "something")], 10.5)
    t.feed([_running()], 12.0)
    assert t.counters().failovers == (((G, reason), 1),)
    assert t.counters().failover_seconds.sum_s == pytest.approx(2.0)


def test_a_start_without_a_trigger_here_is_timed_from_the_start() -> None:
    t = Telemetry("n2")
    t.feed([StartGroup(G, "n1 released it")], 50.0)
    t.feed([_running()], 50.25)
    assert t.counters().failovers == (((G, "request"), 1),)
    assert t.counters().failover_seconds.sum_s == pytest.approx(0.25)


def test_an_old_trigger_is_not_the_cause() -> None:
    t = Telemetry("n2")
    t.feed([NodeStatusChanged("n1", "active", "dead")], 0.0)
    t.feed([StartGroup(G, "cleanup: failure cleared and nobody runs it")], 1000.0)
    t.feed([_running()], 1001.0)
    assert t.counters().failovers == (((G, "other"), 1),)


def test_events_are_counted() -> None:
    t = Telemetry("n1")
    t.feed([LateHeartbeat("n2", 700, False), LateHeartbeat("n2", 800, False),
            SplitBrain(G, "n1", "both"),
            FenceStateChanged("n2", "fencing", "fenced", "ok"),
            FenceStateChanged("n2", "fencing", "failed", "timeout"),
            FenceStateChanged("n2", "none", "delayed", "")], 1.0)
    t.monitor_result(G, True)
    t.monitor_result(G, False)
    c = t.counters()
    assert c.late_heartbeats == (("n2", 2),)
    assert c.split_brains == ((G, 1),)
    assert c.fence_results == ((("n2", "failed"), 1), (("n2", "ok"), 1))
    assert c.monitor_results == (((G, "failed"), 1), ((G, "ok"), 1))


# --- rendering ------------------------------------------------------------------------------


def full_view() -> m.MetricsView:
    """A view in which every metric has something to show."""
    t = Telemetry("n1")
    t.feed([LateHeartbeat("n2", 700, False), SplitBrain(G, "n1", "x"),
            FenceStateChanged("n2", "fencing", "fenced", "ok"),
            GroupFailed(G, "monitor", "exit 7"), StartGroup(G, "restart")], 1.0)
    t.feed([_running()], 1.3)
    t.monitor_result(G, True)
    snap = Snapshot(
        node_name="n1",
        nodes=(NodeInfo("n1", "active", True), NodeInfo("n2", "dead")),
        links=(LinkInfo("n1", "eth0", "up"), LinkInfo("n2", "eth0", "dead")),
        resources_held="all",
        groups=(GroupInfo(G, "n1", "n1", "running", fail_count=1),),
        stack="corosync", quorate=True, ping_nodes=(PingInfo("10.0.0.254", "dead"),),
        tracked_links=(TrackedLinkInfo("eth0", "up", (G,)),),
        fencing=(FenceInfo("n2", "fenced", "done"),), fence_device="ok")
    lag = Histogram((0.001, 0.01, float("inf")), (90, 9, 1), 100, 0.5)
    return m.MetricsView("1.2.3", snap, t.counters(), heartbeats_sent=(("eth0", 10),),
                         heartbeats_received=((("n2", "eth0"), 9),),
                         bad_packets=m.fold_bad([("bad MAC under key 1", 3)]),
                         loop_lag=lag, loop_lag_max=0.2)


def _samples(data: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(data.decode()) for s in f.samples}


def test_every_metric_is_rendered_and_parses() -> None:
    families = {f.name: f for f in text_string_to_metric_families(m.render(full_view()).decode())}
    for name, (kind, labels, _) in m.METRICS.items():
        family = families.get(name.removesuffix("_total"))
        assert family is not None, name
        assert family.type == kind, name
        assert family.samples, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == set(labels), (name, sample)
    assert set(families) == {n.removesuffix("_total") for n in m.METRICS}


def test_rendered_values() -> None:
    s = _samples(m.render(full_view()))
    assert s[("hbd_node_state", (("node", "n2"), ("state", "dead")))] == 1
    assert s[("hbd_node_state", (("node", "n2"), ("state", "active")))] == 0
    assert s[("hbd_link_up", (("link", "eth0"), ("node", "n2")))] == 0
    assert s[("hbd_group_owner", (("group", G), ("node", "n1")))] == 1
    assert s[("hbd_bad_packets_total", (("reason", "auth"),))] == 3
    assert s[("hbd_failovers_total", (("group", G), ("reason", "monitor")))] == 1
    assert s[("hbd_failover_duration_seconds_bucket", (("le", "0.5"),))] == 1
    assert s[("hbd_failover_duration_seconds_bucket", (("le", "0.25"),))] == 0
    assert s[("hbd_event_loop_lag_seconds_bucket", (("le", "0.01"),))] == 99
    assert s[("hbd_event_loop_lag_seconds_count", ())] == 100
    assert s[("hbd_quorate", ())] == 1
    assert s[("hbd_ping_node_up", (("node", "10.0.0.254"),))] == 0


def test_a_state_no_list_foresaw_is_shown_all_the_same() -> None:
    view = full_view()
    odd = Snapshot("n1", (NodeInfo("n1", "leaving", True),), (), "none",
                   (GroupInfo(G, "n1", "", "migrating"),))
    s = _samples(m.render(m.MetricsView("1", odd, view.counters)))
    assert s[("hbd_node_state", (("node", "n1"), ("state", "leaving")))] == 1
    assert s[("hbd_node_state", (("node", "n1"), ("state", "active")))] == 0
    assert s[("hbd_group_state", (("group", G), ("state", "migrating")))] == 1


@pytest.mark.parametrize("text,reason", [
    ("no signature", "auth"), ("malformed auth line", "auth"),
    ("key index out of range (0-15)", "auth"), ("unknown key index 7", "auth"),
    ("bad MAC under key 1", "auth"), ("malformed: no netstring", "malformed"),
    ("unknown sender", "unknown_sender"), ("missing type or timestamp", "missing_field"),
    ("bad sequence number", "bad_sequence"), ("old generation (replay?)", "replay"),
    ("packet claims to be from this node", "impostor"),
    ("internal error handling 'status'", "internal_error"), ("bad seq field", "bad_field"),
])
def test_bad_packet_reasons_fold_into_few_labels(text: str, reason: str) -> None:
    assert m.bad_reason(text) == reason


def test_the_loop_lag_contract_is_copied() -> None:
    class Lag:
        def __init__(self) -> None:
            self.buckets = (0.001, float("inf"))
            self.counts = [3, 1]
            self.count = 4
            self.sum_s = 0.25
            self.max_s = 0.2

    lag = Lag()
    figures, worst = m.lag_figures(lag)
    lag.counts[0] = 99  # the loop keeps counting; the view must not change
    assert figures == Histogram((0.001, float("inf")), (3, 1), 4, 0.25) and worst == 0.2
    assert m.lag_figures(None) == (None, 0.0)


# --- serving --------------------------------------------------------------------------------


@pytest.fixture
def exporter() -> object:
    exp = metricsserve.Exporter()
    exp.configure(metricsserve.MetricsSettings(("127.0.0.1", 0), "", 1.0))
    yield exp
    metricsserve.retire(exp.close())


def _get(address: tuple[str, int], path: str = "/metrics") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*address, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_scrapes_are_answered_from_one_rendering(exporter: metricsserve.Exporter,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    address = exporter.address
    assert address is not None
    assert _get(address)[0] == 503  # nothing published yet
    renders: list[m.MetricsView] = []

    def counting(view: m.MetricsView) -> bytes:
        renders.append(view)
        return m.render(view)

    monkeypatch.setattr(metricsserve, "render", counting)
    view = full_view()
    exporter.publish(view)
    bodies = {_get(address)[1] for _ in range(20)}
    assert len(bodies) == 1 and len(renders) == 1
    assert _samples(bodies.pop())[("hbd_quorate", ())] == 1
    exporter.publish(m.MetricsView("9.9.9", view.snapshot, view.counters))
    assert b'version="9.9.9"' in _get(address)[1] and len(renders) == 2
    assert _get(address, "/other")[0] == 404


def test_connections_are_bounded(exporter: metricsserve.Exporter) -> None:
    address = exporter.address
    assert address is not None
    exporter.publish(full_view())
    idle = [socket.create_connection(address, timeout=5)
            for _ in range(metricsserve.MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)  # the server has taken them all
        extra = socket.create_connection(address, timeout=5)
        assert extra.recv(1) == b""  # closed at once, not queued behind the idle ones
        extra.close()
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)
    assert _get(address)[0] == 200  # the slots came back


def test_ipv6_is_served() -> None:
    exp = metricsserve.Exporter()
    exp.configure(metricsserve.MetricsSettings(("::1", 0), "", 1.0))
    try:
        address = exp.address
        assert address is not None and address[0] == "::1"
        exp.publish(full_view())
        assert _get(address)[0] == 200
    finally:
        metricsserve.retire(exp.close())


def test_a_port_in_use_is_logged_not_raised(exporter: metricsserve.Exporter,
                                            caplog: pytest.LogCaptureFixture) -> None:
    address = exporter.address
    assert address is not None
    other = metricsserve.Exporter()
    other.configure(metricsserve.MetricsSettings(address, "", 1.0))
    assert other.address is None
    assert "cannot serve metrics on 127.0.0.1:" in caplog.text


def test_a_reload_to_a_port_in_use_keeps_serving_on_the_old_one(
        exporter: metricsserve.Exporter, caplog: pytest.LogCaptureFixture) -> None:
    """Validate before mutating: the new endpoint is bound before the old one closes; the
    next reload (the port freed meanwhile) moves it."""
    old = exporter.address
    assert old is not None
    exporter.publish(full_view())
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    wanted = ("127.0.0.1", taken.getsockname()[1])
    retired = exporter.configure(metricsserve.MetricsSettings(wanted, "", 2.0))
    assert retired == [] and exporter.address == old and _get(old)[0] == 200
    assert exporter.settings.listen != wanted and exporter.settings.interval == 2.0
    assert f"cannot serve metrics on 127.0.0.1:{wanted[1]}" in caplog.text
    assert f"metrics still served on 127.0.0.1:{old[1]}" in caplog.text
    taken.close()
    metricsserve.retire(exporter.configure(metricsserve.MetricsSettings(wanted, "", 2.0)))
    assert exporter.address == wanted and _get(wanted)[0] == 200
    with pytest.raises(OSError):
        _get(old)


def test_an_hbd_without_metrics_does_not_load_the_library() -> None:
    code = ("import sys, hbd.daemon, hbd.service, hbd.stack_heartbeat, hbd.stack_corosync; "
            "print('prometheus_client' in sys.modules)")
    out = commands.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


# --- docs and packaging ---------------------------------------------------------------------


def _documented() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "metrics.md").read_text()
    rows = re.findall(r"^\| `(hbd_\w+)` \| (\w+) \|([^|]*)\|", text, re.M)
    return {name: set(re.findall(r"`(\w+)`", labels)) for name, _, labels in rows}


def test_every_metric_is_documented_and_every_documented_one_exists() -> None:
    documented = _documented()
    assert set(documented) == set(m.METRICS)
    for name, (_, labels, _) in m.METRICS.items():
        assert documented[name] == set(labels), name


def test_the_packages_recommend_the_library() -> None:
    control = (ROOT / "packaging" / "debian" / "control").read_text()
    assert re.search(r"^Recommends:.*python3-prometheus-client", control, re.M)
    spec = (ROOT / "packaging" / "rpm" / "hbd.spec").read_text()
    assert "Recommends:     python3dist(prometheus-client)" in spec


def test_a_trigger_serves_one_failover_only() -> None:
    t = Telemetry("n2")
    t.feed([NodeStatusChanged("n1", "active", "dead")], 10.0)
    t.feed([StartGroup(G, "the peer died before taking it"),
            StartGroup("other", "the peer died before taking it")], 10.1)
    t.feed([_running(), GroupStateChanged("other", "starting", "running", "n2")], 10.6)
    t.feed([StartGroup(G, "n1 released it")], 60.0)  # later, a different failover
    t.feed([_running()], 60.5)
    c = t.counters()
    assert c.failovers == (((G, "peer_dead"), 1), ((G, "request"), 1),
                           (("other", "peer_dead"), 1))
    assert c.failover_seconds.sum_s == pytest.approx(0.6 + 0.6 + 0.5)


def test_the_textfile_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    """node_exporter's user may write the textfile directory: a symlink planted under the
    temporary file's name must not make root (hbd) write through it."""
    victim = tmp_path / "shadow"
    victim.write_text("root:secret\n")
    path = tmp_path / "hbd.prom"
    (tmp_path / f".hbd.prom.{os.getpid()}.tmp").symlink_to(victim)
    exp = metricsserve.Exporter()
    exp.configure(metricsserve.MetricsSettings(None, str(path), 0.1))
    exp.publish(full_view())
    metricsserve.retire(exp.close())
    assert victim.read_text() == "root:secret\n"
    assert _samples(path.read_bytes())[("hbd_quorate", ())] == 1
    assert not path.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hbd.prom", "shadow"]


def test_the_textfile_is_written_and_an_unwritable_one_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    exp = metricsserve.Exporter()
    path = tmp_path / "hbd.prom"
    exp.configure(metricsserve.MetricsSettings(None, str(path), 0.1))
    view = full_view()
    exp.publish(view)
    metricsserve.retire(exp.close())  # writes the latest view before stopping
    assert _samples(path.read_bytes())[("hbd_quorate", ())] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["hbd.prom"]  # no temporary file left
    missing = tmp_path / "gone" / "hbd.prom"
    exp.configure(metricsserve.MetricsSettings(None, str(missing), 0.1))
    for version in ("1", "2", "3"):
        exp.publish(m.MetricsView(version, view.snapshot, view.counters))
        time.sleep(0.05)
    metricsserve.retire(exp.close())
    assert caplog.text.count("cannot write the metrics textfile") == 1


def test_the_loop_builds_views_at_most_every_interval() -> None:
    import asyncio

    from hbd.metricsloop import MetricsLoop

    built: list[float] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        def build() -> m.MetricsView:
            built.append(loop.time())
            return m.MetricsView(str(len(built)), full_view().snapshot, full_view().counters)

        metrics = MetricsLoop(loop, build)
        await metrics.configure(metricsserve.MetricsSettings(("127.0.0.1", 0), "", 0.2))
        for _ in range(50):  # state changes in a burst: no view more often than 0.2 s
            metrics.state_changed()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        await metrics.close()

    asyncio.run(scenario())
    spacing = [b - a for a, b in itertools.pairwise(built[:-1])]  # the last: close()'s
    assert len(built) >= 4 and all(s >= 0.19 for s in spacing), built


def test_the_service_feeds_its_counters_and_the_loop_lag_into_the_view() -> None:
    """ServiceBase: dispatched events are counted; its `loop_lag` (hbd.looplag) is read
    into the view."""
    import asyncio

    from tests.test_service import Stack

    class Lag:
        def __init__(self) -> None:
            self.buckets = (0.001, float("inf"))
            self.counts = [5, 1]
            self.count = 6
            self.sum_s = 0.01
            self.max_s = 0.008

    class WithSnapshot(Stack):
        def snapshot(self) -> Snapshot:
            return full_view().snapshot

    async def run() -> None:
        stack = WithSnapshot()
        stack._loop = asyncio.get_running_loop()
        stack._dispatch([LateHeartbeat("n2", 900, False)])
        view = stack._metrics_view()
        assert view.counters.late_heartbeats == (("n2", 1),)
        assert view.loop_lag is not None and view.loop_lag.count == 0  # the service's own
        stack.loop_lag = Lag()  # type: ignore[assignment]
        view = stack._metrics_view()
        assert view.loop_lag == Histogram((0.001, float("inf")), (5, 1), 6, 0.01)
        assert view.loop_lag_max == 0.008
        assert b"hbd_event_loop_lag_max_seconds 0.008" in m.render(view)

    asyncio.run(run())
