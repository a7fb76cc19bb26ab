"""Run inside a lab namespace: scrape hbd's metrics, flood them, or time heartbeats.

    python -m tests.metricsprobe scrape URL
        one scrape; the body on stdout (exit 1 when it failed)
    python -m tests.metricsprobe flood URL RATE SECONDS
        RATE scrapes a second for SECONDS; JSON {"ok", "failed", "max_s"} on stdout
    python -m tests.metricsprobe gaps PORT SECONDS
        listen to Heartbeat broadcasts on PORT; JSON {source: [count, max gap s,
        99th percentile gap s]}
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import time
import urllib.parse


def scrape(url: str, timeout: float = 5.0) -> bytes:
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/metrics")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise OSError(f"HTTP {response.status}")
        return body
    finally:
        conn.close()


def flood(url: str, rate: float, seconds: float) -> dict[str, float]:
    ok = failed = 0
    worst = 0.0
    start = time.monotonic()
    total = int(rate * seconds)
    for index in range(total):
        if time.monotonic() - start >= seconds:
            break  # a rate the server cannot keep up with: stop on time all the same
        due = start + index / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        began = time.monotonic()
        try:
            scrape(url)
            ok += 1
        except OSError:
            failed += 1
        worst = max(worst, time.monotonic() - began)
    return {"ok": ok, "failed": failed, "max_s": worst,
            "elapsed_s": time.monotonic() - start}


def gaps(port: int, seconds: float) -> dict[str, list[float]]:
    """Status messages (heartbeats) seen per source address, and the gaps between them."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.bind(("", port))
    sock.settimeout(0.05)
    last: dict[str, float] = {}
    spans: dict[str, list[float]] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data, (source, _) = sock.recvfrom(65536)
        except TimeoutError:
            continue
        if b"t=status" not in data:
            continue
        now = time.monotonic()
        if source in last:
            spans.setdefault(source, []).append(now - last[source])
        last[source] = now
    out: dict[str, list[float]] = {}
    for source, values in spans.items():
        ordered = sorted(values)
        out[source] = [len(values) + 1, ordered[-1], ordered[int(len(ordered) * 0.99)]]
    return out


def main(argv: list[str]) -> int:
    if argv[0] == "scrape":
        try:
            sys.stdout.buffer.write(scrape(argv[1]))
        except OSError as err:
            print(f"scrape failed: {err}", file=sys.stderr)
            return 1
        return 0
    if argv[0] == "flood":
        print(json.dumps(flood(argv[1], float(argv[2]), float(argv[3]))))
        return 0
    if argv[0] == "gaps":
        print(json.dumps(gaps(int(argv[1]), float(argv[2]))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
