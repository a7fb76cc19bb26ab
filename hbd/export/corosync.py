"""Derive a Corosync 3 (knet) corosync.conf from ha.cf.

Heartbeat media become knet links, one per network interface named in ha.cf
(bcast, mcast and ucast lines on the same interface are the same network).
knet talks unicast between node addresses, which ha.cf only names for ucast
peers; every address that cannot be derived becomes a placeholder host name
(`n1` on link 0, `n1-eth1` on later links) that the admin makes resolvable or
replaces, and a note says so.  Serial links and Heartbeat's authkeys have no
Corosync counterpart: a note for each.

Failure detection in Corosync takes about token + consensus (consensus is
1.2 × token by default), so `token` is deadtime / 2.2: the same time to
declare a node dead as Heartbeat's deadtime gave.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hbd.core.config import (
    AuthMethod,
    BcastLink,
    ClusterConfig,
    Mcast6Link,
    McastLink,
    SerialLink,
    Ucast6Link,
    UcastLink,
)
from hbd.export.agents import slug
from hbd.export.model import HostView, Note, Sources

MAX_LINKS = 8  # knet's limit
MIN_TOKEN_MS = 1000
COROSYNC_FACILITIES = frozenset(["daemon"] + [f"local{i}" for i in range(8)])


@dataclass(frozen=True)
class CorosyncExport:
    text: str
    notes: tuple[Note, ...]
    placeholders: tuple[str, ...]  # names in ringX_addr that are not addresses


@dataclass
class _Link:
    interface: str
    media: list[str] = field(default_factory=list)  # e.g. "bcast eth0"
    peers: list[str] = field(default_factory=list)  # ucast addresses, file order
    line: int = 0


def token_ms(deadtime_ms: int) -> int:
    """Corosync's token timeout giving about the same failure detection time."""
    return max(MIN_TOKEN_MS, round(deadtime_ms / 2.2 / 100) * 100)


def _links(config: ClusterConfig, sources: Sources, notes: list[Note]) -> list[_Link]:
    links: dict[str, _Link] = {}
    for link in config.hacf.links:
        if isinstance(link, SerialLink):
            notes.append(Note(sources.hacf, link.line, f"serial {link.device}: not carried over: "
                              "Corosync has no serial transport; add a second network link "
                              "instead (knet uses up to 8)"))
            continue
        entry = links.setdefault(link.interface, _Link(link.interface, line=link.line))
        if isinstance(link, BcastLink):
            entry.media.append(f"bcast {link.interface}")
        elif isinstance(link, McastLink):
            entry.media.append(f"mcast {link.interface} {link.group}")
            notes.append(Note(sources.hacf, link.line, f"mcast {link.interface} {link.group}: "
                              "knet sends unicast UDP between node addresses; the multicast "
                              f"group, ttl {link.ttl} and loop setting are not used"))
        elif isinstance(link, UcastLink | Ucast6Link):
            kind = "ucast" if isinstance(link, UcastLink) else "ucast6"
            entry.media.append(f"{kind} {link.interface} {link.peer}")
            entry.peers.append(link.peer)
        elif isinstance(link, Mcast6Link):
            entry.media.append(f"mcast6 {link.interface} {link.group}")
            notes.append(Note(sources.hacf, link.line, f"mcast6 {link.interface} {link.group}: "
                              "knet sends unicast UDP between node addresses; the multicast "
                              f"group, hops {link.hops} and loop setting are not used"))
    result = list(links.values())
    for extra in result[MAX_LINKS:]:
        notes.append(Note(sources.hacf, extra.line, f"{', '.join(extra.media)}: not carried "
                          f"over: knet supports at most {MAX_LINKS} links"))
    return result[:MAX_LINKS]


def _assign(link: _Link, nodes: tuple[str, ...], host: HostView) -> tuple[dict[str, str],
                                                                          list[str]]:
    """Which node owns which address on this link; also the addresses left unexplained."""
    owned: dict[str, str] = {}
    peers = list(dict.fromkeys(link.peers))
    if host.this_node in nodes:
        mine = [addr for iface, addr in host.addresses if iface == link.interface]
        if mine:
            owned[host.this_node] = next((a for a in mine if a in peers), mine[0])
            local = {addr for _, addr in host.addresses}
            peers = [p for p in peers if p not in local]
    unowned = [n for n in nodes if n not in owned]
    if len(peers) == 1 and len(unowned) == 1:
        owned[unowned[0]] = peers.pop()
    elif len(peers) == 1 and len(nodes) == 2 and host.origin_node in nodes:
        # Heartbeat skips ucast lines naming itself, so a lone peer is the other node.
        other = next(n for n in nodes if n != host.origin_node)
        if other not in owned:
            owned[other] = peers.pop()
    return owned, peers


