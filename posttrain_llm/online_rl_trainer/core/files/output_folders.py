"""Writing output folders safely: a writability check before work starts, and staged saves.

Two failures this module turns into clear errors instead of lost work:

- an output folder that cannot be written (its parent is a file, a read-only or pseudo file system): found by
  :func:`ensure_writable_folder` before training starts, not after the last step;
- the disk filling up while a model is saved: :func:`staged_folder` has the save written into a hidden sibling
  folder (``.<name>.saving``) and moves the files into place only when every one of them was written. A failed
  save removes the staging folder and raises ``OSError`` naming the folder and the cause ("no space left on
  device"); the folder that was there before, if any, is left exactly as it was. Files of the target folder that
  the save does not produce (checkpoints, logs) are kept; stale weight files are removed so an old shard can never
  be loaded next to new weights.

Moving into place is a series of renames on one file system: each file switches atomically, the set of files does
not (a crash in the middle of the moves, not a full disk, leaves a mix). The price: saving over an existing model
needs room for both copies until the move. Not covered: remote or cross-device targets.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from .atomic import fsync_path

#: Weight files of a ``save_pretrained`` folder; those the new save does not write are removed from the target.
_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model*.bin.index.json")


#: Below this many free bytes a write error without an errno (torch.save's "unexpected pos") is put down to a full disk.
_NEARLY_FULL_BYTES = 64 * 2**20


def os_error_reason(exc: OSError) -> str:
    """A short cause for an OSError; a full disk always reads "no space left on device"."""
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return exc.strerror or str(exc)


def write_failure(exc: BaseException, folder: str | Path, only_writing: bool = True) -> tuple[int | None, str] | None:
    """(errno, reason) when ``exc``, raised while writing under ``folder``, is an I/O failure; else None.

    Libraries report a full disk in their own ways: an ``OSError`` (ENOSPC), safetensors' ``SafetensorError`` whose
    text says "No space left on device (os error 28)", torch.save's ``RuntimeError`` ("unexpected pos ...") with no
    cause at all; for the last, the free space of ``folder``'s disk decides. Call it before freeing any space.
    ``only_writing=False`` (the code that raised did more than write files, e.g. a whole training run): only a full
    disk or quota counts, not any OSError, and only torch's writer errors are checked against the free space.
    """
    if not isinstance(exc, Exception):
        return None
    text = str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return exc.errno, os_error_reason(exc)
    if "No space left" in text or "os error 28" in text or "StorageFull" in text:
        return errno.ENOSPC, "no space left on device"
    if isinstance(exc, OSError):
        return (exc.errno, os_error_reason(exc)) if only_writing else None
    if not only_writing and not any(sign in text for sign in ("inline_container", "PytorchStreamWriter")):
        return None
    free = _free_bytes(Path(folder))
    if free is not None and free < _NEARLY_FULL_BYTES:
        return errno.ENOSPC, f"no space left on device ({free // 1024} KiB free)"
    return None


def make_os_error(code: int | None, message: str) -> OSError:
    """``OSError(code, message)`` (the errno's subclass, e.g. NotADirectoryError), or a plain one without errno."""
    return OSError(code, message) if code is not None else OSError(message)


@contextlib.contextmanager
def write_failures_as_os_errors(folder: str | Path, message: Callable[[str, BaseException], str],
                                only_writing: bool = True) -> Iterator[None]:
    """Re-raise an I/O failure of the block (see :func:`write_failure`) as ``OSError(errno, message(reason, exc))``;
    any other exception passes through unchanged."""
    try:
        yield
    except Exception as exc:
        failure = write_failure(exc, folder, only_writing=only_writing)
        if failure is None:
            raise
        raise make_os_error(failure[0], message(failure[1], exc)) from exc


def _free_bytes(folder: Path) -> int | None:
    for candidate in (folder, *folder.absolute().parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def ensure_writable_folder(folder: str | Path, what: str) -> Path:
    """Create ``folder`` if needed and prove it writable with a throwaway file; OSError naming it otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise make_os_error(
            exc.errno, f"cannot write to {what} {str(folder)!r}: {os_error_reason(exc)}; pass a folder that exists "
            "(or can be created) on a writable disk with free space"
        ) from exc
    return folder


def staging_path(target: str | Path) -> Path:
    """The hidden sibling a save of ``target`` is written into (the same name in every process)."""
    target = Path(target).absolute()
    return target.parent / f".{target.name}.saving"


@contextlib.contextmanager
def staged_folder(target: str | Path, accelerator: Any = None, what: str = "model folder") -> Iterator[Path]:
    """Yield a staging folder to write a save of ``target`` into; on success move its contents into ``target``.

    With an ``accelerate.Accelerator`` (several processes), the main process prepares and commits and every
    process waits for the others around the writes, so all of them write into the same staging folder.
    """
    target = Path(target)
    stage = staging_path(target)
    main = accelerator is None or accelerator.is_main_process
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"cannot save to {what} {str(target)!r}: it is a file, not a folder")
    if main:
        ensure_writable_folder(stage.parent, f"{what} {str(target)!r}: its parent folder")
        shutil.rmtree(stage, ignore_errors=True)  # left by an earlier crash
        stage.mkdir()
    _barrier(accelerator)
    try:
        yield stage
        _barrier(accelerator)
    except BaseException as exc:
        failure = write_failure(exc, stage)
        if main:
            shutil.rmtree(stage, ignore_errors=True)
        if failure is None:
            raise
        code, reason = failure
        kept = "left as it was" if target.exists() else "not created"
        raise make_os_error(
            code, f"could not save the {what} {str(target)!r}: {reason} ({type(exc).__name__}: {str(exc)[:300]}). "
            f"Nothing was moved into place: the folder was {kept}; free some space (or choose another folder) and "
            "save again"
        ) from exc
    if main:
        _commit(stage, target)
    _barrier(accelerator)


def _barrier(accelerator: Any) -> None:
    if accelerator is not None and getattr(accelerator, "num_processes", 1) > 1:
        accelerator.wait_for_everyone()


def _commit(stage: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    new_names = {p.name for p in stage.iterdir()}
    for pattern in _WEIGHT_PATTERNS:
        for stale in target.glob(pattern):
            if stale.name not in new_names and stale.is_file():
                stale.unlink()
    for item in sorted(stage.iterdir()):
        dest = target / item.name
        if item.is_dir() and dest.is_dir():
            old = target / f".{item.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
            item.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        elif item.is_dir():
            dest.unlink(missing_ok=True)
            item.rename(dest)
        else:
            if dest.is_dir():
                shutil.rmtree(dest)
            os.replace(item, dest)
    stage.rmdir()
    with contextlib.suppress(OSError):  # make the renames durable where the platform allows it
        fsync_path(target)
