"""Values an object keeps for its later calls (the caption's kept keys and values, captured CUDA graphs, convolution
transforms, the list of host-castable layers, a host's sampling models), all under one attribute: this module
stores, looks up and clears them, and a copy leaves them behind.

They live in the object's ``__dict__``: a module does not register them, and no state dict holds them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_SLOT = "_sana_caches"


def kept(obj: object, name: str, make: Callable[[], T]) -> T:
    """``obj``'s cache ``name``, made by ``make()`` on first use."""
    caches = obj.__dict__.setdefault(_SLOT, {})
    if name not in caches:
        caches[name] = make()
    return caches[name]


def peek(obj: object, name: str) -> Any | None:
    """``obj``'s cache ``name`` if it has one, else None (nothing is made)."""
    return obj.__dict__.get(_SLOT, {}).get(name)


def drop(obj: object, *names: str) -> None:
    """Clear the named caches of ``obj`` (all of them when none is named): after a move or a reload."""
    caches = obj.__dict__.get(_SLOT)
    if caches is not None:
        for name in names or list(caches):
            caches.pop(name, None)


def without_caches(attributes: dict) -> dict:
    """An object's ``__dict__`` without its caches, for a copy that must not share them."""
    return {k: v for k, v in attributes.items() if k != _SLOT}
