"""hbd.logs' queue and hbd.state's writer: nothing the event loop calls waits on a sink.

Sinks here are in-process stand-ins that block on an Event or fail on demand;
the real sinks (rsyslog, journald, a full tmpfs) are in tests/test_stall.py.
Nothing sleeps: every wait is on an Event with a generous timeout.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hbd import logs
from hbd.state import StateDir
from tests.infra import commands

WAIT = 10.0  # seconds: only reached when something is broken


class Held(logs._Sink):
    """Records what it is given; blocks inside emit while `gate` is clear."""

    def __init__(self, name: str = "held") -> None:
        super().__init__()
        self.what = name
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.lines: list[str] = []
        self.closed = False
        self.fail: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        if not self.gate.wait(WAIT * 3):
            raise AssertionError("gate never opened")
        try:
            if self.fail:
                raise OSError(28, self.fail)
            self.lines.append(record.getMessage())
        except OSError:
            self.handleError(record)

    def close(self) -> None:
        self.closed = True  # the drainer retires sinks; here we only note it


class Given:
    """A SinkSpec that hands the drainer an existing test sink."""

    def __init__(self, sink: logs._Sink) -> None:
        self.sink = sink
        self.level = logging.DEBUG

    @property
    def key(self) -> object:
        return id(self.sink)

    def make(self) -> logs._Sink:
        return self.sink


def use(pipeline: logs._Pipeline, *sinks: logs._Sink) -> None:
    pipeline.use([Given(sink) for sink in sinks])


@pytest.fixture
def pipe() -> Iterator[tuple[logs._Pipeline, logging.Logger]]:
    """A private pipeline (queue of 5) behind a private logger."""
    pipeline = logs._Pipeline(limit=5)
    logger = logging.getLogger(f"test-logqueue-{id(pipeline)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = logs._QueueHandler(pipeline)
    logger.addHandler(handler)
    yield pipeline, logger
    logger.removeHandler(handler)
    for sink in pipeline.sinks.values():
        if isinstance(sink, Held):
            sink.gate.set()


def test_a_sink_blocked_forever_does_not_block_logging(pipe: tuple[logs._Pipeline,
                                                                   logging.Logger]) -> None:
    pipeline, log = pipe
    sink = Held()
    sink.gate.clear()
    use(pipeline, sink)
    log.info("first")
    assert sink.entered.wait(WAIT)  # the drainer is now stuck inside the sink
    started = time.monotonic()
    for i in range(1000):
        log.info("line %d", i)
    elapsed = time.monotonic() - started
    # 1000 calls into a stuck sink: a blocking handler would never return at all
    assert elapsed < 2.0, f"{elapsed:.2f} s for 1000 log calls"
    assert pipeline.dropped == 1000 - 5  # 5 fit in the queue, the rest were counted
    assert logs.dropped_lines() == logs._pipeline.dropped  # the public count is the global one


def test_dropped_lines_are_reported_once_the_sink_frees(pipe: tuple[logs._Pipeline,
                                                                    logging.Logger]) -> None:
    pipeline, log = pipe
    sink = Held()
    sink.gate.clear()
    use(pipeline, sink)
    log.info("first")
    assert sink.entered.wait(WAIT)
    for i in range(20):
        log.warning("during %d", i)
    sink.gate.set()
    assert pipeline.flush(WAIT)
    assert sink.lines[0] == "first"
    assert [line for line in sink.lines if line.startswith("during")] == [
        f"during {i}" for i in range(5)]
    assert "15 log lines dropped (log sink stalled)" in sink.lines
    log.info("later")
    assert pipeline.flush(WAIT)
    assert sink.lines[-1] == "later"
    assert sum("dropped" in line for line in sink.lines) == 1  # reported once, not per line


def test_reconfigure_keeps_the_queued_lines(pipe: tuple[logs._Pipeline,
                                                        logging.Logger]) -> None:
    pipeline, log = pipe
    old, new = Held("old"), Held("new")
    old.gate.clear()
    use(pipeline, old)
    log.info("being written")
    assert old.entered.wait(WAIT)
    for i in range(3):
        log.info("queued %d", i)
    use(pipeline, new)  # like configure() on a reload, while the old sink is stuck
    old.gate.set()
    assert pipeline.flush(WAIT)
    assert old.lines == ["being written"]
    assert new.lines == ["queued 0", "queued 1", "queued 2"]
    assert old.closed and not new.closed
    assert pipeline.dropped == 0


def test_a_failing_sink_is_reported_to_the_others_once(pipe: tuple[logs._Pipeline,
                                                                   logging.Logger]) -> None:
    pipeline, log = pipe
    disk, other = Held("/var/log/ha-log"), Held("stderr")
    use(pipeline, disk, other)
    log.info("fine")
    assert pipeline.flush(WAIT)
    disk.fail = "No space left on device"
    for i in range(4):
        log.info("full %d", i)
    assert pipeline.flush(WAIT)
    failing = [line for line in other.lines if "failing" in line]
    assert failing == ["log sink /var/log/ha-log failing ([Errno 28] No space left on device): "
                       "its lines are lost until it works again"]
    disk.fail = None
    log.info("space again")
    assert pipeline.flush(WAIT)
    assert "log sink /var/log/ha-log works again; 4 line(s) were lost" in other.lines
    assert disk.lines == ["fine", "space again"]
    assert other.lines[-1] == "space again"


def test_a_sink_that_logs_does_not_feed_itself(pipe: tuple[logs._Pipeline,
                                                           logging.Logger]) -> None:
    pipeline, log = pipe

    class Chatty(Held):
        def emit(self, record: logging.LogRecord) -> None:
            super().emit(record)
            log.warning("sink complains about %s", record.getMessage())

    sink = Chatty()
    use(pipeline, sink)
    log.info("one")
    assert pipeline.flush(WAIT)
    log.info("two")
    assert pipeline.flush(WAIT)
    assert sink.lines == ["one", "two"]  # the complaints did not come back round
    assert pipeline.unheard == 2
    assert pipeline.dropped == 0  # nothing was stalled


def test_the_drainer_survives_sinks_that_raise(pipe: tuple[logs._Pipeline,
                                                          logging.Logger]) -> None:
    """A full disk made a retired file sink's close() raise ENOSPC: that killed the drainer."""
    pipeline, log = pipe

    class Broken(Held):
        def emit(self, record: logging.LogRecord) -> None:
            raise RuntimeError("not caught by the sink itself")

        def close(self) -> None:
            raise OSError(28, "No space left on device")

    broken, good = Broken("broken"), Held("good")
    use(pipeline, broken, good)
    log.info("one")
    assert pipeline.flush(WAIT)
    use(pipeline, good)  # the drainer closes `broken`, which raises
    log.info("two")
    assert pipeline.flush(WAIT)
    assert pipeline.thread is not None and pipeline.thread.is_alive()
    assert [line for line in good.lines if not line.startswith("log sink")] == ["one", "two"]
    assert any("log sink broken failing (not caught by the sink itself)" in line
               for line in good.lines)


