"""pytest fixtures for the private system-like D-Bus (+ real polkitd).

Loaded as a pytest plugin from tests/conftest.py.  Module scope because
starting the bus costs ~0.1 s and tests in one module can share it; tests that
install policy files should use names unique to the test module.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.infra.privbus import PrivateBus, missing_prerequisites, reap_stale

log = logging.getLogger(__name__)

__all__ = ["private_bus", "second_bus"]


@pytest.fixture(scope="module")
def private_bus() -> Iterator[PrivateBus]:
    """A started :class:`PrivateBus` (dbus-daemon + polkitd), stopped afterwards.

    Virtual users: ``hbdtest`` (no extra groups) and ``hbdadmin`` (in
    ``haclient``); they exist only inside the bus mount namespace.
    """
    reasons = missing_prerequisites()
    if reasons:
        pytest.skip("private bus unavailable: " + "; ".join(reasons))
    reap_stale()
    bus = PrivateBus()
    bus.start()
    log.info("private bus at %s (workdir %s)", bus.address, bus.workdir)
    try:
        yield bus
    finally:
        bus.stop()


@pytest.fixture(scope="module")
def second_bus() -> Iterator[PrivateBus]:
    """Another private bus, for a second node that must not share the first one's."""
    reasons = missing_prerequisites()
    if reasons:
        pytest.skip("private bus unavailable: " + "; ".join(reasons))
    with PrivateBus() as bus:
        yield bus
