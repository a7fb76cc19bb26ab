"""Long fuzzing run: 100,000+ inputs per target, zero unhandled exceptions expected.

Drives the same checks as tests/test_fuzz.py (which runs a few hundred
hypothesis examples per property on every commit) with a plain seeded random
loop: random bytes and text, and structure-aware mutations of Heartbeat
3.0.6's captured packets and of this cluster's own traffic.  Every input is
reproducible from (seed, target, index).

    .venv/bin/python -m benchmarks.fuzz [--count 100000] [--seed 1] [--target NAME ...]

A check's AssertionError is a property violation; any other exception is an
unhandled one.  Both are counted, the first few inputs of each are kept
(truncated) in benchmarks/results/fuzz.json, and the exit status is 1 when
either count is not zero.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.common import save, table
from hbd.core import wire
from hbd.core.hacf import KNOWN_DIRECTIVES
from hbd.core.wire import Message
from tests.captures import serial_streams
from tests.test_fuzz import (
    AUTHKEYS_HEADS,
    FIELD_NAMES,
    FIELD_VALUES,
    GOOD_HACF,
    HARESOURCES_HEADS,
    MESSAGE_TYPES,
    ODD_NUMBERS,
    WORDS,
    EngineRig,
    captured_datagrams,
    captured_frames,
    check_config,
    check_decode,
    check_engine_authenticated,
    check_engine_receive,
    check_stream,
    check_verify,
    engine_rig,
    mutate,
)

RIG_REFRESH = 500  # inputs between fresh copies of the engine rig


@dataclass
class Outcome:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    unhandled: int = 0  # exceptions other than the target's own error type
    violations: int = 0  # a property (AssertionError) broke
    samples: list[dict[str, str]] = field(default_factory=list)


# --- generators -------------------------------------------------------------------------

def random_bytes(rng: random.Random) -> bytes:
    size = rng.choice((0, 1, 4, 16, 64, 300, 1500, 9000))
    data = rng.randbytes(rng.randint(0, size))
    head = rng.choice((b"", wire.NETSTRING_START, wire.CLASSIC_START))
    tail = rng.choice((b"", wire.NETSTRING_END, b"\n" + wire.CLASSIC_END))
    return head + data + tail


def packet_input(rng: random.Random, seeds: tuple[bytes, ...]) -> bytes:
    """Three in four inputs mutate a real packet, the rest are random bytes."""
    if rng.random() < 0.75:
        return mutate(rng.choice(seeds), rng, rounds=rng.choice((1, 2, 3, 6)))
    return random_bytes(rng)


def random_token(rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.3:
        return str(rng.randint(-(2**80), 2**80)) if rng.random() < 0.5 else rng.choice(ODD_NUMBERS)
    if pick < 0.7:
        return rng.choice(WORDS)
    return random_text(rng, 10)


def random_text(rng: random.Random, size: int) -> str:
    n = rng.randint(0, size)
    if rng.random() < 0.5:  # invalid UTF-8 read as the daemon reads files
        return rng.randbytes(n).decode("utf-8", errors="replace")
    alphabet = rng.choice((0x7F, 0x800, 0x10FFFF))
    chars = []
    for _ in range(n):
        code = rng.randint(0, alphabet)
        chars.append(chr(code) if not 0xD800 <= code <= 0xDFFF else "\ufffd")
    return "".join(chars)


def config_lines(rng: random.Random, heads: tuple[str, ...] | list[str]) -> str:
    lines = []
    for _ in range(rng.randint(0, 25)):
        words = [rng.choice(heads)] + [random_token(rng) for _ in range(rng.randint(0, 5))]
        lines.append(" ".join(words))
    return rng.choice(("\n", "\r\n", "\n\n")).join(lines)


def config_text(rng: random.Random, heads: tuple[str, ...] | list[str], base: str = "") -> str:
    pick = rng.random()
    if pick < 0.25:
        return random_text(rng, 400)
    if pick < 0.27:  # just over 64 KiB
        lines = config_lines(rng, heads) + "\n"
        return lines * (64 * 1024 // len(lines) + 1)
    return base + config_lines(rng, heads) if rng.random() < 0.5 else config_lines(rng, heads)


# --- targets ----------------------------------------------------------------------------

Check = Callable[[random.Random, int], tuple[Callable[[], object], Any]]


def target_netstring(rng: random.Random, _: int) -> tuple[Callable[[], object], Any]:
    data = packet_input(rng, captured_datagrams())
    return (lambda: check_decode(data)), data


def target_classic(rng: random.Random, _: int) -> tuple[Callable[[], object], Any]:
    data = packet_input(rng, captured_frames())
    return (lambda: check_decode(data)), data


_STREAMS = serial_streams()


def target_serial_stream(rng: random.Random, _: int) -> tuple[Callable[[], object], Any]:
    full = _STREAMS[rng.choice(sorted(_STREAMS))]
    start = rng.randrange(len(full))
    stream = mutate(full[start:start + rng.randint(0, 3000)], rng, rounds=rng.randint(1, 6))
    cuts = [rng.randrange(len(stream) + 1) for _ in range(rng.randint(0, 6))]
    return (lambda: check_stream(stream, cuts)), (stream, cuts)


def target_verify(rng: random.Random, _: int) -> tuple[Callable[[], object], Any]:
    index = rng.choice(("1", "2", "3", "15", "16", "0", "-1", "²", "١", "9" * 5000, "",
                        random_text(rng, 6)))
    token = f"{index}{rng.choice((' ', '', '  '))}{random_text(rng, 50)}"
    if rng.random() < 0.5:
        packet = wire.Packet(Message.of(("t", "status")), "netstring", rng.randbytes(100), token)
    else:
        packet = wire.Packet(Message.of(("t", "status"), ("auth", token)), "classic", b"", None)
    return (lambda: check_verify(packet)), token


class RigHolder:
    """One engine rig reused for many inputs and refreshed now and then (deepcopy is slow)."""

    def __init__(self) -> None:
        self.rig: EngineRig = engine_rig()

    def get(self, index: int) -> EngineRig:
        if index % RIG_REFRESH == 0:
            self.rig = engine_rig()
        return self.rig


_RIGS: dict[str, RigHolder] = {}


def target_engine_receive(rng: random.Random, index: int) -> tuple[Callable[[], object], Any]:
    rig = _RIGS.setdefault("receive", RigHolder()).get(index)
    data = packet_input(rng, rig.peer_packets + captured_datagrams())
    link = rng.randint(-2, 3)
    return (lambda: check_engine_receive(rig, data, link)), data


def target_engine_authenticated(rng: random.Random,
                                index: int) -> tuple[Callable[[], object], Any]:
    rig = _RIGS.setdefault("authenticated", RigHolder()).get(index)
    fields: list[tuple[str, bytes]] = [("t", rng.choice(MESSAGE_TYPES)), ("src", b"n1"),
                                       ("ts", b"1")]
    for _ in range(rng.randint(0, 14)):
        pick = rng.random()
        if pick < 0.6:
            value = rng.choice(FIELD_VALUES)
        elif pick < 0.8:
            value = f"{rng.randint(-(2**70), 2**70):x}".encode()
        else:
            value = rng.randbytes(rng.randint(0, 20))
        fields.append((rng.choice(FIELD_NAMES), value))
    return (lambda: check_engine_authenticated(rig, fields, steps=1)), fields


_DIRECTIVES = sorted(KNOWN_DIRECTIVES)


def target_hacf(rng: random.Random, _: int) -> tuple[Callable[[], object], Any]:
    text = config_text(rng, _DIRECTIVES, GOOD_HACF)
    return (lambda: check_config(text, "", "auth 1\n1 sha1 x\n")), text


def target_haresources(rng: random.Random, _: int) -> tuple[Callable[[], object], Any]:
    text = config_text(rng, HARESOURCES_HEADS)
    return (lambda: check_config(GOOD_HACF, text, "auth 1\n1 sha1 x\n")), text


def target_authkeys(rng: random.Random, _: int) -> tuple[Callable[[], object], Any]:
    text = config_text(rng, AUTHKEYS_HEADS)
    mode = rng.choice((None, 0o100600, 0o100644, 0o100640))
    secret = None
    if rng.random() < 0.3:  # a marked secret in a key-ish place must never be shown
        secret = "Zq" + "".join(rng.choice("abcdefXYZ0123456789") for _ in range(12))
        text = rng.choice(("auth 1\n1 sha1 {s}\n", "auth 1\n1 {s}\n", "auth 1\n{s}\n",
                           "auth 1\n1 sha1\n{s}\n", "auth 1\n1 crc {s}\n", "auth {s}\n",
                           "auth 1\n16 md5 {s}\n")).format(s=secret) + text
    return (lambda: check_config(GOOD_HACF, "", text, mode, secret=secret)), text


TARGETS: dict[str, Check] = {
    "wire-netstring": target_netstring,
    "wire-classic": target_classic,
    "serial-stream": target_serial_stream,
    "auth-verify": target_verify,
    "engine-receive": target_engine_receive,
    "engine-authenticated": target_engine_authenticated,
    "config-hacf": target_hacf,
    "config-haresources": target_haresources,
    "config-authkeys": target_authkeys,
}


def _sample(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 600 else text[:600] + f"... ({len(text)} chars)"


def run_target(name: str, count: int, seed: int) -> Outcome:
    outcome = Outcome(name)
    make = TARGETS[name]
    started = time.perf_counter()
    for index in range(count):
        rng = random.Random(f"{seed}:{name}:{index}")
        check, value = make(rng, index)
        try:
            check()
        except AssertionError as err:
            outcome.violations += 1
            if len(outcome.samples) < 5:
                outcome.samples.append({"index": str(index), "kind": "violation",
                                        "error": str(err)[:300], "input": _sample(value)})
        except Exception as err:  # the point of the exercise: count, keep going
            outcome.unhandled += 1
            if len(outcome.samples) < 5:
                outcome.samples.append({
                    "index": str(index), "kind": "unhandled", "error": repr(err)[:300],
                    "where": traceback.format_exc(limit=-3)[-600:], "input": _sample(value)})
        outcome.inputs += 1
    outcome.seconds = time.perf_counter() - started
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", action="append", choices=sorted(TARGETS),
                        help="run only these (default: all)")
    parser.add_argument("--no-save", action="store_true", help="do not write fuzz.json")
    args = parser.parse_args(argv)
    names = args.target or list(TARGETS)
    outcomes = []
    for name in names:
        outcome = run_target(name, args.count, args.seed)
        outcomes.append(outcome)
        print(f"{name}: {outcome.inputs} inputs in {outcome.seconds:.0f} s, "
              f"{outcome.unhandled} unhandled, {outcome.violations} violations", flush=True)
    rows = [["target", "inputs", "seconds", "inputs/s", "unhandled", "violations"]]
    rows += [[o.target, str(o.inputs), f"{o.seconds:.0f}", f"{o.inputs / o.seconds:.0f}",
              str(o.unhandled), str(o.violations)] for o in outcomes]
    print(table(rows))
    failed = sum(o.unhandled + o.violations for o in outcomes)
    if not args.no_save:
        path = save("fuzz", {
            "seed": args.seed, "count_per_target": args.count,
            "total_inputs": sum(o.inputs for o in outcomes),
            "total_unhandled": sum(o.unhandled for o in outcomes),
            "total_violations": sum(o.violations for o in outcomes),
            "targets": {o.target: {"inputs": o.inputs, "seconds": round(o.seconds, 1),
                                   "unhandled": o.unhandled, "violations": o.violations,
                                   "samples": o.samples} for o in outcomes},
        })
        print(f"saved {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
