"""Prove the namespace lab itself: wiring, cuts, impairments, serial links, cleanup.

These run real kernels objects (netns, veth, bridges, ptys) and need root.
"""

from __future__ import annotations

import errno
import os
import select
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.infra import commands
from tests.infra.netns import (
    Lab,
    cleanup_stale,
    list_netns,
    netns_pids,
    pid_running,
    wait_for,
)
from tests.infra.serialpair import PtyCable, SerialPair

_F = TypeVar("_F", bound=Callable[..., None])


def needs_netns(test: _F) -> _F:
    """Mark ``netns`` and skip unless namespaces work (serial tests need neither)."""
    marked: _F = pytest.mark.netns(pytest.mark.usefixtures("netns_ok")(test))
    return marked

REPO = Path(__file__).resolve().parents[1]


def _host_links() -> set[str]:
    """Interface names of the host root netns (read-only check)."""
    out = commands.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                       check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _loss_ratio(lab: Lab, src: str, dst: str, count: int = 200) -> float:
    res = lab.run(src, ["ping", "-n", "-q", "-c", str(count), "-i", "0.002", "-W", "0.3", dst],
                  check=False, timeout=30)
    line = next(x for x in res.stdout.splitlines() if "packet loss" in x)
    return float(line.split("%")[0].split()[-1]) / 100


@needs_netns
def test_nodes_ping_each_other_and_resolve_arp(lab: Lab) -> None:
    assert lab.addresses("n1") == ["10.77.0.1/24"]
    assert lab.addresses("client") == ["10.77.0.3/24"]
    assert lab.mac("n2") == "02:00:0a:4d:00:02"
    assert lab.ping("client", lab.ip("n1"))
    assert lab.ping("n1", lab.ip("n2"))
    assert lab.arp_entry("client", "10.77.0.1") == lab.mac("n1")
    assert lab.arp_entry("client", "10.77.0.99") is None
    assert lab.link_state("n1") == "UP"


@pytest.mark.netns
def test_module_lab_is_usable(module_lab: Lab) -> None:
    assert module_lab.ping("n2", module_lab.ip("client"))


@needs_netns
def test_host_root_namespace_untouched() -> None:
    before = _host_links()
    with Lab(["n1", "n2"], networks=("10.77.0.0/24", "10.78.0.0/24")) as lab:
        assert lab.ping("n1", "10.78.0.2")
        assert _host_links() == before
    assert _host_links() == before


@needs_netns
def test_two_networks_are_independent() -> None:
    with Lab(["n1", "n2"], networks=("10.77.0.0/24", "10.78.0.0/24")) as lab:
        assert lab.addresses("n1", "eth1") == ["10.78.0.1/24"]
        lab.cut("n1", "eth0")
        assert not lab.ping("n1", "10.77.0.2", timeout=0.3)
        assert lab.ping("n1", "10.78.0.2")
        lab.restore("n1", "eth0")
        wait_for(lambda: lab.ping("n1", "10.77.0.2", timeout=0.3), 5, "eth0 back")


@needs_netns
def test_cut_drops_carrier_and_restore_brings_it_back(lab: Lab) -> None:
    assert lab.ping("client", lab.ip("n1"))
    lab.cut("n1")
    assert lab.link_state("n1") != "UP"          # NO-CARRIER like a pulled cable
    assert lab.addresses("n1") == ["10.77.0.1/24"]  # config survives
    assert not lab.ping("client", lab.ip("n1"), timeout=0.3)
    lab.restore("n1")
    wait_for(lambda: lab.link_state("n1") == "UP", 5, "carrier")
    wait_for(lambda: lab.ping("client", lab.ip("n1"), timeout=0.3), 5, "traffic")
    lab.restore("n1")  # idempotent


@needs_netns
def test_silent_cut_keeps_carrier(lab: Lab) -> None:
    lab.cut("n2", how="silent")
    assert lab.link_state("n2") == "UP"
    assert not lab.ping("client", lab.ip("n2"), timeout=0.3)
    lab.restore("n2")
    assert lab.ping("client", lab.ip("n2"))


@needs_netns
def test_netem_loss(lab: Lab) -> None:
    lab.netem("n1", "eth0", "loss 100%")
    assert not lab.ping("client", lab.ip("n1"), timeout=0.3)
    lab.clear_netem("n1", "eth0")
    assert lab.ping("client", lab.ip("n1"))
    lab.netem("n1", "eth0", "loss 30%")
    ratio = _loss_ratio(lab, "client", lab.ip("n1"))
    assert 0.12 < ratio < 0.55, ratio  # only n1's replies are dropped
    lab.clear_netem("n1", "eth0")
    assert _loss_ratio(lab, "client", lab.ip("n1"), 50) == 0.0


