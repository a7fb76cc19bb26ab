"""ctypes declarations for Corosync 3's client libraries (corotypes.h, cpg.h, quorum.h,
votequorum.h, cmap.h), and the one place cs_error_t becomes a CorosyncError.

Only what hbd calls is declared.  Layouts are copied from the Debian 12 headers
(corosync 3.1.7); every structure is plain C with natural alignment, which
ctypes reproduces.  The libraries are loaded by soname (libcpg.so.4, ...), so a
host needs the runtime packages that `corosync` depends on (libcpg4,
libquorum5, libvotequorum8, libcmap4), not the -dev packages.
"""

from __future__ import annotations

import ctypes
import functools
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_int,
    c_size_t,
    c_uint,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Any

from hbd.errors import CorosyncError

# --- corotypes.h -------------------------------------------------------------------

CS_OK = 1
CS_ERR_LIBRARY = 2
CS_ERR_TRY_AGAIN = 6
CS_ERR_BAD_HANDLE = 9
CS_DISPATCH_ALL = 2
CS_TRACK_CURRENT = 0x01
CS_TRACK_CHANGES = 0x02

CS_ERRORS = {
    2: "CS_ERR_LIBRARY (corosync is not running, or went away)", 3: "CS_ERR_VERSION",
    4: "CS_ERR_INIT", 5: "CS_ERR_TIMEOUT", 6: "CS_ERR_TRY_AGAIN",
    7: "CS_ERR_INVALID_PARAM", 8: "CS_ERR_NO_MEMORY", 9: "CS_ERR_BAD_HANDLE",
    10: "CS_ERR_BUSY", 11: "CS_ERR_ACCESS (not allowed to use corosync)",
    12: "CS_ERR_NOT_EXIST", 13: "CS_ERR_NAME_TOO_LONG", 14: "CS_ERR_EXIST",
    15: "CS_ERR_NO_SPACE", 16: "CS_ERR_INTERRUPT", 17: "CS_ERR_NAME_NOT_FOUND",
    18: "CS_ERR_NO_RESOURCES", 19: "CS_ERR_NOT_SUPPORTED", 20: "CS_ERR_BAD_OPERATION",
    21: "CS_ERR_FAILED_OPERATION", 22: "CS_ERR_MESSAGE_ERROR", 23: "CS_ERR_QUEUE_FULL",
    24: "CS_ERR_QUEUE_NOT_AVAILABLE", 25: "CS_ERR_BAD_FLAGS", 26: "CS_ERR_TOO_BIG",
    27: "CS_ERR_NO_SECTIONS", 28: "CS_ERR_CONTEXT_NOT_FOUND", 30: "CS_ERR_TOO_MANY_GROUPS",
    100: "CS_ERR_SECURITY",
}


def check(call: str, code: int) -> None:
    """Raise CorosyncError unless `code` is CS_OK."""
    if code != CS_OK:
        raise CorosyncError(call, code, CS_ERRORS.get(code, "unknown error"))


# --- cpg.h ---------------------------------------------------------------------------

CPG_MAX_NAME_LENGTH = 128
CPG_MODEL_V1 = 1
CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF = 0x01
CPG_TYPE_AGREED = 2


class CpgName(Structure):
    _fields_ = [("length", c_uint32), ("value", c_char * CPG_MAX_NAME_LENGTH)]


class CpgAddress(Structure):
    _fields_ = [("nodeid", c_uint32), ("pid", c_uint32), ("reason", c_uint32)]


class CpgRingId(Structure):
    _fields_ = [("nodeid", c_uint32), ("seq", c_uint64)]


class IoVec(Structure):
    _fields_ = [("iov_base", c_void_p), ("iov_len", c_size_t)]


CpgDeliverFn = CFUNCTYPE(None, c_uint64, POINTER(CpgName), c_uint32, c_uint32, c_void_p,
                         c_size_t)
CpgConfchgFn = CFUNCTYPE(None, c_uint64, POINTER(CpgName), POINTER(CpgAddress), c_size_t,
                         POINTER(CpgAddress), c_size_t, POINTER(CpgAddress), c_size_t)
CpgTotemConfchgFn = CFUNCTYPE(None, c_uint64, CpgRingId, c_uint32, POINTER(c_uint32))


class CpgModelV1Data(Structure):
    _fields_ = [("model", c_int), ("cpg_deliver_fn", CpgDeliverFn),
                ("cpg_confchg_fn", CpgConfchgFn), ("cpg_totem_confchg_fn", CpgTotemConfchgFn),
                ("flags", c_uint)]


# --- quorum.h ------------------------------------------------------------------------

QUORUM_MODEL_V1 = 1


class QuorumRingId(Structure):
    _fields_ = [("nodeid", c_uint32), ("seq", c_uint64)]


QuorumV1NotifyFn = CFUNCTYPE(None, c_uint64, c_uint32, QuorumRingId, c_uint32,
                             POINTER(c_uint32))
