"""pytest fixtures for throwaway systemd containers (see tests/infra/sysd.py).

Loaded as a pytest plugin from tests/conftest.py.  The factory is module
scoped: booting costs about a second, so a test module boots its machines
once and every container it made is powered off when the module finishes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from tests.infra.sysd import Container, missing_prerequisites, reap_stale

log = logging.getLogger(__name__)

__all__ = ["ContainerFactory", "systemd_container"]


class ContainerFactory(Protocol):
    """Signature of the ``systemd_container`` fixture value."""

    def __call__(self, name: str, hostname: str | None = None, **kwargs: Any) -> Container: ...


@pytest.fixture(scope="module")
def systemd_container() -> Iterator[ContainerFactory]:
    """Factory: ``systemd_container("n1", "node1")`` boots and returns a Container.

    Extra keyword arguments go to :meth:`Container.start` (``extra_masks``,
    ``keep``, ``binds``, ``timeout``, ``wait``).  All containers are stopped
    in reverse creation order at module teardown, even after failures.
    """
    reasons = missing_prerequisites()
    if reasons:
        pytest.skip("systemd container unavailable: " + "; ".join(reasons))
    reap_stale()
    made: list[Container] = []

    def factory(name: str, hostname: str | None = None, **kwargs: Any) -> Container:
        c = Container.start(name, hostname, **kwargs)
        made.append(c)
        log.info("container %s booted in %.2fs (pid %d)", name, c.boot_seconds or -1, c.pid)
        return c

    try:
        yield factory
    finally:
        errors: list[BaseException] = []
        for c in reversed(made):
            try:
                c.stop()
            except Exception as e:  # keep stopping the others
                errors.append(e)
        if errors:
            raise errors[0]
