"""Corosync 3 through its C client libraries (libcpg, libquorum, libvotequorum, libcmap).

A small typed ctypes adapter for `cluster_stack corosync`: each module wraps
one library, returns the core's event types (hbd.core.cpgview) and raises
hbd.errors.CorosyncError; the file descriptors go on the asyncio loop in
hbd.stack_corosync.  Nothing here polls or runs command-line tools.
"""

from hbd.corosync._lib import available

__all__ = ["available"]
