"""The daemon process: foreground run, clean stop on SIGTERM/SIGINT, SIGHUP reload
that keeps the old configuration when the new one is bad."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hbd.core.assemble import ConfigTexts, check
from hbd.daemon import detached_logging
from tests.infra import commands

HACF = "keepalive 100ms\ndeadtime 500ms\ninitdead 1\nbcast lo\nnode n1 n2\n"


def _config(tmp_path: Path) -> Path:
    d = tmp_path / "ha.d"
    d.mkdir()
    (d / "ha.cf").write_text(HACF)
    (d / "haresources").write_text("n1 10.77.0.240/24\n")
    (d / "authkeys").write_text("auth 1\n1 sha1 k\n")
    os.chmod(d / "authkeys", 0o600)
    return d


class Proc:
    """An hbd process with its stderr collected into a file we can poll."""

    def __init__(self, tmp_path: Path, config_dir: Path) -> None:
        self.log_path = tmp_path / "hbd.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        env = {k: v for k, v in os.environ.items()
               if k not in ("JOURNAL_STREAM", "INVOCATION_ID", "NOTIFY_SOCKET")}
        self.proc = commands.popen(
            [sys.executable, "-m", "hbd.daemon", "--config-dir", str(config_dir),
             "--state-dir", str(tmp_path / "state"), "--runtime-dir", str(tmp_path / "run"),
             "--node", "n1", "--no-dbus"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def text(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, needle: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if needle in text:
                return text
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged; log:\n{self.text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Proc, Path]]:
    config_dir = _config(tmp_path)
    proc = Proc(tmp_path, config_dir)
    try:
        yield proc, config_dir
    finally:
        proc.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly(daemon: tuple[Proc, Path], sig: signal.Signals) -> None:
    proc, _ = daemon
    proc.wait_for("starting as node n1")
    proc.proc.send_signal(sig)
    assert proc.proc.wait(20) == 0
    text = proc.text()
    assert f"{sig.name} received: stopping" in text
    assert "hbd stopped" in text
    assert "Traceback" not in text


def test_sighup_reload_good_and_bad(daemon: tuple[Proc, Path]) -> None:
    proc, config_dir = daemon
    proc.wait_for("starting as node n1")
    (config_dir / "ha.cf").write_text(HACF.replace("deadtime 500ms", "deadtime 600ms"))
    proc.proc.send_signal(signal.SIGHUP)
    proc.wait_for("configuration reloaded")
    (config_dir / "ha.cf").write_text(HACF + "bogus 1\n")
    proc.proc.send_signal(signal.SIGHUP)
    text = proc.wait_for("unknown directive 'bogus'")
    assert "reload refused, keeping the running configuration" in text
    assert f"{config_dir}/ha.cf:6: unknown directive 'bogus'" in text
    assert proc.proc.poll() is None, "a bad reload must not stop the daemon"
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(20) == 0


def test_refuses_to_start_on_bad_config(tmp_path: Path) -> None:
    config_dir = _config(tmp_path)
    os.chmod(config_dir / "authkeys", 0o644)
    proc = Proc(tmp_path, config_dir)
    try:
        assert proc.proc.wait(30) == 1
        text = proc.text()
        assert "configuration invalid, not starting" in text
        assert "chmod 600" in text
        assert "Traceback" not in text
    finally:
        proc.stop()


@pytest.mark.parametrize(("lines", "facility"), [
    ("", "daemon"),  # nothing configured: syslog's daemon facility rather than nowhere
    ("logfacility none\n", "daemon"),
    ("logfacility local0\n", "local0"),
    ("logfacility none\nlogfile /var/log/ha-log\n", None),  # the file gets everything
    ("logfile /var/log/ha-log\n", None),
    ("logfacility none\nlogfile /dev/null\n", "daemon"),
    ("debugfile /var/log/ha-debug\n", None),
])
def test_detached_logging_never_goes_nowhere(lines: str, facility: str | None) -> None:
    texts = ConfigTexts("ha.cf", "keepalive 1\ndeadtime 3\nbcast eth0\nnode n1 n2\n" + lines,
                        "haresources", "", "authkeys", "auth 1\n1 sha1 secret\n", 0o600)
    config, problems = check(texts, node_name="n1")
    assert config is not None, problems
    assert detached_logging(config.hacf).logfacility == facility


def test_a_group_left_active_that_will_not_stop_is_claimed_blocked(tmp_path: Path) -> None:
    """Start-up finds a group running (a previous hbd died) and its stop fails: hbd claims
    it as blocked and starts.  (The claim's events were once handed to the links before
    they existed, and the daemon died of an assertion.)"""
    config_dir = _config(tmp_path)
    (config_dir / "haresources").write_text("n1 stuck\n")
    (config_dir / "resource.d").mkdir()
    agent = config_dir / "resource.d" / "stuck"
    agent.write_text('#!/bin/sh\ncase "$1" in status) echo running ;; stop) exit 1 ;; esac\n')
    agent.chmod(0o755)
    proc = Proc(tmp_path, config_dir)
    try:
        text = proc.wait_for("ready:")
        assert "group stuck could not be stopped" in text
        assert "group stuck: stopping -> blocked (on n1)" in text
        assert proc.proc.poll() is None
    finally:
        proc.stop()
