"""What a training run may do with its output folder: claim it, start fresh or resume, record itself.

``OnlineRLTrainer.train()`` opens a :class:`RunFolder` around training (all algorithms alike):

1. **lock** (``files/run_lock.py``): a second run into the same folder stops at once; a stale lock is taken over;
2. **a fresh run** (no ``resume_from_checkpoint``) refuses a folder that holds an earlier run worth keeping --
   any ``checkpoint-<step>`` folder, or a finished run's manifest -- with :class:`RunExistsError` offering
   ``--resume``, ``--overwrite`` or another folder. ``overwrite_output_dir=True`` (CLI ``--overwrite``) deletes the
   earlier run's checkpoints first, so a later ``--resume`` can never pick one of them up; its other files are
   replaced as the new run writes its own. An earlier run that never finished and left no checkpoint has nothing
   to lose: it is taken over with a log line;
3. **a resume** picks the checkpoint (``checkpoints.resolve_resume_path``: the newest undamaged one for ``True``),
   compares the run identity recorded in it with this run's (``files/run_manifest.py``) and refuses a difference,
   naming each differing field, unless ``resume_mismatch_ok=True`` (CLI ``--resume-mismatch-ok``); the log names
   the checkpoint resumed from;
4. **the manifest** is written (a fresh run gets a new run id; a resume keeps the checkpoint's and appends to
   ``resumes``), and its ``status`` set to finished / interrupted / failed when training ends.

Every process makes the same read-only checks (they read the same files, so all reach the same decision); only
the main process takes the lock, deletes and writes, between two barriers.

Not covered: two runs on different hosts sharing a network folder without a working ``O_EXCL`` (see files/run_lock.py).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Callable

from ..common.errors import UserError
from . import checkpoints as ckpt
from . import run_lock
from .run_manifest import identity_differences, new_manifest, package_versions, read_manifest, write_manifest

logger = logging.getLogger(__name__)


class RunExistsError(FileExistsError, UserError):
    """A fresh run was pointed at a folder holding an earlier run's checkpoints or finished results."""


def describe(manifest: dict[str, Any] | None) -> str:
    if manifest is None:
        return "no run manifest: written by an older version or by hand"
    step = f" at step {manifest['step']}" if manifest.get("step") is not None else ""
    return (f"run {manifest.get('run_id')}, {manifest.get('trainer_type')} on {manifest.get('model')}, started "
            f"{manifest.get('started')}, {manifest.get('status')}{step}")


def check_fresh_run(output_dir: str | Path, overwrite: bool) -> list[Path]:
    """The checkpoint folders a fresh run into ``output_dir`` must delete first (only with ``overwrite``), or
    :class:`RunExistsError` when the folder holds an earlier run worth keeping and ``overwrite`` is False."""
    folders = ckpt.checkpoint_folders(output_dir)
    manifest = read_manifest(output_dir)
    if overwrite:
        return folders
    fix = ("Pass --resume (train(resume_from_checkpoint=True)) to continue it, --overwrite "
           "(TrainerConfig(overwrite_output_dir=True)) to replace it, or choose another --output-dir")
    if folders:
        names = ", ".join(p.name for p in folders[-3:]) + (f" and {len(folders) - 3} more" if len(folders) > 3 else "")
        raise RunExistsError(
            f"output_dir {str(output_dir)!r} holds checkpoints of an earlier run ({names}; {describe(manifest)}): a "
            f"fresh run would mix its checkpoints with them. {fix}"
        )
    if manifest is not None and manifest.get("status") == "finished":
        raise RunExistsError(
            f"output_dir {str(output_dir)!r} holds a finished run ({describe(manifest)}) whose results a fresh run "
            f"would replace. {fix.replace('--resume (train(resume_from_checkpoint=True)) to continue it, ', '')}"
        )
    return []


def previous_run_finished(output_dir: str | Path) -> bool:
    """Whether ``output_dir``'s manifest says its run finished (the demo CLI replaces such a run in its default
    folder without asking)."""
    manifest = read_manifest(output_dir)
    return manifest is not None and manifest.get("status") == "finished"


