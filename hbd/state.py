"""Persistent node state in the state directory (/var/lib/hbd).

* `uuid`: 16 random bytes, created once; peers learn it from `srcuuid`.
* `generation`: bumped and fsync'd at every start.  Peers drop messages of a
  lower generation, so a replay of anything we sent before this start is
  refused.  The new value is also never below the current Unix time, as
  Heartbeat seeds its own: even with a lost state directory, a capture of
  our old traffic carries a lower number than anything we send now.
* `peers`: the highest generation seen from each peer, so a replay of a
  peer's old packets is refused even right after we restart.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

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


class StateDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

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
        known = self.peer_generations()
        if known.get(node, -1) >= generation:
            return
        known[node] = generation
        _write_atomic(self.path / "peers.json", json.dumps(known, sort_keys=True).encode())
