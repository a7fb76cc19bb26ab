"""`hbctl history`'s parts without a journal, the duration fields hbd.eventlog adds,
and `hbctl status --watch`'s coalescing of signal bursts.

The journal itself is read in tests/test_history_systemd.py (a real journald in
a throwaway systemd machine); here the entries are the dicts systemd-python's
reader yields, and the watch session is fed PropertiesChanged messages.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from dbus_next.constants import MessageType
from dbus_next.message import Message
from dbus_next.signature import Variant

from hbd import eventlog
from hbd.bus import client
from hbd.bus.names import BUS_NAME, MANAGER_IFACE, OBJECT_PATH
from hbd.cli import history, watch
from hbd.cli.hbctl import main
from hbd.core import actions as a
from hbd.core.telemetry import Telemetry
from hbd.demo.journal import JournalCatcher, decode
from hbd.eventlog import MessageId
from hbd.journalsend import JournalSocket, encode

GROUP = "10.77.0.240/24/eth0"
NOW = dt.datetime(2026, 12, 7, 12, 30, 15).timestamp()


@pytest.mark.parametrize(("text", "expected"), [
    ("now", NOW),
    ("1h", NOW - 3600),
    ("-30min", NOW - 1800),
    ("2d ago", NOW - 2 * 86400),
    ("90s", NOW - 90),
    ("today", dt.datetime(2026, 12, 7).timestamp()),
    ("yesterday", dt.datetime(2026, 12, 6).timestamp()),
    ("2026-12-07 10:00", dt.datetime(2026, 12, 7, 10, 0).timestamp()),
    ("2026-12-07 10:00:30", dt.datetime(2026, 12, 7, 10, 0, 30).timestamp()),
    ("2026-12-01", dt.datetime(2026, 12, 1).timestamp()),
    ("09:15", dt.datetime(2026, 12, 7, 9, 15).timestamp()),
    ("@1700000000.5", 1700000000.5),
])
def test_parse_time(text: str, expected: float) -> None:
    assert history.parse_time(text, NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "last tuesday", "1y", "2026-13-01", "25:00", "@x"])
def test_parse_time_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        history.parse_time(text, NOW)


def entry(message_id: str, at_s: float, message: str, **fields: str) -> dict[str, Any]:
    """An entry as systemd.journal.Reader yields it (MESSAGE_ID a UUID, time a datetime,
    _UID an int), logged by root as hbd is."""
    return {"MESSAGE_ID": uuid.UUID(message_id), "MESSAGE": message, "_HOSTNAME": "n1",
            "_UID": 0,
            "__REALTIME_TIMESTAMP": dt.datetime.fromtimestamp(NOW + at_s),
            **{f"HBD_{k.upper()}": v for k, v in fields.items()}}


ENTRIES = [
    entry(MessageId.NODE_DEAD, 1.0, "WARN: node n2: is dead", node="n2"),
    entry(MessageId.GROUP_STATE, 1.001, "info: group G: stopped -> starting (on n1)",
          group=GROUP, node="n1", previous="stopped", state="starting"),
    entry(MessageId.TAKEOVER, 1.002, f"info: taking over group {GROUP} (n2 is dead)",
          group=GROUP, reason="n2 is dead", move="m1"),
    entry(MessageId.GROUP_STATE, 1.250, "info: group G: starting -> running (on n1)",
          group=GROUP, node="n1", previous="starting", state="running", move="m1",
          duration_ms="248", failover_ms="1620", failover_reason="peer_dead"),
    entry(MessageId.RELEASE, 5.0, "info: releasing group other (standby [all])",
          group="other", reason="standby [all]", move="m2"),
    entry(MessageId.GROUP_STATE, 17.0, "info: group other: stopping -> blocked",
          group="other", node="", previous="stopping", state="blocked", move="m2",
          duration_ms="12000"),
    entry(MessageId.TAKEOVER, 20.0, "info: taking over group old (start-up)", group="old"),
    entry(MessageId.LINK_DOWN, 21.0, "WARN: Link n2:eth0 dead.", node="n2", link="eth0"),
]


def test_events_joined_to_their_end() -> None:
    events = history.events_from(reversed(ENTRIES))  # sorted by time whatever the order
    assert [(e.event, e.group or e.node, e.duration_ms, e.result) for e in events] == [
        ("node-dead", "n2", None, ""), ("takeover", GROUP, 248, "running"),
        ("release", "other", 12000, "blocked"), ("takeover", "old", None, "")]
    assert events[0].message == "node n2: is dead"  # the level word is not part of it
    assert [(e.failover_ms, e.failover_reason) for e in events] == [
        (None, ""), (1620, "peer_dead"), (None, ""), (None, "")]
    text = history.text_of(events).splitlines()
    assert text[0].split() == ["TIME", "EVENT", "ABOUT", "FAILOVER", "TOOK", "DETAIL"]
    assert text[2].split()[2:] == ["takeover", GROUP, "1620", "ms", "248", "ms", "n2", "is",
                                   "dead"]
    assert text[3].split()[2:5] == ["release", "other", "-"]  # a release is no failover
    assert text[3].endswith("12.0 s  standby [all] (ended blocked)")
    assert " ? " in text[4]  # a takeover whose end is not in the journal
    first = history.json_of(events)[1]
    assert first["time"].startswith("2026-12-07T12:30:16.002")
    assert (first["duration_ms"], first["reason"], first["host"]) == (248, "n2 is dead", "n1")
    assert (first["failover_ms"], first["failover_reason"]) == (1620, "peer_dead")


def test_forged_and_hostile_entries_are_skipped_or_shown_harmless(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Anyone may log hbd's MESSAGE_IDs: only root's entries count, and no field value
    makes history fail or reach the terminal raw."""
    forged = [{**e, "_UID": 1000} for e in ENTRIES]  # `logger --journald` by a user
    unstamped = [{k: v for k, v in e.items() if k != "_UID"} for e in ENTRIES]
    assert history.events_from([*forged, *unstamped]) == []
    hostile = [
        entry(MessageId.TAKEOVER, 1.0, "info: taking over group G (x)", group="G", move="m"),
        entry(MessageId.GROUP_STATE, 1.1, "info: group G: starting -> running", group="G",
              previous="starting", state="running", move="m", duration_ms="\u00b2",
              failover_ms="9" * 5000),  # isdigit() yet int() refuses: not a duration
        entry(MessageId.GROUP_STATE, 1.2, "", move="m2", duration_ms="7",
              failover_ms="\u0663"),  # an Arabic-Indic three
        entry(MessageId.TAKEOVER, 1.3, "info: taking over group m2", group="\x1b]2;pwned\x07",
              reason="\x1b[2J cleared", move="m2"),
        {**entry(MessageId.NODE_DEAD, 0, "x"), "__REALTIME_TIMESTAMP": "soon"},
        {**entry(MessageId.NODE_DEAD, 0, "x"), "__REALTIME_TIMESTAMP": "9" * 30},
    ]
    events = history.events_from(hostile)
    assert [(e.group, e.duration_ms, e.failover_ms) for e in events] == [
        ("G", None, None), ("\x1b]2;pwned\x07", 7, None)]
    text = history.text_of(events)
    assert "\x1b" not in text and "\x07" not in text and "?]2;pwned?" in text
    assert json.loads(json.dumps(history.json_of(events)))[1]["group"] == "\x1b]2;pwned\x07"
    (tmp_path / "h.json").write_text("\n".join(json.dumps(
        {"MESSAGE_ID": MessageId.NODE_DEAD, "MESSAGE": "m", "_UID": "0",
         "__REALTIME_TIMESTAMP": stamp}) for stamp in ("1.5e15", "-1", "", "12")) + "\n")
    assert main(["history", "--file", str(tmp_path / "h.json"), "--json"]) == 0
    assert [e["timestamp_us"] for e in json.loads(capsys.readouterr().out)] == [12]


