"""Service death -> the client served by the peer: hbd's monitor beside keepalived's track_script.

Two nodes and a client in network namespaces on one bridge.  The service is
a UDP responder (it answers with its node's name); the client probes the
VIP every 5 ms.  1 s after the client starts (plus a random part of a
second, so the kill falls anywhere in the check interval), the service on
n1 is killed with SIGKILL.  The outage is the longest gap between replies.

Both check the same thing the same way, every second, acting on the first
failure: a UDP probe to the local responder (probe.py, 300 ms timeout).

* hbd: haresources `n1 VIP udpsvc`; udpsvc is an LSB init script that
  starts the responder and whose `status` runs the probe; hbd.conf
  `monitor VIP interval=1s timeout=2s`, no restart line (so no restart in
  place: the group goes to n2, which starts its responder).
  keepalive 100 ms / deadtime 300 ms, auto_failback off.
* keepalived: the responder runs on both nodes (keepalived does not start
  services); `vrrp_script` with the probe, interval 1, fall 1, rise 1,
  tracked by the VRRP instance (advert_int 0.1): n1 goes to FAULT and n2
  takes the VIP.

    .venv/bin/python -m benchmarks.service_death [--runs 7] [--impls hbd,keepalived]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
import time
from typing import Any

from benchmarks.common import installed_impls, median, save, table
from benchmarks.failover import outage, probe_around
from tests.hbdproc import HbdNode, ha_cf
from tests.infra.kapeer import KeepalivedPeer, render_keepalived_conf
from tests.infra.netns import Lab, wait_for
from tests.vipclient import PORT, RESPONDER, wait_answer

VIP = "10.77.0.100"
GROUP = f"{VIP}/24/eth0"
WINDOW = 5.0  # seconds the client probes; the kill comes 1-2 s in

PROBE = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.3)
try:
    s.sendto(b"check", ("127.0.0.1", int(sys.argv[1])))
    s.recvfrom(256)
except OSError:
    sys.exit(1)
"""

LSB = """#!/bin/sh
### BEGIN INIT INFO
# Provides:          udpsvc
# Short-Description: UDP responder (benchmark service)
### END INIT INFO
PIDFILE={pidfile}
case "$1" in
start)
    {python} {responder} {name} {port} </dev/null >/dev/null 2>&1 &
    echo $! > "$PIDFILE"; exit 0;;
stop)
    [ -f "$PIDFILE" ] && kill "$(cat "$PIDFILE")" 2>/dev/null
    rm -f "$PIDFILE"; exit 0;;
status)
    {python} {probe} {port} && {{ echo running; exit 0; }}
    echo stopped; exit 3;;
esac
exit 2
"""


class HbdService:
    name = "hbd"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def start(self) -> None:
        conf = ha_cf("bcast eth0", extra="auto_failback off\n")
        self.nodes: list[HbdNode] = []
        for name in ("n1", "n2"):
            node = _LsbHbd(self.lab, name, conf, f"n1 {GROUP} udpsvc\n")
            (node.config_dir / "hbd.conf").write_text(f"monitor {GROUP} interval=1s timeout=2s\n")
            self.nodes.append(node.start())
        self.nodes[0].wait_log(r"group \S+ start done", 30)

    def kill_service(self) -> None:
        node = self.nodes[0]
        assert isinstance(node, _LsbHbd)
        os.kill(int(node.pidfile.read_text()), signal.SIGKILL)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
            assert isinstance(node, _LsbHbd)
            if node.pidfile.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(node.pidfile.read_text()), signal.SIGKILL)
                node.pidfile.unlink()


