"""Building everything a PPO run holds: checks, accelerator, critic, reference, LoRA, optimizers, schedulers.

:func:`build_components` validates the PPO-specific settings that ``TrainerConfig`` cannot check alone (they
depend on the dataset, the tokenizer or the number of processes) and raises ``ConfigError`` naming the value,
then assembles a :class:`PPOComponents`. Order matters: the critic's backbone and the reference policy are
copied from the policy *before* LoRA is applied, so neither carries adapters; with LoRA the reference is the
policy with its adapter disabled (no copy).

Distributed: models and optimizers go through ``accelerate.Accelerator.prepare`` (DDP under
``accelerate launch``); schedulers are stepped by hand once per PPO step and are not prepared (accelerate would
step them once per process). A single process needs no launcher. ``bf16`` = accelerate's autocast with float32
master weights; CPU unless ``use_gpu``.

Not covered: DeepSpeed/FSDP (the reference and critic would need sharding too; a launch with either is refused
with a ConfigError), quantised (QLoRA) policies.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ...algorithms import AdaptiveKLController, FixedKLController
from ...common.deprecations import quiet_library_checkpointing_aliases
from ...common.machine import check_machine, cpu_bf16_autocast_on
from ...common.tokens import eos_token_ids
from ...config import ConfigError, TrainerConfig
from ...models.critic import PolicyWithValueHead, ValueModel, copy_policy_backbone, load_critic_backbone
from ..cpu_bf16 import bf16_autocast
from ..shared_prompt import cache_argument_name
from .reporting import check_report_to

logger = logging.getLogger(__name__)


@dataclass
class PPOComponents:
    """The live objects of a PPO run. ``policy``/``critic``/``shared_module`` are unwrapped; ``train_*`` are the
    prepared (possibly DDP-wrapped) modules the losses run through."""

    accelerator: Any
    policy: nn.Module
    critic: nn.Module
    train_policy: nn.Module
    train_critic: nn.Module | None
    shared_module: PolicyWithValueHead | None
    reference: nn.Module | None
    is_peft: bool
    optimizers: list[Any]
    schedulers: list[Any]
    param_groups: list[list[nn.Parameter]]
    kl_controller: FixedKLController
    generation_config: Any
    eos_ids: list[int]
    micro_batch: int
    prompts_per_process: int
    global_batch: int
    max_steps: int
    steps_per_epoch: int
    max_grad_norm: float
    cpu_bf16: bool = False
    policy_cache_kw: str | None = None
    """The keyword the policy (and reference) take a KV cache by when prompts are shared (``share_prompt_prefix``);
    None: every row computed whole."""
    critic_cache_kw: str | None = None
    group_size: int = 1
    """Completions per prompt, adjacent in a rollout batch: the update's shuffle keeps them together when sharing."""
    _trainable: list[nn.Module] = field(default_factory=list)

    @property
    def has_reference(self) -> bool:
        return self.reference is not None

    def reference_context(self):
        """With LoRA the reference is the policy with its adapter switched off for the duration of the block."""
        return self.policy.disable_adapter() if self.is_peft else contextlib.nullcontext()

    def set_train_mode(self, training: bool) -> None:
        # Dropout is off everywhere, so this only matters for gradient checkpointing (active in train mode only).
        for module in (self.policy, self.critic):
            module.train(training)

    def autocast(self):
        """The precision context of every forward: accelerate's (``bf16`` on a GPU) and, on CPU with
        ``cpu_bf16_autocast``, bfloat16 autocast (``backends/cpu_bf16.py``)."""
        stack = contextlib.ExitStack()
        stack.enter_context(self.accelerator.autocast())
        stack.enter_context(bf16_autocast(self.cpu_bf16))
        return stack

    def no_sync(self):
        stack = contextlib.ExitStack()
        for module in self._trainable:
            stack.enter_context(self.accelerator.no_sync(module))
        return stack

    def clip_and_step(self) -> dict[str, float]:
        """Clip each model's gradients to ``max_grad_norm``, step and zero every optimizer; -> grad norms."""
        names = ["grad_norm/policy", "grad_norm/value"] if len(self.param_groups) == 2 else ["grad_norm"]
        norms = {}
        for name, params in zip(names, self.param_groups):
            norms[name] = float(self.accelerator.clip_grad_norm_(params, self.max_grad_norm))
        for opt in self.optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        return norms


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability to 0 (Huang et al. 2024: PPO's ratio must compare the same function)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for attr in ("attention_dropout", "dropout_p"):
            if isinstance(getattr(module, attr, None), float):
                setattr(module, attr, 0.0)


def check_ppo_settings(cfg: TrainerConfig, tokenizer: Any, dataset_size: int, num_processes: int) -> dict[str, int]:
    """PPO checks that need the data/tokenizer/world size; returns the derived batch sizes and step counts."""
    if cfg.trainer_type != "ppo":
        raise ConfigError(f"PPOTrainer needs trainer_type='ppo', got {cfg.trainer_type!r}")
    check_report_to(cfg.report_to)
    batch = cfg.per_device_train_batch_size
    if cfg.num_mini_batches > batch:
        raise ConfigError(f"num_mini_batches={cfg.num_mini_batches} is larger than the batch of {batch} completions "
                          "(per_device_train_batch_size): a minibatch would hold less than one completion")
    minibatch = batch // cfg.num_mini_batches
    if minibatch % cfg.gradient_accumulation_steps:
        raise ConfigError(
            f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} does not divide the PPO minibatch of "
            f"{minibatch} completions (per_device_train_batch_size={batch} / num_mini_batches={cfg.num_mini_batches}); "
            "PPO splits each minibatch into that many micro-batches"
        )
    if not cfg.clip_range < 1:
        raise ConfigError(f"clip_range={cfg.clip_range!r} must be < 1 for PPO (the ratio is clipped to [1-c, 1+c])")
    if cfg.vf_clip <= 0:
        raise ConfigError(f"vf_clip={cfg.vf_clip!r} would freeze the critic (its values are clipped to +-vf_clip around "
                          "the rollout values); use a positive value (a large one, e.g. 1e6, disables clipping)")
    if tokenizer.pad_token_id is None:
        raise ConfigError("the tokenizer has no pad token; call models.prepare_tokenizer(tokenizer) first")
    prompts = batch // cfg.num_generations
    needed = prompts * num_processes
    if dataset_size < needed:
        raise ConfigError(
            f"train_data has {dataset_size} rows but one PPO step needs {needed} prompts (per_device_train_batch_size="
            f"{batch} / num_generations={cfg.num_generations} x {num_processes} processes); add rows or shrink the batch"
        )
    steps_per_epoch = dataset_size // needed
    max_steps = cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.num_train_epochs * steps_per_epoch))
    return {"micro_batch": minibatch // cfg.gradient_accumulation_steps, "prompts_per_process": prompts,
            "global_batch": batch * num_processes, "steps_per_epoch": steps_per_epoch, "max_steps": max_steps}