def test_arguments_are_rendered_when_logged() -> None:
    """A mutable argument changed after the call must not change the line."""
    pipeline = logs._Pipeline(limit=5)
    handler = logs._QueueHandler(pipeline)
    sink = Held()
    sink.gate.clear()
    use(pipeline, sink)
    state = {"node": "up"}
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "state %s", (state,), None)
    handler.emit(record)
    state["node"] = "dead"
    sink.gate.set()
    assert pipeline.flush(WAIT)
    assert sink.lines == ["state {'node': 'up'}"]


def test_real_configure_file_sink_gets_lines_and_flush_waits(tmp_path: Path) -> None:
    """The module's own pipeline, as the daemon uses it: configure, log, flush."""
    path = tmp_path / "ha-log"
    root = logging.getLogger()
    level = root.level
    try:
        logs.configure(logfile=str(path), logfacility=None)
        logging.getLogger("hbd.test").info("to the file %d", 42,
                                          extra={"MESSAGE_ID": "abc", "HBD_NODE": "n2"})
        assert logs.flush(WAIT)
        assert f"hbd: [{os.getpid()}]: info: to the file 42" in path.read_text()
        # a reload asking for the same file keeps the open sink (and a failing one's count)
        sink = logs._pipeline.sinks[("file", str(path), None)]
        logs.configure(logfile=str(path), logfacility=None)
        logging.getLogger("hbd.test").info("after the reload")
        assert logs.flush(WAIT)
        assert logs._pipeline.sinks[("file", str(path), None)] is sink
        assert "info: after the reload" in path.read_text()
    finally:
        logs.configure()  # back to stderr only
        logs.flush(WAIT)
        root.setLevel(level)


