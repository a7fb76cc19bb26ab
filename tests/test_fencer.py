"""hbd/fencer.py with the real tools: cluster-glue's `stonith` (null and meatware
plugins) and fence-agents' fence_dummy (it writes a file, or fails on purpose).

What the device is told and how: a stonith_host line's parameters go to
`stonith -F` in a 0600 file that is gone afterwards, fence-agents options on
stdin; a failure's detail is masked; a cancelled run (meatware waiting for an
operator) is killed, not left behind; the status check reports each device.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from hbd.core.config import ClusterConfig
from hbd.core.hbdconf import parse_hbdconf
from hbd.fencer import Fencer, _file_words, _last_line
from tests.infra.netns import proc_pids
from tests.simnet import make_config

SECRET = "pw-fencer-test"


def _config(stonith: str = "", hbdconf: str = "") -> ClusterConfig:
    hbd, problems = parse_hbdconf(hbdconf)
    assert not problems.errors
    return replace(make_config("n1", extra=stonith), hbd=hbd)


class Results:
    def __init__(self) -> None:
        self.done: list[tuple[str, int, bool, str]] = []
        self.checked: list[tuple[bool, str]] = []

    def fencer(self, config: ClusterConfig, runtime: Path) -> Fencer:
        return Fencer(config, str(runtime), lambda *a: self.done.append(a),
                      lambda *a: self.checked.append(a))


async def _until(pred: object, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():  # type: ignore[operator]
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.02)


def _argvs() -> list[str]:
    out = []
    for pid in proc_pids():
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return out


def test_stonith_host_device_resets_and_its_parameter_file_is_gone(tmp_path: Path) -> None:
    results = Results()

    async def main() -> None:
        fencer = results.fencer(_config(f"stonith_host * null n2 {SECRET}\n"), tmp_path)
        fencer.fence("n2", 7)
        await _until(lambda: results.done)
        fencer.check()
        await _until(lambda: results.checked)
        await fencer.close()

    asyncio.run(main())
    assert results.done == [("n2", 7, True, "[null] OK")]
    assert results.checked == [(True, "[null] OK")]
    assert list((tmp_path / "fence").iterdir()) == []  # written 0600, removed after
    assert (tmp_path / "fence").stat().st_mode & 0o777 == 0o700


def test_failing_agent_is_reported_masked_then_the_next_device_is_tried(tmp_path: Path) -> None:
    results = Results()
    status = tmp_path / "dummy"
    conf = (f"fence_agent fence_dummy type=fail power_timeout=1 password={SECRET}\n"
            f"fence_agent fence_dummy type=file status_file={status}\n")

    async def main() -> None:
        fencer = results.fencer(_config("", conf), tmp_path)
        fencer.fence("n2", 1)
        await _until(lambda: results.done)
        await fencer.close()

    asyncio.run(main())
    (node, attempt, ok, detail), = results.done
    assert (node, attempt, ok, detail) == ("n2", 1, True, "[fence_dummy] OK")
    assert status.read_text().strip() == "on"


def test_every_device_failing_says_why_without_secrets(tmp_path: Path) -> None:
    results = Results()

    async def main() -> None:
        fencer = results.fencer(_config("", f"fence_agent fence_dummy type=fail power_timeout=1 "
                                            f"password={SECRET}\n"), tmp_path)
        fencer.fence("n2", 3)
        await _until(lambda: results.done)
        await fencer.close()

    asyncio.run(main())
    (_, _, ok, detail), = results.done
    assert not ok and detail.startswith("[fence_dummy] exit code ") and SECRET not in detail


def test_cancel_kills_a_waiting_meatware_run(tmp_path: Path) -> None:
    results = Results()

    async def main() -> None:
        fencer = results.fencer(_config("stonith_host * meatware n2\n"), tmp_path)
        fencer.fence("n2", 1)
        await _until(lambda: any("meatware" in a and "reset n2" in a for a in _argvs()))
        fencer.cancel("n2")
        await _until(lambda: not any("meatware" in a and "reset n2" in a for a in _argvs()),
                     5)
        await asyncio.sleep(0.2)
        await fencer.close()

    asyncio.run(main())
    assert results.done == []  # a cancelled attempt reports nothing


def test_output_is_masked() -> None:
    said = f"WARNING: Ignoring unknown option 'password={SECRET}'\n".encode()
    assert _last_line(said, [SECRET]) == "WARNING: Ignoring unknown option 'password=***'"


def test_a_stonith_parameters_file_is_masked_like_a_stonith_host_line(tmp_path: Path) -> None:
    # `stonith TYPE FILE`: the device may echo the file's words (a password) in its output
    params = tmp_path / "params"
    params.write_text(f"hostlist=n2 {SECRET}\n")
    words = _file_words(str(params))
    assert SECRET in words
    assert SECRET not in _last_line(f"login failed for {SECRET}\n".encode(), words)
    assert _file_words(str(tmp_path / "missing")) == []
