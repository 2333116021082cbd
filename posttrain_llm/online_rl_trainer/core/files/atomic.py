"""Atomic file writes: a file is either its old content or its new content, never a truncated mix.

- :func:`write_text_atomic` writes into a hidden sibling and renames it over the target (``os.replace`` is atomic
  within one file system), so a full disk or a crash mid-write leaves the last good file in place;
- :func:`fsync_path` makes a written file, or a folder's entries (a rename), durable before the next step relies
  on it (the checkpoint scheme in ``checkpoints.py``, the staged saves in ``output_folders.py``);
- :func:`json_default` is the ``default=`` of ``json.dumps`` for metrics and results: tensors and numpy values become
  numbers or lists, anything else its ``str``. NaN and infinity are written as ``json.dumps`` writes them
  (``NaN``, ``Infinity``: not strict JSON, but what Python and most JSON readers accept).

Not covered: Windows (folders cannot be opened for fsync there), remote file systems without atomic rename.
"""

from __future__ import annotations

import json
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
    """``json.dumps(..., default=json_default)``: tensors and arrays as numbers or lists, anything else as text."""
    if hasattr(value, "tolist"):  # tensors and numpy values: a 0-d one gives a plain number, others a list
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """``payload`` as indented JSON (:func:`json_default` for what JSON cannot hold), written atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2, default=json_default))
