"""ha.cf's STONITH device and hbd.conf's fence agents, as Pacemaker stonith resources.

* `stonith_host HOSTFROM TYPE PARAMS...` / `stonith TYPE FILE` become a
  `stonith:TYPE` primitive: Pacemaker runs cluster-glue plugins through
  fence_legacy.  Heartbeat gives the parameters by position; Pacemaker wants
  them by name, in the order `stonith -t TYPE -n` lists them (probed on the
  exporting machine, else a small table of common plugins);
* HOSTFROM other than `*`: only that node may use the device (a -INFINITY
  location on every other node), and it fences the other nodes
  (`pcmk_host_list`), which is what the line meant to Heartbeat;
* every hbd.conf `fence_agent` becomes a `stonith:fence_NAME` primitive with
  its options, able to fence every node;
* with any device, `stonith-enabled=true`, and hbd's fence race delay becomes
  Pacemaker's `priority-fencing-delay` (resources get priority 1, so the node
  running more of them wins a fence race, as in hbd).

The parameters often hold passwords: they go into the CIB, where Pacemaker
keeps them (readable by root and haclient); a note says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hbd.core.config import ClusterConfig, StonithDevice
from hbd.export.agents import slug
from hbd.export.model import HostView, Note, Op, Pairs, Primitive

# `stonith -t TYPE -n` of cluster-glue 1.0.12, for exports made where it is not installed.
KNOWN_PARAMS: dict[str, tuple[str, ...]] = {
    "null": ("hostlist",),
    "meatware": ("hostlist",),
    "ssh": ("hostlist",),
    "external/ssh": ("hostlist",),
    "external/ipmi": ("hostname", "ipaddr", "userid", "passwd", "interface"),
    "external/libvirt": ("hostlist", "hypervisor_uri", "reboot_method"),
    "ipmilan": ("hostname", "ipaddr", "port", "auth", "priv", "login", "password",
                "reset_method"),
}


@dataclass(frozen=True)
class FenceExport:
    primitives: tuple[Primitive, ...]
    bans: tuple[tuple[str, str, str], ...]  # (constraint id hint, resource id, banned node)
    notes: tuple[Note, ...]


def _values(device: StonithDevice, files: Mapping[str, str]) -> list[str] | None:
    if device.config_file is None:
        return device.params.split()
    text = files.get(device.config_file)
    if text is None:
        return None
    # `stonith -F` syntax: the -p values, `#` starting a comment line
    return " ".join(line for line in text.splitlines()
                    if not line.lstrip().startswith("#")).split()


def _monitor(config: ClusterConfig) -> tuple[Op, ...]:
    interval = config.hbd.fencing.status_interval_ms // 1000
    timeout = f"{max(20, config.hbd.fencing.timeout_ms // 1000)}s"
    return (Op("monitor", f"{interval}s", timeout),) if interval else ()


def export_fencing(config: ClusterConfig, host: HostView, hacf_file: str,
                   hbd_file: str) -> FenceExport:
    """The stonith primitives of every device in `config` (for every node, not only ours)."""
    nodes = config.hacf.nodes
    prims: list[Primitive] = []
    bans: list[tuple[str, str, str]] = []
    notes: list[Note] = []
    for device in config.hacf.stonith:
        names = host.stonith_params.get(device.type) or KNOWN_PARAMS.get(device.type)
        where = Note(hacf_file, device.line, "")
        values = _values(device, host.stonith_files)
        if names is None or values is None:
            missing = ("its parameter names (run the export where cluster-glue is installed: "
                       f"stonith -t {device.type} -n)" if names is None
                       else f"its parameter file {device.config_file}")
            notes.append(Note(where.file, where.line, f"{device.type}: cannot read {missing}: "
                              "not exported; create the stonith resource by hand"))
            continue
        if len(values) != len(names):
            notes.append(Note(where.file, where.line, f"{device.type}: {len(values)} "
                              f"parameter(s) given, the plugin names {len(names)} "
                              f"({' '.join(names)}): not exported"))
            continue
        pid = f"fence-{slug(device.type)}-" + ("all" if device.hostfrom == "*"
                                               else slug(device.hostfrom))
        targets = [n for n in nodes if n != device.hostfrom]
        params: Pairs = (*zip(names, values, strict=True),
                         ("pcmk_host_list", " ".join(targets)),
                         ("pcmk_host_check", "static-list"))
        prims.append(Primitive(pid, "stonith", None, device.type, params, _monitor(config),
                               f"{device.type} (ha.cf line {device.line})"))
        if device.hostfrom != "*":
            bans += [(f"ban-{pid}-{slug(n)}", pid, n) for n in nodes if n != device.hostfrom]
        directive = "stonith_host" if device.config_file is None else "stonith"
        notes.append(Note(where.file, where.line, f"{directive}: exported as "
                          f"stonith:{device.type} ({pid}, through fence_legacy); its "
                          "parameters, passwords included, are in the CIB"))
    for agent in config.hbd.fencing.agents:
        pid = f"fence-{slug(agent.agent)}-{agent.line}"
        params = (*agent.options, ("pcmk_host_list", " ".join(nodes)))
        prims.append(Primitive(pid, "stonith", None, agent.agent, params, _monitor(config),
                               f"{agent.agent} (hbd.conf line {agent.line})"))
        notes.append(Note(hbd_file, agent.line, f"fence_agent {agent.agent}: exported as "
                          f"stonith:{agent.agent} ({pid}); its options are in the CIB"))
    return FenceExport(tuple(prims), tuple(bans), tuple(notes))
