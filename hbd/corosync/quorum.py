"""libquorum and libvotequorum: Corosync's quorum decision and its numbers.

`Quorum` uses libquorum's V1 model because its notification names the totem
ring it belongs to: hbd acts on a quorum decision only for the ring CPG last
reported (see hbd.core.placement).  `VoteQuorum` reads the votes behind the
decision (votequorum_getinfo) for admins.
"""

from __future__ import annotations

import logging
from ctypes import byref, c_int, c_uint32, c_uint64, c_void_p, cast
from dataclasses import dataclass
from typing import Any

from hbd.core.cpgview import QuorumNotice
from hbd.corosync import _lib
from hbd.errors import CorosyncError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoteInfo:
    votes: int  # this node's votes
    expected: int  # expected votes (the cluster's, as votequorum keeps them)
    total: int  # votes present in this partition
    quorum: int  # votes needed
    quorate: bool


class _Client:
    """What the three quorum-side handles share: fd, dispatch, finalize."""

    _prefix = ""

    def __init__(self, soname: str) -> None:
        self._lib = _lib.library(soname)
        self._handle = c_uint64()
        self._open = False
        self._failure: BaseException | None = None

    def _call(self, name: str, *args: Any) -> None:
        _lib.check(f"{self._prefix}_{name}",
                   getattr(self._lib, f"{self._prefix}_{name}")(self._handle, *args))

    @property
    def fd(self) -> int:
        fd = c_int()
        self._call("fd_get", byref(fd))
        return fd.value

    def _dispatch(self) -> None:
        code = getattr(self._lib, f"{self._prefix}_dispatch")(self._handle, _lib.CS_DISPATCH_ALL)
        failure, self._failure = self._failure, None
        if failure is not None:
            raise CorosyncError(f"{self._prefix}_dispatch", 0, f"callback failed: {failure}")
        _lib.check(f"{self._prefix}_dispatch", code)

    def close(self) -> None:
        if self._open:
            self._open = False
            code = getattr(self._lib, f"{self._prefix}_finalize")(self._handle)
            if code != _lib.CS_OK:
                log.debug("%s_finalize: %s", self._prefix, _lib.CS_ERRORS.get(code, code))


class Quorum(_Client):
    """libquorum, model V1: quorate + ring id + member node ids, on every change."""

    _prefix = "quorum"

    def __init__(self) -> None:
        super().__init__("libquorum.so.5")
        self._notices: list[QuorumNotice] = []
        self._notify = _lib.QuorumV1NotifyFn(self._on_quorum)  # alive as long as the handle
        self._model = _lib.QuorumModelV1Data(model=_lib.QUORUM_MODEL_V1,
                                             quorum_notify_fn=self._notify)
        quorum_type = c_uint32()
        _lib.check("quorum_model_initialize", self._lib.quorum_model_initialize(
            byref(self._handle), _lib.QUORUM_MODEL_V1, cast(byref(self._model), c_void_p),
            byref(quorum_type), None))
        self._open = True
        if quorum_type.value != 1:  # QUORUM_SET: a quorum provider (votequorum) is loaded
            raise CorosyncError("quorum_model_initialize", 0, "corosync runs without a quorum "
                                "provider; set 'provider: corosync_votequorum' in corosync.conf")
        # CS_TRACK_CURRENT: the current decision comes at once, as a first notice
        self._call("trackstart", _lib.CS_TRACK_CURRENT | _lib.CS_TRACK_CHANGES)

    def dispatch(self) -> list[QuorumNotice]:
        self._dispatch()
        notices, self._notices = self._notices, []
        return notices

    def _on_quorum(self, _handle: int, quorate: int, ring: _lib.QuorumRingId, count: int,
                   nodes: Any) -> None:
        try:
            self._notices.append(QuorumNotice(bool(quorate), (int(ring.nodeid), int(ring.seq)),
                                              tuple(int(nodes[i]) for i in range(count))))
        except BaseException as err:  # never let an exception cross into C
            self._failure = err


class VoteQuorum(_Client):
    """libvotequorum, for its numbers only (no notifications).

    `info()` is a request that waits for corosync's answer (seconds when
    corosync is shutting down), so the daemon calls `read_votes()` in a
    worker thread, on a connection of its own.
    """

    _prefix = "votequorum"

    def __init__(self) -> None:
        super().__init__("libvotequorum.so.8")
        self._callbacks = _lib.VotequorumCallbacks()  # all NULL: nothing is tracked
        _lib.check("votequorum_initialize", self._lib.votequorum_initialize(
            byref(self._handle), byref(self._callbacks)))
        self._open = True

    def info(self) -> VoteInfo:
        raw = _lib.VotequorumInfo()
        self._call("getinfo", 0, byref(raw))  # node 0: this node
        return VoteInfo(votes=raw.node_votes, expected=raw.node_expected_votes,
                        total=raw.total_votes, quorum=raw.quorum,
                        quorate=bool(raw.flags & _lib.VOTEQUORUM_INFO_QUORATE))


def read_votes() -> VoteInfo:
    """This node's votequorum numbers, on a short connection of its own (blocking).

    Raises CorosyncError.
    """
    client = VoteQuorum()
    try:
        return client.info()
    finally:
        client.close()
