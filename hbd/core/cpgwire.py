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
  preference order; `failed`: groups whose start failed there (until
  `hbctl cleanup`), each a space-separated list; `leaving=1`: a graceful
  stop is under way.

Messages are not signed: Corosync's knet transport already encrypts and
authenticates every packet with the cluster's authkey (crypto_cipher and
crypto_hash in corosync.conf), and only local root processes may use its IPC.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from hbd.errors import WireError

PROTOCOL = 1
CPG_GROUP = "hbd"  # the CPG group name every hbd joins


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
            raise WireError(f"not a key=value line: {line[:40]!r}")
        if key != "group":
            fields[key] = value
            continue
        word, _, name = value.partition(" ")
        try:
            groups[name] = Announced(word)
        except ValueError:
            raise WireError(f"group {name!r}: unknown state {word!r}") from None
        if not name:
            raise WireError("a group line without a key")
    version = fields.get("hbd", "")
    if not version.isdigit() or int(version) < 1:
        raise WireError("no protocol version")
    if int(version) > PROTOCOL:
        raise WireError(f"protocol version {version} is newer than ours ({PROTOCOL})")
    if fields.get("type") != "state":
        raise WireError(f"unknown message type {fields.get('type')!r}")
    node, seq, leaving = fields.get("node", ""), fields.get("seq", "0"), fields.get("leaving", "0")
    if not node or " " in node:
        raise WireError("no node name")
    if not seq.isdigit() or leaving not in ("0", "1"):
        raise WireError("bad seq or leaving")
    return NodeState(node=node, seq=int(seq), groups=tuple(sorted(groups.items())),
                     declined=frozenset(fields.get("declined", "").split()),
                     preferred=frozenset(fields.get("preferred", "").split()),
                     failed=frozenset(fields.get("failed", "").split()), leaving=leaving == "1")
