"""One training run per output folder at a time: a lock file, ``<output_dir>/.run.lock``.

The lock is a file created with ``O_CREAT | O_EXCL`` (atomic on a local file system) holding the owner's pid,
host, process start time and the time it was taken. A second run into the same folder finds it and stops at once
with :class:`OutputDirBusyError` naming the owner. A lock whose owner is gone -- its pid no longer exists on this
host, or the pid was reused by a process that started later than the owner did -- is *stale* (the run was
killed: SIGKILL, OOM, power loss) and is taken over, with a warning naming the dead owner.

The lock is re-entrant within one process (the CLI holds it for the whole command, the trainer takes it again
for ``train()``): a count per folder, the file removed when it drops to zero, and at exit in any case.
Under ``accelerate launch`` only the main process takes it.

Not covered: network file systems without atomic ``O_EXCL`` (old NFS), and locks held from another host, which
cannot be checked for liveness: they are reported as held, with the file to delete if that run is known dead.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from ..common.errors import UserError

logger = logging.getLogger(__name__)

LOCK_FILENAME = ".run.lock"

#: folder (resolved) -> how many times this process holds its lock.
_held: dict[Path, int] = {}


class OutputDirBusyError(RuntimeError, UserError):
    """Another live process is training into this output folder."""


def _process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (Linux ``/proc``), or None where unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(owner: dict[str, Any]) -> bool:
    """Whether the lock's owner still runs (only answerable for this host: another host's owner counts as alive)."""
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    started = owner.get("process_start")
    return started is None or _process_start_time(pid) in (None, started)  # a reused pid started later


def _read_owner(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def acquire(output_dir: str | Path) -> Path:
    """Take the lock of ``output_dir`` (re-entrant in this process); :class:`OutputDirBusyError` if a live process
    holds it. Returns the lock file."""
    folder = Path(output_dir).resolve()
    path = folder / LOCK_FILENAME
    if _held.get(folder):
        _held[folder] += 1
        return path
    me = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start_time(os.getpid()),
          "acquired": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):  # a stale lock removed by us (or by a racing process) -> try again
        try:
            fd = os.open(str(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read_owner(path)
            if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == me["host"]:
                break  # ours, from an earlier hold released without removing (e.g. after fork)
            if owner is not None and _alive(owner):
                raise OutputDirBusyError(
                    f"output_dir {str(folder)!r} is in use by another training run (pid {owner.get('pid')} on "
                    f"{owner.get('host')}, since {owner.get('acquired')}; lock file {str(path)!r}). Wait for it to "
                    "finish, or choose another output folder; if that process is known to be dead, delete the lock file"
                ) from None
            if owner is None and time.time() - _mtime(path) < 5:
                time.sleep(0.2)  # being written right now by another process
                continue
            logger.warning("taking over a stale lock on %s: its owner (pid %s on %s, since %s) is no longer running",
                           folder, (owner or {}).get("pid"), (owner or {}).get("host"), (owner or {}).get("acquired"))
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        break
    else:
        raise OutputDirBusyError(f"could not take the lock {str(path)!r}: another process keeps re-creating it")
    _held[folder] = 1
    return path


def release(output_dir: str | Path) -> None:
    """Give back one hold of the lock; the file goes when this process holds it no more."""
    folder = Path(output_dir).resolve()
    count = _held.get(folder, 0)
    if count > 1:
        _held[folder] = count - 1
        return
    _held.pop(folder, None)
    path = folder / LOCK_FILENAME
    owner = _read_owner(path)
    if owner is not None and owner.get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def holding(output_dir: str | Path, enabled: bool = True) -> Iterator[None]:
    """``with holding(dir):`` -- the lock for the block (nothing when ``enabled`` is False: non-main processes)."""
    if not enabled:
        yield
        return
    acquire(output_dir)
    try:
        yield
    finally:
        release(output_dir)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@atexit.register
def _release_all() -> None:
    for folder in list(_held):
        _held[folder] = 1
        release(folder)