def test_select() -> None:
    events = history.events_from(ENTRIES)
    assert [e.event for e in history.select(events, since=NOW + 2)] == ["release", "takeover"]
    assert [e.event for e in history.select(events, until=NOW + 2)] == ["node-dead", "takeover"]
    assert [e.group for e in history.select(events, group="old")] == ["old"]
    assert [e.event for e in history.select(events, node="n2")] == ["node-dead"]
    assert len(history.select(events, node="n1")) == 4  # logged on n1


def test_eventlog_times_each_move(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hbd.cluster")
    eventlog.log_event(a.GroupStateChanged(GROUP, "stopped", "starting", "n1"))
    eventlog.log_event(a.StartGroup(GROUP, "n2 is dead"))
    eventlog.log_event(a.GroupStateChanged(GROUP, "starting", "running", "n1"))
    eventlog.log_event(a.GroupStateChanged(GROUP, "running", "stopping", "n1"))  # no move
    eventlog.log_event(a.GroupStateChanged(GROUP, "stopping", "stopped", ""))
    fields = [{k: v for k, v in r.__dict__.items() if k.startswith("HBD_")}
              for r in caplog.records]
    move = fields[1]["HBD_MOVE"]
    assert fields[1]["HBD_REASON"] == "n2 is dead" and len(move) == 32
    assert fields[2]["HBD_MOVE"] == move and int(fields[2]["HBD_DURATION_MS"]) >= 0
    assert (fields[2]["HBD_PREVIOUS"], fields[2]["HBD_STATE"]) == ("starting", "running")
    assert "HBD_DURATION_MS" not in fields[0] and "HBD_DURATION_MS" not in fields[4]
    assert "HBD_FAILOVER_MS" not in fields[2]  # no failover handed: a start-up, say
    caplog.clear()  # a start that fails ends its takeover as it turns to stopping
    eventlog.log_event(a.StartGroup(GROUP, "start-up"))
    eventlog.log_event(a.GroupStateChanged(GROUP, "starting", "stopping", "n1"))
    eventlog.log_event(a.StopGroup(GROUP, "clean up after a failed start"))
    eventlog.log_event(a.GroupStateChanged(GROUP, "stopping", "stopped", ""))
    fields = [{k: v for k, v in r.__dict__.items() if k.startswith("HBD_")}
              for r in caplog.records]
    assert fields[1]["HBD_MOVE"] == fields[0]["HBD_MOVE"] and fields[1]["HBD_STATE"] == "stopping"
    assert fields[3]["HBD_MOVE"] == fields[2]["HBD_MOVE"] != fields[0]["HBD_MOVE"]


def test_eventlog_carries_the_failover_the_metrics_took(
        caplog: pytest.LogCaptureFixture) -> None:
    """The GROUP_STATE entry ending a failover's start carries the telemetry's own figure
    (from the dead peer's last heartbeat), which the histogram observed too."""
    caplog.set_level(logging.INFO, logger="hbd.cluster")
    t = Telemetry("n1")
    batches: list[tuple[list[a.Action], float]] = [
        ([a.NodeStatusChanged("n2", "active", "dead", last_heard=10.0)], 10.3),
        ([a.GroupStateChanged(GROUP, "stopped", "starting", "n1"),
          a.StartGroup(GROUP, "n2 is dead")], 10.31),
        ([a.GroupStateChanged(GROUP, "starting", "running", "n1")], 10.335)]
    for actions, now in batches:  # as ServiceBase._dispatch does
        t.feed(actions, now)
        for action in actions:
            failover = (t.take_failover(action.group)
                        if isinstance(action, a.GroupStateChanged) else None)
            eventlog.log_event(action, failover)
    end = {k: v for k, v in caplog.records[-1].__dict__.items() if k.startswith("HBD_")}
    assert end["HBD_FAILOVER_MS"] == "335" and end["HBD_FAILOVER_REASON"] == "peer_dead"
    assert t.counters().failover_seconds.sum_s * 1000 == pytest.approx(335)
    assert int(end["HBD_DURATION_MS"]) < 335  # the start alone: no detection in it
    assert t.take_failover(GROUP) is None  # handed once


def test_history_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--directory", str(tmp_path / "none")]) == 1
    assert "no such journal directory" in capsys.readouterr().err
    assert main(["history", "--directory", str(tmp_path)]) == 1
    assert "no journal files" in capsys.readouterr().err
    assert main(["history", "--since", "someday"]) == 2


# --- the watch's redraws ---------------------------------------------------------------


def changed(groups: list[list[str]], sender: str = ":1.5") -> Message:
    return Message(message_type=MessageType.SIGNAL, path=OBJECT_PATH, sender=sender,
                   interface="org.freedesktop.DBus.Properties", member="PropertiesChanged",
                   signature="sa{sv}as",
                   body=[MANAGER_IFACE, {"Groups": Variant("a(ssss)", groups)}, []])


PROPS = {"NodeName": Variant("s", "n1"), "Version": Variant("s", "9"),
         "Nodes": Variant("a(ssb)", [["n1", "active", True]]),
         "Links": Variant("a(sss)", []), "ResourcesHeld": Variant("s", "none"),
         "Groups": Variant("a(ssss)", [])}


def test_watch_coalesces_bursts_and_ends_when_hbd_leaves() -> None:
    async def scenario() -> tuple[list[str], int, str]:
        drawn: list[str] = []
        out = io.StringIO()
        session = watch.Watch(None, lambda s: str(s.snapshot.groups), out,  # type: ignore[arg-type]
                              clear=False, json_lines=False)
        session.render = lambda s: drawn.append(str(len(s.snapshot.groups))) or str(drawn)
        session.props = dict(PROPS)
        session.owner = ":1.5"
        session.draw()
        session.on_message(changed([["spoofed", "n1", "n1", "running"]], sender=":1.99"))
        await asyncio.sleep(2 * watch.REDRAW_INTERVAL)
        assert drawn == ["0"]  # not from hbd: ignored
        for n in range(1, 51):  # a burst: one redraw now-ish, one for the rest
            session.on_message(changed([[f"g{i}", "n1", "n1", "running"] for i in range(n)]))
            await asyncio.sleep(0)
        await asyncio.sleep(3 * watch.REDRAW_INTERVAL)
        gone = [BUS_NAME, ":1.5", ""]
        session.on_message(Message(message_type=MessageType.SIGNAL, path="/org/freedesktop/DBus",
                                   interface="org.freedesktop.DBus", member="NameOwnerChanged",
                                   signature="sss", body=gone, sender=":1.99"))  # spoofed
        await asyncio.sleep(0.01)
        assert not session.done.done()
        session.on_message(Message(message_type=MessageType.SIGNAL, path="/org/freedesktop/DBus",
                                   interface="org.freedesktop.DBus", member="NameOwnerChanged",
                                   signature="sss", body=gone, sender="org.freedesktop.DBus"))
        return drawn, await asyncio.wait_for(session.done, 1), out.getvalue()

    drawn, code, out = asyncio.run(scenario())
    assert drawn[0] == "0" and drawn[-1] == "50"
    assert len(drawn) <= 3, drawn  # the first, maybe one during the burst, the last
    assert code == watch.EXIT_UNREACHABLE
    assert out.count("--- ") == len(drawn)
    assert client.state_from(PROPS).snapshot.node_name == "n1"


def test_watch_ends_when_the_name_passes_to_another_process() -> None:
    """A second hbd queued for the name gets it straight from the first: one
    NameOwnerChanged (old -> new), never (old -> ""). The watched hbd is gone."""
    async def scenario() -> int:
        session = watch.Watch(None, str, io.StringIO(), clear=False,  # type: ignore[arg-type]
                              json_lines=False)
        session.owner = ":1.5"
        session.on_message(Message(message_type=MessageType.SIGNAL, path="/org/freedesktop/DBus",
                                   interface="org.freedesktop.DBus", member="NameOwnerChanged",
                                   signature="sss", body=[BUS_NAME, ":1.5", ":1.9"],
                                   sender="org.freedesktop.DBus"))
        return await asyncio.wait_for(session.done, 1)

    assert asyncio.run(scenario()) == watch.EXIT_UNREACHABLE


def test_watch_ends_when_hbd_does_not_answer_a_reread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A change that invalidates properties makes the watch read them all again: an hbd
    that never answers ends the watch (exit 3, saying so), it does not freeze it."""
    class Hung:
        async def call(self, msg: Message) -> Message:
            await asyncio.sleep(3600)
            raise AssertionError

    monkeypatch.setattr(client, "READ_TIMEOUT", 0.2)

    async def scenario() -> int:
        session = watch.Watch(Hung(), str, io.StringIO(), clear=False,  # type: ignore[arg-type]
                              json_lines=False)
        session.owner = ":1.5"
        session.on_message(Message(
            message_type=MessageType.SIGNAL, path=OBJECT_PATH, member="PropertiesChanged",
            interface="org.freedesktop.DBus.Properties", signature="sa{sv}as",
            body=[MANAGER_IFACE, {}, ["Groups"]], sender=":1.5"))
        return await asyncio.wait_for(session.done, 2)

    assert asyncio.run(scenario()) == watch.EXIT_UNREACHABLE


# --- --file, and the demo's stand-in for journald -----------------------------------------


def test_demo_catcher_feeds_history_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    """hbd's own journal datagrams (hbd.journalsend) caught by the demo's catcher, then
    read by `hbctl history --file` as journalctl -o json lines."""
    catcher = JournalCatcher(tmp_path / "journal.socket", tmp_path / "journal.json", "n1")
    sender = JournalSocket(str(catcher.socket_path))
    try:
        for e in ENTRIES:
            fields = {k: str(v.hex if isinstance(v, uuid.UUID) else v) for k, v in e.items()
                      if not k.startswith("_")}
            sender.send(fields)
        sender.send({"MESSAGE": "line one\nline two", "PRIORITY": "6"})  # a binary field
        sender.sock.sendto(b"NOT AN ENTRY", str(catcher.socket_path))
        wait_lines = tmp_path / "journal.json"
        deadline = time.monotonic() + 5
        while len(wait_lines.read_text().splitlines()) < len(ENTRIES) + 1:
            assert time.monotonic() < deadline, wait_lines.read_text()
            time.sleep(0.01)
    finally:
        sender.close()
        catcher.close()
    lines = [json.loads(line) for line in wait_lines.read_text().splitlines()]
    # stamped with the sender's credentials as journald does (the sender's own _ fields
    # are dropped): this test runs as root, so its entries count
    assert {(line["_UID"], line["_PID"]) for line in lines} == {("0", str(os.getpid()))}
    assert lines[-1]["MESSAGE"] == "line one\nline two" and lines[-1]["_HOSTNAME"] == "n1"
    assert catcher.bad == 1
    assert main(["history", "--file", str(wait_lines), "--json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert [(e["event"], e["duration_ms"]) for e in events] == [
        ("node-dead", None), ("takeover", 248), ("release", 12000), ("takeover", None)]
    # journalctl writes MESSAGE_IDs as plain hex, binary fields as lists of byte values
    (tmp_path / "j2.json").write_text(json.dumps({
        "MESSAGE_ID": MessageId.NODE_DEAD, "MESSAGE": [110, 50], "HBD_NODE": "n2",
        "__REALTIME_TIMESTAMP": "1700000000000000", "_HOSTNAME": "n1",
        "_UID": "0"}) + "\n\n")
    assert main(["history", "--file", str(tmp_path / "j2.json"), "--json"]) == 0
    (event,) = json.loads(capsys.readouterr().out)
    assert (event["event"], event["message"], event["timestamp_us"]) == ("node-dead", "n2",
                                                                         1700000000000000)
    (tmp_path / "bad.json").write_text("{\nnot json\n")
    assert main(["history", "--file", str(tmp_path / "bad.json")]) == 1
    assert "bad.json:1: not a JSON journal entry" in capsys.readouterr().err


def test_decode_is_encode_reversed() -> None:
    fields = {"MESSAGE": "a\nb=c", "HBD_GROUP": "10.0.0.1/24/eth0", "EMPTY": ""}
    assert decode(encode(fields)) == fields
    with pytest.raises(ValueError):
        decode(b"MESSAGE\n\x05\x00\x00\x00\x00\x00\x00\x00ab\n")


def test_corosync_ids_match_the_stack() -> None:
    from hbd import stack_corosync

    assert (history.QUORUM_ID, history.MEMBERSHIP_ID) == (stack_corosync.MSG_QUORUM,
                                                          stack_corosync.MSG_MEMBERSHIP)
