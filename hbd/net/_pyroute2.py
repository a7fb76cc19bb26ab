"""Import pyroute2's IPRoute without running pyroute2's package __init__.

pyroute2/__init__.py imports every netlink family the library supports
(conntrack, nftables, wireguard, ipvs, ndb with sqlite...), which costs
about 6 MB of resident memory in a daemon that only adds and removes
addresses.  The package is registered in sys.modules unexecuted, so only
the submodules hbd uses are loaded; any other attribute access on the
package runs the real __init__ first, so other users of pyroute2 in the
same process see the full library.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any


def _register_light_package() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def lookup(name: str) -> Any:
        if importlib.util.find_spec(f"pyroute2.{name}") is not None:
            return importlib.import_module(f"pyroute2.{name}")  # a submodule: just that
        # Someone wants more than IPRoute: run the whole package __init__ after all.
        del package.__getattr__
        loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = lookup  # type: ignore[method-assign]
    sys.modules["pyroute2"] = package


def load() -> tuple[Any, Any]:
    """(IPRoute class, NetlinkError class), importing as little as possible."""
    try:
        _register_light_package()
        from pyroute2.iproute.linux import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError
    except ImportError:
        light = sys.modules.get("pyroute2")
        if isinstance(light, types.ModuleType) and hasattr(light, "__getattr__"):
            del sys.modules["pyroute2"]
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError
    return IPRoute, NetlinkError
