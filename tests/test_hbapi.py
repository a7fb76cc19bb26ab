"""Heartbeat's client API: framing, the conversation, authorization (no daemon needed).

The bytes are those captured from Debian's cl_status talking to Heartbeat
3.0.6 (see hbd/core/hbapi.py); the netns test beside this one
(test_clstatus_netns) runs the real cl_status against hbd and Heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import pytest

from hbd import apiserver
from hbd.apiserver import ApiServer
from hbd.core.hbapi import (
    ApiNode,
    ApiSession,
    ApiView,
    FrameError,
    FrameReader,
    Peer,
    SessionState,
    decode,
    encode,
)
from tests.infra import commands

SIGNON = (b"N\x00\x00\x00\xcd\xab\x00\x00>>>\nt=hbapi-req\nreqtype=signon\ndest=n1\npid=390\n"
          b"from_id=390\nuid=0\ngid=105\n<<<\n\x00")
VIEW = ApiView(node="n1", nodes=(ApiNode("n1", "normal", "active", (("eth0", "up"),)),
                                 ApiNode("n2", "normal", "dead", (("eth0", "dead"),)),
                                 ApiNode("10.0.0.9", "ping", "ping", (("10.0.0.9", "up"),))),
               resources="local", deadtime_ms=500, keepalive_ms=100, logfacility=0,
               parameters={"deadtime": "500ms", "pacemaker": "no"})


def allow(client: str, casual: bool, peer: Peer, uid: int, gid: int) -> str | None:
    return None


def signed_on() -> ApiSession:
    session = ApiSession(Peer(390, 0, 105), allow, frozenset)
    (body,) = FrameReader().feed(SIGNON)
    answer = session.handle(decode(body), VIEW)
    assert session.state is SessionState.SIGNED_ON and not answer.close
    assert dict(answer.frames[0])["deadtime"] == "1f4"
    return session


def ask(session: ApiSession, **fields: str) -> list[dict[str, str]]:
    request = [("t", "hbapi-req"), ("dest", "n1"), ("pid", "390"), ("from_id", "390"),
               *fields.items()]
    return [dict(f) for f in session.handle(request, VIEW).frames]


def test_frames_round_trip_as_captured() -> None:
    (body,) = FrameReader().feed(SIGNON)
    fields = decode(body)
    assert fields[:2] == [("t", "hbapi-req"), ("reqtype", "signon")]
    assert encode(fields) == SIGNON


def test_frames_split_anywhere() -> None:
    reader, out = FrameReader(), []
    for i in range(len(SIGNON) * 2):
        out += reader.feed((SIGNON * 2)[i:i + 1])
    assert len(out) == 2


@pytest.mark.parametrize("data", [
    b"\x05\x00\x00\x00\x00\x00\x00\x00hello",  # bad magic
    b"\x00\x00\x00\x10\xcd\xab\x00\x00",  # length far beyond the limit
    b"\xff\xff\xff\xff\xcd\xab\x00\x00",  # negative length
])
def test_bad_frames_raise(data: bytes) -> None:
    with pytest.raises(FrameError):
        FrameReader().feed(data)


@pytest.mark.parametrize("body", [b"hello\x00", b">>>\nno equals\n<<<\n\x00",
                                  b">>>\nt=\xff\n<<<\n\x00", b">>>\n" + b"a=b\n" * 100 + b"<<<\n"])
def test_bad_bodies_raise(body: bytes) -> None:
    with pytest.raises(FrameError):
        decode(body)


def test_nodelist_streams_rows_then_ok() -> None:
    rows = ask(signed_on(), reqtype="nodelist")
    assert [(r["node"], r["nodetype"], r["st"], r["result"]) for r in rows] == [
        ("n1", "normal", "active", "ok/more"), ("n2", "normal", "dead", "ok/more"),
        ("10.0.0.9", "ping", "ping", "OK")]


def test_questions_and_their_answers() -> None:
    s = signed_on()
    assert ask(s, reqtype="nodestatus", node="N2")[0]["st"] == "dead"
    assert ask(s, reqtype="nodestatus", node="nobody")[0] == {
        "t": "hbapi-resp", "reqtype": "nodestatus", "result": "badreq", "info": "EINVAL"}
    assert ask(s, reqtype="nodetype", node="10.0.0.9")[0]["nodetype"] == "ping"
    assert [r["ifname"] for r in ask(s, reqtype="iflist", node="n1")] == ["eth0"]
    assert ask(s, reqtype="ifstatus", node="n2", ifname="eth0")[0]["st"] == "dead"
    assert ask(s, reqtype="ifstatus", node="n2", ifname="eth9")[0]["result"] == "badreq"
    assert ask(s, reqtype="getrsc")[0]["rsc_hold"] == "local"
    assert ask(s, reqtype="getparm", pname="deadtime")[0]["pvalue"] == "500ms"
    assert ask(s, reqtype="getparm", pname="crm")[0]["pvalue"] == "no"
    assert "pvalue" not in ask(s, reqtype="getparm", pname="nothing")[0]
    assert ask(s, reqtype="clientstatus", node="n1", cn="ipfail")[0]["cs"] == "offline"
    assert ask(s, reqtype="numnodes")[0]["numnodes"] == "2"
    assert ask(s, reqtype="bogus")[0]["result"] == "badreq"
    assert ask(s, reqtype="signoff") == [] and s.state is SessionState.CLOSED


@pytest.mark.parametrize("change,reason", [
    ({"pid": "391"}, "bad pid"), ({"uid": "1000"}, "incorrect/false credentials"),
    ({"gid": "x"}, "invalid id info"),
])
def test_signon_checks_the_claims_against_the_socket(change: dict[str, str],
                                                      reason: str) -> None:
    session = ApiSession(Peer(390, 0, 105), allow, frozenset)
    fields = dict([("t", "hbapi-req"), ("reqtype", "signon"), ("pid", "390"),
                   ("from_id", "390"), ("uid", "0"), ("gid", "105")])
    fields.update(change)
    answer = session.handle(list(fields.items()), VIEW)
    assert answer.close and session.state is SessionState.CLOSED
    reply = dict(answer.frames[0])
    assert reply["result"] == "badreq" and reply["info"] == reason
    assert reply["deadtime"] == "1f4"  # cl_status then says "refuses my connection"


def test_no_question_before_signon_and_no_relaying() -> None:
    session = ApiSession(Peer(390, 0, 105), allow, frozenset)
    assert session.handle([("t", "hbapi-req"), ("reqtype", "nodelist")], VIEW).close
    s = signed_on()
    assert s.handle([("t", "resource"), ("rsc_hold", "all")], VIEW).close


def named(view: ApiView = VIEW) -> ApiSession:
    session = ApiSession(Peer(390, 0, 105), allow, frozenset)
    answer = session.handle([("t", "hbapi-req"), ("reqtype", "signon"), ("pid", "390"),
                             ("from_id", "ipfail"), ("uid", "0"), ("gid", "105")], view)
    assert session.state is SessionState.SIGNED_ON and not session.casual, answer
    return session


def test_a_named_clients_messages_are_relayed() -> None:
    s = named()
    message = [("t", "num_ping_nodes"), ("num_ping", "1"), ("dest", "n2")]
    answer = s.handle(message, VIEW)
    assert answer.relay == message and not answer.close and answer.frames == []


@pytest.mark.parametrize("fields,result", [
    ({"reqtype": "setfilter", "fmask": "1"}, "OK"),
    ({"reqtype": "setfilter", "fmask": "0"}, "badreq"),
    ({"reqtype": "setfilter", "fmask": "zz"}, "badreq"),
    ({"reqtype": "setsignal", "signal": "0"}, "OK"),
    ({"reqtype": "setsignal", "signal": "9"}, "badreq"),
    ({"reqtype": "setsignal", "signal": "32"}, "badreq"),
])
def test_setfilter_and_setsignal(fields: dict[str, str], result: str) -> None:
    s = named()
    request = [("t", "hbapi-req"), ("pid", "390"), ("from_id", "ipfail"), *fields.items()]
    (answer,) = s.handle(request, VIEW).frames
    assert dict(answer)["result"] == result


def test_remote_clientstatus_asks_the_live_peer() -> None:
    live = ApiView(**{**VIEW.__dict__, "relays": True,
                      "nodes": (VIEW.nodes[0], ApiNode("n2", "normal", "active"))})
    s = signed_on()
    request = [("t", "hbapi-req"), ("pid", "390"), ("from_id", "390"),
               ("reqtype", "clientstatus"), ("node", "n2"), ("cn", "ipfail")]
    answer = s.handle(request, live)
    assert answer.frames == [] and answer.query == [
        ("t", "query-cstatus"), ("dest", "n2"), ("cn", "ipfail"), ("from_id", "390")]
    # a dead peer, or a stack that relays nothing: offline at once
    (offline,) = s.handle(request, VIEW).frames
    assert dict(offline)["cs"] == "offline" and s.handle(request, VIEW).query is None


def nobody_client(directory: str) -> tuple[str, dict[str, str], str]:
    """A client that signs on with its own ids and prints the result, the environment it
    runs in and the python to run it with (`nobody` can run it: see below)."""
    client = (
        "import os, socket, sys\n"
        "from hbd.core.hbapi import FrameReader, decode, encode\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        "s.sendall(encode([('t','hbapi-req'),('reqtype','signon'),('pid',str(os.getpid())),"
        "('from_id',str(os.getpid())),('uid',str(os.geteuid())),('gid',str(os.getegid()))]))\n"
        "print(dict(decode(FrameReader().feed(s.recv(4096))[0]))['result'])\n")
    # `nobody` may not reach the checkout (a clone in /root is 0700 on Debian) nor the
    # venv's python there: the client imports a copy of hbd, run by the system python
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shutil.copytree(os.path.join(root, "hbd"), os.path.join(directory, "hbd"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    return client, {**os.environ, "PYTHONPATH": directory}, os.path.realpath(sys.executable)


def test_apiauth_from_real_credentials() -> None:
    """A real socket: root passes anon's uid=root; nobody (not in haclient) is refused."""
    directory = tempfile.mkdtemp(prefix="hbapi-")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "register")
    client, env, python = nobody_client(directory)

    async def main() -> tuple[str, str]:
        server = ApiServer(path, lambda: VIEW, {"anon": (frozenset({0}), frozenset({105}))})
        await server.start()
        try:
            results = []
            for prefix in ([], ["setpriv", "--reuid=nobody", "--regid=nogroup",
                                "--clear-groups"]):
                proc = await commands.spawn(
                    [*prefix, python, "-c", client, path], env=env,
                    stdout=subprocess.PIPE)
                out, _ = await proc.communicate()
                results.append(out.decode().strip())
            return results[0], results[1]
        finally:
            await server.stop()
            shutil.rmtree(directory, ignore_errors=True)

    assert asyncio.run(main()) == ("OK", "badreq")


