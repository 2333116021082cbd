"""PPO checkpoints: what a PPO checkpoint holds, RNG states, and the policy saved and restored in place.

A checkpoint is ``<output_dir>/checkpoint-<step>/`` holding:

- ``policy/`` (``save_pretrained``: full weights, or the LoRA adapter when the policy is a peft model),
- ``critic/`` (:func:`models.critic.save_critic`),
- ``optimizer.pt``, ``critic_optimizer.pt`` (absent for a shared critic: one optimizer), ``scheduler.pt``,
  ``critic_scheduler.pt``,
- ``rng_state_<rank>.pth`` (python, numpy, torch CPU and CUDA generators, one file per process),
- ``trainer_state.json`` (``transformers.TrainerState``) and ``ppo_state.json`` (KL controller, data position,
  the pending logging window),
- ``checkpoint_complete.json``, written last.

Atomicity (staging folder, marker, fsync, rename) and finding/pruning checkpoints are shared with GRPO/RLOO in
``files/checkpoints.py`` and re-exported here; exact weight restore is ``models/weights.py``. This module keeps what
only PPO needs: RNG states and the policy's save/restore.

Not covered: sharded optimizer states (DeepSpeed/FSDP), saving to remote storage.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...files.checkpoints import (  # the shared checkpoint-folder logic, re-exported for PPO's callers
    CHECKPOINT_PREFIX,
    COMPLETE_MARKER,
    begin_checkpoint,
    checkpoint_dir,
    commit_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    loading,
    prune_checkpoints,
    read_json,
    resolve_resume_path,
    temp_checkpoint_dir,
    write_json,
)
from ...models.weights import load_adapter_into, load_weights_into

__all__ = [
    "CHECKPOINT_PREFIX", "COMPLETE_MARKER", "PPO_STATE", "begin_checkpoint", "capture_rng_state", "checkpoint_dir",
    "commit_checkpoint", "latest_checkpoint", "list_checkpoints", "load_adapter_into", "loading", "load_policy_into",
    "load_torch_file",
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


# ------------------------------------------------------------------------------------------- weights
def save_policy(policy: torch.nn.Module, folder: Path) -> None:
    policy.save_pretrained(str(folder))


def load_policy_into(policy: torch.nn.Module, folder: Path, is_peft: bool) -> None:
    (load_adapter_into if is_peft else load_weights_into)(policy, folder)

