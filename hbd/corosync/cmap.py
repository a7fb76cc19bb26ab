"""libcmap: the few configuration values hbd reads from a running Corosync.

`nodelist()` gives each configured node's id and name (nodelist.node.N.name,
else its ring0_addr), so hbd can name the nodes Corosync reports by id;
`token_ms()` reads the runtime token timeout.  Each call opens and closes its
own short connection.
"""

from __future__ import annotations

import ctypes
from ctypes import byref, c_int, c_size_t, c_uint32, c_uint64
from dataclasses import dataclass

from hbd.corosync import _lib
from hbd.errors import CorosyncError

MAX_NODES = 384  # far beyond what corosync supports


@dataclass(frozen=True)
class ConfiguredNode:
    nodeid: int
    name: str  # `name`, else ring0_addr


class Cmap:
    def __init__(self) -> None:
        self._lib = _lib.library("libcmap.so.4")
        self._handle = c_uint64()
        _lib.check("cmap_initialize", self._lib.cmap_initialize(byref(self._handle)))

    def __enter__(self) -> Cmap:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._lib.cmap_finalize(self._handle)

    def _get(self, key: str) -> tuple[int, bytes] | None:
        """(cmap type, raw value) or None when the key does not exist."""
        buffer = ctypes.create_string_buffer(_lib.CMAP_KEYNAME_MAXLEN + 1)
        size = c_size_t(len(buffer))
        kind = c_int()
        code = self._lib.cmap_get(self._handle, key.encode(), buffer, byref(size), byref(kind))
        if code == 12:  # CS_ERR_NOT_EXIST
            return None
        _lib.check(f"cmap_get {key}", code)
        return kind.value, buffer.raw[:size.value]

    def get_string(self, key: str) -> str | None:
        value = self._get(key)
        if value is None or value[0] != _lib.CMAP_VALUETYPE_STRING:
            return None
        return value[1].rstrip(b"\0").decode(errors="replace")

    def get_uint32(self, key: str) -> int | None:
        value = self._get(key)
        if value is None or value[0] != _lib.CMAP_VALUETYPE_UINT32 or len(value[1]) < 4:
            return None
        return c_uint32.from_buffer_copy(value[1][:4]).value

    def nodelist(self) -> list[ConfiguredNode]:
        nodes = []
        for n in range(MAX_NODES):
            nodeid = self.get_uint32(f"nodelist.node.{n}.nodeid")
            name = (self.get_string(f"nodelist.node.{n}.name")
                    or self.get_string(f"nodelist.node.{n}.ring0_addr"))
            if nodeid is None and name is None:
                break
            if nodeid is not None:
                nodes.append(ConfiguredNode(nodeid, (name or f"node{nodeid}").lower()))
        return nodes


def configured_nodes() -> list[ConfiguredNode]:
    """The nodelist of the running corosync.  Raises CorosyncError."""
    with Cmap() as cmap:
        return cmap.nodelist()


def token_ms() -> int | None:
    """The token timeout corosync runs with (runtime.config.totem.token)."""
    try:
        with Cmap() as cmap:
            return cmap.get_uint32("runtime.config.totem.token")
    except CorosyncError:
        return None
