"""The sans-I/O rule: hbd/core/ does no I/O and reads no clock or random source.

Every import of every module under hbd/core/ is checked against an allow-list
of pure modules; anything else (asyncio, socket, serial, pyroute2, time,
random, os, subprocess, ...) fails the test with the module and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "hbd" / "core"

# Pure standard-library modules the core may use.
ALLOWED_STDLIB = {
    "__future__", "abc", "base64", "binascii", "collections", "collections.abc",
    "dataclasses", "enum", "functools", "hashlib", "hmac", "ipaddress", "itertools",
    "logging", "math", "re", "shlex", "string", "struct", "typing", "uuid", "zlib", "heapq",
}
# Third-party modules that only compute (keyed BLAKE2b).
ALLOWED_THIRD_PARTY = {"nacl", "nacl.hash", "nacl.encoding", "nacl.exceptions"}
FORBIDDEN_EXAMPLES = {"asyncio", "socket", "serial", "pyroute2", "time", "random", "os",
                      "subprocess", "select", "selectors", "threading", "datetime",
                      "secrets", "dbus_next", "systemd"}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append((node.lineno, "hbd.core." + (node.module or "")))
            else:
                found.append((node.lineno, node.module or ""))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == "__import__"):
            found.append((node.lineno, "__import__"))
    return found


def _allowed(module: str) -> bool:
    if module == "hbd.errors" or module == "hbd.core" or module.startswith("hbd.core."):
        return True
    return module in ALLOWED_STDLIB or module in ALLOWED_THIRD_PARTY


def test_core_modules_exist() -> None:
    assert len(list(CORE.rglob("*.py"))) >= 5


def test_core_imports_only_pure_modules() -> None:
    violations = []
    for path in sorted(CORE.rglob("*.py")):
        for line, module in _imports(path):
            if not _allowed(module):
                where = path.relative_to(CORE.parent.parent)
                violations.append(f"{where}:{line}: imports {module}")
    assert not violations, "sans-I/O rule broken:\n" + "\n".join(violations)


def test_rule_catches_forbidden_imports(tmp_path: Path) -> None:
    """The checker itself must flag every forbidden kind of import."""
    sample = tmp_path / "bad.py"
    sample.write_text("import time\nfrom socket import socket\nimport asyncio.events\n"
                      "x = __import__('random')\nimport os.path\n")
    flagged = [m for _, m in _imports(sample) if not _allowed(m)]
    assert sorted(flagged) == sorted(["time", "socket", "asyncio.events", "__import__", "os.path"])
    assert not any(_allowed(m) for m in FORBIDDEN_EXAMPLES)
