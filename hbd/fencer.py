"""Running the fence devices: cluster-glue's `stonith` and fence-agents' `fence_*`.

The core (hbd.core.fencing) decides when to fence; this adapter carries out
its FenceNode, CancelFence and CheckFenceDevices actions and reports back.
Every device runs as its own process through hbd.childproc.run_child (never a
shell), in its own session so a timeout or a cancel kills it and its children,
with a timeout (`fence_timeout`; none for meatware, which waits for an
operator).

Secrets never reach an argv, a log line or D-Bus: ha.cf's `stonith_host`
parameters go to `stonith -F` in a 0600 file under the runtime directory,
removed after the run; fence-agents options go on the agent's stdin, as
Pacemaker's fencer passes them.  What a device printed is logged only with
every parameter value masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from hbd.agents import DEFAULT_PATH
from hbd.childproc import run_child
from hbd.core.config import ClusterConfig, FenceAgent, FenceSettings, StonithDevice

log = logging.getLogger(__name__)

STONITH = "stonith"  # cluster-glue's command
AGENT_DIRS = ("/usr/sbin", "/sbin", "/usr/bin")
OUTPUT_LIMIT = 4096  # bytes of a device's output kept for the masked detail
ENV = {"PATH": DEFAULT_PATH, "LANG": "C", "LC_ALL": "C"}  # as the agents' and hooks'


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    detail: str


def _mask(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 2:
            text = text.replace(secret, "***")
    return text


def _last_line(data: bytes, secrets: list[str]) -> str:
    lines = [x for x in data[-OUTPUT_LIMIT:].decode(errors="replace").splitlines() if x.strip()]
    return _mask(lines[-1].strip()[:200], secrets) if lines else ""


def _file_words(path: str) -> list[str]:
    """The words of a device's parameters file (blocking: run in a thread)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(65536).split()
    except OSError:
        return []


def _write_private(path: str, text: str) -> None:
    """A parameters file only root reads; it must not exist already (no symlink games)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):  # left by an earlier hbd with our pid
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


class Fencer:
    """Runs devices for the core's fencing actions; reports with the two callbacks."""

    def __init__(self, config: ClusterConfig, runtime_dir: str,
                 fence_done: Callable[[str, int, bool, str], None],
                 checked: Callable[[bool, str], None]) -> None:
        self.runtime_dir = runtime_dir
        self._fence_done = fence_done
        self._checked = checked
        self._tasks: dict[str, asyncio.Task[None]] = {}  # node -> its running attempt
        self._status_task: asyncio.Task[None] | None = None
        self._serial = 0
        self.update(config)

    def update(self, config: ClusterConfig) -> None:
        """A reload: the next attempt uses the new devices."""
        self.node = config.node_name
        self.device: StonithDevice | None = config.hacf.stonith_for(config.node_name)
        self.settings: FenceSettings = config.hbd.fencing

    # --- the core's actions ------------------------------------------------------------

    def fence(self, node: str, attempt: int) -> None:
        self.cancel(node)
        self._tasks[node] = asyncio.get_running_loop().create_task(self._fence(node, attempt))

    def cancel(self, node: str) -> None:
        task = self._tasks.pop(node, None)
        if task is not None:
            task.cancel()

    def check(self) -> None:
        if self._status_task is None or self._status_task.done():
            self._status_task = asyncio.get_running_loop().create_task(self._check())

    async def close(self) -> None:
        tasks = [*self._tasks.values(), *([self._status_task] if self._status_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    # --- the work ----------------------------------------------------------------------

    async def _fence(self, node: str, attempt: int) -> None:
        details = []
        outcome = _Outcome(False, "no fence device")
        if self.device is not None:
            outcome = await self._stonith(self.device, ["-T", "reset", node], reset=True)
            details.append(f"[{self.device.type}] {outcome.detail}")
        if not outcome.ok:
            for agent in self.settings.agents:
                outcome = await self._agent(agent, "reboot", node)
                details.append(f"[{agent.agent}] {outcome.detail}")
                if outcome.ok:
                    break
        if self._tasks.get(node) is asyncio.current_task():
            del self._tasks[node]
        detail = "; ".join(details) if not outcome.ok else details[-1]
        self._fence_done(node, attempt, outcome.ok, detail)

    async def _check(self) -> None:
        results = []
        if self.device is not None:
            outcome = await self._stonith(self.device, ["-S"], reset=False)
            results.append((outcome.ok, f"[{self.device.type}] {outcome.detail}"))
        for agent in self.settings.agents:
            outcome = await self._agent(agent, "monitor", None)
            results.append((outcome.ok, f"[{agent.agent}] {outcome.detail}"))
        ok = all(r[0] for r in results) if results else False
        self._checked(ok, "; ".join(r[1] for r in results) or "no fence device")

    async def _stonith(self, device: StonithDevice, op: list[str], *, reset: bool) -> _Outcome:
        secrets = device.params.split()
        path = device.config_file
        own_file = None
        # meatware waits for an operator (meatclient -c): no timeout on its reset
        timeout = None if reset and device.type == "meatware" else self.settings.timeout_ms / 1000
        try:
            if path is None:
                self._serial += 1
                own_file = path = os.path.join(self.runtime_dir, "fence",
                                               f"stonith-{os.getpid()}-{self._serial}")
                try:
                    await asyncio.to_thread(_write_private, path, device.params)
                except OSError as err:
                    return _Outcome(False, f"cannot write its parameters file: {err.strerror}")
            else:  # `stonith TYPE FILE`: the file's words are the secrets to mask
                secrets = await asyncio.to_thread(_file_words, path)
            return await self._run([STONITH, "-s", "-t", device.type, "-F", path, *op], None,
                                   timeout, secrets)
        finally:
            if own_file is not None:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(os.unlink, own_file)

    async def _agent(self, agent: FenceAgent, action: str, node: str | None) -> _Outcome:
        program = shutil.which(agent.agent, path=os.pathsep.join(AGENT_DIRS))
        if program is None:
            return _Outcome(False, "agent not installed (fence-agents)")
        lines = [f"action={action}"] + ([f"plug={node}"] if node is not None else [])
        lines += [f"{key}={value}" for key, value in agent.options]
        secrets = [value for _, value in agent.options]
        return await self._run([program], ("\n".join(lines) + "\n").encode(),
                               self.settings.timeout_ms / 1000, secrets)

    async def _run(self, argv: list[str], stdin: bytes | None, timeout: float | None,
                   secrets: list[str]) -> _Outcome:
        # hbd.childproc: its own session (a timeout or a cancel kills it and its
        # children), a small environment, output and stderr in one pipe of our own
        run = await run_child(argv, ENV, timeout, OUTPUT_LIMIT, merge_stderr=True, stdin=stdin)
        if run.error is not None:
            return _Outcome(False, f"cannot run {argv[0]}: {_mask(run.error, secrets)}")
        if run.timed_out:
            return _Outcome(False, f"timed out after {timeout:g} s")
        said = _last_line(run.stdout, secrets)
        if run.rc == 0:
            return _Outcome(True, "OK")
        return _Outcome(False, f"exit code {run.rc}" + (f": {said}" if said else ""))
