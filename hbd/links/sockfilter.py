"""Classic BPF socket filters for the heartbeat sockets: what the kernel drops for us.

A datagram the kernel drops costs no wake-up, no copy, no Python.  A filter
here judges three things, in this order:

* size: a heartbeat datagram is never shorter than MIN_DATAGRAM nor longer
  than MAX_DATAGRAM bytes of payload (hbd never sends more; Heartbeat
  compresses anything above 2 KB);
* our own echo: the kernel loops our broadcasts back to us (source = our
  address and port);
* the source address, once the link knows where its peers send from (learned
  from datagrams that authenticated; see hbd.links.udp for when the list is
  enforced and when the filter lets anybody through again).

The programs are built here as bytes; attach() hands them to the kernel.
Offsets: a UDP socket's filter sees the UDP header at 0; SKF_NET_OFF reaches
the IP header (IPv4 source at 12, IPv6 source at 8).
"""

from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
SKF_NET_OFF = -0x100000
UDP_HEADER = 8
MIN_DATAGRAM = 16  # shorter than any message's start marker and one field
MAX_DATAGRAM = 32 * 1024
MAX_SOURCES = 64  # a jump offset is 8 bits; far above any cluster's addresses

_LDH_ABS = 0x28  # A = half-word at k
_LD_ABS = 0x20  # A = word at k
_JEQ = 0x15
_JGT = 0x25
_JGE = 0x35
_RET = 0x06
_ACCEPT = 0xFFFFFFFF

# One instruction before its jump labels are resolved: (code, jt, jf, k), where
# jt and jf name a label ("accept", "drop", "addr<N>") or are None (next insn).
_Insn = tuple[int, str | None, str | None, int]


def program(*, port: int, ipv6: bool, own: str | None = None,
            sources: tuple[str, ...] | None = None) -> bytes:
    """The filter for one heartbeat socket.

    own: our address, to drop our own broadcasts' echo (IPv4 only); sources:
    the addresses allowed to reach us, or None to let every source through.
    Raises ValueError on more than MAX_SOURCES sources or a malformed address.
    """
    if sources is not None and len(sources) > MAX_SOURCES:
        raise ValueError(f"{len(sources)} source addresses (at most {MAX_SOURCES})")
    code: list[_Insn] = [
        (_LDH_ABS, None, None, 2 + 2),  # the UDP header's length field
        (_JGT, "drop", None, MAX_DATAGRAM + UDP_HEADER),
        (_JGE, None, "drop", MIN_DATAGRAM + UDP_HEADER),
    ]
    labels: dict[str, int] = {}
    if own is not None and not ipv6:
        code += [
            (_LDH_ABS, None, None, 0),  # UDP source port
            (_JEQ, None, "not-echo", port),
            (_LD_ABS, None, None, SKF_NET_OFF + 12),
            (_JEQ, "drop", None, _word(socket.inet_aton(own))),
        ]
        labels["not-echo"] = len(code)
    if sources is not None:
        for n, source in enumerate(sources):
            labels[f"addr{n}"] = len(code)
            following = f"addr{n + 1}" if n + 1 < len(sources) else "drop"
            if ipv6:
                packed = socket.inet_pton(socket.AF_INET6, source)
                for word in range(4):
                    last = word == 3
                    code += [(_LD_ABS, None, None, SKF_NET_OFF + 8 + 4 * word),
                             (_JEQ, "accept" if last else None, following,
                              _word(packed[4 * word:4 * word + 4]))]
            else:
                code += [(_LD_ABS, None, None, SKF_NET_OFF + 12),
                         (_JEQ, "accept", following, _word(socket.inet_aton(source)))]
        if not sources:
            code.append((_RET, None, None, 0))
    labels["accept"] = len(code)
    code.append((_RET, None, None, _ACCEPT))
    labels["drop"] = len(code)
    code.append((_RET, None, None, 0))
    return b"".join(_encode(i, insn, labels) for i, insn in enumerate(code))


def _word(packed: bytes) -> int:
    value: int = struct.unpack("!I", packed)[0]
    return value


def _encode(index: int, insn: _Insn, labels: dict[str, int]) -> bytes:
    code, jt, jf, k = insn

    def offset(label: str | None) -> int:
        if label is None:
            return 0
        distance = labels[label] - index - 1
        if not 0 <= distance <= 255:
            raise ValueError(f"filter jump of {distance} instructions")
        return distance
    return struct.pack("HBBI", code, offset(jt), offset(jf), k & 0xFFFFFFFF)


def attach(sock: socket.socket, code: bytes) -> None:
    """Install (or atomically replace) the socket's filter.  Raises OSError."""
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("@HP", len(code) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
