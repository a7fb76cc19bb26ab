"""Typed declarations of D-Bus members on top of dbus-next's decorators.

dbus-next reads a member's D-Bus signature from its Python annotations
(`def Takeover(self, scope: 's') -> '':`), which mypy and ruff cannot accept
as types.  Here the D-Bus types are given to the decorator instead
(`@dbus_method(scope="s")`) and handed to dbus-next through the function's
`__signature__`, so the interface classes keep ordinary Python annotations.
Every method is wrapped by `errors.mapped`, so no hbd error or
traceback leaks to a caller.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from dbus_next.constants import PropertyAccess
from dbus_next.service import dbus_property, method, signal

from hbd.bus.errors import mapped

F = TypeVar("F", bound=Callable[..., Any])


def _declare(fn: Callable[..., Any], args: Mapping[str, str], out: str) -> None:
    """Replace fn's annotations, as inspect (and so dbus-next) sees them, by D-Bus types."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    names = [p.name for p in params[1:]]  # params[0] is self
    if sorted(names) != sorted(args):
        raise TypeError(f"{fn.__name__}: D-Bus types needed for {names}, got {sorted(args)}")
    typed = [params[0], *(p.replace(annotation=args[p.name]) for p in params[1:])]
    vars(fn)["__signature__"] = sig.replace(
        parameters=typed, return_annotation=out or inspect.Signature.empty)


def dbus_method(out: str = "", **args: str) -> Callable[[F], F]:
    """Export an async method: `@dbus_method("o", name="s")` takes s, returns o."""

    def decorate(fn: F) -> F:
        wrapper = mapped(fn)
        _declare(wrapper, args, out)
        declared: F = method()(wrapper)
        return declared

    return decorate


def dbus_signal(**args: str) -> Callable[[F], F]:
    """Export a signal `@dbus_signal(node="s", status="s")`: calling the method emits it
    with the arguments it returns (a list if several), named as given here."""

    def decorate(fn: F) -> F:
        params = list(inspect.signature(fn).parameters)[1:]
        _declare(fn, {p: "" for p in params}, "".join(args.values()))
        declared: F = signal()(fn)
        # dbus-next leaves signal arguments unnamed in the introspection data
        for arg, name in zip(vars(declared)["__DBUS_SIGNAL"].introspection.args, args,
                             strict=True):
            arg.name = name
        return declared

    return decorate


def dbus_readonly(sig: str) -> Callable[[Callable[[Any], Any]], property]:
    """Export a read-only property of D-Bus type `sig`; dbus-next emits no
    PropertiesChanged by itself: the owner calls emit_properties_changed."""

    def decorate(fn: Callable[[Any], Any]) -> property:
        _declare(fn, {}, sig)
        prop: property = dbus_property(access=PropertyAccess.READ)(fn)
        return prop

    return decorate
