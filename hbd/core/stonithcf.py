"""ha.cf's `stonith` and `stonith_host` lines, read as Heartbeat 3.0.6 reads them.

config.c (set_stonith_info, set_stonith_host_info):

* `stonith TYPE CONFIGFILE`: a cluster-glue device whose parameters are in a
  file; it applies on every node;
* `stonith_host HOSTFROM TYPE PARAMS...`: the device HOSTFROM uses (`*`: every
  node), its parameters written out on the line, in the order the plugin
  lists them (`stonith -t TYPE -n`);
* of the lines that apply to a node, the last one wins (Heartbeat keeps one
  device: "This will have to change to a list !!!").

Heartbeat also asks the plugin to accept the parameters while parsing; that
is I/O, so hbd's check happens at start-up (the device status check) and
in `hbd --check-config` (hbd.configfiles).  Parameters are never echoed in a
problem: they often hold a password.
"""

from __future__ import annotations

import re

from hbd.core.config import StonithDevice
from hbd.core.parsing import Problems

# cluster-glue plugin names: "null", "meatware", "external/ipmi", "rhcs/virsh"...
_TYPE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}(/[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63})?")
_HOST = re.compile(r"\*|[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # Heartbeat's HOSTLENG is 100


def _type_ok(problems: Problems, line: int, name: str, value: str) -> bool:
    if not _TYPE.fullmatch(value):
        problems.error(line, f"{name}: invalid STONITH type '{value[:70]}' (a cluster-glue "
                       "plugin name such as null, meatware, ipmilan or external/ipmi)")
        return False
    return True


def parse_stonith(problems: Problems, line: int, args: list[str]) -> StonithDevice | None:
    """`stonith TYPE CONFIGFILE`; None (and a problem) when malformed."""
    if len(args) != 2:
        problems.error(line, f"stonith: needs a type and a configuration file (stonith TYPE "
                       f"FILE), got {len(args)} value(s)")
        return None
    kind, path = args
    if not _type_ok(problems, line, "stonith", kind):
        return None
    return StonithDevice(type=kind, config_file=path, line=line)


def parse_stonith_host(problems: Problems, line: int, args: list[str]) -> StonithDevice | None:
    """`stonith_host HOSTFROM TYPE PARAMS...`; None (and a problem) when malformed."""
    if len(args) < 2:
        problems.error(line, "stonith_host: needs the node that uses the device (or *), its "
                       f"type and its parameters, got {len(args)} value(s)")
        return None
    host, kind, *params = args
    if not _HOST.fullmatch(host):
        problems.error(line, f"stonith_host: invalid node name '{host[:70]}' (a node name "
                       "or *)")
        return None
    if not _type_ok(problems, line, "stonith_host", kind):
        return None
    return StonithDevice(type=kind, hostfrom=host.lower(), params=" ".join(params), line=line)


def check_stonith(problems: Problems, devices: list[StonithDevice], nodes: list[str], *,
                  corosync: bool = False) -> None:
    """Cross-checks once every line is read: a HOSTFROM that is no node is a typo; the
    corosync stack (`corosync`) does not fence."""
    if devices and corosync:
        problems.warning(devices[0].line, "stonith: not used on the corosync stack "
                         "(hbd fences only on its own heartbeat stack)")
    for device in devices:
        if device.hostfrom != "*" and nodes and device.hostfrom not in nodes:
            problems.warning(device.line, f"stonith_host: '{device.hostfrom}' is not a node "
                             "of this cluster: no node uses this device")
    for node in nodes:
        applying = [d for d in devices if d.hostfrom in ("*", node)]
        if len(applying) > 1:
            lines = ", ".join(str(d.line) for d in applying)
            problems.warning(applying[-1].line, f"node {node} has several STONITH devices "
                             f"(lines {lines}): as in Heartbeat only the last is used; put "
                             "further devices in hbd.conf (fence_agent)")