@needs_netns
def test_popen_and_isolated_processes_are_reaped() -> None:
    lab = Lab(["n1"])
    plain = lab.popen("n1", ["sleep", "300"])
    iso = lab.spawn_isolated("n1", ["sleep", "300"], hostname="box1",
                             binds={"/run": lab.node_dir("n1")})
    inner = iso.inner_pid()
    res = iso.exec(["sh", "-c", "hostname; echo $$; ls -A /run; ip -4 -o addr show eth0"])
    host, _pid, *rest = res.stdout.split("\n")
    assert host == "box1"
    assert "10.77.0.1/24" in "\n".join(rest)
    assert "netns" not in rest                 # private /run
    assert set(netns_pids(lab.nsname("n1"))) >= {plain.pid, iso.proc.pid, inner}
    tag, workdir = lab.tag, lab.workdir
    lab.teardown()
    lab.teardown()  # idempotent
    for pid in (plain.pid, iso.proc.pid, inner):
        assert not pid_running(pid)
    assert not [n for n in list_netns() if n.startswith(tag)]
    assert not workdir.exists()


@needs_netns
def test_stale_cleanup_after_crashed_run() -> None:
    """A run that dies without teardown is cleaned up by the next one."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.infra.netns import Lab
        from tests.infra.serialpair import SerialPair
        lab = Lab(["n1", "n2"], clean_stale=False)
        p = lab.popen("n1", ["sleep", "300"])
        iso = lab.spawn_isolated("n2", ["sleep", "300"])
        sp = SerialPair(); sp.start()
        print(lab.tag, p.pid, iso.inner_pid(), sp.proc.pid, sp.dir, flush=True)
        os._exit(9)   # crash: no teardown, no atexit
    """)
    out = commands.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=30, check=False)
    tag, *pids, sdir = out.stdout.split()
    assert out.returncode == 9, out.stderr
    assert [n for n in list_netns() if n.startswith(tag)]
    cleanup_stale()  # (a concurrent run's Lab() may have beaten us to it: fine)
    assert not [n for n in list_netns() if n.startswith(tag)]
    # pdeathsig usually got them already; after cleanup_stale surely
    wait_for(lambda: not any(pid_running(int(p)) for p in pids), 3, "crashed run's pids gone")
    assert not Path(sdir).exists()
    assert not Path("/tmp", tag).exists()


def _read(fd: int, n: int, timeout: float = 2.0) -> bytes:
    ready, _, _ = select.select([fd], [], [], timeout)
    return os.read(fd, n) if ready else b""


def test_socat_serial_pair_cut_and_restore(serial_pair: SerialPair) -> None:
    a_path, b_path = serial_pair.paths
    a = os.open(a_path, os.O_RDWR | os.O_NOCTTY)
    b = os.open(b_path, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(a, b"ping\n")
        assert _read(b, 5) == b"ping\n"
        old_pty = os.path.realpath(a_path)
        serial_pair.cut()
        assert not Path(a_path).exists()
        assert _read(b, 1) == b""             # hang-up: EOF on read...
        with pytest.raises(OSError) as exc:   # ...and EIO on write
            os.write(b, b"x")
        assert exc.value.errno == errno.EIO
        serial_pair.restore()
        assert Path(a_path).exists()
    finally:
        os.close(a)
        os.close(b)
    assert os.path.realpath(a_path) != old_pty  # a new pty: consumers must reopen
    a = os.open(a_path, os.O_RDWR | os.O_NOCTTY)
    b = os.open(b_path, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(b, b"pong\n")
        assert _read(a, 5) == b"pong\n"
    finally:
        os.close(a)
        os.close(b)


def test_pty_cable_cut_drops_bytes_without_hangup(pty_cable: PtyCable) -> None:
    a = os.open(pty_cable.paths[0], os.O_RDWR | os.O_NOCTTY)
    b = os.open(pty_cable.paths[1], os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(a, b"one")
        assert _read(b, 3) == b"one"
        pty_cable.cut()
        os.write(a, b"lost")
        assert _read(b, 4, timeout=0.3) == b""
        wait_for(lambda: pty_cable.dropped >= 4, 2, "bytes dropped")
        pty_cable.restore()
        os.write(b, b"back")
        assert _read(a, 4) == b"back"
    finally:
        os.close(a)
        os.close(b)


@needs_netns
def test_lab_build_is_fast() -> None:
    t0 = time.monotonic()
    with Lab(["n1", "n2", "n3", "client"], networks=("10.77.0.0/24", "10.78.0.0/24")) as lab:
        assert lab.ping("n3", "10.78.0.4")
    assert time.monotonic() - t0 < 10
