"""Mapping `TrainerConfig` onto TRL's `GRPOConfig` / `RLOOConfig`, and building TRL's trainers.

Kept apart from ``trainer.py`` so the mapping can be read (and tested) in one place. The only departures from
TRL's own defaults are the ones a CPU/offline user needs and a TRL user would set anyway: ``use_cpu`` follows
``use_gpu``; ``bf16`` and ``gradient_checkpointing`` default to off (TRL turns both on); logging every step.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from .config import ConfigError, TrainerConfig

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


def to_trl_args(config: TrainerConfig, reward_weights: list[float] | None) -> Any:
    """Build TRL's config object for ``config`` (grpo or rloo)."""
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
    import dataclasses

    return any(f.name == name for f in dataclasses.fields(cls))


def build_trl_trainer(config: TrainerConfig, model, tokenizer, reward_funcs, reward_weights, train_dataset, callbacks):
    """Instantiate TRL's GRPOTrainer or RLOOTrainer (our subclass: atomic checkpoints, exact resume, LoRA save
    modes; see ``backends/trl/trainers.py``) with our guarded rewards and callbacks."""
    from .backends.trl.trainers import trainer_class

    args = to_trl_args(config, reward_weights)
    check_enough_prompts(args, config.trainer_type, len(train_dataset))
    peft_config = build_peft_config(config) if config.use_peft else None
    if config.load_in_4bit:  # QLoRA: TRL adds the adapter but leaves peft's k-bit preparation to the caller
        from .models.quantization import prepare_for_kbit_training

        model = prepare_for_kbit_training(model, args.gradient_checkpointing, args.gradient_checkpointing_kwargs)
    cls = trainer_class(config.trainer_type)
    return cls(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=peft_config,
        lora_save=config.lora_save,
    )


def check_enough_prompts(args: Any, trainer_type: str, num_prompts: int) -> None:
    """ConfigError when ``train_data`` cannot fill one generation batch. TRL's sampler drops an incomplete batch of
    prompts, so such a run would train 0 steps, save the untrained model and exit as if it had succeeded."""
    needed = args.generation_batch_size // args.num_generations
    if num_prompts < needed:
        raise ConfigError(
            f"train_data has {num_prompts} prompts but one {trainer_type} step needs {needed}: generation_batch_size="
            f"{args.generation_batch_size} completions (per_device_train_batch_size={args.per_device_train_batch_size}"
            f" x {args.world_size} processes x steps_per_generation={args.steps_per_generation}) / num_generations="
            f"{args.num_generations}. Add prompts (--num-samples) or shrink per_device_train_batch_size (--batch-size)"
        )


def build_peft_config(config: TrainerConfig):
    try:
        from peft import LoraConfig
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("use_peft=True needs the 'peft' package: pip install 'posttrain-llm[peft]'") from exc
    return LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules, task_type="CAUSAL_LM",
    )
