"""Readers for the Heartbeat 3.0.6 captures in tests/data/capture (test fixtures)."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

CAPTURE = Path(__file__).parent / "data" / "capture"


@dataclass(frozen=True)
class Datagram:
    time: float
    src: str
    dst: str
    payload: bytes


def udp_datagrams(path: Path = CAPTURE / "udp.pcap") -> list[Datagram]:
    """Every UDP payload of a classic libpcap file with Ethernet framing."""
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    if magic != 0xA1B2C3D4:
        raise ValueError("not a little-endian microsecond pcap")
    out = []
    off = 24
    while off < len(data):
        sec, usec, incl, _ = struct.unpack("<IIII", data[off:off + 16])
        off += 16
        frame = data[off:off + incl]
        off += incl
        if frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 15) * 4
        if ip[9] != 17:
            continue
        src = ".".join(str(b) for b in ip[12:16])
        dst = ".".join(str(b) for b in ip[16:20])
        udp = ip[ihl:]
        length = struct.unpack("!H", udp[4:6])[0]
        out.append(Datagram(sec + usec / 1e6, src, dst, udp[8:length]))
    return out


_HEADER = re.compile(r"^([<>]) (\S+ \S+)\s+length=(\d+)")
_HEXLINE = re.compile(r"^ ((?:[0-9a-f]{2} )+)")


def serial_streams(path: Path = CAPTURE / "serial-socat.log") -> dict[str, bytes]:
    """The two directions of a `socat -x -v` dump: {'>': n1->n2 bytes, '<': n2->n1}."""
    streams = {">": bytearray(), "<": bytearray()}
    current: bytearray | None = None
    for line in path.read_text(errors="replace").splitlines():
        header = _HEADER.match(line)
        if header:
            current = streams[header.group(1)]
            continue
        hexes = _HEXLINE.match(line)
        if hexes and current is not None:
            current += bytes.fromhex(hexes.group(1).replace(" ", ""))
    return {k: bytes(v) for k, v in streams.items()}