class RunFolder:
    """``with RunFolder(out, config_dict, identity, main=..., barrier=...) as run: resume = run.start(...)``."""

    def __init__(self, output_dir: str | Path, config: dict[str, Any], identity: dict[str, Any], *, main: bool = True,
                 barrier: Callable[[], None] = lambda: None) -> None:
        self.output_dir, self.config, self.identity = Path(output_dir), config, identity
        self.main, self.barrier = main, barrier
        self.manifest: dict[str, Any] | None = None

    def __enter__(self) -> "RunFolder":
        if self.main:
            run_lock.acquire(self.output_dir)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.main and self.manifest is not None and exc is not None and self.manifest["status"] == "running":
                status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                self.finish(status, error=f"{exc_type.__name__}: {str(exc)[:300]}")
        finally:
            if self.main:
                run_lock.release(self.output_dir)

    def start(self, resume_from_checkpoint: Any, mismatch_ok: bool, overwrite: bool, trainer_type: str) -> Path | None:
        """Check the folder (fresh run or resume), write the manifest; the checkpoint to resume from, or None."""
        resume = ckpt.resolve_resume_path(resume_from_checkpoint, self.output_dir, trainer_type, announce=self.main)
        doomed = check_fresh_run(self.output_dir, overwrite) if resume is None else []
        changes = self._check_identity(resume, mismatch_ok) if resume is not None else []
        self.barrier()  # every process has read the folder before the main process changes it
        if self.main:
            for folder in doomed:
                shutil.rmtree(folder)
                logger.warning("overwrite_output_dir: removed %s of the earlier run", folder)
            self.manifest = self._manifest_for(resume, changes)
            write_manifest(self.output_dir, self.manifest)
            if resume is not None:
                logger.info("resuming from %s (step %s, run %s)", resume, ckpt.checkpoint_info(resume).get("global_step"),
                            self.manifest["run_id"])
        self.barrier()
        return resume

    def finish(self, status: str, step: int | None = None, **extra: Any) -> None:
        """Record how training ended (main process; no-op elsewhere)."""
        if self.main and self.manifest is not None:
            self.manifest.update(status=status, **({"step": step} if step is not None else {}), **extra)
            write_manifest(self.output_dir, self.manifest)

    # ------------------------------------------------------------------------------------------------------
    def _check_identity(self, resume: Path, mismatch_ok: bool) -> list[str]:
        record = ckpt.checkpoint_info(resume).get("run")
        if record is None:
            if self.main:
                logger.warning("%s records no run identity (saved by an older version): not checked against this run",
                               resume)
            return []
        changes = identity_differences(record.get("identity", {}), self.identity)
        if changes and not mismatch_ok:
            raise ckpt.CheckpointError(
                f"checkpoint {str(resume)!r} belongs to a run with other settings (checkpoint -> this run): "
                f"{'; '.join(changes)}. Resume with the settings it was saved with, pass --resume-mismatch-ok "
                "(train(..., resume_mismatch_ok=True)) to resume with these anyway, or start a fresh run in another "
                "--output-dir"
            )
        if self.main:
            if changes:
                logger.warning("resuming %s with changed settings (resume_mismatch_ok): %s", resume, "; ".join(changes))
            saved, now = record.get("package_versions", {}), package_versions()
            moved = [f"{k} {saved[k]} -> {now.get(k)}" for k in sorted(saved) if saved[k] != now.get(k)]
            if moved:
                logger.warning("%s was saved with other package versions: %s", resume, ", ".join(moved))
        return changes

    def _manifest_for(self, resume: Path | None, changes: list[str]) -> dict[str, Any]:
        fresh = new_manifest(self.identity, self.config)
        if resume is None:
            return fresh
        record = ckpt.checkpoint_info(resume).get("run") or {}
        old = read_manifest(self.output_dir) or {}
        run_id = record.get("run_id") or old.get("run_id") or fresh["run_id"]
        base = old if old.get("run_id") == run_id else {**fresh, "run_id": run_id}
        resumes = [*base.get("resumes", []), {"checkpoint": resume.name, "at": fresh["started"], "changed": changes}]
        keep = {k: base[k] for k in ("run_id", "started") if k in base}
        return {**fresh, **keep, "status": "running", "resumes": resumes}
