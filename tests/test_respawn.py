"""ha.cf `respawn` (hbd.respawn): real programs run, restarted and stopped as Heartbeat does.

Each program is a short Python script that appends a line (its uid, groups, pid)
to a file, then does what the test needs: exit at once, exit 100, sleep, or
ignore SIGTERM.  The throttling and stop timeouts are shortened for the test.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hbd import respawn
from hbd.core.config import Respawn
from hbd.respawn import Respawner, client_env, runs_ipfail

SCRIPT = """
import os, signal, sys, time
mode = sys.argv[2]
with open(sys.argv[1], "a") as f:
    f.write(f"{os.getuid()} {os.getgid()} {sorted(os.getgroups())} {os.getpid()} "
            f"{os.getpriority(os.PRIO_PROCESS, 0)}\\n")
if mode == "exit100":
    sys.exit(100)
if mode == "sleep":
    signal.signal(signal.SIGTERM, lambda *a: (open(sys.argv[1], "a").write("term\\n"),
                                              sys.exit(0)))
    time.sleep(60)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)
"""


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory every user may write (the programs run as nobody too)."""
    path = Path(tempfile.mkdtemp(prefix="hbd-respawn-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# The interpreter itself, not the venv's link to it: a checkout in /root (0700 on Debian)
# is out of nobody's reach, and the programs need nothing but the standard library.
PYTHON = os.path.realpath(sys.executable)


def entry(out: Path, mode: str, user: str = "root") -> Respawn:
    return Respawn(user, (PYTHON, "-c", SCRIPT, str(out), mode), 1)


def lines(out: Path) -> list[str]:
    return out.read_text().splitlines() if out.exists() else []


async def until(check: object, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():  # type: ignore[operator]
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.05)


def test_restarted_as_the_user_until_exit_100(shared: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(respawn, "RESPAWN_DELAY", 0.01)
    out = shared / "runs"
    nobody = pwd.getpwnam("nobody")

    async def main() -> None:
        runner = Respawner(client_env("n1", None, None, None, 0))
        runner.start((entry(out, "exit", "nobody"),))
        await until(lambda: len(lines(out)) >= 3)
        await runner.stop()
        runs = lines(out)
        first = runs[0].split()
        uid, gid, nice = first[0], first[1], first[-1]
        assert (int(uid), int(gid)) == (nobody.pw_uid, nobody.pw_gid)
        assert nice == "0"  # normal priority whatever ours
        assert len({r.split()[-2] for r in runs}) == len(runs)  # a new process each time
        count = len(lines(out))
        await asyncio.sleep(0.3)
        assert len(lines(out)) == count  # stopped: no more runs

        last = shared / "last"
        runner = Respawner(client_env("n1", None, None, None, 0))
        runner.start((entry(last, "exit100"),))
        await asyncio.sleep(1.0)
        assert len(lines(last)) == 1  # exit 100: not restarted
        await runner.stop()

    asyncio.run(main())


def test_respawning_too_fast_gives_up(shared: Path, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(respawn, "RESPAWN_DELAY", 0.01)
    out = shared / "runs"
    caplog.set_level(logging.INFO, "hbd.respawn")

    async def main() -> None:
        runner = Respawner(client_env("n1", None, None, None, 0))
        runner.start((entry(out, "exit"),))
        await until(lambda: "respawning too fast" in caplog.text, 60)
        await asyncio.sleep(0.5)
        # the first run and MAX_SHORT fast respawns, then nothing
        assert len(lines(out)) == respawn.MAX_SHORT + 1
        await runner.stop()

    asyncio.run(main())


def test_stopped_with_sigterm_then_sigkill(shared: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(respawn, "STOP_TIMEOUT", 1.0)
    polite, stubborn = shared / "polite", shared / "stubborn"

    async def main() -> None:
        runner = Respawner(client_env("n1", None, None, None, 0))
        runner.start((entry(polite, "sleep"), entry(stubborn, "stubborn")))
        await until(lambda: len(lines(polite)) == 1 and len(lines(stubborn)) == 1)
        pids = [int(lines(p)[0].split()[-2]) for p in (polite, stubborn)]
        loop = asyncio.get_running_loop()
        began = loop.time()
        await runner.stop()
        assert loop.time() - began < 5
        assert lines(polite)[-1] == "term"  # SIGTERM first
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert len(lines(polite)) == 2 and len(lines(stubborn)) == 1  # not restarted

    asyncio.run(main())


def test_a_missing_program_or_user_is_not_run(shared: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "hbd.respawn")

    async def main() -> None:
        runner = Respawner(client_env("n1", None, None, None, 0))
        runner.start((Respawn("root", (str(shared / "nothing"),), 3),
                      Respawn("no-such-user-hbd", (sys.executable,), 4)))
        await until(lambda: "Cannot exec" in caplog.text and "invalid uid" in caplog.text)
        await runner.stop()

    asyncio.run(main())


def test_ipfail_is_recognised_behind_a_wrapper() -> None:
    assert runs_ipfail((Respawn("hacluster", ("/usr/libexec/heartbeat/ipfail",)),))
    assert runs_ipfail((Respawn("root", ("/usr/bin/unshare", "-m", "sh", "-c", "x", "/run",
                                          "/usr/lib/heartbeat/ipfail")),))
    assert not runs_ipfail((Respawn("root", ("/usr/bin/ipfailover",)),))


def test_an_ended_line_is_reported_and_a_reload_tries_it_again(
        shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(respawn, "RESPAWN_DELAY", 0.01)
    out, sleeper = shared / "runs", shared / "sleeper"
    ended: list[Respawn] = []

    async def main() -> None:
        done, lasting = entry(out, "exit100"), entry(sleeper, "sleep")
        runner = Respawner(client_env("n1", None, None, None, 0), ended.append)
        runner.start((done, lasting))
        await until(lambda: ended == [done] and len(lines(sleeper)) == 1)
        # only the program that will run again counts (the built-in ping rule's cue)
        assert runner.kept() == (lasting,)
        await runner.update((done, lasting))  # the admin's reload: tried once more
        await until(lambda: len(lines(out)) == 2 and len(ended) == 2)
        assert len(lines(sleeper)) == 1  # the running one was left alone
        await runner.stop()
        assert len(ended) == 2  # a stop is no end to report

    asyncio.run(main())


def test_stopped_while_the_user_is_looked_up(shared: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = shared / "runs"
    real_ids = respawn._ids

    def slow_ids(user: str) -> tuple[int, int, list[int]] | None:
        import time
        time.sleep(0.5)  # NSS on a slow LDAP server
        return real_ids(user)

    monkeypatch.setattr(respawn, "_ids", slow_ids)

    async def main() -> None:
        runner = Respawner(client_env("n1", None, None, None, 0))
        runner.start((entry(out, "sleep"),))
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await runner.stop()
        await asyncio.sleep(0.5)
        assert loop.time() - began < 2.0  # not STOP_TIMEOUT and a SIGKILL
        assert lines(out) == []  # never started once stopped

    asyncio.run(main())


def test_the_built_in_ping_rule_is_back_once_ipfail_is_not_respawned(
        shared: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """ipfail exits 100 (or respawns too fast): nobody decides on ping nodes any more
    unless the built-in rule takes over again; while ipfail is respawned, it stays aside."""
    from hbd.core.engine import Engine
    from hbd.core.failover import Failover
    from hbd.core.pingnodes import PingNodes
    from hbd.service import Options
    from hbd.stack_heartbeat import HeartbeatDaemon
    from tests.simnet import make_config

    monkeypatch.setattr(respawn, "RESPAWN_DELAY", 0.01)
    ipfail = shared / "ipfail"
    ipfail.write_text(f"#!{PYTHON}\nimport sys; sys.exit(int(sys.argv[1]))\n")
    ipfail.chmod(0o755)
    config = make_config("n1", extra=f"ping 192.0.2.1\nrespawn root {ipfail} 100\n")
    options = Options(config_dir="/nonexistent", state_dir="/nonexistent",
                      runtime_dir="/nonexistent", node="n1", dbus=False, debug=False)
    daemon = HeartbeatDaemon(options, config)
    engine = Engine(config, uuid=b"n1".ljust(16, b"\0"), generation=1, now=0.0)
    daemon.pingnodes = PingNodes(config.hacf, Failover(engine, config))
    daemon.pingnodes.ipfail_respawned = runs_ipfail(config.hacf.respawn)
    assert not daemon.pingnodes.decides
    caplog.set_level(logging.INFO)

    async def main() -> None:
        daemon._start_respawn()
        pings = daemon.pingnodes
        assert pings is not None
        await until(lambda: pings.decides)
        assert "built-in ping node rule decides again" in caplog.text
        await daemon._stop_respawn()

    asyncio.run(main())

