"""Every external command the demo runs, with the Debian package that provides it.

Why a table: a command that a fresh machine lacks must show up as a package
missing from `.ci/bootstrap`'s demo set (a test compares the two), not as
"No such file or directory" half-way through a failover.  The demo runs
commands only through :func:`run` and :func:`popen` below, which refuse one
that is not declared here, wrapped ones included (``ip netns exec NS cmd``,
``setpriv ... -- cmd``).  tests/infra/commands.py extends the same
:class:`Registry` for the tests and benchmarks, and enforces it for every
process the test run starts with an audit hook.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

# The package that owns a command in dpkg's database (`dpkg -S`), which is what
# .ci/bootstrap must list: python3's interpreter is python3-minimal, not python3.
DEMO_COMMANDS: Final[Mapping[str, str]] = {
    "ip": "iproute2",  # namespaces, the bridge, cutting the cable
    "sysctl": "procps",  # IPv6 off inside each namespace
    "setpriv": "util-linux",  # --pdeathsig: the kernel kills what a dead demo left
    "dbus-daemon": "dbus-daemon",  # one private system bus per node
    "busctl": "systemd",  # the manual takeover, as an admin would type it
    "python3": "python3-minimal",  # hbd, hbctl and the probes run on sys.executable
}

OWN: Final = "(this repository)"
"""Package name for what this repository provides itself (hbd, hbctl, scripts)."""

# Where commands are looked up by name; a path elsewhere must be declared whole.
BIN_DIRS: Final = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
ROOT: Final = Path(__file__).resolve().parent.parent.parent


class UndeclaredCommand(RuntimeError):
    """A command that no table declares was about to run; the message names it."""


# How to find the command a wrapper runs: the options that take a separate
# value, and how many positional words come before the command (timeout's
# duration).  A "--" always ends the options.
@dataclass(frozen=True)
class Wrapper:
    valued: frozenset[str] = frozenset()
    positional: int = 0


WRAPPERS: Final[Mapping[str, Wrapper]] = {
    "setpriv": Wrapper(frozenset({
        "--pdeathsig", "--reuid", "--regid", "--ruid", "--rgid", "--euid", "--egid",
        "--groups", "--inh-caps", "--ambient-caps", "--bounding-set", "--securebits",
        "--selinux-label", "--apparmor-profile"})),
    "nsenter": Wrapper(frozenset({"-t", "--target", "-S", "--setuid", "-G", "--setgid"})),
    "unshare": Wrapper(frozenset({
        "--propagation", "--setgroups", "--map-user", "--map-group", "-R", "--root", "-w",
        "--wd", "-S", "--setuid", "-G", "--setgid", "--map-users", "--map-groups"})),
    "timeout": Wrapper(frozenset({"-s", "--signal", "-k", "--kill-after"}), positional=1),
    "env": Wrapper(frozenset({"-u", "--unset", "-C", "--chdir"})),
    "systemd-run": Wrapper(frozenset({
        "-p", "--property", "-E", "--setenv", "--unit", "-u", "--uid", "--gid", "-M",
        "--machine", "--slice", "--description", "--working-directory", "-H", "--host",
        "--on-active", "--service-type"})),
    "nice": Wrapper(frozenset({"-n", "--adjustment"})),
    "strace": Wrapper(frozenset({"-o", "-e", "-p", "-s", "-u", "-a", "-b", "-E"})),
    "chrt": Wrapper(frozenset(), positional=1),
}
_SHELLS: Final = frozenset({"sh", "bash", "dash"})


def _wrapped(name: str, argv: Sequence[str]) -> list[str] | None:
    """The command line `argv` (run by `name`) runs in its turn, or None."""
    if name == "ip":
        # ip [-n NS ...] netns exec NS cmd...
        for i in range(1, len(argv) - 2):
            if argv[i] == "netns" and argv[i + 1] == "exec":
                return list(argv[i + 3:])
        return None
    if name in _SHELLS:
        # sh -c SCRIPT NAME ARGS...: the script is opaque, but when it ends by
        # running "$@" (the lab's isolation wrappers do), ARGS is a command line,
        # less the arguments the script shifts away first.
        if len(argv) > 3 and argv[1] == "-c" and '"$@"' in argv[2]:
            return list(argv[4 + len(re.findall(r"\bshift\b", argv[2])):])
        return None
    spec = WRAPPERS.get(name)
    if spec is None:
        return None
    i, skip = 1, spec.positional
    while i < len(argv):
        word = argv[i]
        if word == "--":
            i += 1
            break
        if name == "env" and "=" in word and not word.startswith("-"):
            i += 1
            continue
        if not word.startswith("-") or word == "-":
            break
        i += 2 if word in spec.valued else 1
    return list(argv[i + skip:])


@dataclass(frozen=True)
class Registry:
    """What may run: commands by name, whole paths, and this repository's own files."""

    commands: Mapping[str, str]
    paths: Mapping[str, str] = field(default_factory=dict)  # a file, or a dir ending in "/"
    # A test's or the demo's own scripts and programs: the repository (and its .venv),
    # the temporary directory.  They come with the checkout, not from a package.
    own_roots: tuple[str, ...] = (str(ROOT), tempfile.gettempdir(), "/tmp")

    def extend(self, commands: Mapping[str, str], paths: Mapping[str, str]) -> Registry:
        """This registry with more commands and paths declared."""
        return Registry({**self.commands, **commands}, {**self.paths, **paths}, self.own_roots)

    def package(self, program: str, cwd: str | None = None) -> str | None:
        """The package `program` (argv[0] or a path) is declared with, OWN, or None."""
        if "/" not in program:
            return self.commands.get(program)
        path = os.path.normpath(os.path.join(cwd or os.getcwd(), program))
        if path in self.paths:
            return self.paths[path]
        for prefix, package in self.paths.items():
            if prefix.endswith("/") and path.startswith(prefix):
                return package
        head, name = os.path.split(path)
        if head in BIN_DIRS and name in self.commands:
            return self.commands[name]
        if path in (sys.executable, os.path.realpath(sys.executable)):
            return self.commands.get("python3")
        if any(path == root or path.startswith(root.rstrip("/") + "/")
               for root in self.own_roots):
            return OWN
        return None

    def check(self, argv: Sequence[str] | str, cwd: str | None = None) -> list[str]:
        """Each program `argv` runs, outermost first, wrapped ones included.

        Raises UndeclaredCommand naming the first program no table declares.
        """
        if isinstance(argv, str):
            argv = [argv]  # a shell=False string is one program name
        words = words_in = [os.fsdecode(w) for w in argv]
        seen: list[str] = []
        while words:
            program = words[0]
            if self.package(program, cwd) is None:
                raise UndeclaredCommand(
                    f"{program!r} is not a declared command (in {shlex.join(words_in)}): add it "
                    "with its Debian package to hbd/demo/commands.py or tests/infra/commands.py"
                    " and the package to .ci/bootstrap")
            seen.append(program)
            inner = _wrapped(os.path.basename(program), words)
            words = inner or []
        return seen


DEMO: Final = Registry(DEMO_COMMANDS)


def run(argv: Sequence[str], *, registry: Registry = DEMO,
        **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """subprocess.run with text output, after checking `argv` against `registry`.

    Raises UndeclaredCommand before anything runs.
    """
    registry.check(argv, kwargs.get("cwd"))
    kwargs.setdefault("text", True)
    kwargs.setdefault("check", False)
    return subprocess.run(list(argv), **kwargs)


def popen(argv: Sequence[str], *, registry: Registry = DEMO,
          **kwargs: Any) -> subprocess.Popen[Any]:
    """subprocess.Popen after checking `argv` against `registry`.  Raises UndeclaredCommand."""
    registry.check(argv, kwargs.get("cwd"))
    return subprocess.Popen(list(argv), **kwargs)