def test_apiauth_lines_and_heartbeats_defaults() -> None:
    from hbd.core.hacf import parse_hacf
    from hbd.core.hbparams import apiauth_table

    hacf, problems = parse_hacf("node n1 n2\nbcast eth0\napiauth anon uid=root gid=adm,staff\n"
                                "apiauth mon uid=1000\napiauth mon gid=adm\n"
                                "apiauth bad\napiauth worse uid=a uid=b\napiauth x y=z\n")
    assert [str(p) for p in problems.errors] == [
        "ha.cf:6: apiauth: client 'bad' needs a uid= or gid= list",
        "ha.cf:7: apiauth: duplicate uid list for client 'worse'",
        "ha.cf:8: apiauth: 'y=z' is not uid=LIST or gid=LIST"]
    assert any("'mon' is listed twice" in str(p) for p in problems.warnings)
    table = apiauth_table(hacf.apiauth)
    assert table["anon"] == (("root",), ("adm", "staff"))  # the line replaces the default
    assert table["mon"] == (("1000",), ())
    assert table["ipfail"] == (("hacluster",), ())  # Heartbeat's defaults for the rest
    assert table["ping"] == ((), ("haclient",))
    assert dict(hacf.parameters)["hbversion"] == "3.0.6"
    assert dict(hacf.parameters)["deadtime"] == "30000ms"  # Heartbeat's default, as text


