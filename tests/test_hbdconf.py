"""hbd.conf: hbd's own settings in a file Heartbeat never reads, parsed like ha.cf."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from hbd.configfiles import describe
from hbd.core.assemble import ConfigTexts, check
from hbd.core.hbdconf import HANDLERS, parse_hbdconf
from tests.infra import commands
from tests.test_config import GOOD_AUTHKEYS, GOOD_HACF, GOOD_HARESOURCES
from tests.test_daemon_skeleton import Proc, _config


def _texts(hbdconf: str | None, hacf: str = GOOD_HACF) -> ConfigTexts:
    return ConfigTexts("ha.cf", hacf, "haresources", GOOD_HARESOURCES, "authkeys",
                       GOOD_AUTHKEYS, 0o100600, "hbd.conf", hbdconf)


def _messages(hbdconf: str | None, hacf: str = GOOD_HACF) -> list[str]:
    _, problems = check(_texts(hbdconf, hacf), node_name="n1")
    return [str(p) for p in problems]


def test_no_file_means_defaults() -> None:
    config, problems = check(_texts(None), node_name="n1")
    assert config is not None and problems == []
    assert not config.hbd.present
    assert (config.hacf.arp_count, config.hacf.arp_interval_ms) == (5, 200)


def test_values_apply_and_comments_and_blank_lines_are_skipped() -> None:
    config, problems = check(_texts("# hbd's own\n\narp_count 2   # fewer\narp_interval 50ms\n"),
                             node_name="n1")
    assert config is not None and problems == []
    assert config.hbd.present
    assert (config.hacf.arp_count, config.hacf.arp_interval_ms) == (2, 50)
    assert config.hbd.lines == {"arp_count": 3, "arp_interval": 4}


@pytest.mark.parametrize(("text", "message"), [
    ("frobnicate 1\n", "hbd.conf:1: unknown directive 'frobnicate' (known: "
     + ", ".join(sorted(HANDLERS)) + ")"),
    ("\narp_count\n", "hbd.conf:2: arp_count: needs exactly one value, got 0"),
    ("arp_count 101\n", "hbd.conf:1: arp_count: '101' is not a whole number from 0 to 100"),
    ("arp_count ²\n", "hbd.conf:1: arp_count: '²' is not a whole number from 0 to 100"),
    ("arp_count 1\narp_count 2\n", "hbd.conf:2: arp_count: already set at line 1"),
    ("arp_interval soon\n", "hbd.conf:1: arp_interval: bad time 'soon' (from 1 ms to 10 s: "
     "seconds like 2 or 1.5, or milliseconds like 500ms)"),
    ("arp_interval 11\n", "hbd.conf:1: arp_interval: bad time '11' (from 1 ms to 10 s: "
     "seconds like 2 or 1.5, or milliseconds like 500ms)"),
])
def test_bad_lines_are_file_line_errors(text: str, message: str) -> None:
    assert _messages(text) == [message]
    config, _ = check(_texts(text), node_name="n1")
    assert config is None  # an error refuses the whole configuration


def test_api_client_rates() -> None:
    config, problems = check(_texts(None), node_name="n1")
    assert config is not None and (config.hbd.api_client_rate,
                                   config.hbd.api_clients_rate) == (20, 64)
    config, problems = check(_texts("api_client_rate 5\napi_clients_rate 500\n"),
                             node_name="n1")
    assert config is not None and problems == []
    assert (config.hbd.api_client_rate, config.hbd.api_clients_rate) == (5, 500)
    assert _messages("api_client_rate 0\n") == [
        "hbd.conf:1: api_client_rate: '0' is not a whole number from 1 to 100000"]
    assert _messages("api_clients_rate fast\n") == [
        "hbd.conf:1: api_clients_rate: 'fast' is not a whole number from 1 to 1000000"]


def test_notify_and_garp_refresh_settings() -> None:
    text = ("notify /usr/local/sbin/tell-db\nnotify /usr/local/sbin/page\n"
            "notify_dir /srv/hbd/notify.d\nnotify_timeout 2.5\ngarp_refresh 60\n")
    config, problems = check(_texts(text), node_name="n1")
    assert config is not None and problems == []
    hbd = config.hbd
    assert hbd.notify == ("/usr/local/sbin/tell-db", "/usr/local/sbin/page")  # file order
    assert (hbd.notify_dir, hbd.notify_timeout_ms, hbd.garp_refresh_ms) == (
        "/srv/hbd/notify.d", 2500, 60_000)
    default, _ = parse_hbdconf("")
    assert (default.notify, default.notify_dir, default.notify_timeout_ms,
            default.garp_refresh_ms) == ((), None, 10_000, 0)
    off, problems = parse_hbdconf("notify_dir off\ngarp_refresh off\n")
    assert (off.notify_dir, off.garp_refresh_ms, problems.items) == ("", 0, [])
    assert parse_hbdconf("garp_refresh 250ms\n")[0].garp_refresh_ms == 250


@pytest.mark.parametrize(("text", "message"), [
    ("notify tell-db\n", "hbd.conf:1: notify: 'tell-db' is not an absolute path"),
    ("notify\n", "hbd.conf:1: notify: needs exactly one value, got 0"),
    ("notify /a\nnotify /b\nnotify /a\n", "hbd.conf:3: notify: /a already listed at line 1"),
    ("notify_dir notify.d\n",
     "hbd.conf:1: notify_dir: 'notify.d' is not an absolute path (or 'off')"),
    ("notify_dir /a\nnotify_dir /b\n", "hbd.conf:2: notify_dir: already set at line 1"),
    ("notify_timeout 0\n", "hbd.conf:1: notify_timeout: bad time '0' (from 10 ms to 3600 s: "
     "seconds like 2 or 1.5, or milliseconds like 500ms)"),
    ("garp_refresh 50ms\n", "hbd.conf:1: garp_refresh: bad time '50ms' (0 or off, or from "
     "100 ms to 86400 s: seconds like 60, or milliseconds like 500ms)"),
    ("garp_refresh often\n", "hbd.conf:1: garp_refresh: bad time 'often' (0 or off, or from "
     "100 ms to 86400 s: seconds like 60, or milliseconds like 500ms)"),
])
def test_bad_notify_and_garp_lines(text: str, message: str) -> None:
    assert _messages(text) == [message]


def test_every_problem_at_once() -> None:
    _, problems = parse_hbdconf("bogus\narp_count x\narp_interval 0\n")
    assert [p.line for p in problems.errors] == [1, 2, 3]


def test_set_in_both_files_is_an_error_and_in_hacf_alone_a_warning() -> None:
    hacf = GOOD_HACF + "arp_count 3\n"
    assert _messages("arp_count 2\n", hacf) == [
        "hbd.conf:1: arp_count: also set in ha.cf:7; keep it in one file (hbd.conf: a "
        "Heartbeat node refuses an ha.cf holding it)"]
    # still accepted in ha.cf (older hbd wrote it there), with the reason to move it
    config, problems = check(_texts(None, hacf), node_name="n1")
    assert config is not None and config.hacf.arp_count == 3
    assert [str(p) for p in problems] == [
        "ha.cf:7: warning: arp_count is hbd's own: a Heartbeat node refuses this ha.cf; "
        "move the line to hbd.conf"]
    # no Heartbeat node shares the ha.cf of a corosync cluster: nothing to warn about
    corosync = "cluster_stack corosync\nnode n1 n2\narp_count 3\n"
    assert _messages(None, corosync) == []


def test_unreadable_file_is_an_error() -> None:
    texts = replace(_texts(None), hbdconf_error="cannot read the file: Is a directory")
    _, problems = check(texts, node_name="n1")
    assert [str(p) for p in problems] == ["hbd.conf: cannot read the file: Is a directory"]


def _hbd(*args: str) -> subprocess.CompletedProcess[str]:
    return commands.run([sys.executable, "-m", "hbd.daemon", *args],
                        capture_output=True, text=True, timeout=60)


def _write_dir(tmp_path: Path) -> Path:
    (tmp_path / "ha.cf").write_text(GOOD_HACF)
    (tmp_path / "haresources").write_text(GOOD_HARESOURCES)
    (tmp_path / "authkeys").write_text(GOOD_AUTHKEYS)
    os.chmod(tmp_path / "authkeys", 0o600)
    return tmp_path


def test_check_config_and_hbctl_config_show_it(tmp_path: Path) -> None:
    d = _write_dir(tmp_path)
    result = _hbd("--check-config", "--config-dir", str(d), "--node", "n1")
    assert result.returncode == 0, result.stderr
    assert "hbd.conf: none (defaults); gratuitous ARPs: 5 every 200 ms" in result.stdout
    (d / "hbd.conf").write_text("arp_count 1\narp_interval 1\n")
    for argv in ([sys.executable, "-m", "hbd.daemon", "--check-config"],
                 [sys.executable, "-m", "hbd.cli.hbctl", "config"]):
        result = commands.run([*argv, "--config-dir", str(d), "--node", "n1"],
                              capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "hbd.conf: read; gratuitous ARPs: 1 every 1000 ms" in result.stdout
    (d / "hbd.conf").write_text("arp_count 1\nfrobnicate web\n")
    result = _hbd("--check-config", "--config-dir", str(d), "--node", "n1")
    assert result.returncode == 1
    assert f"{d}/hbd.conf:2: unknown directive 'frobnicate'" in result.stderr
    (d / "hbd.conf").unlink()
    (d / "hbd.conf").mkdir()
    result = _hbd("--check-config", "--config-dir", str(d), "--node", "n1")
    assert result.returncode == 1
    assert f"{d}/hbd.conf: cannot read the file: Is a directory" in result.stderr


def test_reload_with_a_bad_hbdconf_keeps_the_running_configuration(tmp_path: Path) -> None:
    config_dir = _config(tmp_path)
    proc = Proc(tmp_path, config_dir)
    try:
        proc.wait_for("starting as node n1")
        (config_dir / "hbd.conf").write_text("arp_count 2\n")
        proc.proc.send_signal(signal.SIGHUP)
        proc.wait_for("configuration reloaded")
        (config_dir / "hbd.conf").write_text("arp_count 2\narp_count many\n")
        proc.proc.send_signal(signal.SIGHUP)
        text = proc.wait_for("already set at line 1")
        assert "reload refused, keeping the running configuration" in text
        assert f"{config_dir}/hbd.conf:2: arp_count: already set at line 1" in text
        assert proc.proc.poll() is None, "a bad reload must not stop the daemon"
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(20) == 0
    finally:
        proc.stop()


HEALTH_RES = "n1 10.0.0.1 Dummy::state=/run/x\nn2 10.0.0.2\n"


def _health(hbdconf: str) -> tuple[object, list[str]]:
    texts = ConfigTexts("ha.cf", GOOD_HACF, "haresources", HEALTH_RES, "authkeys",
                        GOOD_AUTHKEYS, 0o100600, "hbd.conf", hbdconf)
    config, problems = check(texts, node_name="n1")
    return config, [str(p) for p in problems]


def test_monitor_restart_and_expiry_lines() -> None:
    config, problems = _health(
        "monitor 10.0.0.1 interval=2s timeout=500ms failures=2\n"
        "monitor Dummy::state=/run/x\n"
        "restart 10.0.0.1 max=3 window=10min\n"
        "failure_expiry 10.0.0.1 1h\nfailure_expiry 10.0.0.2 never\n")
    assert problems == []
    assert config is not None
    hbd = config.hbd  # type: ignore[attr-defined]
    assert [(m.target, m.interval_ms, m.timeout_ms, m.failures, m.line) for m in hbd.monitors] \
        == [("10.0.0.1", 2000, 500, 2, 1), ("Dummy::state=/run/x", 10_000, 20_000, 1, 2)]
    assert [(r.group, r.max, r.window_ms) for r in hbd.restarts] == [("10.0.0.1", 3, 600_000)]
    assert [(e.group, e.expiry_ms) for e in hbd.expiries] == [("10.0.0.1", 3_600_000),
                                                              ("10.0.0.2", 0)]


@pytest.mark.parametrize(("text", "message"), [
    ("monitor web\n", "hbd.conf:1: monitor: no group or resource 'web' in haresources "
     "(groups: 10.0.0.1, 10.0.0.2; other resources: Dummy::state=/run/x)"),
    ("monitor\n", "hbd.conf:1: monitor: needs a group or resource first (monitor "
     "GROUP|RESOURCE [interval=10s] [timeout=20s] [failures=1])"),
    ("monitor 10.0.0.1 every=1s\n", "hbd.conf:1: monitor: 'every=1s' is not one of "
     "interval=, timeout=, failures="),
    ("monitor 10.0.0.1 interval=soon\n", "hbd.conf:1: monitor: interval='soon' is not a time "
     "from 100ms to 1d (a number with ms, s, min, h or d (plain: seconds), like 10s, 500ms, "
     "10min, 1h)"),
    ("monitor 10.0.0.1 failures=0\n", "hbd.conf:1: monitor: failures='0' is not a whole "
     "number from 1 to 100"),
    ("monitor 10.0.0.1\nmonitor 10.0.0.1\n", "hbd.conf:2: monitor: 10.0.0.1 is already "
     "monitored at line 1"),
    ("restart 10.0.0.1 window=1h\n", "hbd.conf:1: restart: max= is missing (restart GROUP "
     "max=N [window=10min])"),
    ("restart Dummy::state=/run/x max=1\n", "hbd.conf:1: restart: no group "
     "'Dummy::state=/run/x' in haresources (groups: 10.0.0.1, 10.0.0.2; a group is named by "
     "its first resource)"),
    ("restart 10.0.0.1 max=x\n", "hbd.conf:1: restart: max='x' is not a whole number from "
     "0 to 1000"),
    ("failure_expiry 10.0.0.1\n", "hbd.conf:1: failure_expiry: needs a group and a time or "
     "never (failure_expiry GROUP 1h), got 1 value(s)"),
    ("failure_expiry 10.0.0.1 later\n", "hbd.conf:1: failure_expiry: 'later' is not never or "
     "a time up to 365d (a number with ms, s, min, h or d (plain: seconds), like 10s, 500ms, "
     "10min, 1h)"),
])
def test_bad_health_lines_are_file_line_errors(text: str, message: str) -> None:
    config, problems = _health(text)
    assert problems == [message]
    assert config is None


def test_check_config_describes_monitoring(tmp_path: Path) -> None:
    d = _write_dir(tmp_path)
    (d / "hbd.conf").write_text("monitor 10.77.0.240/24/eth0 interval=5s\n"
                                "restart 10.77.0.240/24/eth0 max=2 window=1h\n")
    result = _hbd("--check-config", "--config-dir", str(d), "--node", "n1")
    assert result.returncode == 0, result.stderr
    assert ("10.77.0.240/24/eth0: every 5000 ms, timeout 20000 ms, 1 failure(s); restart up "
            "to 2 time(s) in 3600 s, then hand 10.77.0.240/24/eth0 to the peer; failure kept "
            "until cleanup") in result.stdout


def test_link_tracking_lines() -> None:
    config, problems = _health("link_tracking off\ntrack_interface * eth1\n"
                               "track_interface 10.0.0.1 eth2 bond0.100\n")
    assert problems == []
    hbd = config.hbd  # type: ignore[attr-defined]
    assert hbd.link_tracking is False
    assert [(t.group, t.interfaces, t.line) for t in hbd.tracks] == [
        ("*", ("eth1",), 2), ("10.0.0.1", ("eth2", "bond0.100"), 3)]
    default, problems = _health("")
    assert problems == [] and default.hbd.link_tracking is True  # type: ignore[attr-defined]


@pytest.mark.parametrize(("text", "message"), [
    ("track_interface eth1\n", "hbd.conf:1: track_interface: needs a group (or *) and at "
     "least one interface (track_interface GROUP|* IFACE...)"),
    ("track_interface web eth1\n", "hbd.conf:1: track_interface: no group 'web' in "
     "haresources (groups: 10.0.0.1, 10.0.0.2; a group is named by its first resource)"),
    ("track_interface * eth1/2\n", "hbd.conf:1: track_interface: 'eth1/2' is not an "
     "interface name (1 to 15 letters, digits, '_', '.', '@' or '-')"),
    ("track_interface * averyveryverylongname\n", "hbd.conf:1: track_interface: "
     "'averyveryverylongname' is not an interface name (1 to 15 letters, digits, '_', '.', "
     "'@' or '-')"),
    ("track_interface * eth1 eth1\n", "hbd.conf:1: track_interface: eth1 listed twice"),
    ("track_interface * eth1\ntrack_interface * eth2\n", "hbd.conf:2: track_interface: * "
     "already has a line at line 1 (list every interface on one line)"),
    ("link_tracking maybe\n", "hbd.conf:1: link_tracking: 'maybe' is not on or off"),
    ("link_tracking on\nlink_tracking off\n", "hbd.conf:2: link_tracking: already set at "
     "line 1"),
])
def test_bad_link_tracking_lines(text: str, message: str) -> None:
    config, problems = _health(text)
    assert problems == [message]
    assert config is None


def test_check_config_describes_link_tracking(tmp_path: Path) -> None:
    d = _write_dir(tmp_path)
    (d / "hbd.conf").write_text("track_interface * eth1\n")
    result = _hbd("--check-config", "--config-dir", str(d), "--node", "n1")
    assert result.returncode == 0, result.stderr
    assert ("link tracking: the interfaces of the groups' addresses; every group also "
            "needs eth1") in result.stdout


def test_monitor_lines_on_the_corosync_stack_are_accepted() -> None:
    hacf = "cluster_stack corosync\nnode n1 n2\n"
    texts = ConfigTexts("ha.cf", hacf, "haresources", HEALTH_RES, "authkeys", GOOD_AUTHKEYS,
                        0o100600, "hbd.conf", "\nmonitor 10.0.0.1\n")
    config, problems = check(texts, node_name="n1")
    assert config is not None and problems == []
    assert [m.target for m in config.hbd.monitors] == ["10.0.0.1"]
    assert "then hand 10.0.0.1 to the next node in its order;" in describe(config)


def test_track_interface_on_the_corosync_stack_is_accepted() -> None:
    hacf = "cluster_stack corosync\nnode n1 n2\n"
    texts = ConfigTexts("ha.cf", hacf, "haresources", HEALTH_RES, "authkeys", GOOD_AUTHKEYS,
                        0o100600, "hbd.conf", "\n\ntrack_interface * eth1\n")
    config, problems = check(texts, node_name="n1")
    assert config is not None and problems == []
    assert [(t.group, t.interfaces) for t in config.hbd.tracks] == [("*", ("eth1",))]
    assert "every group also needs eth1" in describe(config)


def test_fencing_settings_on_the_corosync_stack_are_warned_not_silently_ignored() -> None:
    corosync = "cluster_stack corosync\nnode n1 n2 n3\n"
    conf = "fence_race_delay 1\nfence_agent fence_dummy type=file\n"
    config, problems = check(_texts(conf, corosync), node_name="n1")
    assert config is not None
    assert [str(p) for p in problems] == [
        "hbd.conf:1: warning: fence_race_delay: not used on the corosync stack (hbd fences "
        "only on its own heartbeat stack)",
        "hbd.conf:2: warning: fence_agent: not used on the corosync stack (hbd fences only "
        "on its own heartbeat stack)"]
    assert "fencing: none (the corosync stack does not fence)" in describe(config)
