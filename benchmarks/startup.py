"""Start-up and steady memory: time from exec to READY=1, and RSS after a minute.

A two-node cluster (n1, n2 in network namespaces, keepalive 100 ms, a VIP
group) where n1 is started under a fake NOTIFY_SOCKET (a unix datagram socket
this script reads, as systemd would) and with D-Bus on, talking to a private
dbus-daemon.  Reported: exec -> READY=1 (median of the runs), and n1's RSS
and PSS after `--settle` seconds holding the VIP.  Targets: <= 1 s, <= 40 MB.

    .venv/bin/python -m benchmarks.startup [--runs 5] [--settle 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import median, pss_bytes, rss_bytes, save, table, tree
from tests.hbdproc import HbdNode, ha_cf
from tests.infra import commands
from tests.infra.netns import Lab


def private_bus(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway dbus-daemon where anyone may own any name (session semantics)."""
    proc = commands.popen(["dbus-daemon", "--session", "--nofork", "--print-address=1",
                             f"--address=unix:path={directory}/bus"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    address = proc.stdout.readline().decode().strip()
    return proc, address


def one_start(lab: Lab, bus_address: str) -> tuple[float, int, HbdNode, HbdNode]:
    notify_dir = Path(tempfile.mkdtemp(prefix="hbdt-notify-"))
    path = notify_dir / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    conf = ha_cf("bcast eth0", extra="auto_failback off\n")
    peer = HbdNode(lab, "n2", conf, "n1 10.77.0.240/24/eth0\n").start()
    node = HbdNode(lab, "n1", conf, "n1 10.77.0.240/24/eth0\n", extra_args=(),
                   env={"NOTIFY_SOCKET": str(path), "DBUS_SYSTEM_BUS_ADDRESS": bus_address})
    t0 = time.monotonic()
    node.start()
    try:
        while True:
            data = sock.recv(4096).decode()
            if "READY=1" in data.split("\n"):
                ready = time.monotonic() - t0
                break
    finally:
        sock.close()
        shutil.rmtree(notify_dir, ignore_errors=True)
    return ready, node.pid, node, peer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--settle", type=float, default=60.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hbdt-bus-"))
    bus, address = private_bus(workdir)
    lab = Lab(("n1", "n2"))
    readies: list[float] = []
    try:
        for n in range(args.runs):
            ready, _pid, node, peer = one_start(lab, address)
            readies.append(ready)
            print(f"run {n + 1}: exec -> READY=1 in {ready * 1000:.0f} ms", flush=True)
            if n < args.runs - 1:
                node.stop()
                peer.stop()
        node.wait_log(r"group \S+ start done", 20)
        time.sleep(args.settle)
        pids = tree(node.pid)
        rss, pss = rss_bytes(pids) / 1e6, pss_bytes(pids) / 1e6
        node.stop()
        peer.stop()
    finally:
        lab.teardown()
        os.kill(bus.pid, signal.SIGTERM)
        bus.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)
    print(table([["measure", "hbd", "target"],
                 ["exec -> READY=1 (median)", f"{median(readies) * 1000:.0f} ms", "<= 1000 ms"],
                 [f"RSS after {args.settle:.0f} s", f"{rss:.1f} MB", "<= 40 MB"],
                 [f"PSS after {args.settle:.0f} s", f"{pss:.1f} MB", ""]]))
    path = save("startup", {"ready_ms": [round(r * 1000) for r in readies],
                            "ready_median_ms": round(median(readies) * 1000),
                            "rss_mb": round(rss, 1), "pss_mb": round(pss, 1),
                            "settle_s": args.settle})
    print(f"saved {path}")
    return 0 if median(readies) <= 1.0 and rss <= 40 else 1


if __name__ == "__main__":
    sys.exit(main())
