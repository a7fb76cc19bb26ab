"""The demo's service and its client: who answers on the virtual IP, and when.

    python -m hbd.demo.probe respond NAME PORT TAG
        Runs on each node: answers every UDP datagram on PORT with "NAME ...".
    python -m hbd.demo.probe client ADDRESS PORT INTERVAL_MS TAG
        Runs on the client: sends a datagram to ADDRESS every INTERVAL_MS and
        prints one line per reply, "MONOTONIC_SECONDS NAME".
    python -m hbd.demo.probe scrape URL TAG
        Runs on the client: prints what an HTTP GET of URL answers (hbd's metrics).

CLOCK_MONOTONIC is one clock for the whole machine, namespaces included, so
the demo compares these times with its own to measure the outage: the
longest silence between two replies around an event.  TAG is the demo's
run tag; it only marks the command line so leftovers can be recognised.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import sys
import time


def respond(name: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", port))
    prefix = name.encode() + b" "
    while True:
        try:
            data, peer = sock.recvfrom(2048)
            sock.sendto(prefix + data, peer)
        except OSError:
            continue  # e.g. our cable is cut: the reply cannot leave; keep serving


def client(address: str, port: int, interval: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    out = sys.stdout
    seq = 0
    next_send = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= next_send:
            seq += 1
            # no route or neighbour for a moment: that is the outage being measured
            with contextlib.suppress(OSError):
                sock.sendto(b"%d" % seq, (address, port))
            next_send += interval
            if next_send < now:  # we were descheduled: do not send a burst to catch up
                next_send = now + interval
        ready, _, _ = select.select([sock], [], [], max(0.0, next_send - time.monotonic()))
        if not ready:
            continue
        lines = []
        while True:
            try:
                data = sock.recv(2048)
            except BlockingIOError:
                break
            except OSError:
                break  # an ICMP error reported on the socket; nothing to read
            name = data.split(b" ", 1)[0].decode("ascii", "replace")
            lines.append(f"{time.monotonic():.6f} {name}\n")
        if lines:
            out.write("".join(lines))
            out.flush()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if len(argv) == 4 and argv[0] == "respond":
        respond(argv[1], int(argv[2]))
    elif len(argv) == 5 and argv[0] == "client":
        client(argv[1], int(argv[2]), float(argv[3]) / 1000.0)
    elif len(argv) == 3 and argv[0] == "scrape":
        import urllib.request

        with urllib.request.urlopen(argv[1], timeout=5) as answer:
            sys.stdout.buffer.write(answer.read())
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
