"""Prometheus metrics: the prepared view the event loop publishes, and its rendering.

Serving a scrape must never take the heartbeat path's time.  So the loop
does only the cheap half: now and then (hbd.conf `metrics_interval`, and
when what admins see changed) it copies what the metrics show into a
`MetricsView` — frozen, built from the snapshot front ends already get and
a few counters — and hands it over (hbd.metricsserve).  Rendering the text
format (`render`, with the prometheus-client library) happens off the loop,
in the HTTP server's or the textfile writer's thread, once per view: the
bytes are cached until the next view, so a flood of scrapes renders nothing.

This module imports prometheus_client at its top: the service imports it
only when metrics are configured, so an hbd without metrics never loads the
library.  `METRICS` lists every metric with its labels; docs/metrics.md
lists the same (tests/test_metrics.py holds them together).
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from hbd.control import Snapshot
from hbd.core.telemetry import Counters, Histogram

NODE_STATES = ("init", "up", "active", "dead")
GROUP_STATES = ("stopped", "starting", "running", "stopping", "blocked")
FENCE_STATES = ("delayed", "fencing", "waiting-confirmation", "failed", "fenced")

# name (without a counter's _total) -> (type, labels, help).  The one list of what hbd
# exports: docs/metrics.md documents exactly these.
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "hbd_build_info": ("gauge", ("version", "stack", "python"),
                       "Always 1; the labels say which hbd runs here"),
    "hbd_node_state": ("gauge", ("node", "state"),
                       "1 for the node's current status (init, up, active, dead), else 0"),
    "hbd_link_up": ("gauge", ("node", "link"),
                    "1 while the link to the node is up (this node's own: open), else 0"),
    "hbd_ping_node_up": ("gauge", ("node",),
                         "1 while the ping node (or ping_group) answers, else 0"),
    "hbd_heartbeats_sent_total": ("counter", ("link",),
                                  "Status messages (heartbeats) this node sent on the link"),
    "hbd_heartbeats_received_total": ("counter", ("node", "link"),
                                      "Messages heard from the node on the link (each is a "
                                      "sign of life, as in Heartbeat)"),
    "hbd_heartbeats_late_total": ("counter", ("node",),
                                  "Heartbeats from the node that came later than warntime"),
    "hbd_bad_packets_total": ("counter", ("reason",),
                              "Packets dropped before they changed anything, by reason"),
    "hbd_group_state": ("gauge", ("group", "state"),
                        "1 for the group's current state on this node's view, else 0"),
    "hbd_group_owner": ("gauge", ("group", "node"),
                        "1 for the node that runs (or is starting) the group"),
    "hbd_group_fail_count": ("gauge", ("group",),
                             "Monitor failures of the group here since cleanup or expiry"),
    "hbd_group_failures_total": ("counter", ("group", "operation"),
                                 "Failed starts, stops and monitors of the group here"),
    "hbd_monitor_checks_total": ("counter", ("group", "result"),
                                 "Monitor checks of the group here, by result (ok, failed)"),
    "hbd_failovers_total": ("counter", ("group", "reason"),
                            "Groups this node took over and got running, by trigger "
                            "(peer_dead, request, monitor, link, other)"),
    "hbd_failover_duration_seconds": ("histogram", (),
                                      "From the trigger (a dead peer's last heartbeat, a "
                                      "request, a monitor failure) to the group's resources "
                                      "all started here"),
    "hbd_split_brains_total": ("counter", ("group",),
                               "Times both nodes were found holding the group"),
    "hbd_fence_state": ("gauge", ("node", "state"),
                        "1 for the state of the peer's fencing (while not none)"),
    "hbd_fence_operations_total": ("counter", ("node", "result"),
                                   "Finished fencing of the peer, by result (ok, failed)"),
    "hbd_fence_device_ok": ("gauge", (),
                            "1 when the last fence device check passed, 0 when it failed; "
                            "absent without devices or before the first check"),
    "hbd_tracked_link_up": ("gauge", ("interface",),
                            "1 while a tracked interface is up with carrier, else 0"),
    "hbd_quorate": ("gauge", (),
                    "Corosync stack: 1 while this partition is quorate, 0 when not"),
    "hbd_event_loop_lag_seconds": ("histogram", (),
                                   "How late the event loop ran its callbacks"),
    "hbd_event_loop_lag_max_seconds": ("gauge", (),
                                       "The longest event-loop lag since start"),
}


class LoopLagLike(Protocol):
    """hbd.looplag.LoopLag as the metrics read it (the shared contract)."""

    buckets: tuple[float, ...]  # upper bounds in seconds, ascending, the last +inf
    counts: list[int]  # per bucket, not cumulative
    count: int
    sum_s: float
    max_s: float


@dataclass(frozen=True)
class MetricsView:
    """What one scrape shows: immutable, so a server thread may read it at any time."""

    version: str
    snapshot: Snapshot
    counters: Counters
    heartbeats_sent: tuple[tuple[str, int], ...] = ()  # (link, count)
    heartbeats_received: tuple[tuple[tuple[str, str], int], ...] = ()  # ((node, link), n)
    bad_packets: tuple[tuple[str, int], ...] = ()  # (reason, count)
    loop_lag: Histogram | None = None
    loop_lag_max: float = 0.0
    python: str = field(default_factory=platform.python_version)


def lag_figures(lag: LoopLagLike | None) -> tuple[Histogram | None, float]:
    """A copy of the loop-lag figures (on the loop: the server thread never reads `lag`)."""
    if lag is None:
        return None, 0.0
    return Histogram(tuple(lag.buckets), tuple(lag.counts), lag.count, lag.sum_s), lag.max_s


# Bad-packet reasons as the engine words them (hbd.core.engine, auth, fields), folded into
# a few label values: the words may hold peer-chosen text, a label must stay bounded.
_BAD_REASONS: tuple[tuple[str, str], ...] = (
    ("malformed:", "malformed"),  # hbd.core.wire's; auth's "malformed auth" below
    ("malformed", "auth"),
    ("no ", "auth"),
    ("bad mac", "auth"),
    ("key index", "auth"),
    ("unknown key", "auth"),
    ("unknown sender", "unknown_sender"),
    ("missing type", "missing_field"),
    ("bad sequence", "bad_sequence"),
    ("old generation", "replay"),
    ("packet claims", "impostor"),
    ("internal error", "internal_error"),
)


def bad_reason(text: str) -> str:
    lowered = text.lower()
    for prefix, reason in _BAD_REASONS:
        if lowered.startswith(prefix):
            return reason
    if "out of range" in lowered or "not a number" in lowered or "field" in lowered:
        return "bad_field"
    return "other"


def fold_bad(totals: Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    out: dict[str, int] = {}
    for text, count in totals:
        reason = bad_reason(text)
        out[reason] = out.get(reason, 0) + count
    return tuple(sorted(out.items()))


def _gauge(name: str) -> GaugeMetricFamily:
    kind, labels, text = METRICS[name]
    assert kind == "gauge", name
    return GaugeMetricFamily(name, text, labels=labels)


def _histogram(name: str, figures: Histogram) -> Metric:
    kind, labels, text = METRICS[name]
    assert kind == "histogram", name
    family = HistogramMetricFamily(name, text, labels=labels)
    running = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip(figures.buckets, figures.counts, strict=True):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
    family.add_metric([], buckets, figures.sum_s)
    return family


def families(view: MetricsView) -> Iterator[Metric]:
    """Every metric family of one view, in METRICS' order."""
    snap, counters = view.snapshot, view.counters
    fam = _gauge("hbd_build_info")
    fam.add_metric([view.version, snap.stack, view.python], 1)
    yield fam
    fam = _gauge("hbd_node_state")
    for node in snap.nodes:
        for state in _states(NODE_STATES, node.status):
            fam.add_metric([node.name, state], 1 if node.status == state else 0)
    yield fam
    fam = _gauge("hbd_link_up")
    for link in snap.links:
        fam.add_metric([link.node, link.link], 1 if link.status == "up" else 0)
    yield fam
    fam = _gauge("hbd_ping_node_up")
    for ping in snap.ping_nodes:
        fam.add_metric([ping.name], 1 if ping.status == "ping" else 0)
    yield fam
    yield _counter("hbd_heartbeats_sent_total", [((k,), v) for k, v in view.heartbeats_sent])
    yield _counter("hbd_heartbeats_received_total", view.heartbeats_received)
    yield _counter("hbd_heartbeats_late_total", [((k,), v) for k, v in counters.late_heartbeats])
    yield _counter("hbd_bad_packets_total", [((k,), v) for k, v in view.bad_packets])
    fam = _gauge("hbd_group_state")
    for group in snap.groups:
        for state in _states(GROUP_STATES, group.state):
            fam.add_metric([group.key, state], 1 if group.state == state else 0)
    yield fam
    fam = _gauge("hbd_group_owner")
    for group in snap.groups:
        if group.owner:
            fam.add_metric([group.key, group.owner], 1)
    yield fam
    fam = _gauge("hbd_group_fail_count")
    for group in snap.groups:
        fam.add_metric([group.key], group.fail_count)
    yield fam
    yield _counter("hbd_group_failures_total", counters.group_failures)
    yield _counter("hbd_monitor_checks_total", counters.monitor_results)
    yield _counter("hbd_failovers_total", counters.failovers)
    yield _histogram("hbd_failover_duration_seconds", counters.failover_seconds)
    yield _counter("hbd_split_brains_total", [((k,), v) for k, v in counters.split_brains])
    fam = _gauge("hbd_fence_state")
    for fence in snap.fencing:
        for state in _states(FENCE_STATES, fence.state):
            fam.add_metric([fence.node, state], 1 if fence.state == state else 0)
    yield fam
    yield _counter("hbd_fence_operations_total", counters.fence_results)
    fam = _gauge("hbd_fence_device_ok")
    if snap.fence_device in ("ok", "failed"):
        fam.add_metric([], 1 if snap.fence_device == "ok" else 0)
    yield fam
    fam = _gauge("hbd_tracked_link_up")
    for tracked in snap.tracked_links:
        fam.add_metric([tracked.interface], 1 if tracked.state == "up" else 0)
    yield fam
    fam = _gauge("hbd_quorate")
    if snap.quorate is not None:
        fam.add_metric([], 1 if snap.quorate else 0)
    yield fam
    if view.loop_lag is not None:
        yield _histogram("hbd_event_loop_lag_seconds", view.loop_lag)
        fam = _gauge("hbd_event_loop_lag_max_seconds")
        fam.add_metric([], view.loop_lag_max)
        yield fam


def _states(known: tuple[str, ...], current: str) -> tuple[str, ...]:
    """The label values of a state set: the known ones, and one no list foresaw."""
    return known if current in known else (*known, current)


def _counter(name: str, rows: Iterable[tuple[tuple[str, ...], int]]) -> Metric:
    kind, labels, text = METRICS[name]
    assert kind == "counter", name
    fam = CounterMetricFamily(name.removesuffix("_total"), text, labels=labels)
    for labels, value in rows:
        fam.add_metric(list(labels), value)
    return fam


class _ViewCollector(Collector):
    def __init__(self, view: MetricsView) -> None:
        self.view = view

    def collect(self) -> Iterable[Metric]:
        return families(self.view)


def render(view: MetricsView) -> bytes:
    """The Prometheus text format of one view (run off the event loop)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ViewCollector(view))
    return generate_latest(registry)
