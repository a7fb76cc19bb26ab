"""`hbctl export pacemaker`: write this cluster's configuration for Pacemaker/Corosync.

The conversion itself is pure (hbd.export); this module reads the config
directory, looks at the machine (init scripts, OCF agents, its own addresses)
unless told not to, prints or writes the outputs, and lists on stderr every
item that did not carry over.  Exit codes: 0 exported, 1 the configuration
is invalid (its file:line problems are printed) or an output could not be
written, 2 usage (argparse).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from hbd import configfiles
from hbd.core.assemble import check
from hbd.core.config import ClusterConfig, Severity
from hbd.core.hacf import NOT_IMPLEMENTED, parse_hacf
from hbd.errors import NetError
from hbd.export import Exported, HostView, Sources, export

log = logging.getLogger(__name__)

INIT_DIR = Path("/etc/init.d")
OCF_DIR = Path("/usr/lib/ocf/resource.d")
FORMATS = ("cib", "pcs", "crmsh", "corosync")
OUTPUT_FILES = {"cib": "cib.xml", "pcs": "pcs.sh", "crmsh": "crmsh.txt",
                "corosync": "corosync.conf"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `export pacemaker` to hbctl's subcommands."""
    export_parser = sub.add_parser("export", help="write the cluster's configuration for "
                                   "another cluster stack")
    targets = export_parser.add_subparsers(dest="target", required=True)
    p = targets.add_parser(
        "pacemaker", help="CIB, pcs/crmsh scripts and corosync.conf from /etc/ha.d",
        description="Convert ha.cf, haresources and authkeys to a Pacemaker CIB, the same "
        "configuration as pcs and crmsh commands, and a Corosync 3 corosync.conf.  Whatever "
        "has no Pacemaker equivalent is listed on stderr, one line each.")
    p.add_argument("--config-dir", default=configfiles.DEFAULT_CONFIG_DIR)
    p.add_argument("--node", default=None,
                   help="the node whose ha.cf this is (default: this machine when it is a "
                   "cluster node, else the first node of ha.cf)")
    p.add_argument("--format", choices=FORMATS, default="cib",
                   help="what to print on stdout (default: cib)")
    p.add_argument("--output-dir", metavar="DIR", default=None,
                   help="write cib.xml, pcs.sh, crmsh.txt and corosync.conf into DIR "
                   "instead of printing")
    p.add_argument("--corosync", metavar="FILE", default=None,
                   help="also write corosync.conf to FILE")
    p.add_argument("--no-probe", action="store_true",
                   help="do not look at this machine (init scripts, OCF agents, addresses)")
    p.set_defaults(func=run)


def _names(directory: Path) -> frozenset[str]:
    try:
        return frozenset(entry.name for entry in directory.iterdir() if entry.is_file())
    except OSError:
        return frozenset()


def _ocf_agents() -> dict[str, str]:
    agents: dict[str, str] = {}
    try:
        providers = sorted(OCF_DIR.iterdir(), key=lambda p: (p.name != "heartbeat", p.name))
    except OSError:
        return agents
    for provider in providers:
        for name in sorted(_names(provider)):
            if not name.startswith("."):
                agents.setdefault(name, provider.name)
    return agents


def _ocf_instances(config: ClusterConfig, config_dir: Path) -> dict[tuple[str, str], str]:
    """The instance files of `OCF::agent::instance` resources (part of the config)."""
    found: dict[tuple[str, str], str] = {}
    for group in config.groups:
        for resource in group.resources:
            if resource.agent != "OCF" or len(resource.args) != 2:
                continue
            agent, instance = resource.args
            path = config_dir / "conf" / "OCF" / agent / instance
            try:
                found[(agent, instance)] = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                log.debug("no OCF instance file %s", path)
    return found


