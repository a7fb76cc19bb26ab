"""libcpg: hbd's connection to its Corosync process group.

A thin typed wrapper: `Cpg()` connects (CPG_MODEL_V1, with totem ring
changes delivered too), `join()` enters the group, `fd` goes on the event
loop, and `dispatch()` returns what the library delivered as core events
(Confchg, TotemChange, and (sender, payload) messages), in order.  The C
callbacks only copy data into Python objects; nothing is called back into
the library from inside them.  Every failure is a CorosyncError.
"""

from __future__ import annotations

import ctypes
import logging
from ctypes import byref, c_int, c_uint, c_uint32, c_uint64, c_void_p, cast
from typing import Any

from hbd.core.cpgview import Confchg, CpgMember, MemberId, TotemChange
from hbd.corosync import _lib
from hbd.errors import CorosyncError

log = logging.getLogger(__name__)

CpgEvent = Confchg | TotemChange | tuple[MemberId, bytes]


def _members(array: Any, count: int) -> tuple[CpgMember, ...]:
    return tuple(CpgMember(int(array[i].nodeid), int(array[i].pid), int(array[i].reason))
                 for i in range(count))


def _name(text: str) -> _lib.CpgName:
    raw = text.encode()
    if len(raw) > _lib.CPG_MAX_NAME_LENGTH:
        raise CorosyncError("cpg_join", 13, "group name too long")
    return _lib.CpgName(len(raw), raw)


class Cpg:
    def __init__(self) -> None:
        self._lib = _lib.library("libcpg.so.4")
        self._events: list[CpgEvent] = []
        self._failure: BaseException | None = None
        # Keep the C callback objects alive as long as the handle.
        self._callbacks = (_lib.CpgDeliverFn(self._on_deliver),
                           _lib.CpgConfchgFn(self._on_confchg),
                           _lib.CpgTotemConfchgFn(self._on_totem))
        self._model = _lib.CpgModelV1Data(_lib.CPG_MODEL_V1, *self._callbacks,
                                          _lib.CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF)
        self._handle = c_uint64()
        _lib.check("cpg_model_initialize", self._lib.cpg_model_initialize(
            byref(self._handle), _lib.CPG_MODEL_V1, cast(byref(self._model), c_void_p), None))
        self._open = True
        self._group: _lib.CpgName | None = None

    # --- the library's calls ---------------------------------------------------------------

    @property
    def fd(self) -> int:
        fd = c_int()
        _lib.check("cpg_fd_get", self._lib.cpg_fd_get(self._handle, byref(fd)))
        return fd.value

    def local_nodeid(self) -> int:
        nodeid = c_uint()
        _lib.check("cpg_local_get", self._lib.cpg_local_get(self._handle, byref(nodeid)))
        return nodeid.value

    def max_message(self) -> int:
        size = c_uint32()
        _lib.check("cpg_max_atomic_msgsize_get",
                   self._lib.cpg_max_atomic_msgsize_get(self._handle, byref(size)))
        return size.value

    def join(self, group: str) -> None:
        self._group = _name(group)
        _lib.check("cpg_join", self._lib.cpg_join(self._handle, byref(self._group)))

    def leave(self) -> None:
        if self._group is not None and self._open:
            _lib.check("cpg_leave", self._lib.cpg_leave(self._handle, byref(self._group)))

    def send(self, payload: bytes) -> bool:
        """Multicast in agreed order; False when Corosync asks to try again (flow control)."""
        buffer = ctypes.create_string_buffer(payload, len(payload))
        iov = _lib.IoVec(cast(buffer, c_void_p), len(payload))
        code = self._lib.cpg_mcast_joined(self._handle, _lib.CPG_TYPE_AGREED, byref(iov), 1)
        if code == _lib.CS_ERR_TRY_AGAIN:
            return False
        _lib.check("cpg_mcast_joined", code)
        return True

    def dispatch(self) -> list[CpgEvent]:
        """Everything pending on the fd, in delivery order.  Raises CorosyncError."""
        code = self._lib.cpg_dispatch(self._handle, _lib.CS_DISPATCH_ALL)
        events, self._events = self._events, []
        failure, self._failure = self._failure, None
        if failure is not None:
            raise CorosyncError("cpg_dispatch", 0, f"callback failed: {failure}")
        _lib.check("cpg_dispatch", code)
        return events

    def close(self) -> None:
        if self._open:
            self._open = False
            code = self._lib.cpg_finalize(self._handle)
            if code != _lib.CS_OK:
                log.debug("cpg_finalize: %s", _lib.CS_ERRORS.get(code, code))

    # --- C callbacks (inside cpg_dispatch) --------------------------------------------------

    def _on_deliver(self, _handle: int, _group: Any, nodeid: int, pid: int, msg: int | None,
                    size: int) -> None:
        try:
            self._events.append(((int(nodeid), int(pid)), ctypes.string_at(msg, size)
                                  if msg else b""))
        except BaseException as err:  # never let an exception cross into C
            self._failure = err

    def _on_confchg(self, _handle: int, _group: Any, members: Any, n_members: int, left: Any,
                    n_left: int, joined: Any, n_joined: int) -> None:
        try:
            self._events.append(Confchg(_members(members, n_members), _members(left, n_left),
                                        _members(joined, n_joined)))
        except BaseException as err:
            self._failure = err

    def _on_totem(self, _handle: int, ring: _lib.CpgRingId, count: int, nodes: Any) -> None:
        try:
            self._events.append(TotemChange((int(ring.nodeid), int(ring.seq)),
                                            tuple(int(nodes[i]) for i in range(count))))
        except BaseException as err:
            self._failure = err