def _nodelist(config: ClusterConfig, links: list[_Link], host: HostView, sources: Sources,
              notes: list[Note]) -> tuple[list[list[tuple[str, str]]], list[str]]:
    nodes = config.hacf.nodes
    entries: list[list[tuple[str, str]]] = [
        [("name", node), ("nodeid", str(n))] for n, node in enumerate(nodes, start=1)]
    placeholders: list[str] = []
    for number, link in enumerate(links):
        owned, unexplained = _assign(link, nodes, host)
        guessed: list[str] = []
        for entry, node in zip(entries, nodes, strict=True):
            address = owned.get(node)
            if address is None:
                address = node if number == 0 else f"{node}-{slug(link.interface)}"
                guessed.append(address)
            entry.append((f"ring{number}_addr", address))
        where = f"link {number} ({', '.join(link.media)})"
        if guessed:
            placeholders += guessed
            notes.append(Note(sources.hacf, link.line, f"{where}: ha.cf names no address for "
                              f"{', '.join(guessed)}; ring{number}_addr holds that name as a "
                              "placeholder: put the node's address on this network there, or "
                              "make the name resolve to it"))
        if unexplained:
            notes.append(Note(sources.hacf, link.line, f"{where}: cannot tell which node owns "
                              f"{', '.join(unexplained)}; run the export on a cluster node or "
                              "give --node NAME for the node this ha.cf belongs to"))
    return entries, placeholders


def _logging(config: ClusterConfig, sources: Sources, notes: list[Note]) -> list[str]:
    hacf = config.hacf
    lines = ["logging {", "    to_logfile: yes", "    logfile: /var/log/corosync/corosync.log"]
    if hacf.logfacility is None:
        lines.append("    to_syslog: no")
    else:
        facility = hacf.logfacility
        if facility not in COROSYNC_FACILITIES:
            notes.append(Note(sources.hacf, 0, f"logfacility {facility}: Corosync accepts only "
                              "daemon and local0..local7; daemon is used"))
            facility = "daemon"
        lines += ["    to_syslog: yes", f"    syslog_facility: {facility}"]
    lines += ["    timestamp: on", "}"]
    for directive, path in (("logfile", hacf.logfile), ("debugfile", hacf.debugfile)):
        if path:
            notes.append(Note(sources.hacf, 0, f"{directive} {path}: not carried over: Corosync "
                              "logs to /var/log/corosync/corosync.log and Pacemaker to "
                              "/var/log/pacemaker/pacemaker.log"))
    if hacf.debug_level:
        notes.append(Note(sources.hacf, 0, f"debug {hacf.debug_level}: not carried over; set "
                          "'debug: on' in corosync.conf's logging section if wanted"))
    return lines


def _timer_notes(config: ClusterConfig, sources: Sources, notes: list[Note]) -> None:
    t = config.hacf.timers
    notes.append(Note(sources.hacf, 0, f"keepalive {t.keepalive_ms} ms: not carried over: knet "
                      "derives its link pings from the token timeout"))
    notes.append(Note(sources.hacf, 0, f"warntime {t.warntime_ms} ms: not carried over: Corosync "
                      "has no late-heartbeat warning"))
    notes.append(Note(sources.hacf, 0, f"initdead {t.initdead_ms} ms: not carried over: with "
                      "two_node Corosync waits at start-up until both nodes have been seen "
                      "once (wait_for_all)" if len(config.hacf.nodes) == 2 else
                      f"initdead {t.initdead_ms} ms: not carried over"))
    if config.hacf.links:
        notes.append(Note(sources.hacf, 0, f"udpport {config.hacf.udpport}: not carried over: "
                          "knet uses UDP port 5405 for link 0, 5406 for link 1 and so on"))


def _auth_notes(config: ClusterConfig, sources: Sources, notes: list[Note]) -> None:
    method = config.auth.active_key.method
    if method is AuthMethod.CRC:
        notes.append(Note(sources.authkeys, 0, "crc: authenticates nothing; the Corosync "
                          "cluster encrypts (aes256) and authenticates (sha256) every packet"))
    notes.append(Note(sources.authkeys, 0, f"{method.value} key: not carried over: run "
                      "corosync-keygen on one node and copy /etc/corosync/authkey to the others"))


def render_corosync(config: ClusterConfig, host: HostView | None = None,
                    sources: Sources | None = None, *,
                    comment_lines: tuple[str, ...] = ()) -> CorosyncExport:
    """corosync.conf text for `config`, with the notes on what did not carry over."""
    host = host or HostView()
    sources = sources or Sources()
    hacf = config.hacf
    notes: list[Note] = []
    links = _links(config, sources, notes)
    if not links:
        notes.append(Note(sources.hacf, 0, "no UDP medium in ha.cf: link 0 uses the node names "
                          "as placeholder addresses"))
        links = [_Link("", media=["no UDP medium"])]
    entries, placeholders = _nodelist(config, links, host, sources, notes)
    out = [f"# {line}" for line in comment_lines]
    out += [
        "totem {",
        "    version: 2",
        f"    cluster_name: {hacf.cluster_name}",
        "    transport: knet",
        "    crypto_cipher: aes256",
        "    crypto_hash: sha256",
        f"    token: {token_ms(hacf.timers.deadtime_ms)}",
    ]
    for number, link in enumerate(links):
        out += [f"    # link {number}: {', '.join(link.media)}", "    interface {",
                f"        linknumber: {number}", "    }"]
    out += ["}", "", "nodelist {"]
    for entry in entries:
        out.append("    node {")
        out += [f"        {key}: {value}" for key, value in entry]
        out.append("    }")
    out += ["}", "", "quorum {", "    provider: corosync_votequorum"]
    if len(hacf.nodes) == 2:
        out.append("    two_node: 1")
    out += ["}", ""]
    out += _logging(config, sources, notes)
    _timer_notes(config, sources, notes)
    _auth_notes(config, sources, notes)
    return CorosyncExport("\n".join(out) + "\n", tuple(notes), tuple(placeholders))
