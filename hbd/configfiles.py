"""Read /etc/ha.d from disk and describe the effective cluster.

The parsing itself is pure (hbd.core.assemble); this module does the file
reading, the authkeys mode check input, and this host's addresses.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from hbd.core.assemble import ConfigTexts, check
from hbd.core.config import (
    BcastLink,
    ClusterConfig,
    ClusterStack,
    Mcast6Link,
    McastLink,
    Problem,
    SerialLink,
    Severity,
    Ucast6Link,
    UcastLink,
)
from hbd.core.hbdconf import HBD_CONF
from hbd.errors import ConfigError
from hbd.respawn import check_entries, runs_ipfail

DEFAULT_CONFIG_DIR = "/etc/ha.d"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def read_texts(config_dir: str | Path) -> ConfigTexts:
    directory = Path(config_dir)
    authkeys = directory / "authkeys"
    try:
        mode: int | None = os.stat(authkeys).st_mode
    except OSError:
        mode = None
    hbdconf: str | None = None
    hbdconf_error: str | None = None
    hbdconf_mode: int | None = None
    try:  # optional: only a file that exists and cannot be read is a problem
        hbdconf = (directory / HBD_CONF).read_text(encoding="utf-8", errors="replace")
        hbdconf_mode = os.stat(directory / HBD_CONF).st_mode
    except FileNotFoundError:
        pass
    except OSError as err:
        hbdconf_error = f"cannot read the file: {err.strerror}"
    return ConfigTexts(
        hacf_name=str(directory / "ha.cf"),
        hacf=_read(directory / "ha.cf"),
        haresources_name=str(directory / "haresources"),
        haresources=_read(directory / "haresources"),
        authkeys_name=str(authkeys),
        authkeys=_read(authkeys),
        authkeys_mode=mode,
        hbdconf_name=str(directory / HBD_CONF),
        hbdconf=hbdconf,
        hbdconf_error=hbdconf_error,
        hbdconf_mode=hbdconf_mode,
    )


def default_node_name() -> str:
    """`uname -n`, lower-cased as Heartbeat does."""
    return os.uname().nodename.lower()


def load(
    config_dir: str | Path,
    *,
    node_name: str | None = None,
    local_addresses: Collection[str] | None = None,
) -> tuple[ClusterConfig | None, list[Problem]]:
    if local_addresses is None:
        from hbd.net.addresses import local_ip_addresses

        local_addresses = local_ip_addresses()
    texts = read_texts(config_dir)
    config, problems = check(
        texts,
        node_name=node_name or default_node_name(),
        local_addresses=local_addresses,
    )
    if config is not None:
        problems += check_entries(config.hacf.respawn, texts.hacf_name)
    return config, problems


def load_or_raise(
    config_dir: str | Path,
    *,
    node_name: str | None = None,
    local_addresses: Collection[str] | None = None,
) -> ClusterConfig:
    config, problems = load(config_dir, node_name=node_name, local_addresses=local_addresses)
    if config is None:
        raise ConfigError([str(p) for p in problems if p.severity is Severity.ERROR])
    return config


def _link_text(link: object) -> str:
    if isinstance(link, BcastLink):
        return f"bcast {link.interface} udp/{link.port}"
    if isinstance(link, McastLink):
        loop = "loop" if link.loop else "no loop"
        return f"mcast {link.interface} {link.group} udp/{link.port} ttl {link.ttl} {loop}"
    if isinstance(link, UcastLink):
        return f"ucast {link.interface} -> {link.peer} udp/{link.port}"
    if isinstance(link, Ucast6Link):
        return f"ucast6 {link.interface} -> [{link.peer}] udp/{link.port}"
    if isinstance(link, Mcast6Link):
        loop = "loop" if link.loop else "no loop"
        return (f"mcast6 {link.interface} [{link.group}] udp/{link.port} hops {link.hops} "
                f"{loop}")
    if isinstance(link, SerialLink):
        return f"serial {link.device} {link.baud} baud"
    return repr(link)


def _fencing_text(config: ClusterConfig) -> str:
    """Which devices this node fences with; never their parameters (passwords)."""
    if config.hacf.cluster_stack is ClusterStack.COROSYNC:
        return "fencing: none (the corosync stack does not fence)"
    device = config.hacf.stonith_for(config.node_name)
    fencing = config.hbd.fencing
    devices = []
    if device is not None:
        where = f"ha.cf:{device.line}" if device.line else "ha.cf"
        devices.append(f"{device.type} ({where}"
                       + (f", parameters in {device.config_file})" if device.config_file else ")"))
    devices += [f"{agent.agent} ({HBD_CONF}:{agent.line})" for agent in fencing.agents]
    if not devices:
        return "fencing: none (no stonith, stonith_host or fence_agent for this node)"
    return (f"fencing: {', '.join(devices)}; race delay {fencing.race_delay_ms} ms, retry "
            f"every {fencing.retry_ms} ms, timeout {fencing.timeout_ms} ms, status check "
            f"every {fencing.status_interval_ms} ms")


def describe(config: ClusterConfig) -> str:
    """The effective cluster as an admin wants to see it (hbd --check-config)."""
    hacf = config.hacf
    t = hacf.timers
    lines = [
        f"cluster {hacf.cluster_name}: this node {config.node_name}, "
        f"stack {hacf.cluster_stack.value}",
        "nodes:",
    ]
    for node in hacf.nodes:
        lines.append(f"  {node}{' (this node)' if node == config.node_name else ''}")
    lines.append("links:")
    lines += [f"  {_link_text(link)}" for link in hacf.links] or ["  (none)"]
    lines.append(
        f"timers: keepalive {t.keepalive_ms} ms, deadtime {t.deadtime_ms} ms, "
        f"warntime {t.warntime_ms} ms, initdead {t.initdead_ms} ms, "
        f"deadping {t.deadping_ms} ms"
    )
    lines.append(f"auto_failback: {hacf.auto_failback.value}")
    if hacf.realtime:
        rtprio = hacf.rtprio if hacf.rtprio is not None else 1
        lines.append(f"realtime: on (SCHED_RR priority {rtprio}, memory locked; children "
                     "at normal priority)")
    else:
        lines.append("realtime: off")
    pings = list(hacf.ping_nodes) + [
        f"{g.name}({' '.join(g.addresses)})" for g in hacf.ping_groups
    ]
    if pings:
        lines.append(f"ping nodes: {' '.join(pings)}")
    lines.append("groups:")
    for group in config.groups:
        resources = " ".join(r.id for r in group.resources)
        lines.append(f"  {group.key}: home {group.node}: {resources}")
    if not config.groups:
        lines.append("  (none)")
    for key, order in hacf.group_orders:
        lines.append(f"group_order {key}: {' '.join(order)}")
    active = config.auth.active_key
    accepted = ", ".join(str(k) for k in config.auth.keys)
    lines.append(f"auth: signing with key {active}; accepting {accepted}")
    logging_bits = [f"facility {hacf.logfacility}" if hacf.logfacility else "no syslog"]
    if hacf.logfile:
        logging_bits.append(f"logfile {hacf.logfile}")
    if hacf.debugfile:
        logging_bits.append(f"debugfile {hacf.debugfile}")
    lines.append(f"logging: {', '.join(logging_bits)}")
    if hacf.apiauth:
        entries = "; ".join(
            f"{a.client}" + "".join(f" {k}={','.join(v)}" for k, v in
                                    (("uid", a.users), ("gid", a.groups)) if v)
            for a in hacf.apiauth)
        lines.append(f"client API (cl_status): apiauth {entries}; Heartbeat's defaults "
                     "for other clients")
    for entry in hacf.respawn:
        lines.append(f"respawn: {entry.command} as {entry.user}")
    lines.append(f"API clients' messages on the wire: at most {config.hbd.api_client_rate} "
                 f"KiB/s each, {config.hbd.api_clients_rate} KiB/s together")
    if runs_ipfail(hacf.respawn) and (hacf.ping_nodes or hacf.ping_groups):
        lines.append("ping nodes: ipfail decides (respawned); hbd's built-in rule steps aside")
    lines.append(_fencing_text(config))
    lines.append(f"{HBD_CONF}: {'read' if config.hbd.present else 'none (defaults)'}; "
                 f"gratuitous ARPs: {hacf.arp_count} every {hacf.arp_interval_ms} ms")
    hbd = config.hbd
    refresh = (f"every {hbd.garp_refresh_ms} ms while a group runs" if hbd.garp_refresh_ms
               else "off")
    lines.append(f"gratuitous ARP refresh: {refresh}")
    places = list(hbd.notify)
    if hbd.notify_dir is None:
        places.append("notify.d in the configuration directory (if it exists)")
    elif hbd.notify_dir:
        places.append(f"{hbd.notify_dir}/")
    lines.append(f"notify hooks: {', '.join(places) or 'none'}; "
                 f"timeout {hbd.notify_timeout_ms} ms each")
    lines += _describe_health(config)
    lines.append(_describe_tracking(config))
    lines.append(_describe_metrics(config))
    return "\n".join(lines)


def _describe_metrics(config: ClusterConfig) -> str:
    hbd = config.hbd
    outputs = []
    if hbd.metrics_listen is not None:
        host, port = hbd.metrics_listen
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        outputs.append(f"served on http://{shown}/metrics")
    if hbd.metrics_textfile:
        outputs.append(f"written to {hbd.metrics_textfile}")
    if not outputs:
        return "metrics: off"
    return (f"metrics: {' and '.join(outputs)}; refreshed every {hbd.metrics_interval_ms} ms "
            "at most")


def _describe_tracking(config: ClusterConfig) -> str:
    hbd = config.hbd
    parts = ["the interfaces of the groups' addresses" if hbd.link_tracking
             else "not the interfaces of the groups' addresses (link_tracking off)"]
    for track in hbd.tracks:
        who = "every group" if track.group == "*" else f"group {track.group}"
        parts.append(f"{who} also needs {' '.join(track.interfaces)}")
    return "link tracking: " + "; ".join(parts)


def _describe_health(config: ClusterConfig) -> list[str]:
    hbd = config.hbd
    if not hbd.monitors:
        return ["monitoring: none"]
    restarts = {r.group: r for r in hbd.restarts}
    expiries = {e.group: e.expiry_ms for e in hbd.expiries}
    owner = {r.id: g.key for g in config.groups for r in g.resources}
    lines = ["monitoring:"]
    peer = ("the next node in its order" if config.hacf.cluster_stack is ClusterStack.COROSYNC
            else "the peer")
    for m in hbd.monitors:
        keys = {g.key for g in config.groups}
        key = m.target if m.target in keys else owner.get(m.target, m.target)
        restart = restarts.get(key)
        policy = (f"restart up to {restart.max} time(s) in {restart.window_ms // 1000} s"
                  if restart is not None and restart.max else "no restart")
        expiry = expiries.get(key, 0)
        lines.append(f"  {m.target}: every {m.interval_ms} ms, timeout {m.timeout_ms} ms, "
                     f"{m.failures} failure(s); {policy}, then hand {key} to {peer}; "
                     "failure kept " + (f"{expiry // 1000} s" if expiry else "until cleanup"))
    return lines
