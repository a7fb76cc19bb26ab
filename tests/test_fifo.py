"""Heartbeat's FIFO: the message reader, what each message means, and the adapter.

The reader and `interpret` are pure (hbd.core.fifomsg); the adapter test runs
a real FIFO on an asyncio loop and writes to it as Heartbeat's scripts do,
junk included.  The netns test beside this one (test_fifo_netns) runs the
real hb_standby / hb_takeover against running daemons.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import stat
from pathlib import Path

import pytest

from hbd.core.fifomsg import (
    MAX_FIELDS,
    MAX_LINE,
    FifoCommand,
    FifoJunk,
    FifoMessage,
    FifoReader,
    FifoRejected,
    interpret,
)
from hbd.fifo import FIFO_MODE, HeartbeatFifo
from tests.infra import commands as cmds

HB_STANDBY = b">>>\nt=ask_resources\nrsc_hold=local\ninfo=me\n<<<\n"


def test_message_in_pieces() -> None:
    reader = FifoReader()
    out = []
    for i in range(len(HB_STANDBY)):  # one byte per read: nothing may depend on chunking
        out += reader.feed(HB_STANDBY[i:i + 1])
    assert out == [FifoMessage((("t", "ask_resources"), ("rsc_hold", "local"),
                                ("info", "me")))]
    assert interpret(out[0]) == FifoCommand("release", "local", "hb_standby")


@pytest.mark.parametrize("text,want", [
    ("t=ask_resources\nrsc_hold=all\ninfo=me", FifoCommand("release", "all", "hb_standby")),
    ("t=ask_resources\nrsc_hold=foreign\ninfo=me",
     FifoCommand("release", "foreign", "hb_standby")),
    ("t=hb_takeover\nrsc_hold=failback", FifoCommand("takeover", "failback", "hb_takeover")),
    ("t=hb_takeover\nrsc_hold=foreign", FifoCommand("takeover", "foreign", "hb_takeover")),
    ("t=ask_resources\nrsc_hold=all\ninfo=other", "standby exchange"),
    ("t=ask_resources\nrsc_hold=everything\ninfo=me", "bad scope"),
    ("t=hb_takeover", "bad scope"),
    ("t=resource\nrsc_hold=foreign\ninfo=mach_down", "announces its resources"),
    ("t=addnode\nnodelist=n3", "dynamic node list"),
    ("t=setweight\nnode=n1\nweight=2", "Pacemaker"),
    ("t=ip-request\nipaddr=10.0.0.1", "obsolete"),
    ("t=shutdown", "unknown message type"),
    ("rsc_hold=all", "no message type"),
])
def test_interpret(text: str, want: FifoCommand | str) -> None:
    (message,) = FifoReader().feed(f">>>\n{text}\n<<<\n".encode())
    assert isinstance(message, FifoMessage)
    meaning = interpret(message)
    if isinstance(want, FifoCommand):
        assert meaning == want
    else:
        assert isinstance(meaning, FifoRejected) and want in meaning.reason


@pytest.mark.parametrize("data,why", [
    (b"hello\n", "outside a message"),
    (b"<<<\n", "without a message"),
    (b">>>\nt=hb_takeover\n>>>\n", "without its closing"),
    (b">>>\nt=hb_takeover\nrsc_hold all\n<<<\n", "not name=value"),
    (b">>>\nt=hb_takeover\nrsc_hold=\xff\n<<<\n", "not ASCII"),
    (b">>>\nt=hb_takeover\nrsc_hold=a\x01b\n<<<\n", "control character"),
    (b">>>\n" + b"x=1\n" * (MAX_FIELDS + 1) + b"<<<\n", "more than"),
    (b">>>\nt=hb_takeover\nrsc_hold=" + b"a" * MAX_LINE + b"\n<<<\n", "longer than"),
    (b"a" * (10 * MAX_LINE) + b"\n", "longer than"),
])
def test_junk_is_reported_and_dropped_whole(data: bytes, why: str) -> None:
    out = FifoReader().feed(data)
    assert [i for i in out if isinstance(i, FifoMessage)] == []
    assert any(isinstance(i, FifoJunk) and why in i.reason for i in out), out


def test_reader_recovers_after_junk() -> None:
    reader = FifoReader()
    junk = b"\x00\xff" * 5000 + b"\n<<<\n>>>\nbroken line\n<<<\n"
    out = reader.feed(junk + HB_STANDBY)
    assert [i for i in out if isinstance(i, FifoMessage)] == [
        FifoMessage((("t", "ask_resources"), ("rsc_hold", "local"), ("info", "me")))]


def test_endless_line_keeps_buffer_bounded() -> None:
    reader = FifoReader()
    for _ in range(1000):
        reader.feed(b"y" * 4096)
    assert len(reader._partial) <= MAX_LINE
    out = reader.feed(b"\n" + HB_STANDBY)
    assert any(isinstance(i, FifoMessage) for i in out)


def run_fifo(tmp_path: Path, writes: list[bytes], commands: list[FifoCommand],
             settle: float = 0.3) -> HeartbeatFifo:
    async def main() -> HeartbeatFifo:
        fifo = HeartbeatFifo(str(tmp_path), commands.append)
        fifo.open(asyncio.get_running_loop())
        try:
            for data in writes:
                # as ha_clustermsg: a writer opens, appends, closes (then the next one)
                await asyncio.to_thread(_write, fifo.path, data)
                await asyncio.sleep(0.02)
            await asyncio.sleep(settle)
        finally:
            fifo.close()
        return fifo

    return asyncio.run(main())


def _write(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_fifo_created_as_heartbeat_does(tmp_path: Path) -> None:
    (tmp_path / "fifo").write_text("a regular file in the way\n")
    fifo = run_fifo(tmp_path, [], [])
    st = os.stat(fifo.path)
    assert stat.S_ISFIFO(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == FIFO_MODE
    assert st.st_uid == os.geteuid()


def test_fifo_commands_and_junk(tmp_path: Path) -> None:
    commands: list[FifoCommand] = []
    fifo = run_fifo(tmp_path, [
        b"\x00garbage\xff" * 3000 + b"\n",
        HB_STANDBY,
        b">>>\nt=hb_takeover\nrsc_hold=\n<<<\n",  # bad scope: nothing
        b">>>\nt=hb_takeover\n",  # the writer dies half-way ...
        b">>>\nt=hb_takeover\nrsc_hold=all\n<<<\n",  # ... the next message still counts
    ], commands)
    assert commands == [FifoCommand("release", "local", "hb_standby"),
                        FifoCommand("takeover", "all", "hb_takeover")]
    assert fifo.junk >= 3


def test_flood_does_not_starve_the_loop(tmp_path: Path) -> None:
    """8 MB of junk written while the loop must still run its timers."""
    ticks: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fifo = HeartbeatFifo(str(tmp_path), lambda c: None)
        fifo.open(loop)

        async def ticker() -> None:
            while True:
                ticks.append(loop.time())
                await asyncio.sleep(0.01)

        task = loop.create_task(ticker())
        try:
            await asyncio.to_thread(_write, fifo.path, b"z" * (8 << 20))
            await asyncio.sleep(0.1)
        finally:
            task.cancel()
            fifo.close()

    asyncio.run(main())
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert gaps and max(gaps) < 0.5, max(gaps)


def test_real_ha_clustermsg_writes_what_we_read(tmp_path: Path) -> None:
    """The ha_clustermsg of resource-agents' shellfuncs, unmodified, as hb_standby runs it."""
    commands: list[FifoCommand] = []
    script = (". /etc/ha.d/shellfuncs\nha_clustermsg <<-!MSG\n\tt=hb_takeover\n"
              "\trsc_hold=foreign\n!MSG\n")

    async def main() -> None:
        fifo = HeartbeatFifo(str(tmp_path), commands.append)
        fifo.open(asyncio.get_running_loop())
        try:
            proc = await cmds.spawn(
                ["sh", "-c", script], env={**os.environ, "HA_FIFO": fifo.path})
            assert await proc.wait() == 0
            await asyncio.sleep(0.2)
        finally:
            fifo.close()

    asyncio.run(main())
    assert commands == [FifoCommand("takeover", "foreign", "hb_takeover")]


