"""Names of hbd's D-Bus API: bus name, object paths, interfaces, polkit action.

Kept apart so that hbctl and the tests can use them without importing the
service.  Per-node and per-group object paths escape the name the way
systemd does (bus_label_escape): ASCII letters stay, digits stay unless
first, every other byte becomes `_xx` (two lower-case hex digits).
"""

from __future__ import annotations

BUS_NAME = "org.linuxha.hbd1"
OBJECT_PATH = "/org/linuxha/hbd1"
MANAGER_IFACE = "org.linuxha.hbd1.Manager"
NODE_IFACE = "org.linuxha.hbd1.Node"
GROUP_IFACE = "org.linuxha.hbd1.Group"
NODE_PATH_PREFIX = OBJECT_PATH + "/node/"
GROUP_PATH_PREFIX = OBJECT_PATH + "/group/"

# The one polkit action: anything that changes the cluster (Takeover, Release,
# Reload, Cleanup).  Reading state needs no action.
MANAGE_ACTION = "org.linuxha.hbd1.manage"
# Confirming by hand that a lost node is down (FenceConfirm) releases a takeover
# without a reset: wrong, it runs the groups twice.  Its own action, never kept.
FENCE_ACTION = "org.linuxha.hbd1.fence"


def escape_label(text: str) -> str:
    """One object-path element for any string (reversible, never empty)."""
    if not text:
        return "_"
    out = []
    for i, byte in enumerate(text.encode()):
        char = chr(byte)
        if ("a" <= char <= "z" or "A" <= char <= "Z") or (i > 0 and "0" <= char <= "9"):
            out.append(char)
        else:
            out.append(f"_{byte:02x}")
    return "".join(out)


def unescape_label(label: str) -> str:
    """Inverse of escape_label."""
    if label == "_":
        return ""
    data = bytearray()
    i = 0
    while i < len(label):
        if label[i] == "_":
            data.append(int(label[i + 1:i + 3], 16))
            i += 3
        else:
            data.append(ord(label[i]))
            i += 1
    return data.decode()


def node_path(name: str) -> str:
    return NODE_PATH_PREFIX + escape_label(name)


def group_path(key: str) -> str:
    return GROUP_PATH_PREFIX + escape_label(key)
