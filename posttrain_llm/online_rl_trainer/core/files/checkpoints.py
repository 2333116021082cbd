"""Checkpoint folders on disk, for every algorithm: atomic writes, finding the latest complete one, pruning.

A checkpoint is ``<output_dir>/checkpoint-<step>/``. What goes inside depends on the trainer (PPO: see
``backends/ppo/checkpoint.py``; GRPO/RLOO: transformers' files plus ours, see ``backends/trl/trainers.py``); how it
gets there is the same for all:

1. the files are written into a staging folder whose name never matches ``checkpoint-<n>``
   (``.tmp-checkpoint-<step>``);
2. :func:`commit_checkpoint` writes :data:`COMPLETE_MARKER` last, fsyncs every file and folder, then renames the
   folder to ``checkpoint-<step>`` (a POSIX rename within one file system is atomic) and fsyncs the parent.

A crash at any point leaves at worst a ``.tmp-*`` folder, which nothing resumes from, and the checkpoints written
before it untouched. :func:`latest_checkpoint` also requires the marker, so a ``checkpoint-<n>`` folder copied by
hand and left incomplete, or written in place by plain transformers/TRL, is skipped too.

``resume_from_checkpoint=True`` with no complete checkpoint is an error (not a silent fresh start): a mistyped
``output_dir`` would otherwise restart a long run from step 0 without anyone noticing.

The marker lists every file of the checkpoint with its size, and the run it belongs to (id and identity, from the
run manifest: ``files/run_manifest.py``). Before a resume, :func:`verify_checkpoint` checks the files against those sizes
and each file's format (JSON parses, a safetensors header matches the file's length, a torch file's zip directory
is readable): a truncated or missing file is reported by name, and ``resume_from_checkpoint=True`` falls back to
the newest checkpoint that passes, with a warning naming both. Sizes and formats catch truncation and deletion,
not a flipped bit inside a file (that would need a hash of every file at every save and resume).

Not covered: remote storage, file systems without atomic rename, checkpoints sharded across machines that do not
share the output folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any, Iterator

from ..common.errors import UserError
from .atomic import fsync_path
from .run_manifest import run_record

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE_MARKER = "checkpoint_complete.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(ValueError, UserError):
    """A checkpoint cannot be resumed from: none there, incomplete, damaged, or written by another run."""


def is_complete(folder: str | Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and (folder / COMPLETE_MARKER).is_file()


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
                        trainer_type: str | None = None, announce: bool = True) -> Path | None:
    """None/False -> None; True -> the newest complete checkpoint that passes :func:`verify_checkpoint`, falling
    back past damaged ones with a warning naming each and its bad file (``announce=False``: no warnings, for the
    non-main processes); a path -> that checkpoint, which must be complete and undamaged. With ``trainer_type``,
    a checkpoint written by another algorithm is an error. Errors are :class:`CheckpointError`."""
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return None
    if resume_from_checkpoint is True:
        path = _newest_usable(output_dir, announce)
    else:
        path = Path(resume_from_checkpoint)
        if not is_complete(path):
            raise CheckpointError(
                f"resume_from_checkpoint={str(path)!r} is not a complete checkpoint (no {COMPLETE_MARKER}: the save "
                "did not finish, or the folder was not written by this package); pass a checkpoint-<step> folder "
                "written by OnlineRLTrainer, or True for the latest complete one"
            )
        problem = verify_checkpoint(path)
        if problem is not None:
            raise CheckpointError(f"checkpoint {str(path)!r} is damaged: {problem}. Resume from an earlier checkpoint "
                                  "(or pass True for the newest undamaged one)")
    written_by = checkpoint_info(path).get("trainer_type")
    if trainer_type is not None and written_by is not None and written_by != trainer_type:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written by trainer_type={written_by!r}; this run has "
            f"trainer_type={trainer_type!r}. Resume with the same algorithm, or use another output_dir"
        )
    return path


def _newest_usable(output_dir: str | Path, announce: bool) -> Path:
    found = list_checkpoints(output_dir)
    if not found:
        raise CheckpointError(
            f"resume_from_checkpoint=True but {str(output_dir)!r} holds no complete checkpoint-<step> folder "
            f"(one with {COMPLETE_MARKER}); train without resuming or pass a checkpoint path"
        )
    damaged: list[str] = []
    for _, path in reversed(found):
        problem = verify_checkpoint(path)
        if problem is None:
            if damaged and announce:
                logger.warning("%s; falling back to %s, the newest undamaged checkpoint", "; ".join(damaged), path.name)
            return path
        damaged.append(f"{path} is damaged ({problem})")
    raise CheckpointError(
        f"resume_from_checkpoint=True but no checkpoint in {str(output_dir)!r} can be loaded: {'; '.join(damaged)}. "
        "Train without resuming (overwriting the folder), or restore a checkpoint from a backup"
    )


def checkpoint_info(folder: str | Path) -> dict[str, Any]:
    """The contents of a checkpoint's completion marker ({} when it has none)."""
    marker = Path(folder) / COMPLETE_MARKER
    return read_json(marker) if marker.is_file() else {}