def test_a_bad_format_string_is_logged_not_printed(pipe: tuple[logs._Pipeline,
                                                            logging.Logger],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    pipeline, log = pipe
    sink = Held()
    use(pipeline, sink)
    log.info("two args %s %s", "only one")
    assert pipeline.flush(WAIT)
    assert sink.lines == ["unformattable log line 'two args %s %s' ('only one',): not enough "
                          "arguments for format string"]
    assert capsys.readouterr().err == ""


EXITING = """
import logging, sys
from hbd import logs
logs.configure(logfile=sys.argv[1], logfacility=None)
for i in range(2000):
    logging.getLogger("hbd").info("line %d", i)
logging.getLogger("hbd").info("hbd stopped")
"""


def test_exit_waits_for_the_queue(tmp_path: Path) -> None:
    """The last lines ("hbd stopped") are written even when the process exits at once."""
    path = tmp_path / "ha-log"
    res = commands.run([sys.executable, "-c", EXITING, str(path)], capture_output=True,
                       text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    lines = path.read_text().splitlines()
    assert len(lines) == 2001 and lines[-1].endswith("info: hbd stopped")


def test_exit_waits_no_longer_than_the_bound(tmp_path: Path) -> None:
    """A sink stuck for good (a FIFO nobody reads: its open never returns) costs
    EXIT_FLUSH_SECONDS at exit, not a hang."""
    fifo = tmp_path / "stuck"
    os.mkfifo(fifo)
    started = time.monotonic()
    res = commands.run([sys.executable, "-c", EXITING, str(fifo)], capture_output=True,
                       text=True, timeout=60, check=False)
    elapsed = time.monotonic() - started
    assert res.returncode == 0, res.stderr
    assert logs.EXIT_FLUSH_SECONDS <= elapsed < logs.EXIT_FLUSH_SECONDS + 20


class SlowState(StateDir):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[dict[str, int]] = []

    def save_peer_generations(self, newer: dict[str, int]) -> None:
        self.entered.set()
        assert self.gate.wait(WAIT * 3)
        self.batches.append(dict(newer))
        super().save_peer_generations(newer)


def test_peer_generations_saved_off_the_caller_newest_wins(tmp_path: Path) -> None:
    state = SlowState(tmp_path)
    state.record_peer_generation("n2", 10)  # the writer takes it and blocks in fsync
    assert state.entered.wait(WAIT)
    started = time.monotonic()
    for generation in range(11, 200):
        state.record_peer_generation("n2", generation)
        state.record_peer_generation("n3", 5)
    state.record_peer_generation("n2", 150)  # an older one later never goes back
    assert time.monotonic() - started < 1.0  # the caller never waited for the disk
    state.gate.set()
    assert state.flush(WAIT)
    assert state.batches == [{"n2": 10}, {"n2": 199, "n3": 5}]  # coalesced into one write
    assert json.loads((tmp_path / "peers.json").read_text()) == {"n2": 199, "n3": 5}
    assert state.peer_generations() == {"n2": 199, "n3": 5}


def test_peer_generation_write_failure_is_logged(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    state = StateDir(tmp_path / "missing" / "dir")  # never created: the write fails
    with caplog.at_level(logging.WARNING, logger="hbd.state"):
        state.record_peer_generation("n2", 7)
        assert state.flush(WAIT)
    assert any("cannot record the generation of n2" in r.getMessage() for r in caplog.records)
    state.path.mkdir(parents=True)
    state.record_peer_generation("n2", 8)  # the writer lives on after a failure
    assert state.flush(WAIT)
    assert state.peer_generations() == {"n2": 8}
