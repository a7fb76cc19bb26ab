"""The idle floor: what any asyncio Python process pays for hbd's wake-up pattern.

Two processes each send two 400-byte datagrams every 100 ms (one per "link")
and receive the other's two, with nothing else to do: no parsing, no MACs, no
state.  Their CPU time (the kernel's exact schedstat runtime) per minute is
the floor under hbd's idle cost on this machine (see docs/benchmarks.md),
since hbd wakes up the same number of times for the same system calls.
Loopback only, inside this host; no namespace is needed.  Each side also
reports its RSS at the end: the memory floor under hbd's (benchmarks/idle.py
runs these two sides in the same run as the daemons and reports hbd as a
ratio of them).

    .venv/bin/python -m benchmarks.floor [--seconds 30]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from benchmarks.common import save, table
from tests.infra import commands
from tests.infra.netns import Lab

SIDE = r"""
import asyncio, socket, sys

def runtime_ns() -> int:
    with open("/proc/self/schedstat") as f:
        return int(f.read().split()[0])

class Sink(asyncio.DatagramProtocol):
    def datagram_received(self, data, addr):
        pass

async def side(listen: list[tuple[str, int]], send: list[tuple[str, int]],
               seconds: float) -> None:
    loop = asyncio.get_running_loop()
    for address, port in listen:
        await loop.create_datagram_endpoint(Sink, local_addr=(address, port))
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.setblocking(False)
    payload = b"x" * 400
    await asyncio.sleep(1.0)  # both sides up; start-up is not measured
    start = runtime_ns()
    due = loop.time()
    end = due + seconds
    while loop.time() < end:
        due += 0.1
        await asyncio.sleep(max(0.0, due - loop.time()))
        for target in send:
            out.sendto(payload, target)
    with open("/proc/self/status") as f:
        rss_kb = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    print((runtime_ns() - start) / 1e9 * 60 / seconds, rss_kb / 1000)

def pairs(text: str) -> list[tuple[str, int]]:
    return [(a, int(p)) for a, p in (item.rsplit(":", 1) for item in text.split(","))]

asyncio.run(side(pairs(sys.argv[1]), pairs(sys.argv[2]), float(sys.argv[3])))
"""


def start(seconds: float, port: int = 47001, lab: Lab | None = None,
          ) -> list[subprocess.Popen[str]]:
    """The two sides, measuring for `seconds` after a 1 s start.

    On loopback by default; given a lab of nodes n1 and n2 on two networks, each
    side runs in its node and sends to the other's address on each network: the
    same veth and bridge path hbd's two links take (benchmarks/idle.py).
    """
    if lab is None:
        ends = [[f"127.0.0.1:{p}" for p in (port, port + 1)],
                [f"127.0.0.1:{p}" for p in (port + 2, port + 3)]]
        return [commands.popen([sys.executable, "-c", SIDE, ",".join(mine), ",".join(theirs),
                                str(seconds)], stdout=subprocess.PIPE, text=True)
                for mine, theirs in (ends, ends[::-1])]
    nets = ("eth0", "eth1")
    ends = [[f"{lab.ip(node, n)}:{port}" for n in nets] for node in ("n1", "n2")]
    sides = []
    for node, mine, theirs in (("n1", ends[0], ends[1]), ("n2", ends[1], ends[0])):
        proc = lab.popen(node, [sys.executable, "-c", SIDE, ",".join(mine), ",".join(theirs),
                                str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        sides.append(proc)
    return sides  # type: ignore[return-value]


def finish(sides: list[subprocess.Popen[str]], seconds: float,
           ) -> tuple[list[float], list[float]] | None:
    """Each side's CPU-s/min and RSS MB; None when a side failed."""
    outs = [_text(p.communicate(timeout=seconds + 30)[0]) for p in sides]
    if any(p.returncode for p in sides):
        return None
    figures = [out.split() for out in outs]
    return ([round(float(f[0]), 3) for f in figures], [round(float(f[1]), 1) for f in figures])


def _text(out: str | bytes) -> str:
    return out.decode() if isinstance(out, bytes) else out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--port", type=int, default=47001, help="first of four loopback ports")
    args = parser.parse_args()
    found = finish(start(args.seconds, args.port), args.seconds)
    if found is None:
        print("a side failed", file=sys.stderr)
        return 1
    cpu, rss = found
    print(table([["implementation", "CPU-s/min (side 1, side 2)", "RSS MB"],
                 ["bare asyncio, 2 x 2 datagrams per 100 ms", f"{cpu[0]}, {cpu[1]}",
                  f"{rss[0]}, {rss[1]}"]]))
    path = save("floor", {"cpu_s_per_min": cpu, "rss_mb": rss, "seconds": args.seconds})
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
