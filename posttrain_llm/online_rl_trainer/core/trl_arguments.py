"""Mapping `TrainerConfig` onto TRL's `GRPOConfig` / `RLOOConfig`: field names, owned keys, ``trl_kwargs`` checks.

Part of the configuration layer (the TRL trainers themselves are built in ``backends/trl``): ``TrainerConfig``
checks its ``trl_kwargs`` here, against the fields of the TRL config class the algorithm maps to. The only
departures from TRL's own defaults are the ones a CPU/offline user needs and a TRL user would set anyway:
``use_cpu`` follows ``use_gpu``; ``bf16`` and ``gradient_checkpointing`` default to off (TRL turns both on);
logging every step.

Not covered: PPO, which is ours and takes no TRL arguments.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import Any

from .common.errors import ConfigError

# Our field -> TRL's argument name, for arguments both GRPOConfig and RLOOConfig have.
_COMMON = {
    "output_dir": "output_dir",
    "learning_rate": "learning_rate",
    "num_train_epochs": "num_train_epochs",
    "max_steps": "max_steps",
    "per_device_train_batch_size": "per_device_train_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "lr_scheduler_type": "lr_scheduler_type",
    "warmup_ratio": "warmup_steps",  # transformers 5: a float in [0, 1) is a ratio
    "weight_decay": "weight_decay",
    "max_grad_norm": "max_grad_norm",
    "seed": "seed",
    "num_generations": "num_generations",
    "max_completion_length": "max_completion_length",
    "temperature": "temperature",
    "top_p": "top_p",
    "kl_coef": "beta",
    "clip_range": "epsilon",
    "clip_range_high": "epsilon_high",
    "num_iterations": "num_iterations",
    "mask_truncated_completions": "mask_truncated_completions",
    "bf16": "bf16",
    "gradient_checkpointing": "gradient_checkpointing",
    "use_vllm": "use_vllm",
    "vllm_mode": "vllm_mode",
    "vllm_gpu_memory_utilization": "vllm_gpu_memory_utilization",
    "logging_steps": "logging_steps",
    "save_steps": "save_steps",
    "save_total_limit": "save_total_limit",
    "report_to": "report_to",
    "run_name": "run_name",
    "reward_weights": "reward_weights",
}
_GRPO_ONLY = {"loss_type": "loss_type", "scale_rewards": "scale_rewards"}
# Set by the trainer itself, never through trl_kwargs. ``activation_checkpointing`` is recent transformers' name for
# ``gradient_checkpointing``: our field sets whichever of the two the installed version has (see ``to_trl_args``).
_TRAINER_OWNED = {"use_cpu": "use_gpu", "eval_strategy": "eval_steps", "eval_steps": "eval_steps",
                  "activation_checkpointing": "gradient_checkpointing"}


def trl_config_class(trainer_type: str):
    if trainer_type == "grpo":
        from trl import GRPOConfig

        return GRPOConfig
    if trainer_type == "rloo":
        from trl import RLOOConfig

        return RLOOConfig
    raise ValueError(f"trainer_type {trainer_type!r} has no TRL backend (TRL trainers: grpo, rloo)")


@lru_cache(maxsize=1)
def owned_trl_keys() -> dict[str, str]:
    """TRL argument -> the TrainerConfig field that sets it (so trl_kwargs cannot set it twice)."""
    owned = {trl: ours for ours, trl in {**_COMMON, **_GRPO_ONLY}.items()}
    owned.update(_TRAINER_OWNED)
    return owned


def check_trl_kwargs(trainer_type: str, trl_kwargs: dict[str, Any]) -> None:
    """ConfigError for a ``trl_kwargs`` key TRL's config class does not have, or one a TrainerConfig field sets."""
    if not trl_kwargs:
        return
    if trainer_type == "ppo":
        raise ConfigError(
            f"trl_kwargs {sorted(trl_kwargs)} given with trainer_type='ppo': PPO is our own trainer and "
            "takes no TRL arguments; set its fields (ppo_epochs, gamma, lam, vf_coef, ...) directly"
        )
    cls = trl_config_class(trainer_type)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in trl_kwargs:
        if key not in known:
            close = sorted(k for k in known if key.lower() in k or k in key.lower())[:5]
            raise ConfigError(
                f"trl_kwargs key {key!r} is not an argument of TRL's {cls.__name__}"
                + (f"; did you mean one of {close}?" if close else "")
            )
        owner = owned_trl_keys().get(key)
        if owner:
            raise ConfigError(
                f"trl_kwargs key {key!r} is set by TrainerConfig.{owner}; set that field instead of passing it through"
            )


def to_trl_args(config: Any, reward_weights: list[float] | None) -> Any:
    """TRL's config object (``GRPOConfig`` or ``RLOOConfig``) for a ``TrainerConfig`` of type grpo or rloo."""
    cls = trl_config_class(config.trainer_type)
    mapping = dict(_COMMON)
    if config.trainer_type == "grpo":
        mapping.update(_GRPO_ONLY)
    kwargs: dict[str, Any] = {trl: getattr(config, ours) for ours, trl in mapping.items()}
    kwargs["reward_weights"] = reward_weights
    kwargs["use_cpu"] = not config.use_gpu
    # Accuracy evaluation runs in our own callback (all algorithms alike), not in TRL's reward-only eval loop.
    kwargs["eval_strategy"] = "no"
    kwargs["disable_tqdm"] = False
    kwargs["save_strategy"] = "steps"
    kwargs.update(config.trl_kwargs)
    if _has_field(cls, "activation_checkpointing"):
        # Recent transformers renamed it; the old name still works but warns (FutureWarning) on every run. TRL's
        # config defaults the old name to True, which the new name, once set, overrides.
        kwargs["activation_checkpointing"] = kwargs.pop("gradient_checkpointing")
        if "gradient_checkpointing_kwargs" in kwargs and "activation_checkpointing_kwargs" not in kwargs:
            kwargs["activation_checkpointing_kwargs"] = kwargs.pop("gradient_checkpointing_kwargs")
    return cls(**kwargs)


@lru_cache(maxsize=None)
def _has_field(cls: type, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(cls))