def _stonith_params(config: ClusterConfig) -> dict[str, tuple[str, ...]]:
    """`stonith -t TYPE -n` for each plugin ha.cf names (cluster-glue), when installed."""
    found: dict[str, tuple[str, ...]] = {}
    for kind in {d.type for d in config.hacf.stonith}:
        try:
            result = subprocess.run(["stonith", "-t", kind, "-n"], capture_output=True,
                                    text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            log.debug("stonith -t %s -n: %s", kind, err)
            continue
        names = tuple(result.stdout.split())
        if result.returncode == 0 and names:
            found[kind] = names
    return found


def _stonith_files(config: ClusterConfig) -> dict[str, str]:
    files: dict[str, str] = {}
    for device in config.hacf.stonith:
        if device.config_file is not None:
            try:
                files[device.config_file] = Path(device.config_file).read_text()
            except OSError as err:
                log.warning("cannot read %s: %s", device.config_file, err)
    return files


def _host_view(config: ClusterConfig, config_dir: Path, node: str | None,
               probe: bool) -> HostView:
    instances = _ocf_instances(config, config_dir)
    if not probe:
        return HostView(ocf_instances=instances, origin_node=node)
    uname = configfiles.default_node_name()
    this_node = uname if uname in config.hacf.nodes else None
    addresses: tuple[tuple[str, str], ...] = ()
    if this_node is not None:
        try:
            from hbd.net.addresses import list_addresses

            addresses = tuple((a.interface, a.address)
                              for a in list_addresses(socket.AF_INET))
        except NetError as err:
            log.warning("%s; node addresses are left as placeholders", err)
    return HostView(
        stonith_params=_stonith_params(config),
        stonith_files=_stonith_files(config),
        init_scripts=_names(INIT_DIR),
        resource_scripts=_names(config_dir / "resource.d"),
        ocf_agents=_ocf_agents(),
        ocf_instances=instances,
        this_node=this_node,
        addresses=addresses,
        origin_node=node or this_node,
    )


def _parse_node(config_dir: Path, wanted: str | None) -> str:
    """The node name to parse as: only ucast lines naming the node's own address depend on it."""
    if wanted:
        return wanted
    texts = configfiles.read_texts(config_dir)
    nodes = parse_hacf(texts.hacf or "")[0].nodes
    uname = configfiles.default_node_name()
    if uname in nodes or not nodes:
        return uname
    return nodes[0]


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)


def _outputs(result: Exported) -> dict[str, str]:
    return {"cib": result.cib, "pcs": result.pcs, "crmsh": result.crmsh,
            "corosync": result.corosync}


def run(args: argparse.Namespace) -> int:
    config_dir = Path(args.config_dir)
    # The export never uses the authkeys secret, so its file mode is not its business.
    texts = replace(configfiles.read_texts(config_dir), authkeys_mode=None)
    node = _parse_node(config_dir, args.node)
    # No local addresses: every ucast line must survive, whichever node's file this is.
    config, problems = check(texts, node_name=node, local_addresses=())
    if config is None:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"hbctl export pacemaker: {config_dir} is not a valid configuration",
              file=sys.stderr)
        return 1
    for problem in problems:
        directive = problem.message.split(":", 1)[0]
        if problem.severity is Severity.WARNING and directive in NOT_IMPLEMENTED:
            continue  # reported below as what does not carry over to Pacemaker
        print(problem, file=sys.stderr)
    sources = Sources(texts.hacf_name, texts.haresources_name, texts.authkeys_name)
    host = _host_view(config, config_dir, args.node, not args.no_probe)
    result = export(config, host, sources)
    for note in result.notes:
        print(note, file=sys.stderr)
    outputs = _outputs(result)
    try:
        if args.corosync:
            _write(Path(args.corosync), result.corosync)
        if args.output_dir:
            directory = Path(args.output_dir)
            directory.mkdir(parents=True, exist_ok=True)
            for key, name in OUTPUT_FILES.items():
                _write(directory / name, outputs[key], 0o755 if key == "pcs" else 0o644)
                print(directory / name)
            return 0
    except OSError as err:
        print(f"hbctl export pacemaker: cannot write: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(outputs[args.format])
    return 0
