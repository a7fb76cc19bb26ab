"""Running haresources resources that are not native IP addresses.

A resource name is looked up the way Heartbeat's ResourceManager does, with
OCF agents added as a third place:

1. `resource.d/NAME` — a Heartbeat resource script, run `NAME ARG... OP`.
   Debian's heartbeat package installs wrappers there for many OCF agents
   (IPaddr2, Filesystem, ...), and they win, as they did under Heartbeat.
2. `init.d/NAME` — an LSB init script, run `NAME OP`.  Init scripts take no
   arguments, so a haresources item with arguments is refused.
3. `ocf/resource.d/heartbeat/NAME` — an OCF agent, run `NAME ACTION` with
   the arguments in OCF_RESKEY_* variables (status runs `monitor`).
   `key=value` sets OCF_RESKEY_key when `key` is one of the agent's
   meta-data parameters; any other argument is positional and fills the
   meta-data parameters in document order, skipping those given by name.
   So `Filesystem::/dev/sdb1::/srv::ext4` means device, directory, fstype,
   as Heartbeat's Filesystem wrapper reads it, and `Dummy::state=/x/y` is a
   named parameter.  OCF_RESOURCE_INSTANCE is `NAME_FIRSTARG` (the
   wrappers' convention), made safe for use in file names.

What counts as running: resource.d status is judged by its output as
ResourceManager's `we_own_resource` did ("not ... running" = stopped,
"running" or "OK" = running, anything else = stopped; the exit code is
ignored).  LSB status uses the exit code (0 running, 1-3 stopped, else
unknown); OCF monitor too (0 running, 7 stopped, 8 running as master, else
failed).  A stop that exits 0 or 7 (LSB and OCF "not running") succeeded.

Arguments reach the agent one argv item each, exactly as written: unlike
ResourceManager's unquoted `$arg`, nothing is word-split or glob-expanded.
Every run is an execve of an argument list, never a shell, in its own
session and process group, with a small clean environment.  On timeout or
cancellation the whole process group is killed with SIGKILL and reaped (a
process that left the group with setsid() escapes that).  When the agent
exits by itself nothing is killed: what `start` launched must live on.
Output is read from pipes that are closed soon after the agent exits, so a
daemon that kept them open gets EPIPE on its next write, not a hung hbd.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hbd.childproc import run_child
from hbd.core.config import Resource
from hbd.errors import ResourceError

log = logging.getLogger(__name__)

Operation = Literal["start", "stop", "status"]
KIND_HEARTBEAT = "heartbeat"  # resource.d script
KIND_LSB = "lsb"
KIND_OCF = "ocf"

DEFAULT_TIMEOUTS: Mapping[str, float] = {"start": 60.0, "stop": 60.0, "status": 20.0}
DEFAULT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
OUTPUT_LIMIT = 64 * 1024  # bytes kept per stream (the tail)
METADATA_LIMIT = 1024 * 1024
OCF_SUCCESS = 0
OCF_NOT_RUNNING = 7
OCF_RUNNING_MASTER = 8

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
_NOT_RUNNING = re.compile(r"[Nn][Oo][Tt] .*[Rr]unning", re.DOTALL)
_RUNNING = re.compile(r"[Rr]unning|OK")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:+-]")
_LSB_STATUS = {0: "running", 1: "dead, but a pid file exists", 2: "dead, but a lock file exists",
               3: "stopped"}


@dataclass(frozen=True)
class AgentResult:
    """The outcome of one operation; a failing agent is a result, not an error."""

    ok: bool  # the operation did what was asked (status: the state is known)
    running: bool | None  # known state afterwards; None when unknown
    rc: int | None  # exit code; None when killed or never started
    timed_out: bool
    detail: str  # one line for logs and D-Bus callers
    kind: str  # "heartbeat" (resource.d), "lsb" or "ocf"
    path: str
    stdout: str = ""  # the tail of the output, at most OUTPUT_LIMIT bytes each
    stderr: str = ""
    elapsed: float = 0.0  # seconds


@dataclass(frozen=True)
class ResolvedAgent:
    """Where a resource's agent lives and what it is given."""

    kind: str
    path: str
    args: tuple[str, ...]  # positional arguments (resource.d only)
    env: Mapping[str, str]  # OCF_RESKEY_* and OCF_RESOURCE_INSTANCE (OCF only)