# -- the socket's limits: a client (of any uid) cannot hold connections for free --------

def own_signon() -> bytes:
    """The signon this test process sends (its own pid and ids, as SO_PEERCRED reports)."""
    return encode([("t", "hbapi-req"), ("reqtype", "signon"), ("pid", str(os.getpid())),
                   ("from_id", str(os.getpid())), ("uid", str(os.geteuid())),
                   ("gid", str(os.getegid()))])


def api_path() -> str:
    directory = tempfile.mkdtemp(prefix="hbapi-")
    os.chmod(directory, 0o755)
    return os.path.join(directory, "register")


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True if the server closes the connection within `seconds` (data before that is read)."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def test_slow_loris_dropped_at_the_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trickling a 64 KiB frame one byte at a time no longer holds a connection: signon is due
    SIGNON_TIMEOUT after connecting, each later message IDLE_TIMEOUT after the previous one,
    however often bytes arrive.  A prompt client is served as before."""
    monkeypatch.setattr(apiserver, "SIGNON_TIMEOUT", 0.3)
    monkeypatch.setattr(apiserver, "IDLE_TIMEOUT", 0.6)
    path = api_path()
    header = b"\x00\x00\x01\x00\xcd\xab\x00\x00"  # a frame of 64 KiB, never completed

    async def trickle(writer: asyncio.StreamWriter) -> None:
        writer.write(header)
        with contextlib.suppress(ConnectionError):
            while True:
                await asyncio.sleep(0.05)
                writer.write(b"x")
                await writer.drain()

    async def main() -> tuple[bool, bool, list[str]]:
        server = ApiServer(path, lambda: VIEW, {"anon": (frozenset({os.geteuid()}),
                                                         frozenset())})
        await server.start()
        try:
            loop = asyncio.get_running_loop()
            # never signs on
            reader, writer = await asyncio.open_unix_connection(path)
            started = loop.time()
            task = asyncio.create_task(trickle(writer))
            unsigned = await closed_within(reader, 3.0) and loop.time() - started < 2.0
            task.cancel()
            writer.close()
            # signs on, asks a question, then trickles the next message
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(own_signon() + encode([
                ("t", "hbapi-req"), ("reqtype", "nodelist"), ("dest", "n1"),
                ("pid", str(os.getpid())), ("from_id", str(os.getpid()))]))
            frames, answers = FrameReader(), []
            while len(answers) < 4:
                answers += [dict(decode(b)) for b in frames.feed(await reader.read(4096))]
            task = asyncio.create_task(trickle(writer))
            signed = await closed_within(reader, 3.0)
            task.cancel()
            writer.close()
            return unsigned, signed, [a["result"] for a in answers]
        finally:
            await server.stop()
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)

    unsigned, signed, results = asyncio.run(main())
    assert results == ["OK", "ok/more", "ok/more", "OK"]  # signon, then the three rows
    assert unsigned, "a client that never signs on must be dropped at the signon deadline"
    assert signed, "a message trickled a byte at a time must be dropped at its deadline"


def test_one_uid_cannot_lock_out_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """root (this process) fills its share of the connections without signing on; nobody still
    gets in and signs on.  No deadline helps here: they are all far away."""
    monkeypatch.setattr(apiserver, "MAX_CLIENTS", 4)
    monkeypatch.setattr(apiserver, "MAX_CLIENTS_PER_UID", 2)
    monkeypatch.setattr(apiserver, "SIGNON_TIMEOUT", 60.0)
    path = api_path()
    directory = os.path.dirname(path)
    nobody = pwd.getpwnam("nobody")
    client, env, python = nobody_client(directory)

    async def main() -> tuple[list[bool], str]:
        server = ApiServer(path, lambda: VIEW,
                           {"anon": (frozenset({os.geteuid(), nobody.pw_uid}), frozenset())})
        await server.start()
        held = []
        try:
            for _ in range(6):
                held.append(await asyncio.open_unix_connection(path))
            await asyncio.sleep(0.1)
            closed = [await closed_within(reader, 0.2) for reader, _ in held]
            proc = await commands.spawn(
                ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                 python, "-c", client, path], env=env, stdout=subprocess.PIPE)
            out, _ = await proc.communicate()
            return closed, out.decode().strip()
        finally:
            for _, writer in held:
                writer.close()
            await server.stop()
            shutil.rmtree(directory, ignore_errors=True)

    closed, result = asyncio.run(main())
    assert result == "OK", "nobody was locked out by root's connections"
    assert closed == [False, False, True, True, True, True]  # root keeps its two


def test_refusals_logged_once_per_interval(monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """A connect loop against a full socket logs one line per LOG_INTERVAL, then says how
    many refusals it left out."""
    monkeypatch.setattr(apiserver, "MAX_CLIENTS", 1)
    monkeypatch.setattr(apiserver, "LOG_INTERVAL", 60.0)
    path = api_path()
    caplog.set_level(logging.WARNING, logger="hbd.apiserver")

    async def main() -> list[bool]:
        server = ApiServer(path, lambda: VIEW, {})
        await server.start()
        try:
            _, holder = await asyncio.open_unix_connection(path)
            await asyncio.sleep(0.05)
            refused = []
            for i in range(21):
                if i == 20:
                    monkeypatch.setattr(apiserver, "LOG_INTERVAL", 0.0)
                reader, writer = await asyncio.open_unix_connection(path)
                refused.append(await closed_within(reader, 2.0))
                writer.close()
            holder.close()
            return refused
        finally:
            await server.stop()
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)

    assert all(asyncio.run(main()))
    lines = [r.getMessage() for r in caplog.records if "refusing" in r.getMessage()]
    assert len(lines) == 2, lines
    assert lines[1].endswith("(and 19 more like it not logged)")


def test_a_client_that_does_not_read_is_dropped(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Answers a client never reads no longer hold its connection: after DRAIN_TIMEOUT the
    server gives up on it."""
    monkeypatch.setattr(apiserver, "DRAIN_TIMEOUT", 0.3)
    path = api_path()
    caplog.set_level(logging.WARNING, logger="hbd.apiserver")
    big = ApiView(node="n1", nodes=tuple(ApiNode(f"node{i:04}", "normal", "active")
                                         for i in range(2000)),
                  resources="local", deadtime_ms=500, keepalive_ms=100, logfacility=0)

    async def main() -> None:
        server = ApiServer(path, lambda: big, {"anon": (frozenset({os.geteuid()}),
                                                        frozenset())})
        await server.start()
        try:
            _, writer = await asyncio.open_unix_connection(path)
            writer.write(own_signon() + 20 * encode([
                ("t", "hbapi-req"), ("reqtype", "nodelist"), ("dest", "n1"),
                ("pid", str(os.getpid())), ("from_id", str(os.getpid()))]))
            async with asyncio.timeout(5.0):
                while "did not read" not in caplog.text:
                    await asyncio.sleep(0.05)
            writer.close()
        finally:
            await server.stop()
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)

    asyncio.run(main())
