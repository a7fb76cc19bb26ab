"""ruff and mypy --strict over the package, as part of the test suite.

They run here (and not only in .ci/run) so the README's one test command
checks them too.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.infra import commands

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed in this environment")
    return found


def test_ruff_clean() -> None:
    result = commands.run([_tool("ruff"), "check", "hbd", "tests", "benchmarks"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_clean() -> None:
    result = commands.run([_tool("mypy"), "--strict", "hbd"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
