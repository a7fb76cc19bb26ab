"""Turn the engine's events into log lines an admin recognises.

Wording follows Heartbeat's own lines ("Link n2:eth0 dead.", "node n2: is
dead", "Late heartbeat: Node n2: interval 700 ms") so existing log watchers
keep working.  Each key event carries a stable MESSAGE_ID and HBD_* fields
in `extra=`, which the journal handler turns into structured fields
(`journalctl MESSAGE_ID=...`, `journalctl HBD_NODE=n2`).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from hbd.core import actions as a
from hbd.core.telemetry import Failover

log = logging.getLogger("hbd.cluster")


class MessageId:
    NODE_DEAD = "2aeeb9338655464a9b567c9ea028cee3"
    NODE_UP = "99db8876527046bb8aa68054baa752e0"
    NODE_STATUS = "fdbb32bf7a534bd28d6f409fb778eb4f"
    LOCAL_STATUS = "14ab3158606444d5aad3986082dc53e0"
    LINK_DOWN = "bb587eadb3874810bd1b8126b067b5c7"
    LINK_UP = "f9079ca478f44796b19838e9ca7cdb7f"
    TAKEOVER = "34267dbc16344983be57f78ae6a419a2"
    RELEASE = "8dada740ecaa477d9d020e5576c4bc5b"
    AUTH_FAILURE = "aabee2ce1f1747b3aaa0c657f62d950d"
    SPLIT_BRAIN = "f2360626026049ce8e6a16cab8f68549"
    RESOURCE_FAILURE = "97dc079cd5184c939d051497cd8e33af"
    LATE_HEARTBEAT = "2d0771e739d84d66939ece68d446f5d5"
    PEER_RESTART = "037b0acba6fa4f6f9a9507c4d5546e2b"
    PARTITION_HEALED = "7880737a742a431d865aa114019e3a28"
    LOST_PACKETS = "fd6469fb6e884b70850fc435416e0c99"
    GROUP_STATE = "aab95405cfac4b4583883e8b58490f3a"
    FENCING = "729247f18b4e4bbcb0f6f2142dbd8478"  # a peer's fencing moved
    FENCE_DEVICE = "46aa06854ca14f99a95951696e86a2bd"  # a fence device status check changed
    HOOK_FAILED = "ce5f545a98e640bd94c746c3c5bb99f9"
    # resource monitoring (hbd.core.health, hbd.core.recovery)
    MONITOR_FAILURE = "6646effe062b4ac096d67490f5f41694"  # a check failed
    GROUP_RESTART = "b6f44628b1594ca39c52f9af04f0b448"  # restarted in place after a monitor failure
    GROUP_MOVE = "422fe2bdb36146138ac48a594d984f36"  # handed to the peer: unfit here
    GROUP_STRANDED = "fd36818a2e4040f4a7e9c509a0e35265"  # nobody can take it: stopped
    GROUP_UNFIT = "826735c438a248a192fed6e7bef11b87"  # marked unfit here
    GROUP_FIT = "a110608e89494fdc9c0ef30ff6d1e69b"  # may run here again
    # link tracking (hbd.core.linktrack)
    TRACKED_LINK_DOWN = "9b2d54b0b29c48518e98b84e954212d2"  # lost carrier, down, gone
    TRACKED_LINK_UP = "6f3f908919d2437aba06fc6160340702"  # up again (with carrier)
    ADDRESS_REMOVED = "7e026cf747024c5c8cd3e55a639d937a"  # someone else removed our address
    # the event loop ran hbd's timer late (hbd.looplag)
    LOOP_STALL = "5b0a4d5e2f6c4e0f9d3a7c1e8b2f6a41"


_RECOVERY: dict[str, tuple[int, str, str]] = {
    "restart": (logging.WARNING, MessageId.GROUP_RESTART,
                "group %s: restarting in place after a monitor failure (%s)"),
    "move": (logging.WARNING, MessageId.GROUP_MOVE, "group %s: handing it to the peer, unfit "
             "here (%s)"),
    "stop": (logging.CRITICAL, MessageId.GROUP_STRANDED, "group %s: failed here and %s: "
             "stopped and left stopped"),
    "unfit": (logging.WARNING, MessageId.GROUP_UNFIT, "group %s: unfit on this node (%s)"),
    "fit": (logging.INFO, MessageId.GROUP_FIT, "group %s: may run on this node again (%s)"),
}


# A group's start or stop under way: when it began (monotonic) and the id that ties
# its TAKEOVER/RELEASE entry to the GROUP_STATE entry that ends it (HBD_MOVE), which
# then carries HBD_DURATION_MS (the start or stop itself) and, when the start ended
# a failover, HBD_FAILOVER_MS (from its trigger: hbd.core.telemetry, the figure of
# the metrics' histogram) and HBD_FAILOVER_REASON: `hbctl history` shows both.
_moving: dict[str, tuple[float, str]] = {}
_MOVING_STATES = frozenset({"starting", "stopping"})


def _began(group: str) -> str:
    move = os.urandom(16).hex()  # an opaque id (the uuid module costs memory for this)
    _moving[group] = (time.monotonic(), move)
    return move


def _ended(event: a.GroupStateChanged, failover: Failover | None) -> dict[str, str]:
    """HBD_MOVE, HBD_DURATION_MS and a failover's HBD_FAILOVER_MS and
    HBD_FAILOVER_REASON for the entry of a group that finished moving."""
    if event.old not in _MOVING_STATES or event.new == event.old:
        return {}  # a failed start goes on to stopping: that ends the takeover too
    began = _moving.pop(event.group, None)
    if began is None:
        return {}
    took_ms = max(0, round((time.monotonic() - began[0]) * 1000))
    fields = {"move": began[1], "duration_ms": str(took_ms)}
    if failover is not None and failover.group == event.group:
        fields["failover_ms"] = str(max(0, round(failover.seconds * 1000)))
        fields["failover_reason"] = failover.reason
    return fields


def _emit(level: int, message_id: str, text: str, *args: object, **fields: str) -> None:
    extra: dict[str, Any] = {"MESSAGE_ID": message_id}
    for key, value in fields.items():
        extra[f"HBD_{key.upper()}"] = value
    log.log(level, text, *args, extra=extra)


def log_event(event: object, failover: Failover | None = None) -> bool:
    """Log one engine event; return False if it is not an event this module knows.
    `failover`: the one a GroupStateChanged ended (Telemetry.take_failover)."""
    if isinstance(event, a.NodeStatusChanged):
        if event.local:
            _emit(logging.INFO, MessageId.LOCAL_STATUS, "Local status now set to: '%s'",
                  event.new, node=event.node)
        elif event.new == "dead":
            _emit(logging.WARNING, MessageId.NODE_DEAD, "node %s: is dead", event.node,
                  node=event.node)
        elif event.old in ("dead", "init") and event.new in ("up", "active"):
            _emit(logging.INFO, MessageId.NODE_UP, "Status update for node %s: status %s",
                  event.node, event.new, node=event.node)
        else:
            _emit(logging.INFO, MessageId.NODE_STATUS, "Status update for node %s: status %s",
                  event.node, event.new, node=event.node)
    elif isinstance(event, a.LinkStatusChanged):
        if event.up:
            _emit(logging.INFO, MessageId.LINK_UP, "Link %s:%s up.", event.node, event.link,
                  node=event.node, link=event.link)
        else:
            _emit(logging.WARNING, MessageId.LINK_DOWN, "Link %s:%s dead.", event.node,
                  event.link, node=event.node, link=event.link)
    elif isinstance(event, a.LateHeartbeat):
        level = logging.CRITICAL if event.beyond_deadtime else logging.WARNING
        suffix = " (> deadtime)" if event.beyond_deadtime else ""
        _emit(level, MessageId.LATE_HEARTBEAT, "Late heartbeat: Node %s: interval %d ms%s",
              event.node, event.gap_ms, suffix, node=event.node)
    elif isinstance(event, a.PeerRestarted):
        _emit(logging.INFO, MessageId.PEER_RESTART, "Heartbeat restart on node %s "
              "(generation %d)", event.node, event.generation, node=event.node)
    elif isinstance(event, a.PartitionHealed):
        _emit(logging.CRITICAL, MessageId.PARTITION_HEALED,
              "Cluster node %s returning after partition.", event.node, node=event.node)
    elif isinstance(event, a.BadPackets):
        _emit(logging.WARNING, MessageId.AUTH_FAILURE,
              "dropped %d packet(s) on %s: %s (last claimed sender: %s)",
              event.count, event.link, event.reason, event.last_source,
              node=event.last_source, link=event.link)
    elif isinstance(event, a.LostPackets):
        count = event.last - event.first + 1
        _emit(logging.WARNING, MessageId.LOST_PACKETS, "%d lost packet(s) for [%s] [%d:%d]",
              count, event.node, event.first - 1, event.last + 1, node=event.node)
    elif isinstance(event, a.StartGroup):
        _emit(logging.INFO, MessageId.TAKEOVER, "taking over group %s (%s)", event.group,
              event.reason, group=event.group, reason=event.reason, move=_began(event.group))
    elif isinstance(event, a.StopGroup):
        _emit(logging.INFO, MessageId.RELEASE, "releasing group %s (%s)", event.group,
              event.reason, group=event.group, reason=event.reason, move=_began(event.group))
    elif isinstance(event, a.GroupStateChanged):
        _emit(logging.INFO, MessageId.GROUP_STATE, "group %s: %s -> %s%s", event.group,
              event.old, event.new, f" (on {event.owner})" if event.owner else "",
              group=event.group, node=event.owner, previous=event.old, state=event.new,
              **_ended(event, failover))
    elif isinstance(event, a.ResourcesHeldChanged):
        _emit(logging.INFO, MessageId.GROUP_STATE, "resources held: %s -> %s", event.old,
              event.new)
    elif isinstance(event, a.SplitBrain):
        _emit(logging.CRITICAL, MessageId.SPLIT_BRAIN, "split brain on group %s: %s keeps it; %s",
              event.group, event.keeper, event.detail, group=event.group, node=event.keeper,
              reason=event.detail)
    elif isinstance(event, a.GroupFailed):
        message_id = (MessageId.MONITOR_FAILURE if event.operation == "monitor"
                      else MessageId.RESOURCE_FAILURE)
        _emit(logging.ERROR, message_id, "group %s: %s failed: %s",
              event.group, event.operation, event.detail, group=event.group,
              operation=event.operation, reason=event.detail)
    elif isinstance(event, a.FenceStateChanged):
        level = {"failed": logging.CRITICAL, "waiting-confirmation": logging.CRITICAL,
                 "fenced": logging.WARNING, "fencing": logging.WARNING,
                 "delayed": logging.WARNING}.get(event.new, logging.INFO)
        _emit(level, MessageId.FENCING, "fencing of node %s: %s -> %s (%s)", event.node,
              event.old, event.new, event.detail, node=event.node, fencing=event.new,
              reason=event.detail)
    elif isinstance(event, a.FenceDeviceStatus):
        _emit(logging.INFO if event.ok else logging.ERROR, MessageId.FENCE_DEVICE,
              "STONITH device status: %s (%s)", "OK" if event.ok else "FAILED", event.detail,
              fence_device="ok" if event.ok else "failed")
    elif isinstance(event, a.GroupRecovery):
        level, message_id, text = _RECOVERY[event.what]
        _emit(level, message_id, text, event.group, event.detail, group=event.group,
              reason=event.detail)
    elif isinstance(event, a.TrackedLinkChanged):
        groups = ", ".join(event.groups)
        if event.new == "up":
            _emit(logging.INFO, MessageId.TRACKED_LINK_UP, "tracked interface %s: %s -> up "
                  "(groups %s)", event.interface, event.old, groups, link=event.interface)
        else:
            _emit(logging.WARNING, MessageId.TRACKED_LINK_DOWN, "tracked interface %s: %s -> "
                  "%s (groups %s)", event.interface, event.old, event.new, groups,
                  link=event.interface)
    elif isinstance(event, a.AddressRemoved):
        _emit(logging.WARNING, MessageId.ADDRESS_REMOVED, "group %s: address %s was removed "
              "from %s by someone else", event.group, event.address, event.interface,
              group=event.group, link=event.interface)
    elif isinstance(event, a.Notice):
        level = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                 "error": logging.ERROR}.get(event.level, logging.INFO)
        log.log(level, "%s", event.text)
    else:
        return False
    return True
