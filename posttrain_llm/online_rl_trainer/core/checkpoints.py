"""Checkpoint folders on disk, for every algorithm: atomic writes, finding the latest complete one, pruning.

A checkpoint is ``<output_dir>/checkpoint-<step>/``. What goes inside depends on the trainer (PPO: see
``ppo_checkpoint.py``; GRPO/RLOO: transformers' files plus ours, see ``trl_trainers.py``); how it gets there is the
same for all:

1. the files are written into a staging folder whose name never matches ``checkpoint-<n>``
   (``.tmp-checkpoint-<step>``);
2. :func:`commit_checkpoint` writes :data:`COMPLETE_MARKER` last, fsyncs every file and folder, then renames the
   folder to ``checkpoint-<step>`` (a POSIX rename within one file system is atomic) and fsyncs the parent.

A crash at any point leaves at worst a ``.tmp-*`` folder, which nothing resumes from, and the checkpoints written
before it untouched. :func:`latest_checkpoint` also requires the marker, so a ``checkpoint-<n>`` folder copied by
hand and left incomplete, or written in place by plain transformers/TRL, is skipped too.

``resume_from_checkpoint=True`` with no complete checkpoint is an error (not a silent fresh start): a mistyped
``output_dir`` would otherwise restart a long run from step 0 without anyone noticing.

Not covered: remote storage, file systems without atomic rename, checkpoints sharded across machines that do not
share the output folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE_MARKER = "checkpoint_complete.json"
#: Markers of checkpoints written before :data:`COMPLETE_MARKER` existed (PPO wrote ``ppo_state.json`` last).
LEGACY_MARKERS = ("ppo_state.json",)
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def is_complete(folder: str | Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and any((folder / m).is_file() for m in (COMPLETE_MARKER, *LEGACY_MARKERS))


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}"


# ------------------------------------------------------------------------------------------ finding / pruning
def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``output_dir`` as (step, path), oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _CHECKPOINT_RE.match(child.name)
        if match and is_complete(child):
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def resolve_resume_path(resume_from_checkpoint: str | Path | bool | None, output_dir: str | Path,
                        trainer_type: str | None = None) -> Path | None:
    """None/False -> None; True -> the latest complete checkpoint (error if none); a path -> that checkpoint,
    which must be complete. With ``trainer_type``, a checkpoint written by another algorithm is an error."""
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return None
    if resume_from_checkpoint is True:
        path = latest_checkpoint(output_dir)
        if path is None:
            raise ValueError(
                f"resume_from_checkpoint=True but {str(output_dir)!r} holds no complete checkpoint-<step> folder "
                f"(one with {COMPLETE_MARKER}); train without resuming or pass a checkpoint path"
            )
    else:
        path = Path(resume_from_checkpoint)
        if not is_complete(path):
            raise ValueError(
                f"resume_from_checkpoint={str(path)!r} is not a complete checkpoint (no {COMPLETE_MARKER}: the save "
                "did not finish, or the folder was not written by this package); pass a checkpoint-<step> folder "
                "written by OnlineRLTrainer, or True for the latest complete one"
            )
    written_by = checkpoint_info(path).get("trainer_type")
    if trainer_type is not None and written_by is not None and written_by != trainer_type:
        raise ValueError(
            f"checkpoint {str(path)!r} was written by trainer_type={written_by!r}; this run has "
            f"trainer_type={trainer_type!r}. Resume with the same algorithm, or use another output_dir"
        )
    return path


def checkpoint_info(folder: str | Path) -> dict[str, Any]:
    """The contents of a checkpoint's completion marker ({} for a legacy PPO checkpoint: trainer_type 'ppo')."""
    marker = Path(folder) / COMPLETE_MARKER
    if marker.is_file():
        return read_json(marker)
    return {"trainer_type": "ppo"} if is_complete(folder) else {}


def prune_checkpoints(output_dir: str | Path, keep: int | None) -> list[Path]:
    """Delete the oldest complete checkpoints beyond ``keep`` (None keeps all). Returns the deleted paths."""
    if keep is None:
        return []
    found = list_checkpoints(output_dir)
    doomed = [path for _, path in found[: max(0, len(found) - keep)]]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def remove_stale_staging(output_dir: str | Path) -> list[Path]:
    """Delete ``.tmp-checkpoint-*`` folders left by a crash while saving (never complete by construction).

    Called once when training starts, before anything is written: they only hold disk space. Returns what was removed.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return []
    stale = [p for p in root.glob(f".tmp-{CHECKPOINT_PREFIX}*") if p.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


# -------------------------------------------------------------------------------------------- atomic writing
def temp_checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f".tmp-{CHECKPOINT_PREFIX}{step}"


def begin_checkpoint(output_dir: str | Path, step: int) -> Path:
    """Create an empty staging folder for checkpoint ``step`` (removing a stale one from an earlier crash)."""
    tmp = temp_checkpoint_dir(output_dir, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _fsync_path(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_checkpoint(tmp: Path, step: int, output_dir: str | Path | None = None,
                      info: dict[str, Any] | None = None) -> Path:
    """Write the completion marker into ``tmp``, fsync everything under it, then rename it to
    ``<output_dir>/checkpoint-<step>`` (``output_dir`` defaults to ``tmp``'s parent), replacing an older one of
    that step. ``info`` goes into the marker (with ``global_step``)."""
    write_json(tmp / COMPLETE_MARKER, {"global_step": step, **(info or {})})
    for dirpath, _, filenames in os.walk(tmp):
        for name in filenames:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))
    parent = Path(output_dir) if output_dir is not None else tmp.parent
    final = checkpoint_dir(parent, step)
    trash = parent / f".old-{CHECKPOINT_PREFIX}{step}"
    if final.exists():
        # Rename, not delete, first: until the new folder is in place the old one still exists under some name.
        if trash.exists():
            shutil.rmtree(trash)
        final.rename(trash)
    tmp.rename(final)
    _fsync_path(parent)
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)
    return final


def write_json(path: Path, payload: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(payload, indent=2))


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