class _LsbHbd(HbdNode):
    """hbd with udpsvc in a private /etc/init.d (bind mount in its own mount namespace)."""

    def __init__(self, lab: Lab, node: str, hacf: str, haresources: str) -> None:
        super().__init__(lab, node, hacf, haresources)
        init_dir = self.dir / "init.d"
        init_dir.mkdir(exist_ok=True)
        self.init_dir = init_dir
        self.pidfile = self.dir / "udpsvc.pid"
        (self.dir / "responder.py").write_text(RESPONDER)
        (self.dir / "probe.py").write_text(PROBE)
        script = init_dir / "udpsvc"
        script.write_text(LSB.format(pidfile=self.pidfile, python=sys.executable,
                                     responder=self.dir / "responder.py", name=node,
                                     port=PORT, probe=self.dir / "probe.py"))
        os.chmod(script, 0o755)

    def argv(self) -> list[str]:
        return ["sh", "-c", 'mount --bind "$0" /etc/init.d && exec "$@"', str(self.init_dir),
                *super().argv()]


class KeepalivedService:
    name = "keepalived"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def start(self) -> None:
        self.responders = {n: self.lab.popen(n, [sys.executable, "-c", RESPONDER, n, str(PORT)])
                           for n in ("n1", "n2")}
        self.peers: list[KeepalivedPeer] = []
        for node, priority in (("n1", 150), ("n2", 100)):
            conf = render_keepalived_conf(priority=priority, advert_int="0.1",
                                          vips=[f"{VIP}/24"], interface="eth0", vrid=62,
                                          extra=["track_script {", "    chk_svc", "}"])
            conf = conf.replace("global_defs {", "global_defs {\n    script_user root", 1)
            conf = ("vrrp_script chk_svc {\n"
                    f"    script \"/usr/bin/python3 /etc/keepalived/probe.py {PORT}\"\n"
                    "    interval 1\n    fall 1\n    rise 1\n    timeout 1\n}\n" + conf)
            peer = KeepalivedPeer(self.lab, node, conf)
            (peer.etc / "probe.py").write_text(PROBE)
            self.peers.append(peer.start())
        self.peers[0].wait_state("MASTER", timeout=30)
        wait_for(lambda: self.lab.has_address("n1", VIP), 30, "keepalived VIP")

    def kill_service(self) -> None:
        os.kill(self.responders["n1"].pid, signal.SIGKILL)

    def stop(self) -> None:
        for peer in self.peers:
            peer.kill()
        for proc in self.responders.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()


IMPLS = {"hbd": HbdService, "keepalived": KeepalivedService}


def one_run(lab: Lab, subject: HbdService | KeepalivedService,
            rng: random.Random) -> dict[str, Any]:
    for node in ("n1", "n2"):
        lab.run(node, ["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)
    lab.flush_arp("client")
    subject.start()
    try:
        wait_answer(lab, VIP, "n1", timeout=20)
        time.sleep(rng.uniform(0.0, 1.0))  # anywhere in the checks' 1 s cycle
        replies, event_at = probe_around(lab, VIP, WINDOW, lambda: subject.kill_service())
    finally:
        subject.stop()
    return outage(replies, event_at, event_at + WINDOW - 1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--impls", default="hbd,keepalived")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    impls = installed_impls(args.impls)
    rng = random.Random(args.seed)
    results: dict[str, dict[str, Any]] = {}
    lab = Lab(("n1", "n2", "client"))
    try:
        for n in range(args.runs):
            for impl in impls:  # interleaved: both see the same machine load
                run = one_run(lab, IMPLS[impl](lab), rng)
                more = "" if run["recovered"] else "at least "
                print(f"{impl:12} run {n + 1}: outage {more}{run['outage_ms']} ms "
                      f"(served by {run['served_after']})", flush=True)
                results.setdefault(impl, {"runs_ms": [], "unrecovered_runs": 0})
                results[impl]["runs_ms"].append(run["outage_ms"])
                results[impl]["unrecovered_runs"] += not run["recovered"]
    finally:
        lab.teardown()
    for entry in results.values():
        entry["median_ms"] = median(entry["runs_ms"])
    rows = [["", *impls], ["median outage", *(f"{results[i]['median_ms']:.0f} ms"
                                              for i in impls)],
            ["runs (ms)", *(" ".join(f"{v:.0f}" for v in results[i]["runs_ms"])
                            for i in impls)]]
    print("\nservice death -> served by the peer (check every 1 s, act on the first failure)")
    print(table(rows))
    path = save("service_death", {"runs": args.runs, "results": results})
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