def check_data_parallel(accelerator: Any) -> None:
    """ConfigError when launched with DeepSpeed or FSDP: this loop prepares the policy and critic as separate DDP
    modules, keeps an unsharded reference and generates with the local weights, none of which holds under sharding."""
    kind = str(getattr(accelerator, "distributed_type", "NO")).split(".")[-1]
    if kind in ("DEEPSPEED", "FSDP"):
        raise ConfigError(
            f"trainer_type='ppo' runs data-parallel only (DDP: configs/accelerate/ddp.yaml, cpu_2proc.yaml); this "
            f"process was launched with {kind}. Launch PPO with a DDP config, or use grpo/rloo with DeepSpeed/FSDP"
        )


def make_accelerator(cfg: TrainerConfig):
    """``Accelerator`` on CPU unless ``use_gpu``, bf16 autocast when ``bf16``.

    accelerate keeps one process-wide state; when an earlier trainer in this same single-process Python session
    chose another precision or device, that state is started afresh (as accelerate's own tests do) instead of
    failing. Under a launcher (WORLD_SIZE > 1) a mismatch stays an error.
    """
    import os

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    kwargs = {"cpu": not cfg.use_gpu, "mixed_precision": "bf16" if cfg.bf16 else "no"}
    try:
        return Accelerator(**kwargs)
    except ValueError as exc:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 or "already been initialized" not in str(exc):
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(**kwargs)


def _scheduler(cfg: TrainerConfig, optimizer: Any, max_steps: int):
    from transformers import get_scheduler

    extra = {"min_lr_rate": 0.1} if cfg.lr_scheduler_type == "cosine_with_min_lr" else None
    return get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=math.ceil(cfg.warmup_ratio * max_steps),
                         num_training_steps=max_steps, scheduler_specific_kwargs=extra)


