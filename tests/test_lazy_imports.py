"""Memory: the daemon imports only what the configuration uses (issue 20's idle RSS).

A fresh interpreter imports what every hbd on the Heartbeat stack loads at
start (the entry point, the stack, the group runner, the links); the modules
of features a plain UDP configuration does not use must not be among them.
The modules named here each cost resident memory for nothing in such a
daemon (docs/benchmarks.md, Idle cost).  The positive side, that a serial
link or an agent's meta-data still loads them, is covered where those run
(tests/test_links_netns.py, tests/test_agents.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.infra import commands

ROOT = Path(__file__).resolve().parent.parent

LOADED_AT_START = ("hbd.daemon", "hbd.stack_heartbeat", "hbd.grouprunner", "hbd.links",
                   "hbd.snapshot", "hbd.agents", "hbd.eventlog", "hbd.tracking", "hbd.fifo",
                   "hbd.apiserver")
NOT_FOR_UDP_ONLY = {
    "serial": "pyserial: only for a serial link",
    "hbd.links.serial": "only for a serial link",
    "hbd.core.placement": "the Corosync stack's placement",
    "hbd.stack_corosync": "the Corosync stack",
    "xml.etree.ElementTree": "only to read an agent's meta-data",
    "uuid": "a move's id needs no uuid module",
    "hbd.metrics": "only when hbd.conf asks for metrics",
    "hbd.bus.service": "only with D-Bus",
}


def test_a_udp_only_heartbeat_daemon_loads_no_unused_feature() -> None:
    code = (f"import importlib, json, sys\n"
            f"for name in {LOADED_AT_START!r}:\n"
            f"    importlib.import_module(name)\n"
            f"print(json.dumps(sorted(sys.modules)))\n")
    result = commands.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert set(LOADED_AT_START) <= loaded  # the check can fail: they did load
    unexpected = {name: why for name, why in NOT_FOR_UDP_ONLY.items() if name in loaded}
    assert not unexpected, f"imported although unused: {unexpected}"
