"""Replace one attribute for a ``with`` block and put back exactly what was there.

The speed paths hook into transformers and TRL where they offer no argument for it: ``model.generate`` for one
generation call (prompt sharing, the decode loop), a TRL module function for one training pass. Each hook must leave
the object as it found it, also when the block raises and when the hooks nest: an attribute the object held itself
(a module's function, an instance attribute someone else set) is set back; one it only inherited (a model's
``generate`` method, defined on its class) is deleted again, so the class's method shows through and no bound copy
of it stays on the instance.

Not thread-safe: a block changes the object for every thread until it exits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["patched"]

_ABSENT = object()


@contextlib.contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    """Within the block ``obj.<name>`` is ``value``; on exit what ``obj`` held itself is restored (or the attribute
    deleted again when ``obj`` only inherited it)."""
    own = vars(obj).get(name, _ABSENT) if hasattr(obj, "__dict__") else getattr(obj, name, _ABSENT)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if own is _ABSENT:
            delattr(obj, name)
        else:
            setattr(obj, name, own)