@dataclass(frozen=True)
class _Run:
    rc: int | None
    timed_out: bool
    stdout: str
    stderr: str
    elapsed: float
    error: str | None = None  # could not start it at all


def _text(data: bytes, dropped: int) -> str:
    text = data.decode("utf-8", "replace")
    return f"[{dropped} bytes dropped]\n{text}" if dropped else text


def _last_line(*texts: str) -> str:
    for text in texts:
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        if lines:
            return lines[-1][:200]
    return ""


class AgentRunner:
    """Resolves and runs resource agents.  Every directory is a parameter for tests."""

    def __init__(self, *, resource_dir: str | Path = "/etc/ha.d/resource.d",
                 init_dir: str | Path = "/etc/init.d",
                 ocf_root: str | Path = "/usr/lib/ocf",
                 ocf_dir: str | Path | None = None,
                 ha_dir: str | Path = "/etc/ha.d",
                 rsctmp: str | Path = "/run/resource-agents",
                 timeouts: Mapping[str, float] | None = None,
                 node_name: str | None = None,
                 logfacility: str | None = None,
                 metadata_timeout: float = 10.0) -> None:
        self.resource_dir = Path(resource_dir)
        self.init_dir = Path(init_dir)
        self.ocf_root = Path(ocf_root)
        # ocf_dir: the provider directory searched for agents; OCF_ROOT stays the
        # real one because agents source $OCF_ROOT/lib/heartbeat/ocf-shellfuncs
        self.ocf_dir = Path(ocf_dir) if ocf_dir is not None else (
            self.ocf_root / "resource.d" / "heartbeat")
        self.rsctmp = Path(rsctmp)
        self.timeouts = {**DEFAULT_TIMEOUTS, **(timeouts or {})}
        self.metadata_timeout = metadata_timeout
        env = {
            "PATH": DEFAULT_PATH, "LANG": "C", "LC_ALL": "C",
            "HA_DIR": str(ha_dir), "HA_RESOURCEDIR": str(self.resource_dir),
            "HA_RSCTMP": str(self.rsctmp), "HA_debug": "0", "INITDIR": str(self.init_dir),
            "OCF_ROOT": str(self.ocf_root), "OCF_RA_VERSION_MAJOR": "1",
            "OCF_RA_VERSION_MINOR": "0",
        }
        # Without HA_LOGFACILITY, ha_log writes to stderr, which we capture and log.
        if logfacility:
            env["HA_LOGFACILITY"] = logfacility
        if node_name:
            env["HA_CURHOST"] = node_name
        self._base_env: Mapping[str, str] = env
        self._metadata: dict[tuple[str, int], tuple[str, ...]] = {}

    # -- resolution ---------------------------------------------------------

    def locate(self, name: str) -> tuple[str, Path]:
        """(kind, path) of the agent called `name`.  Raises ResourceError."""
        if not _NAME.match(name):
            raise ResourceError(f"{name!r} is not a resource agent name")
        places = ((KIND_HEARTBEAT, self.resource_dir), (KIND_LSB, self.init_dir),
                  (KIND_OCF, self.ocf_dir))
        notes = []
        for kind, directory in places:
            path = directory / name
            if path.is_file() and os.access(path, os.X_OK):
                return kind, path
            notes.append(f"{path} (not executable)" if path.exists() else str(path))
        raise ResourceError(f"no resource agent {name!r}: searched {', '.join(notes)}")

    async def resolve(self, resource: Resource) -> ResolvedAgent:
        """Find the agent of `resource` and map its arguments.

        Raises ResourceError when the name resolves nowhere, when an LSB
        script is given arguments, or when OCF arguments cannot be mapped
        (meta-data unreadable, more positional arguments than parameters).
        """
        kind, path = self.locate(resource.agent)
        if kind == KIND_HEARTBEAT:
            return ResolvedAgent(kind, str(path), resource.args, {})
        if kind == KIND_LSB:
            if resource.args:
                raise ResourceError(
                    f"{resource.id}: {path} is an LSB init script, which takes no arguments;"
                    f" remove '::{'::'.join(resource.args)}' or install a resource.d script")
            return ResolvedAgent(kind, str(path), (), {})
        params = await self._parameters(path) if resource.args else ()
        env = {f"OCF_RESKEY_{k}": v for k, v in self._map_ocf_args(resource, params).items()}
        first = ""
        if resource.args:
            key, sep, value = resource.args[0].partition("=")
            first = value if sep and key in params else resource.args[0]
        instance = resource.agent + (f"_{first}" if first else "")
        env["OCF_RESOURCE_INSTANCE"] = _UNSAFE.sub("_", instance)
        env["OCF_RESOURCE_TYPE"] = resource.agent
        env["OCF_RESOURCE_PROVIDER"] = self.ocf_dir.name
        return ResolvedAgent(kind, str(path), (), env)

    @staticmethod
    def _map_ocf_args(resource: Resource, params: Sequence[str]) -> dict[str, str]:
        named: dict[str, str] = {}
        positional: list[str] = []
        for arg in resource.args:
            key, sep, value = arg.partition("=")
            if sep and key in params:
                if key in named:
                    raise ResourceError(f"{resource.id}: parameter {key} is given twice")
                named[key] = value
            else:
                positional.append(arg)
        free = [p for p in params if p not in named]
        if len(positional) > len(free):
            raise ResourceError(
                f"{resource.id}: {len(positional)} positional argument(s) but the agent has"
                f" only {len(free)} parameter(s) left to fill: {', '.join(free) or 'none'}")
        return {**named, **dict(zip(free, positional, strict=False))}

    async def _parameters(self, path: Path) -> tuple[str, ...]:
        """The agent's meta-data parameter names, in order; cached per file version."""
        try:
            key = (str(path), path.stat().st_mtime_ns)
        except OSError as err:
            raise ResourceError(f"cannot read {path}: {err}") from err
        if key in self._metadata:
            return self._metadata[key]
        run = await self._execute([str(path), "meta-data"], dict(self._base_env),
                                  self.metadata_timeout, METADATA_LIMIT)
        if run.rc != 0:
            why = run.error or ("timed out" if run.timed_out else f"rc={run.rc}")
            raise ResourceError(f"cannot map arguments: {path} meta-data failed ({why})"
                                f" {_last_line(run.stderr)}".rstrip())
        import xml.etree.ElementTree as ET  # only for agents whose arguments are mapped

        try:
            root = ET.fromstring(run.stdout)
        except ET.ParseError as err:
            raise ResourceError(f"cannot map arguments: {path} meta-data is not XML: {err}"
                                ) from err
        names = tuple(p.get("name", "") for p in root.iterfind("./parameters/parameter"))
        names = tuple(n for n in names if n)
        self._metadata[key] = names
        return names

    # -- running ------------------------------------------------------------

    async def run(self, resource: Resource, operation: Operation, *,
                  timeout: float | None = None) -> AgentResult:
        """Run `operation` on `resource` and say what happened.

        Raises ResourceError only when the agent cannot be resolved (see
        `resolve`); a failing, hanging or crashing agent is an AgentResult.
        Cancelling the call kills the agent's process group.
        """
        if operation not in DEFAULT_TIMEOUTS:
            raise ValueError(f"unknown operation {operation!r}")
        agent = await self.resolve(resource)
        seconds = self.timeouts[operation] if timeout is None else timeout
        env = {**self._base_env, **agent.env}
        if agent.kind == KIND_HEARTBEAT:
            argv = [agent.path, *agent.args, operation]
        elif agent.kind == KIND_LSB:
            argv = [agent.path, operation]
        else:
            argv = [agent.path, "monitor" if operation == "status" else operation]
            env["OCF_RESKEY_CRM_meta_timeout"] = str(int(seconds * 1000))
        self._ensure_rsctmp()
        level = logging.DEBUG if operation == "status" else logging.INFO
        log.log(level, "%s %s: running %s", resource.id, operation, argv)
        run = await self._execute(argv, env, seconds, OUTPUT_LIMIT)
        result = self._interpret(agent, operation, run, seconds)
        if not result.ok:
            log.warning("%s %s: %s", resource.id, operation, result.detail)
        else:
            log.log(level, "%s %s: %s", resource.id, operation, result.detail)
        for name, text in (("stdout", run.stdout), ("stderr", run.stderr)):
            if text.strip():
                log.debug("%s %s %s:\n%s", resource.id, operation, name, text.rstrip())
        return result

    def _ensure_rsctmp(self) -> None:
        try:
            self.rsctmp.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as err:
            log.warning("cannot create %s: %s", self.rsctmp, err)

    @staticmethod
    def _interpret(agent: ResolvedAgent, operation: Operation, run: _Run,
                   seconds: float) -> AgentResult:
        def result(ok: bool, running: bool | None, detail: str) -> AgentResult:
            return AgentResult(ok, running, run.rc, run.timed_out, detail, agent.kind,
                               agent.path, run.stdout, run.stderr, run.elapsed)

        if run.error is not None:
            return result(False, None, f"{operation} could not run {agent.path}: {run.error}")
        if run.timed_out:
            return result(False, None, f"{operation} timed out after {seconds:g}s;"
                                       " its process group was killed")
        rc = run.rc
        why = _last_line(run.stderr, run.stdout)
        failed = f"{operation} failed: rc={rc}" + (f": {why}" if why else "")
        if operation == "start":
            return result(True, True, "started") if rc == 0 else result(False, None, failed)
        if operation == "stop":
            if rc in (0, OCF_NOT_RUNNING):
                return result(True, False, "stopped" if rc == 0 else "stopped (was not running)")
            return result(False, None, failed)
        if agent.kind == KIND_HEARTBEAT:
            # ResourceManager's we_own_resource: the output decides, not the exit code
            if _NOT_RUNNING.search(run.stdout):
                return result(True, False, f"status: not running (rc={rc})")
            if _RUNNING.search(run.stdout):
                return result(True, True, f"status: running (rc={rc})")
            return result(True, False, f"status: stopped, output says neither (rc={rc})")
        if agent.kind == KIND_LSB:
            if rc in _LSB_STATUS:
                return result(True, rc == 0, f"status: {_LSB_STATUS[rc]} (rc={rc})")
            return result(False, None, f"status unknown: rc={rc}" + (f": {why}" if why else ""))
        if rc in (OCF_SUCCESS, OCF_RUNNING_MASTER):
            return result(True, True, f"monitor: running (rc={rc})")
        if rc == OCF_NOT_RUNNING:
            return result(True, False, "monitor: not running (rc=7)")
        return result(False, None, f"monitor failed: rc={rc}" + (f": {why}" if why else ""))

    async def _execute(self, argv: list[str], env: Mapping[str, str], timeout: float,
                       limit: int) -> _Run:
        """execve `argv` in a new session; capture output; kill the group on timeout."""
        run = await run_child(argv, env, timeout, limit)
        return _Run(run.rc, run.timed_out, _text(run.stdout, run.stdout_dropped),
                    _text(run.stderr, run.stderr_dropped), run.elapsed, run.error)
