"""Persistent node state in the state directory (/var/lib/hbd).

* `uuid`: 16 random bytes, created once; peers learn it from `srcuuid`.
* `generation`: bumped and fsync'd at every start.  Peers drop messages of a
  lower generation, so a replay of anything we sent before this start is
  refused.  The new value is also never below the current Unix time, as
  Heartbeat seeds its own: even with a lost state directory, a capture of
  our old traffic carries a lower number than anything we send now.
* `peers`: the highest generation seen from each peer, so a replay of a
  peer's old packets is refused even right after we restart.  A peer's new
  generation arrives on the event loop; `record_peer_generation` hands it to
  a writer thread (fsync can take seconds on a busy or failing disk, longer
  than a deadtime), which writes the newest value per peer, in order.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
from pathlib import Path

from hbd import realtime

log = logging.getLogger(__name__)


def _write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write via a temporary file, fsync it, rename it over, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


EXIT_FLUSH_SECONDS = 2.0  # at exit, how long the last generations may take to reach disk


class StateDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._writer: _PeerWriter | None = None

    def ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def uuid(self) -> bytes:
        """Our node uuid, created on first use."""
        file = self.path / "uuid"
        try:
            data = file.read_bytes()
            if len(data) == 16:
                return data
            log.warning("%s is not 16 bytes: making a new node uuid", file)
        except FileNotFoundError:
            pass
        data = os.urandom(16)
        _write_atomic(file, data)
        return data

    def next_generation(self, wall: float) -> int:
        """Bump, persist (fsync) and return this start's generation."""
        file = self.path / "generation"
        previous = 0
        try:
            previous = int(file.read_text().strip())
        except FileNotFoundError:
            pass
        except ValueError:
            log.warning("%s is unreadable: starting the generation from the clock", file)
        generation = max(previous + 1, int(wall))
        _write_atomic(file, f"{generation}\n".encode())
        return generation

    def peer_generations(self) -> dict[str, int]:
        file = self.path / "peers.json"
        try:
            raw = json.loads(file.read_text())
        except FileNotFoundError:
            return {}
        except (ValueError, OSError) as err:
            log.warning("ignoring %s: %s", file, err)
            return {}
        if not isinstance(raw, dict):
            return {}
        return {str(k): int(v) for k, v in raw.items() if isinstance(v, int)}

    def save_peer_generation(self, node: str, generation: int) -> None:
        """Blocking (fsync): write it now.  The event loop uses record_peer_generation."""
        self.save_peer_generations({node: generation})

    def save_peer_generations(self, newer: dict[str, int]) -> None:
        """Blocking: merge `newer` into peers.json, keeping the higher value of each peer."""
        known = self.peer_generations()
        if all(known.get(node, -1) >= generation for node, generation in newer.items()):
            return
        for node, generation in newer.items():
            known[node] = max(generation, known.get(node, -1))
        _write_atomic(self.path / "peers.json", json.dumps(known, sort_keys=True).encode())

    def record_peer_generation(self, node: str, generation: int) -> None:
        """Never blocks: the writer thread saves it soon; a failure is logged there."""
        if self._writer is None:
            self._writer = _PeerWriter(self)
        self._writer.record(node, generation)

    def flush(self, timeout: float = EXIT_FLUSH_SECONDS) -> bool:
        """Wait at most `timeout` s until every recorded generation is saved (or failed)."""
        return self._writer is None or self._writer.flush(timeout)


class _PeerWriter:
    """One daemon thread that saves peers' generations, newest per peer wins.

    Values recorded while a write is under way are merged into the next
    write, so a flapping peer costs one fsync at a time, never a backlog.
    """

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self._pending: dict[str, int] = {}
        self._busy = False  # a write is under way
        self._cond = threading.Condition()
        threading.Thread(target=self._run, name="hbd-state", daemon=True).start()
        atexit.register(self.flush, EXIT_FLUSH_SECONDS)

    def record(self, node: str, generation: int) -> None:
        with self._cond:
            self._pending[node] = max(generation, self._pending.get(node, -1))
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def _run(self) -> None:
        realtime.join_thread()  # the loop's priority: it may hold the GIL the loop needs
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending))
                batch, self._pending = self._pending, {}
                self._busy = True
            try:
                self.state.save_peer_generations(batch)
            except OSError as err:
                log.warning("cannot record the generation of %s: %s", ", ".join(sorted(batch)),
                            err)
            except Exception:  # a bug here must not end the saving of later generations
                log.exception("recording the generation of %s failed", ", ".join(sorted(batch)))
            with self._cond:
                self._busy = False
                self._cond.notify_all()
