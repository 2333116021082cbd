"""PPO checkpoints on disk: atomic folders, finding the latest complete one, pruning, RNG and weight restore.

A checkpoint is ``<output_dir>/checkpoint-<step>/`` holding:

- ``policy/`` (``save_pretrained``: full weights, or the LoRA adapter when the policy is a peft model),
- ``critic/`` (:func:`value_model.save_critic`),
- ``optimizer.pt``, ``critic_optimizer.pt`` (absent for a shared critic: one optimizer), ``scheduler.pt``,
  ``critic_scheduler.pt``,
- ``rng_state_<rank>.pth`` (python, numpy, torch CPU and CUDA generators, one file per process),
- ``trainer_state.json`` (``transformers.TrainerState``) and ``ppo_state.json`` (KL controller, data position,
  the pending logging window). ``ppo_state.json`` is written last.

Atomicity: everything is written into ``.tmp-checkpoint-<step>`` next to the final folder, each file is fsync'ed,
then the folder is renamed into place (a POSIX rename is atomic) and the parent directory fsync'ed. A crash leaves
at worst a ``.tmp-*`` folder, which never matches ``checkpoint-<n>``; :func:`latest_checkpoint` also requires
``ppo_state.json``, so a folder copied by hand and left incomplete is skipped too.

Not covered: sharded optimizer states (DeepSpeed/FSDP), saving to remote storage.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE_MARKER = "ppo_state.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


# ------------------------------------------------------------------------------------------ finding / pruning
def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``output_dir`` as (step, path), oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _CHECKPOINT_RE.match(child.name)
        if match and child.is_dir() and (child / COMPLETE_MARKER).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def resolve_resume_path(resume_from_checkpoint: str | bool | None, output_dir: str | Path) -> Path | None:
    """None/False -> None; True -> the latest complete checkpoint (error if none); a path -> that checkpoint."""
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return None
    if resume_from_checkpoint is True:
        path = latest_checkpoint(output_dir)
        if path is None:
            raise ValueError(
                f"resume_from_checkpoint=True but {str(output_dir)!r} holds no complete checkpoint-<step> folder "
                f"(with {COMPLETE_MARKER}); train without resuming or pass a checkpoint path"
            )
        return path
    path = Path(resume_from_checkpoint)
    if not (path / COMPLETE_MARKER).is_file():
        raise ValueError(
            f"resume_from_checkpoint={str(path)!r} is not a complete PPO checkpoint (no {COMPLETE_MARKER}); pass a "
            "checkpoint-<step> folder written by the PPO trainer, or True for the latest one"
        )
    return path


def prune_checkpoints(output_dir: str | Path, keep: int | None) -> list[Path]:
    """Delete the oldest complete checkpoints beyond ``keep`` (None keeps all). Returns the deleted paths."""
    if keep is None:
        return []
    found = list_checkpoints(output_dir)
    doomed = [path for _, path in found[: max(0, len(found) - keep)]]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


# -------------------------------------------------------------------------------------------- atomic writing
def temp_checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f".tmp-{CHECKPOINT_PREFIX}{step}"


def begin_checkpoint(output_dir: str | Path, step: int) -> Path:
    """Create an empty temp folder for checkpoint ``step`` (removing a stale one from an earlier crash)."""
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


def commit_checkpoint(tmp: Path, step: int) -> Path:
    """fsync every file under ``tmp``, then rename it to ``checkpoint-<step>`` (replacing an older one of that step)."""
    for dirpath, _, filenames in os.walk(tmp):
        for name in filenames:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))
    final = tmp.parent / f"{CHECKPOINT_PREFIX}{step}"
    trash = tmp.parent / f".old-{CHECKPOINT_PREFIX}{step}"
    if final.exists():
        # Rename, not delete, first: until the new folder is in place the old one still exists under some name.
        if trash.exists():
            shutil.rmtree(trash)
        final.rename(trash)
    tmp.rename(final)
    _fsync_path(tmp.parent)
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)
    return final


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2))


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


# ----------------------------------------------------------------------------------------------- RNG states
def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU, and every CUDA device when present) generator states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_file(folder: Path, rank: int) -> Path:
    return folder / f"rng_state_{rank}.pth"


def load_torch_file(path: Path, map_location: Any = "cpu") -> Any:
    # weights_only=False: these files hold python/numpy RNG tuples and optimizer dicts this trainer wrote itself.
    return torch.load(str(path), map_location=map_location, weights_only=False)


# ------------------------------------------------------------------------------------------- weight restore
def _safetensors_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    files = [f for f in files if f.name != "value_head.safetensors"]
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {str(folder)!r}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def load_weights_into(model: torch.nn.Module, folder: str | Path) -> None:
    """Load the ``save_pretrained`` weights in ``folder`` into ``model`` in place, exactly.

    Missing keys are accepted only for parameters tied to a loaded one (e.g. ``lm_head.weight`` tied to the
    embeddings, which ``save_pretrained`` writes once); anything else missing or unexpected raises.
    """
    folder = Path(folder)
    state = _safetensors_state(folder)
    result = model.load_state_dict(state, strict=False)
    loaded_ids = {id(p) for name, p in model.named_parameters(remove_duplicate=False) if name in state}
    params = dict(model.named_parameters(remove_duplicate=False))
    untied_missing = [k for k in result.missing_keys if k not in params or id(params[k]) not in loaded_ids]
    untied_missing = [k for k in untied_missing if k in params]  # buffers (rotary caches) are rebuilt by the model
    if untied_missing or result.unexpected_keys:
        raise RuntimeError(
            f"weights in {str(folder)!r} do not match {type(model).__name__}: missing {untied_missing[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}"
        )


def load_adapter_into(peft_model: torch.nn.Module, folder: str | Path) -> None:
    """Load a saved LoRA adapter (``adapter_model.safetensors``) into a peft model in place."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(folder) / "adapter_model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} holds no adapter_model.safetensors; was the run saved without LoRA?")
    result = set_peft_model_state_dict(peft_model, load_file(str(path)))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise RuntimeError(f"adapter in {str(folder)!r} has keys the model lacks: {unexpected[:5]}")


def save_policy(policy: torch.nn.Module, folder: Path) -> None:
    policy.save_pretrained(str(folder))


def load_policy_into(policy: torch.nn.Module, folder: Path, is_peft: bool) -> None:
    (load_adapter_into if is_peft else load_weights_into)(policy, folder)