QuorumV1NodelistFn = CFUNCTYPE(None, c_uint64, QuorumRingId, c_uint32, POINTER(c_uint32),
                               c_uint32, POINTER(c_uint32), c_uint32, POINTER(c_uint32))


class QuorumModelV1Data(Structure):
    _fields_ = [("model", c_int), ("quorum_notify_fn", QuorumV1NotifyFn),
                ("nodelist_notify_fn", QuorumV1NodelistFn)]


# --- votequorum.h --------------------------------------------------------------------

VOTEQUORUM_QDEVICE_MAX_NAME_LEN = 255
VOTEQUORUM_INFO_QUORATE = 2


class VotequorumInfo(Structure):
    _fields_ = [("node_id", c_uint), ("node_state", c_uint), ("node_votes", c_uint),
                ("node_expected_votes", c_uint), ("highest_expected", c_uint),
                ("total_votes", c_uint), ("quorum", c_uint), ("flags", c_uint),
                ("qdevice_votes", c_uint),
                ("qdevice_name", c_char * VOTEQUORUM_QDEVICE_MAX_NAME_LEN)]


class VotequorumNode(Structure):
    _fields_ = [("nodeid", c_uint32), ("state", c_uint32)]


class VotequorumRingId(Structure):
    _fields_ = [("nodeid", c_uint32), ("seq", c_uint64)]


VqQuorumFn = CFUNCTYPE(None, c_uint64, c_uint64, c_uint32, c_uint32, POINTER(VotequorumNode))
VqExpectedFn = CFUNCTYPE(None, c_uint64, c_uint64, c_uint32)
VqNodelistFn = CFUNCTYPE(None, c_uint64, c_uint64, VotequorumRingId, c_uint32,
                         POINTER(c_uint32))


class VotequorumCallbacks(Structure):
    _fields_ = [("votequorum_quorum_notify_fn", VqQuorumFn),
                ("votequorum_expectedvotes_notify_fn", VqExpectedFn),
                ("votequorum_nodelist_notify_fn", VqNodelistFn)]


# --- cmap.h --------------------------------------------------------------------------

CMAP_KEYNAME_MAXLEN = 255
CMAP_VALUETYPE_UINT32 = 6
CMAP_VALUETYPE_STRING = 11

# --- loading -------------------------------------------------------------------------

H = c_uint64  # every Corosync handle is a uint64_t
PH = POINTER(c_uint64)
_PROTOTYPES: dict[str, dict[str, tuple[Any, ...]]] = {
    "libcpg.so.4": {
        "cpg_model_initialize": (PH, c_int, c_void_p, c_void_p),
        "cpg_finalize": (H,),
        "cpg_fd_get": (H, POINTER(c_int)),
        "cpg_dispatch": (H, c_int),
        "cpg_join": (H, POINTER(CpgName)),
        "cpg_leave": (H, POINTER(CpgName)),
        "cpg_mcast_joined": (H, c_int, POINTER(IoVec), c_uint),
        "cpg_local_get": (H, POINTER(c_uint)),
        "cpg_max_atomic_msgsize_get": (H, POINTER(c_uint32)),
    },
    "libquorum.so.5": {
        "quorum_model_initialize": (PH, c_int, c_void_p, POINTER(c_uint32), c_void_p),
        "quorum_finalize": (H,),
        "quorum_fd_get": (H, POINTER(c_int)),
        "quorum_dispatch": (H, c_int),
        "quorum_trackstart": (H, c_uint),
        "quorum_getquorate": (H, POINTER(c_int)),
    },
    "libvotequorum.so.8": {
        "votequorum_initialize": (PH, POINTER(VotequorumCallbacks)),
        "votequorum_finalize": (H,),
        "votequorum_getinfo": (H, c_uint, POINTER(VotequorumInfo)),
    },
    "libcmap.so.4": {
        "cmap_initialize": (PH,),
        "cmap_finalize": (H,),
        "cmap_get": (H, c_char_p, c_void_p, POINTER(c_size_t), POINTER(c_int)),
    },
}


@functools.cache
def library(soname: str) -> Any:
    """The loaded library with hbd's prototypes applied.  Raises CorosyncError if absent."""
    try:
        lib = ctypes.CDLL(soname, use_errno=True)
    except OSError as err:
        package = {"libcpg.so.4": "libcpg4", "libquorum.so.5": "libquorum5",
                   "libvotequorum.so.8": "libvotequorum8", "libcmap.so.4": "libcmap4"}[soname]
        raise CorosyncError("dlopen", 0, f"cannot load {soname} ({err}); install the "
                            f"Debian package {package} (a dependency of corosync)") from None
    for name, argtypes in _PROTOTYPES[soname].items():
        function = getattr(lib, name)
        function.argtypes = list(argtypes)
        function.restype = c_int
    return lib


def available() -> str | None:
    """Why the client libraries cannot be used here, or None when they can."""
    try:
        for soname in _PROTOTYPES:
            library(soname)
    except CorosyncError as err:
        return str(err)
    return None