def test_hb_scripts_refuse_bad_scopes_before_writing(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for tool in ("hb_standby", "hb_takeover"):
        result = cmds.run([f"/usr/share/heartbeat/{tool}", "bogus"], capture_output=True,
                                text=True, env={**os.environ, "HA_FIFO": str(fifo)},
                                timeout=10)
        assert result.returncode == 1, result


def _read_all(path: Path, run: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run a tool writing to the FIFO at `path`; what it wrote, and its exit code."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        result = cmds.run(run, capture_output=True, env=env, timeout=10)
        data = b""
        try:
            while chunk := os.read(fd, 4096):
                data += chunk
        except BlockingIOError:
            pass
    finally:
        os.close(fd)
    return result.returncode, data


@pytest.mark.parametrize("tool", ["hb_standby", "hb_takeover"])
def test_our_tools_write_what_heartbeats_write(tool: str, tmp_path: Path) -> None:
    """packaging/heartbeat-tools (hbd-heartbeat-tools) against Debian's own scripts."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    ours = Path(__file__).resolve().parent.parent / "packaging" / "heartbeat-tools" / tool
    env = {**os.environ, "HA_FIFO": str(fifo)}
    for args in ([], ["all"], ["local"], ["foreign"], ["failback"], ["bogus"], ["a", "b"]):
        theirs = _read_all(fifo, [f"/usr/share/heartbeat/{tool}", *args], env)
        mine = _read_all(fifo, [str(ours), *args], env)
        assert mine == theirs, (args, mine, theirs)
