"""Shared pytest set-up: the real-parts fixtures live in tests/infra/.

Two rules hold for every test, so that a fresh machine cannot pass by luck:
- a program not declared in tests/infra/commands.py (with its Debian package)
  fails the test that starts it, even when the test swallowed the error;
- under `.ci/run` (HBD_CI_STRICT=1) a skipped test is a failure with the skip's
  reason: in CI, a missing prerequisite is a bootstrap bug, not a pass.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from tests.infra import commands

pytest_plugins = ["tests.infra.fixtures", "tests.infra.fixtures_bus", "tests.infra.fixtures_sysd"]

STRICT_ENV = "HBD_CI_STRICT"
_CHILD_LOG = pytest.StashKey[Path]()


def _strict() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def _skip_reason(longrepr: Any) -> str:
    # a skip's longrepr is (file, line, "Skipped: reason")
    text = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 \
        else str(longrepr)
    return text.removeprefix("Skipped: ")


def pytest_configure(config: pytest.Config) -> None:
    commands.install_audit_hook()
    fd, log = tempfile.mkstemp(prefix="hbd-test-commands-", suffix=".log")
    os.close(fd)
    config.stash[_CHILD_LOG] = Path(log)
    commands.enable_children(Path(log))


def pytest_unconfigure(config: pytest.Config) -> None:
    log = config.stash.get(_CHILD_LOG, None)
    if log is not None:
        log.unlink(missing_ok=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    refused = commands.take_violations()
    if refused and not report.failed:
        report.outcome = "failed"
        report.longrepr = ("undeclared external command(s) started during "
                           f"{report.when}:\n" + "\n".join(refused))
    elif report.skipped and _strict() and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (f"skipped under {STRICT_ENV}=1, which makes a skip a failure: "
                           f"{_skip_reason(report.longrepr)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    refused = commands.take_violations()
    if refused and not report.failed:
        report.outcome = "failed"
        report.longrepr = "undeclared external command(s) started while collecting:\n" + \
            "\n".join(refused)
    elif report.skipped and _strict():
        report.outcome = "failed"
        report.longrepr = (f"module skipped under {STRICT_ENV}=1, which makes a skip a "
                           f"failure: {_skip_reason(report.longrepr)}")
