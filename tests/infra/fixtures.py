"""pytest fixtures that give tests real parts (namespaces, buses, ttys, systemd).

Each fixture module under tests/infra/ registers its fixtures here so that
tests/conftest.py needs a single plugin line.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, Protocol

import pytest

from tests.infra import commands
from tests.infra.hbpeer import DEFAULT_AUTHKEYS, HeartbeatPeer, find_heartbeat
from tests.infra.kapeer import KeepalivedPeer, find_keepalived
from tests.infra.netns import DEFAULT_NETWORKS, Lab, new_tag
from tests.infra.serialpair import PtyCable, SerialPair

# ---------------------------------------------------------------------------
# Network labs, serial links and real peers (tests/infra/netns.py & co).
# ---------------------------------------------------------------------------

_log = logging.getLogger(__name__)
_PEERS = pytest.StashKey[list[Any]]()


@functools.cache
def netns_unavailable() -> str | None:
    """Why network-namespace tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "unshare", "nsenter", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    probe = new_tag() + "-probe"
    res = commands.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                       check=False)
    commands.run(["ip", "netns", "delete", probe], capture_output=True, check=False)
    if res.returncode != 0:
        return f"ip netns add failed: {res.stderr.strip()}"
    return None


def _require_netns() -> None:
    reason = netns_unavailable()
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}")


@pytest.fixture
def netns_ok() -> None:
    """Skip unless root with working ``ip netns`` (for tests building a Lab by hand)."""
    _require_netns()


class LabFactory(Protocol):
    """``make_lab(nodes=("n1", "n2", "client"), networks=1, **Lab kwargs) -> Lab``."""

    def __call__(self, nodes: Sequence[str] = ..., networks: int | Sequence[str] = ...,
                 **kwargs: Any) -> Lab: ...


def _lab_factory() -> tuple[LabFactory, Callable[[], None]]:
    made: list[Lab] = []

    def make(nodes: Sequence[str] = ("n1", "n2", "client"),
             networks: int | Sequence[str] = 1, **kwargs: Any) -> Lab:
        nets = DEFAULT_NETWORKS[:networks] if isinstance(networks, int) else networks
        lab = Lab(nodes, networks=nets, **kwargs)
        made.append(lab)
        return lab

    def close() -> None:
        for lab in reversed(made):
            _log.debug("tearing down lab %s", lab.tag)
            lab.teardown()

    return make, close


@pytest.fixture
def make_lab() -> Iterator[LabFactory]:
    """Factory for labs torn down after the test: ``make_lab(["n1", "n2"], networks=2)``.

    Node i gets 10.77.0.i on eth0 (and 10.78.0.i on eth1 with networks=2).
    """
    _require_netns()
    make, close = _lab_factory()
    try:
        yield make
    finally:
        close()


@pytest.fixture
def lab(make_lab: LabFactory) -> Lab:
    """A fresh lab: n1 10.77.0.1, n2 .2, client .3, all on eth0 (one bridge)."""
    return make_lab()


@pytest.fixture(scope="module")
def module_make_lab() -> Iterator[LabFactory]:
    """Module-scoped :func:`make_lab`, for modules that share one topology."""
    _require_netns()
    make, close = _lab_factory()
    try:
        yield make
    finally:
        close()


@pytest.fixture(scope="module")
def module_lab(module_make_lab: LabFactory) -> Lab:
    """Module-scoped default lab (n1, n2, client on eth0)."""
    return module_make_lab()


@pytest.fixture
def serial_pair() -> Iterator[SerialPair]:
    """A started socat pty pair; ``serial_pair.paths`` are the two tty links."""
    if shutil.which("socat") is None:
        pytest.skip("socat not installed")
    with SerialPair() as pair:
        yield pair


@pytest.fixture
def pty_cable() -> Iterator[PtyCable]:
    """Two ptys joined by a cuttable in-process relay (no hang-up on cut)."""
    with PtyCable() as cable:
        yield cable


class HbPeerFactory(Protocol):
    """``hb_peer_factory(lab, "n1", ha_cf, haresources="", ...) -> HeartbeatPeer``."""

    def __call__(self, lab: Lab, node: str, ha_cf: str, haresources: str = ...,
                 authkeys: str = ..., *, start: bool = ..., daemon: bool = ...
                 ) -> HeartbeatPeer: ...


@pytest.fixture
def hb_peer_factory(request: pytest.FixtureRequest) -> Iterator[HbPeerFactory]:
    """Real Heartbeat peers in lab nodes; killed at teardown, logs shown on failure."""
    _require_netns()
    if find_heartbeat() is None:
        pytest.skip("heartbeat binary not installed (Debian package 'heartbeat')")
    peers = request.node.stash.setdefault(_PEERS, [])

    def make(lab: Lab, node: str, ha_cf: str, haresources: str = "",
             authkeys: str = DEFAULT_AUTHKEYS, *, start: bool = True,
             daemon: bool = False) -> HeartbeatPeer:
        peer = HeartbeatPeer(lab, node, ha_cf=ha_cf, haresources=haresources,
                             authkeys=authkeys)
        peers.append(peer)
        return peer.start(daemon=daemon) if start else peer

    yield make
    for peer in peers:
        if isinstance(peer, HeartbeatPeer):
            peer.kill()


class KaPeerFactory(Protocol):
    """``ka_peer_factory(lab, "n1", config_text) -> KeepalivedPeer``."""

    def __call__(self, lab: Lab, node: str, config: str, *, start: bool = ...
                 ) -> KeepalivedPeer: ...


@pytest.fixture
def ka_peer_factory(request: pytest.FixtureRequest) -> Iterator[KaPeerFactory]:
    """Real keepalived peers in lab nodes; killed at teardown, logs shown on failure."""
    _require_netns()
    if find_keepalived() is None:
        pytest.skip("keepalived not installed")
    peers = request.node.stash.setdefault(_PEERS, [])

    def make(lab: Lab, node: str, config: str, *, start: bool = True) -> KeepalivedPeer:
        peer = KeepalivedPeer(lab, node, config)
        peers.append(peer)
        return peer.start() if start else peer

    yield make
    for peer in peers:
        if isinstance(peer, KeepalivedPeer):
            peer.kill()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Attach the logs of every real peer to a failed test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for peer in item.stash.get(_PEERS, []):
        text = peer.log()
        kind = "heartbeat" if isinstance(peer, HeartbeatPeer) else "keepalived"
        report.sections.append((f"{kind} {peer.node} log (tail)", text[-6000:]))
