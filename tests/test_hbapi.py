"""Heartbeat's client API: framing, the conversation, authorization (no daemon needed).

The bytes are those captured from Debian's cl_status talking to Heartbeat
3.0.6 (see hbd/core/hbapi.py); the netns test beside this one
(test_clstatus_netns) runs the real cl_status against hbd and Heartbeat.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

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


def test_apiauth_from_real_credentials() -> None:
    """A real socket: root passes anon's uid=root; nobody (not in haclient) is refused."""
    directory = tempfile.mkdtemp(prefix="hbapi-")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "register")
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
    env = {**os.environ, "PYTHONPATH": directory}
    python = os.path.realpath(sys.executable)

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
