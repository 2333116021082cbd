"""Atomic file writes: a file is either its old content or its new content, never a truncated mix.

- :func:`write_text_atomic` writes into a hidden sibling and renames it over the target (``os.replace`` is atomic
  within one file system), so a full disk or a crash mid-write leaves the last good file in place;
- :func:`fsync_path` makes a written file, or a folder's entries (a rename), durable before the next step relies
  on it (the checkpoint scheme in ``checkpoints.py``, the staged saves in ``output_folders.py``);
- :func:`json_default` is the ``default=`` of ``json.dumps`` for metrics and results: tensor and numpy scalars
  become numbers, NaN/inf become strings (strict JSON has neither), anything else its ``str``.

Not covered: Windows (folders cannot be opened for fsync there), remote file systems without atomic rename.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def fsync_path(path: str | Path) -> None:
    """``fsync`` a file, or a folder (which makes renames and new entries in it durable)."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a hidden sibling and a rename; the parent folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def json_default(value: Any) -> Any:
    """``json.dumps(..., default=json_default)``: scalars of tensors/arrays as numbers, NaN/inf and others as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """``payload`` as indented JSON (:func:`json_default` for what JSON cannot hold), written atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2, default=json_default))
