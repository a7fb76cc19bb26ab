"""Put the three parsed files together into one ClusterConfig.

Pure: the caller hands in each file's text (or None when it is missing),
the authkeys file mode and this node's name and addresses.  Every problem of
all three files is collected before anything is refused, so an admin sees
the whole list at once.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

from hbd.core.authkeys import parse_authkeys
from hbd.core.config import (
    ClusterConfig,
    ClusterStack,
    HaCf,
    HbdConf,
    Problem,
    ResourceGroup,
    Severity,
)
from hbd.core.hacf import parse_hacf
from hbd.core.haresources import parse_haresources
from hbd.core.hbdconf import parse_hbdconf
from hbd.core.parsing import content_lines
from hbd.errors import ConfigError


@dataclass(frozen=True)
class ConfigTexts:
    """The raw inputs: file names (as shown in messages) and contents."""

    hacf_name: str
    hacf: str | None
    haresources_name: str
    haresources: str | None
    authkeys_name: str
    authkeys: str | None
    authkeys_mode: int | None = None
    hbdconf_name: str = "hbd.conf"
    hbdconf: str | None = None  # optional: None when the file does not exist
    hbdconf_error: str | None = None  # it exists but could not be read
    hbdconf_mode: int | None = None  # its st_mode (None skips the secrets check)


def check(
    texts: ConfigTexts, *, node_name: str, local_addresses: Collection[str] = ()
) -> tuple[ClusterConfig | None, list[Problem]]:
    """Parse and cross-check; return (config or None, every problem)."""
    problems: list[Problem] = []
    node = node_name.lower()
    if texts.hacf is None:
        problems.append(Problem(texts.hacf_name, 0, "cannot read the file"))
        hacf, hacf_problems = parse_hacf("", filename=texts.hacf_name)
        hacf_problems.items.clear()
    else:
        hacf, hacf_problems = parse_hacf(
            texts.hacf, filename=texts.hacf_name, local_addresses=local_addresses
        )
    problems += hacf_problems.items
    if hacf.nodes and node not in hacf.nodes:
        problems.append(Problem(
            texts.hacf_name, 0,
            f"this node '{node}' is not in the node list ({', '.join(hacf.nodes)}); "
            "nodes are named by `uname -n` (or hbd --node)",
        ))

    if texts.haresources is None:
        groups: tuple[ResourceGroup, ...] = ()
        problems.append(Problem(texts.haresources_name, 0,
                                "missing: this node will manage no resources", Severity.WARNING))
    else:
        groups, res_problems = parse_haresources(
            texts.haresources, filename=texts.haresources_name, nodes=hacf.nodes
        )
        problems += res_problems.items

    if texts.authkeys is None:
        problems.append(Problem(texts.authkeys_name, 0, "cannot read the file"))
        auth = None
    else:
        auth, auth_problems = parse_authkeys(
            texts.authkeys, filename=texts.authkeys_name, mode=texts.authkeys_mode
        )
        problems += auth_problems.items

    hbd = HbdConf()
    if texts.hbdconf_error is not None:
        problems.append(Problem(texts.hbdconf_name, 0, texts.hbdconf_error))
    elif texts.hbdconf is not None:
        hbd, hbd_problems = parse_hbdconf(texts.hbdconf, filename=texts.hbdconf_name)
        problems += hbd_problems.items
        problems += _secrets_mode(texts, hbd)
    hacf = _apply_hbdconf(texts, hacf, hbd, problems)

    _check_health_names(texts.hbdconf_name, hbd, groups, problems)
    if hacf.cluster_stack is ClusterStack.COROSYNC:
        # nothing is ignored silently: ha.cf's stonith lines get the same warning
        fence_lines = [(line, name) for name, line in hbd.lines.items()
                       if name.startswith("fence_")]
        fence_lines += [(agent.line, "fence_agent") for agent in hbd.fencing.agents]
        for line, directive in sorted(fence_lines):
            problems.append(Problem(
                texts.hbdconf_name, line, f"{directive}: not used on the corosync stack "
                "(hbd fences only on its own heartbeat stack)", Severity.WARNING))
    keys = {g.key for g in groups}
    for key, _ in hacf.group_orders:
        if key not in keys:
            problems.append(Problem(
                texts.hacf_name, 0, f"group_order {key}: no haresources group has that key "
                f"(keys: {', '.join(sorted(keys)) or 'none'}); the line has no effect",
                Severity.WARNING))
    if any(p.severity is Severity.ERROR for p in problems) or auth is None:
        return None, problems
    warnings = tuple(p for p in problems if p.severity is Severity.WARNING)
    config = ClusterConfig(node_name=node, hacf=hacf, groups=groups, auth=auth, warnings=warnings,
                           hbd=hbd)
    return config, problems


def _secrets_mode(texts: ConfigTexts, hbd: HbdConf) -> list[Problem]:
    """fence_agent lines hold passwords: the file should be as private as authkeys.

    A warning, not an error (Heartbeat refuses a readable authkeys): refusing
    would stop a running cluster at its next restart over a mode bit.
    """
    mode = texts.hbdconf_mode
    if mode is None or not mode & 0o077 or not hbd.fencing.agents:
        return []
    line = min(agent.line for agent in hbd.fencing.agents)
    return [Problem(texts.hbdconf_name, line,
                    f"fence_agent options (passwords) in a file readable or writable by group "
                    f"or others (mode {mode & 0o777:o}): chmod 600 {texts.hbdconf_name}",
                    Severity.WARNING)]


# hbd-only directives ha.cf still accepts (older hbd wrote them there); hbd.conf is their
# place, since a Heartbeat node refuses an ha.cf that holds them
_MOVED = {"arp_count": "arp_count", "arp_interval": "arp_interval_ms"}


def _apply_hbdconf(texts: ConfigTexts, hacf: HaCf, hbd: HbdConf,
                   problems: list[Problem]) -> HaCf:
    """hbd.conf's values of the directives ha.cf may also hold: set in one place only."""
    hacf_lines = _directive_lines(texts.hacf or "")
    overrides: dict[str, object] = {}
    for directive, attr in _MOVED.items():
        value = getattr(hbd, attr)
        if directive in hacf_lines:
            where = hbd.lines.get(directive)
            if where is not None:
                problems.append(Problem(
                    texts.hbdconf_name, where, f"{directive}: also set in "
                    f"{texts.hacf_name}:{hacf_lines[directive]}; keep it in one file "
                    "(hbd.conf: a Heartbeat node refuses an ha.cf holding it)"))
            elif hacf.cluster_stack is ClusterStack.HEARTBEAT:
                problems.append(Problem(
                    texts.hacf_name, hacf_lines[directive], f"{directive} is hbd's own: a "
                    f"Heartbeat node refuses this ha.cf; move the line to "
                    f"{texts.hbdconf_name}", Severity.WARNING))
        if value is not None:
            overrides[attr] = value
    return replace(hacf, **overrides) if overrides else hacf  # type: ignore[arg-type]