def enable_activation_checkpointing(model: nn.Module, kwargs: dict[str, Any]) -> None:
    """Turn on activation (gradient) checkpointing under the name the installed transformers has: newer versions
    renamed ``gradient_checkpointing_enable`` and warn (FutureWarning) on the old name."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _prompt_sharing(cfg: TrainerConfig, accelerator: Any, policy: nn.Module, critic: nn.Module | None) -> dict[str, Any]:
    """The cache keywords of :class:`PPOComponents` (None where a prompt cannot be shared), with a log line why not."""
    reason = None
    if not cfg.share_prompt_prefix:
        return {}
    if accelerator.num_processes > 1:
        reason = f"{accelerator.num_processes} processes"
    elif cfg.gradient_checkpointing:
        reason = "gradient checkpointing is on"
    elif cfg.critic_type == "shared":
        reason = "critic_type='shared'"
    if reason:
        logger.info("share_prompt_prefix: off for this run (%s); each row's prompt is computed with it", reason)
        return {}
    inner = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    backbone = getattr(critic, "backbone", None)
    return {"policy_cache_kw": cache_argument_name(inner),
            "critic_cache_kw": cache_argument_name(backbone) if backbone is not None else None,
            "group_size": cfg.num_generations}


def _fused_adamw(params: list[Any]) -> bool | None:
    """``fused=True`` for AdamW where torch has the fused kernel for every parameter (CPU and CUDA floats), as
    transformers' default ``adamw_torch_fused`` gives GRPO/RLOO: on CPU the for-loop AdamW took 0.44-0.95 s per
    SmolLM2-135M step and ~0.2 GiB of temporaries, the fused one 0.09 s and none. None (torch's choice) elsewhere."""
    ok = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return True if ok else None


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def build_components(cfg: TrainerConfig, model: nn.Module, tokenizer: Any, reward_funcs: Sequence[Any],
                     reward_weights: Sequence[float], train_dataset: Any) -> PPOComponents:
    from transformers import GenerationConfig

    if len(reward_funcs) != len(reward_weights) or not reward_funcs:
        raise ConfigError(f"got {len(reward_funcs)} reward functions and {len(reward_weights)} weights; give one weight each")
    check_machine(cfg)  # PPOTrainer is usable on its own: it checks the machine where its work starts, too
    accelerator = make_accelerator(cfg)
    check_data_parallel(accelerator)
    sizes = check_ppo_settings(cfg, tokenizer, len(train_dataset), accelerator.num_processes)
    disable_dropout(model)
    critic: nn.Module | None = None
    if cfg.critic_type == "separate":
        backbone = (load_critic_backbone(cfg.critic_model_name_or_path, tokenizer) if cfg.critic_model_name_or_path
                    else copy_policy_backbone(model))
        disable_dropout(backbone)
        critic = ValueModel(backbone)
    reference = None
    needs_reference = cfg.kl_coef > 0 or cfg.adaptive_kl
    if needs_reference and not cfg.use_peft:
        reference = copy.deepcopy(model).requires_grad_(False).eval()
    policy = model
    if cfg.use_peft:
        from peft import get_peft_model

        from ...models.lora import build_peft_config

        with quiet_library_checkpointing_aliases():  # peft reads a deprecated transformers alias
            policy = get_peft_model(model, build_peft_config(cfg))
        disable_dropout(policy)
        if needs_reference:
            reference = policy
    if cfg.gradient_checkpointing:
        for m in (policy, getattr(critic, "backbone", None)):
            if m is not None:
                enable_activation_checkpointing(m, {"use_reentrant": False})
    weight_decay = cfg.weight_decay
    critic_lr = cfg.critic_learning_rate or cfg.learning_rate
    if cfg.critic_type == "shared":
        shared = PolicyWithValueHead(policy)
        groups = [_trainable(policy), list(shared.value_head.parameters())]
        optimizers = [torch.optim.AdamW([{"params": groups[0], "lr": cfg.learning_rate},
                                         {"params": groups[1], "lr": critic_lr}], weight_decay=weight_decay,
                                        fused=_fused_adamw(groups[0] + groups[1]))]
        train_modules = [shared]
        param_groups = [groups[0] + groups[1]]
    else:
        shared = None
        param_groups = [_trainable(policy), _trainable(critic)]
        optimizers = [torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=_fused_adamw(params))
                      for params, lr in zip(param_groups, (cfg.learning_rate, critic_lr))]
        train_modules = [policy, critic]
    schedulers = [_scheduler(cfg, opt, sizes["max_steps"]) for opt in optimizers]
    prepared = accelerator.prepare(*train_modules, *optimizers)
    prepared = list(prepared) if isinstance(prepared, (list, tuple)) else [prepared]
    train_modules, optimizers = prepared[: len(train_modules)], prepared[len(train_modules):]
    if reference is not None and reference is not policy:
        reference.to(accelerator.device)
    eos_ids = eos_token_ids(tokenizer, model)
    generation_config = GenerationConfig(
        max_new_tokens=cfg.max_completion_length, do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=0,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_ids, disable_compile=True,
    )
    kl_controller = (AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon) if cfg.adaptive_kl
                     else FixedKLController(cfg.kl_coef))
    return PPOComponents(
        accelerator=accelerator, policy=policy, critic=shared if shared is not None else critic,
        train_policy=train_modules[0], train_critic=None if shared is not None else train_modules[1],
        shared_module=shared, reference=reference, is_peft=cfg.use_peft, optimizers=optimizers, schedulers=schedulers,
        param_groups=param_groups, kl_controller=kl_controller, generation_config=generation_config, eos_ids=eos_ids,
        micro_batch=sizes["micro_batch"], prompts_per_process=sizes["prompts_per_process"],
        global_batch=sizes["global_batch"], max_steps=sizes["max_steps"], steps_per_epoch=sizes["steps_per_epoch"],
        max_grad_norm=cfg.max_grad_norm, cpu_bf16=cpu_bf16_autocast_on(cfg.cpu_bf16_autocast, cfg.use_gpu),
        **_prompt_sharing(cfg, accelerator, policy, None if shared is not None else critic),
        _trainable=list(train_modules),
    )
