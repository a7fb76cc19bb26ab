"""hbd's messages in its Corosync CPG group (cluster_stack corosync).

There is one kind of message: a node's whole state, sent whenever it changes
and whenever a process joins the group.  Being whole, every message can be
applied on its own, and a node that joins learns everything from the next
message of each member.  It is UTF-8 text, one `key=value` per line:

    hbd=1
    type=state
    node=n2
    seq=7
    leaving=0
    declined=
    preferred=
    failed=
    group=running 10.0.0.10/24/eth0
    group=claim IPaddr::10.0.0.11

* `hbd`: the protocol version.  A receiver refuses a higher version; keys it
  does not know are ignored, so later versions may add some.
* `group=STATE KEY`, one line for every group the sender does not have
  stopped: `claim` (asks for it, see hbd.core.cpgview), `starting`,
  `running`, `stopping`, `blocked`.  Group keys and node names never hold
  white space (haresources and ha.cf split on it).
* `declined`: groups the sender will not run (`hbctl release`, standby);
  `preferred`: groups it took over (`hbctl takeover`) and wants before the
  preference order; `failed`: groups the sender may not run — its start
  failed there, or the group is unfit there (hbd.core.monitoring: a monitor
  failed beyond its restarts, a tracked link is down) until `hbctl cleanup`
  or the expiry — each a space-separated list; `leaving=1`: a graceful stop
  is under way.  Unfit groups travel in `failed` rather than a key of their
  own so that every member, hbds that predate monitoring included, leaves
  the sender out of the group's candidates: the views must agree.

Messages are not signed: Corosync's knet transport already encrypts and
authenticates every packet with the cluster's authkey (crypto_cipher and
crypto_hash in corosync.conf), and only local root processes may use its IPC.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from hbd.core.fields import shown
from hbd.core.parsing import is_decimal
from hbd.errors import WireError

PROTOCOL = 1
CPG_GROUP = "hbd"  # the CPG group name every hbd joins
# Bounds on what a member may announce, checked in decode (a message that breaks one
# is refused whole).  Node names are `uname -n` (at most 64 bytes on Linux); group keys
# are haresources keys; a cluster with thousands of groups is not one hbd serves.
NAME_MAX = 64
KEY_MAX = 1024
GROUPS_MAX = 4096


class Announced(enum.Enum):
    """A group as its node announces it; a stopped group is not listed."""

    CLAIM = "claim"  # asked for, not started: the agreed order decides (cpgview)
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    BLOCKED = "blocked"  # a stop failed: may still be running


ACTIVE = frozenset({Announced.STARTING, Announced.RUNNING, Announced.STOPPING,
                    Announced.BLOCKED})


@dataclass(frozen=True)
class NodeState:
    """What one hbd process says about itself."""

    node: str  # its ha.cf node name
    seq: int = 0  # counts the sender's messages (logs only)
    groups: tuple[tuple[str, Announced], ...] = ()  # sorted by key; stopped ones absent
    declined: frozenset[str] = field(default_factory=frozenset)
    preferred: frozenset[str] = field(default_factory=frozenset)
    failed: frozenset[str] = field(default_factory=frozenset)
    leaving: bool = False

    def group(self, key: str) -> Announced | None:
        """The announced state of a group, None when stopped."""
        for name, state in self.groups:
            if name == key:
                return state
        return None

    def same_as(self, other: NodeState | None) -> bool:
        """Equal but for `seq`."""
        return other is not None and (self.node, self.groups, self.declined, self.preferred,
                                       self.failed, self.leaving) == (
            other.node, other.groups, other.declined, other.preferred, other.failed,
            other.leaving)


def encode(state: NodeState) -> bytes:
    lines = [f"hbd={PROTOCOL}", "type=state", f"node={state.node}", f"seq={state.seq}",
             f"leaving={int(state.leaving)}", f"declined={' '.join(sorted(state.declined))}",
             f"preferred={' '.join(sorted(state.preferred))}",
             f"failed={' '.join(sorted(state.failed))}"]
    lines += [f"group={value.value} {key}" for key, value in state.groups]
    return ("\n".join(lines) + "\n").encode()


def decode(data: bytes) -> NodeState:
    """Parse one message.  Raises WireError for anything that is not a valid state."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise WireError("not UTF-8 text") from None
    fields: dict[str, str] = {}
    groups: dict[str, Announced] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            raise WireError(f"not a key=value line: '{shown(line, 40)}'")
        if key != "group":
            fields[key] = value
            continue
        word, _, name = value.partition(" ")
        try:
            groups[_key(name)] = Announced(word)
        except ValueError:
            raise WireError(f"group '{shown(name)}': unknown state '{shown(word)}'") from None
        if len(groups) > GROUPS_MAX:
            raise WireError(f"too many groups (more than {GROUPS_MAX})")
    version = fields.get("hbd", "")
    # is_decimal: ASCII digits, at most 18 ("²".isdigit() is true, and int() of 5000
    # digits raises ValueError: both used to escape as something other than WireError)
    if not is_decimal(version) or int(version) < 1:
        raise WireError("no protocol version")
    if int(version) > PROTOCOL:
        raise WireError(f"protocol version {version} is newer than ours ({PROTOCOL})")
    if fields.get("type") != "state":
        raise WireError(f"unknown message type '{shown(fields.get('type') or '')}'")
    node, seq, leaving = fields.get("node", ""), fields.get("seq", "0"), fields.get("leaving", "0")
    if not node:
        raise WireError("no node name")
    if not _word(node, NAME_MAX):
        raise WireError(f"bad node name '{shown(node)}'")
    if not is_decimal(seq) or leaving not in ("0", "1"):
        raise WireError("bad seq or leaving")
    lists = {name: frozenset(_key(k) for k in fields.get(name, "").split())
             for name in ("declined", "preferred", "failed")}
    if any(len(keys) > GROUPS_MAX for keys in lists.values()):
        raise WireError(f"too many groups (more than {GROUPS_MAX})")
    return NodeState(node=node, seq=int(seq), groups=tuple(sorted(groups.items())),
                     declined=lists["declined"], preferred=lists["preferred"],
                     failed=lists["failed"], leaving=leaving == "1")


def _word(text: str, limit: int) -> bool:
    """Printable, no white space, 1..limit characters: safe in a log line.

    Not ASCII only: a haresources key may name a path in any script.  Control and
    format characters (escape sequences, bidi overrides) are not printable.
    """
    return 0 < len(text) <= limit and text.isprintable() and not any(c.isspace() for c in text)


def _key(text: str) -> str:
    if not text:
        raise WireError("a group line without a key")
    if not _word(text, KEY_MAX):
        raise WireError(f"bad group key '{shown(text)}'")
    return text
