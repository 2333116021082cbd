"""PPO checkpoints: what a PPO checkpoint holds, RNG states and exact weight restore.

A checkpoint is ``<output_dir>/checkpoint-<step>/`` holding:

- ``policy/`` (``save_pretrained``: full weights, or the LoRA adapter when the policy is a peft model),
- ``critic/`` (:func:`value_model.save_critic`),
- ``optimizer.pt``, ``critic_optimizer.pt`` (absent for a shared critic: one optimizer), ``scheduler.pt``,
  ``critic_scheduler.pt``,
- ``rng_state_<rank>.pth`` (python, numpy, torch CPU and CUDA generators, one file per process),
- ``trainer_state.json`` (``transformers.TrainerState``) and ``ppo_state.json`` (KL controller, data position,
  the pending logging window),
- ``checkpoint_complete.json``, written last.

Atomicity (staging folder, marker, fsync, rename) and finding/pruning checkpoints are shared with GRPO/RLOO in
``files/checkpoints.py`` and re-exported here; this module keeps what only PPO needs: RNG states and weight restore.

Not covered: sharded optimizer states (DeepSpeed/FSDP), saving to remote storage.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...files.checkpoints import (  # the shared checkpoint-folder logic, re-exported for PPO's callers
    CHECKPOINT_PREFIX, COMPLETE_MARKER, begin_checkpoint, commit_checkpoint, latest_checkpoint, list_checkpoints,
    loading, prune_checkpoints, read_json, resolve_resume_path, temp_checkpoint_dir, write_json,
)

__all__ = [
    "CHECKPOINT_PREFIX", "COMPLETE_MARKER", "PPO_STATE", "begin_checkpoint", "capture_rng_state", "commit_checkpoint",
    "latest_checkpoint", "list_checkpoints", "load_adapter_into", "loading", "load_policy_into", "load_torch_file",
    "load_weights_into", "prune_checkpoints", "read_json", "resolve_resume_path", "restore_rng_state", "rng_file",
    "save_policy", "temp_checkpoint_dir", "write_json",
]

#: PPO's own state (KL controller, data position, pending logging window); the completion marker comes after it.
PPO_STATE = "ppo_state.json"


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