def checkpoint_folders(output_dir: str | Path) -> list[Path]:
    """Every ``checkpoint-<step>`` folder in ``output_dir``, complete or not, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _CHECKPOINT_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


# ---------------------------------------------------------------------------------------------- verifying
def verify_checkpoint(folder: str | Path) -> str | None:
    """None if every file of the checkpoint looks whole, else ``"<file>: <what is wrong>"`` for the first that does
    not: missing, another size than the marker recorded, JSON that does not parse, a safetensors file shorter than
    its header says, a torch file whose zip directory cannot be read. Reads headers, not whole weight files."""
    folder = Path(folder)
    try:
        marker = read_json(folder / COMPLETE_MARKER) if (folder / COMPLETE_MARKER).is_file() else {}
    except (OSError, ValueError) as exc:
        return f"{COMPLETE_MARKER}: unreadable ({exc})"
    for name, size in (marker.get("files") or {}).items():
        path = folder / name
        if not path.is_file():
            return f"{name}: missing"
        actual = path.stat().st_size
        if actual != size:
            return f"{name}: {actual} bytes, {size} when it was saved ({'truncated' if actual < size else 'altered'})"
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        problem = _format_problem(path)
        if problem is not None:
            return f"{path.relative_to(folder).as_posix()}: {problem}"
    return None


def _format_problem(path: Path) -> str | None:
    suffix = path.suffix
    try:
        if suffix == ".json":
            json.loads(path.read_text())
        elif suffix == ".safetensors":
            return _safetensors_problem(path)
        elif suffix in (".pt", ".pth", ".bin"):
            with zipfile.ZipFile(path) as archive:  # torch.save's format: the directory sits at the end
                archive.infolist()
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error, zipfile.BadZipFile) as exc:
        return f"not a readable {suffix} file ({type(exc).__name__}: {str(exc)[:120]}; truncated?)"
    return None


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"{size} bytes, too short for a safetensors header (truncated?)"
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            return f"{size} bytes, shorter than its own header ({header_len} bytes): truncated"
        header = json.loads(handle.read(header_len))
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    needed = 8 + header_len + max(ends, default=0)
    if size < needed:
        return f"{size} bytes, its header describes {needed}: truncated"
    return None


@contextlib.contextmanager
def loading(folder: str | Path, what: str) -> Iterator[None]:
    """Turn an exception while loading ``what`` (files of checkpoint ``folder``) into a :class:`CheckpointError`
    naming both, for failures :func:`verify_checkpoint` cannot see (a file altered in place, a model that changed)."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {str(folder)!r} could not be loaded: {what} failed ({type(exc).__name__}: {str(exc)[:300]}). "
            "Resume from an earlier checkpoint, or check that the model and settings are the ones it was saved with"
        ) from exc


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


def commit_checkpoint(tmp: Path, step: int, output_dir: str | Path | None = None,
                      info: dict[str, Any] | None = None) -> Path:
    """Write the completion marker into ``tmp``, fsync everything under it, then rename it to
    ``<output_dir>/checkpoint-<step>`` (``output_dir`` defaults to ``tmp``'s parent), replacing an older one of
    that step. ``info`` goes into the marker, with ``global_step``, every file's size and the run (id and identity
    from the run manifest in that folder, when there is one)."""
    parent = Path(output_dir) if output_dir is not None else tmp.parent
    files = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
    write_json(tmp / COMPLETE_MARKER, {"global_step": step, **(info or {}), "run": run_record(parent),
                                       "files": files})
    for dirpath, _, filenames in os.walk(tmp):
        for name in filenames:
            fsync_path(Path(dirpath) / name)
        fsync_path(Path(dirpath))
    final = checkpoint_dir(parent, step)
    trash = parent / f".old-{CHECKPOINT_PREFIX}{step}"
    if final.exists():
        # Rename, not delete, first: until the new folder is in place the old one still exists under some name.
        if trash.exists():
            shutil.rmtree(trash)
        final.rename(trash)
    tmp.rename(final)
    fsync_path(parent)
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)
    return final


def write_json(path: Path, payload: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(payload, indent=2))


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
