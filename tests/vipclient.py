"""Who answers on the VIP, seen from a client namespace.

Each node runs a tiny UDP responder that answers any datagram with its own
name; the client sends a probe to the VIP and reads the name back.  Together
with the client's ARP entry this shows what a real client would experience.
"""

from __future__ import annotations

import subprocess
import sys
import time

from tests.infra.netns import Lab

PORT = 7777

RESPONDER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", int(sys.argv[2])))
name = sys.argv[1].encode()
while True:
    data, addr = s.recvfrom(2048)
    s.sendto(name + b" " + data, addr)
"""

PROBE = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[3]))
try:
    s.sendto(b"probe", (sys.argv[1], int(sys.argv[2])))
    data, _ = s.recvfrom(2048)
    print(data.split()[0].decode())
except OSError:
    print("-")
"""


def start_responders(lab: Lab,
                     nodes: tuple[str, ...] = ("n1", "n2")) -> list[subprocess.Popen[bytes]]:
    return [lab.popen(n, [sys.executable, "-c", RESPONDER, n, str(PORT)]) for n in nodes]


def who_answers(lab: Lab, vip: str, client: str = "client", timeout: float = 0.3) -> str:
    """The node name that answers a probe to `vip`, or "-" when nobody does."""
    result = lab.run(client, [sys.executable, "-c", PROBE, vip, str(PORT), str(timeout)],
                     check=False, timeout=10)
    return result.stdout.strip() or "-"


def wait_answer(lab: Lab, vip: str, want: str, timeout: float = 10.0,
                client: str = "client") -> float:
    """Wait until `want` answers on the VIP; return how long it took."""
    start = time.monotonic()
    last = "-"
    while time.monotonic() - start < timeout:
        last = who_answers(lab, vip, client)
        if last == want:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{vip}: expected {want} to answer, last answer {last!r}")


def owner_by_arp(lab: Lab, vip: str, nodes: tuple[str, ...] = ("n1", "n2"),
                 client: str = "client") -> str | None:
    """Which node's MAC the client's neighbour table holds for the VIP."""
    mac = lab.arp_entry(client, vip)
    for node in nodes:
        if mac is not None and mac.lower() == lab.mac(node).lower():
            return node
    return None
