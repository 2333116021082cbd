"""The package's cache folder, and an exclusive lock for building something into it once.

The cache is ``$POSTTRAIN_LLM_CACHE`` or ``~/.cache/posttrain_llm``: the built-in tiny model and the de-quantized
SmolLM2 are written there the first time they are asked for. Under a launcher every process asks at once; the lock
lets one build while the others wait and then reuse the result.

Not covered: locking on file systems without ``flock`` (some network mounts), cache eviction.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


def cache_dir() -> Path:
    """``$POSTTRAIN_LLM_CACHE`` or ``~/.cache/posttrain_llm`` (not created here)."""
    root = os.environ.get("POSTTRAIN_LLM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "posttrain_llm")
    return Path(root)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` for the ``with`` block (released when the process dies, too)."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