def _check_health_names(filename: str, hbd: HbdConf, groups: tuple[ResourceGroup, ...],
                        problems: list[Problem]) -> None:
    """hbd.conf's monitor/restart/failure_expiry lines must name haresources' groups."""
    keys = [g.key for g in groups]
    ids = [r.id for g in groups for r in g.resources if r.id not in keys]
    known_groups = ", ".join(keys) or "none"
    for monitor in hbd.monitors:
        if monitor.target not in keys and monitor.target not in ids:
            problems.append(Problem(filename, monitor.line, (
                f"monitor: no group or resource '{monitor.target}' in haresources (groups: "
                f"{known_groups}; other resources: {', '.join(ids) or 'none'})")))
    tracks = [t for t in hbd.tracks if t.group != "*"]
    for name, entries in (("restart", hbd.restarts), ("failure_expiry", hbd.expiries),
                          ("track_interface", tracks)):
        for entry in entries:
            if entry.group not in keys:
                problems.append(Problem(filename, entry.line, (
                    f"{name}: no group '{entry.group}' in haresources (groups: "
                    f"{known_groups}; a group is named by its first resource)")))


def _directive_lines(text: str) -> dict[str, int]:
    return {content.split()[0]: line for line, content in content_lines(text)}


def assemble(
    texts: ConfigTexts, *, node_name: str, local_addresses: Collection[str] = ()
) -> ClusterConfig:
    """Like check(), but raise ConfigError listing every error when unusable."""
    config, problems = check(texts, node_name=node_name, local_addresses=local_addresses)
    if config is None:
        raise ConfigError([str(p) for p in problems if p.severity is Severity.ERROR])
    return config
