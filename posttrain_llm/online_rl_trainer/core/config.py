"""`TrainerConfig`: one typed, validated configuration for GRPO, RLOO and PPO, with presets and YAML I/O.

The config is deliberately small: the fields a TRL user reaches for every day, under the names SEED.md uses
(`kl_coef`, `clip_range`, `use_gpu`, ...). Everything else TRL accepts goes through ``trl_kwargs``, which is
checked against the fields of the TRL config class the chosen algorithm maps to, so a typo is an error that
names the key instead of a silently ignored setting. The mapping onto TRL's names lives in ``trl_arguments.py``.

Validation happens at construction (``__post_init__``), one section at a time: each bad value raises
``ConfigError`` quoting the value and what is accepted. The config holds values only: what the machine can do
(``use_gpu`` without CUDA, ``bf16`` on hardware without bf16, ``load_in_4bit`` without CUDA or bitsandbytes,
``use_vllm`` without vLLM) is checked where training starts (``common/machine.py``), so a config can be built,
saved and checked on any machine, including one that cannot run it.

Not covered here: launcher settings (number of processes, DeepSpeed/FSDP) — those belong to
``accelerate launch`` and the files in ``configs/``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .agents.calls import CALL_FORMATS
from .common.errors import ConfigError
from .common.names import TINY_MODEL_NAME
from .config_input import (
    check_field_types,
    check_report_to,
    int_at_least,
    is_number,
    non_negative,
    one_of,
    positive,
    read_config_yaml,
)
from .models.lora import LORA_SAVE_MODES
from .presets import PRESETS
from .trl_arguments import check_trl_kwargs

__all__ = ["ConfigError", "TINY_MODEL_NAME", "TrainerConfig"]  # ConfigError, TINY_MODEL_NAME: re-exported

TRAINER_TYPES = ("grpo", "rloo", "ppo")
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")
SCALE_REWARDS = ("group", "batch", "none")
VLLM_MODES = ("colocate", "server")
KL_ESTIMATORS = ("k1", "k3")
LR_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_min_lr")
CRITIC_TYPES = ("separate", "shared")


@dataclass(kw_only=True)
class TrainerConfig:
    """Settings for :class:`OnlineRLTrainer`. Keyword-only; validated on construction."""

    # --- What to train -------------------------------------------------------------------------------------
    trainer_type: str = "grpo"
    """Algorithm: ``grpo`` and ``rloo`` run on TRL's trainers, ``ppo`` on ours."""
    model_name_or_path: str = TINY_MODEL_NAME
    """A local folder, a Hub id (Hub or local HF cache), or ``builtin:tiny-char-llama``."""
    output_dir: str = "./outputs/online_rl"

    # --- Optimisation --------------------------------------------------------------------------------------
    learning_rate: float = 5e-6
    num_train_epochs: float = 1
    max_steps: int = -1
    """Optimizer steps; -1 means derive from ``num_train_epochs``."""
    per_device_train_batch_size: int | None = None
    """Completions (not prompts) per device per micro-step; must hold whole groups. None -> 2 * num_generations."""
    gradient_accumulation_steps: int = 1
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42

    # --- Generation ----------------------------------------------------------------------------------------
    num_generations: int = 4
    """Samples per prompt (G). PPO accepts 1."""
    max_prompt_length: int | None = 512
    """Prompts longer than this many tokens are an error naming the row (None: no check)."""
    max_completion_length: int = 256
    temperature: float = 1.0
    top_p: float = 1.0

    # --- Objective -----------------------------------------------------------------------------------------
    kl_coef: float = 0.1
    """KL penalty against the reference policy (TRL's ``beta``). 0 skips the reference model."""
    clip_range: float = 0.2
    """PPO-style ratio clip (TRL's ``epsilon``)."""
    clip_range_high: float | None = None
    """Upper clip for asymmetric clipping (DAPO's clip-higher); None = same as ``clip_range``."""
    loss_type: str = "dapo"
    """GRPO loss aggregation: grpo, dr_grpo, dapo, bnpo, cispo, sapo (TRL's ``loss_type``)."""
    scale_rewards: str = "group"
    """Advantage scaling for GRPO: group std, batch std, or none (Dr.GRPO)."""
    reward_weights: list[float] | None = None
    """One weight per reward function (a CompositeRewardFunction brings its own)."""
    reward_timeout_s: float | None = 600.0
    """Deadline for one call of one reward function on one batch; past it training stops with an error naming
    the reward (the call runs in a helper thread, abandoned when stuck). None: call rewards inline, no deadline."""
    num_iterations: int = 1
    """Policy updates per generation batch (GRPO/RLOO's mu)."""
    mask_truncated_completions: bool = False
    dynamic_sampling: bool = False
    """GRPO/RLOO: drop groups whose rewards are all equal and refill with fresh prompts, up to
    ``max_sampling_rounds`` generation rounds per batch (DAPO; ``backends/trl/dynamic_sampling.py``)."""
    max_sampling_rounds: int = 4
    curriculum: bool = False
    """All three algorithms: draw prompts by their recent pass rate (reward >= ``curriculum_pass_threshold``):
    solved ones retired for ``curriculum_recheck_steps`` steps, never-solved ones down-weighted (``data/curriculum.py``)."""
    curriculum_pass_threshold: float = 1.0
    curriculum_recheck_steps: int = 20

    # --- PPO (trainer_type="ppo") ---------------------------------------------------------------------------
    ppo_epochs: int = 1
    """Passes over each rollout. 1 like verl (``ppo_epochs``) and OpenRLHF (``max_epochs``): a PPO step costs ~1.7x
    (tiny model) to ~1.9x (SmolLM2) a GRPO step at the same generated tokens on CPU, against ~4x with 4 (TRL's
    legacy PPO, our default before issue 12); per second of training both reached the same reward in the README's
    measurement. The tiny offline PPO demo pins 4 (its tuned recipe)."""
    num_mini_batches: int = 1
    gamma: float = 1.0
    lam: float = 0.95
    vf_coef: float = 0.1
    vf_clip: float = 0.2
    kl_estimator: str = "k1"
    adaptive_kl: bool = False
    kl_target: float = 6.0
    kl_horizon: int = 10000
    whiten_advantages: bool = True
    critic_type: str = "separate"
    """``separate``: a copy of the policy backbone (or ``critic_model_name_or_path``) with a scalar head;
    ``shared``: a value head on the policy backbone."""
    critic_model_name_or_path: str | None = None
    critic_learning_rate: float | None = None

    # --- Hardware / precision -------------------------------------------------------------------------------
    use_gpu: bool = False
    """False trains on CPU even where a GPU exists."""
    bf16: bool = False
    gradient_checkpointing: bool = False
    torch_num_threads: int | None = None
    """CPU threads for torch; None leaves torch's default (all physical cores). On a machine shared with other busy
    processes, 1 thread degrades far less than all of them."""
    cpu_bf16_autocast: bool | str = False
    """On CPU (GRPO, RLOO and PPO): generation and every log-prob/value pass under bfloat16 autocast (fp32 master
    weights and optimizer). ``"auto"``: on where the CPU has native bf16 (AVX512-BF16 or AMX), off elsewhere; ``True``
    on a CPU without it is an error when training starts. Log-probs move by ~0.015 nats on average; the run logs the
    measured drift as ``cpu_bf16/logprob_diff_*`` (see the README's CPU section)."""
    share_prompt_prefix: bool = True
    """GRPO/RLOO: each log-prob pass computes a distinct prompt once and shares its key/value cache with the prompt's
    completions (same log-probs and gradients up to rounding, fewer tokens; ``backends/trl/prompt_sharing.py``). Off
    by itself, with a log line, under several processes or gradient checkpointing."""
    skip_zero_advantage: bool = True
    """GRPO/RLOO: a micro-batch whose advantages are all exactly zero skips its forward and backward, the weights
    getting the exact-zero gradient it would have given (``backends/trl/zero_advantage.py``: when it is off by itself,
    what metrics change). ``update/skipped_micro_batches`` logs the fraction skipped."""

    # --- Multi-turn tools and environments (OnlineRLTrainer(tools=..., environment_factory=...)) -----------------
    max_turns: int = 4
    max_tool_calls: int = 8
    tool_timeout_s: float = 10.0
    max_tool_output_chars: int = 2000
    tool_call_format: str = "auto"
    """``hermes``/``qwen``, ``smollm2``, ``chatml`` (``core/agents/calls.py``) or ``auto`` (from the tokenizer).
    ``max_completion_length`` budgets model *and* tool tokens after the prompt; a turn may use all that is left."""
    tools_in_prompt: bool = True
    """Describe the tools in the prompt (the chat template's ``tools=``, else a system message); False for a model
    that learned its tools in a warm-up."""

    # --- LoRA (peft) -----------------------------------------------------------------------------------------
    use_peft: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | str = "all-linear"
    lora_save: str = "merged"
    """What ``save_model`` writes with ``use_peft``: ``merged`` (a plain ``from_pretrained`` folder with the LoRA
    weights merged in, plus the adapter alone in ``adapter/``) or ``adapter`` (only the PEFT adapter:
    ``adapter_config.json`` + ``adapter_model.safetensors``, loaded on top of its base model). Checkpoints always
    hold the adapter only. With ``load_in_4bit``, ``merged`` merges into the base reloaded in its stored precision,
    not into the 4-bit weights."""
    load_in_4bit: bool = False
    """QLoRA: the base loaded in 4-bit NF4 with double quantization (bitsandbytes), bf16 compute when the GPU
    supports it (else fp32), LoRA adapters trained on top. Needs ``use_peft``, ``use_gpu``, a CUDA device and
    bitsandbytes; grpo and rloo only."""

    # --- vLLM (GPU only) -------------------------------------------------------------------------------------
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    vllm_gpu_memory_utilization: float = 0.3

    # --- Logging / checkpoints --------------------------------------------------------------------------------
    logging_steps: int = 1
    save_steps: int = 500
    save_total_limit: int | None = 2
    eval_steps: int | None = None
    report_to: list[str] = field(default_factory=lambda: ["none"])
    run_name: str | None = None
    overwrite_output_dir: bool = False
    """A fresh run into an ``output_dir`` holding an earlier run's checkpoints or finished results is refused unless
    this is True; then the earlier checkpoints are deleted first (transformers 4's name; CLI ``--overwrite``)."""

    # --- Anything else TRL accepts ------------------------------------------------------------------------------
    trl_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra arguments for TRL's GRPOConfig/RLOOConfig; unknown keys are an error."""

    def __post_init__(self) -> None:
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        check_field_types(self)  # first: bf16='false' must not reach the checks below as a truthy string
        if self.per_device_train_batch_size is None:
            self.per_device_train_batch_size = 2 * self.num_generations
        self._validate()

    # ------------------------------------------------------------------------------------------------------
    def _validate(self) -> None:
        """Values only, section by section; what the machine can do is checked when training starts."""
        self._validate_choices()
        self._validate_counts()
        self._validate_numbers()
        self._validate_rewards_and_logging()
        self._validate_combinations()
        if not isinstance(self.trl_kwargs, dict):
            raise ConfigError(f"trl_kwargs={self.trl_kwargs!r} must be a dict of extra TRL arguments")
        check_trl_kwargs(self.trainer_type, self.trl_kwargs)

    def _validate_choices(self) -> None:
        one_of("trainer_type", self.trainer_type, TRAINER_TYPES)
        if not isinstance(self.model_name_or_path, str) or not self.model_name_or_path.strip():
            raise ConfigError(f"model_name_or_path={self.model_name_or_path!r}: give a folder, a Hub id or {TINY_MODEL_NAME!r}")
        if not self.output_dir.strip():
            raise ConfigError(f"output_dir={self.output_dir!r}: give the folder for the model, checkpoints and metrics")
        one_of("loss_type", self.loss_type, LOSS_TYPES)
        one_of("scale_rewards", self.scale_rewards, SCALE_REWARDS)
        one_of("vllm_mode", self.vllm_mode, VLLM_MODES)
        one_of("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        one_of("lr_scheduler_type", self.lr_scheduler_type, LR_SCHEDULERS)
        one_of("critic_type", self.critic_type, CRITIC_TYPES)
        one_of("lora_save", self.lora_save, LORA_SAVE_MODES)
        one_of("tool_call_format", self.tool_call_format, ("auto", *CALL_FORMATS))
        if not (self.cpu_bf16_autocast is True or self.cpu_bf16_autocast is False or self.cpu_bf16_autocast == "auto"):
            raise ConfigError(f"cpu_bf16_autocast={self.cpu_bf16_autocast!r}: use True, False or 'auto'")
        if self.cpu_bf16_autocast is True and self.use_gpu:
            raise ConfigError("cpu_bf16_autocast=True applies to CPU runs (here use_gpu=True); set it to False or "
                              "'auto' (on a GPU use bf16=True)")

    def _validate_counts(self) -> None:
        """Integers: batch and group sizes, steps, lengths, LoRA ranks."""
        min_gen = 1 if self.trainer_type == "ppo" else 2
        int_at_least("num_generations", self.num_generations, min_gen,
                      why="group-relative baselines need at least 2 samples per prompt" if min_gen == 2 else "")
        int_at_least("per_device_train_batch_size", self.per_device_train_batch_size, 1)
        if self.per_device_train_batch_size % self.num_generations:
            raise ConfigError(
                f"per_device_train_batch_size={self.per_device_train_batch_size} is not a multiple of "
                f"num_generations={self.num_generations}: the batch counts completions and must hold whole groups "
                f"(e.g. {self.num_generations * max(1, self.per_device_train_batch_size // self.num_generations)})"
            )
        for name in ("gradient_accumulation_steps", "max_completion_length", "logging_steps", "save_steps",
                     "num_iterations", "ppo_epochs", "num_mini_batches", "kl_horizon", "lora_r", "lora_alpha",
                     "max_turns", "max_tool_output_chars", "max_sampling_rounds", "curriculum_recheck_steps"):
            int_at_least(name, getattr(self, name), 1)
        int_at_least("max_tool_calls", self.max_tool_calls, 0)
        for name in ("max_prompt_length", "eval_steps", "save_total_limit", "torch_num_threads"):
            if getattr(self, name) is not None:
                int_at_least(name, getattr(self, name), 1)
        steps = self.max_steps
        if not isinstance(steps, int) or isinstance(steps, bool) or (steps < 1 and steps != -1):
            raise ConfigError(f"max_steps={self.max_steps!r}: use a positive integer, or -1 to derive from num_train_epochs")
        if self.per_device_train_batch_size % self.num_mini_batches:
            raise ConfigError(
                f"num_mini_batches={self.num_mini_batches} does not divide per_device_train_batch_size="
                f"{self.per_device_train_batch_size}: each PPO minibatch must be a whole number of completions"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r}: use a non-negative integer")

    def _validate_numbers(self) -> None:
        """Floats: rates, clips, coefficients, probabilities."""
        for name in ("learning_rate", "num_train_epochs", "temperature", "clip_range", "max_grad_norm", "kl_target",
                     "tool_timeout_s"):
            positive(name, getattr(self, name))
        if self.critic_learning_rate is not None:
            positive("critic_learning_rate", self.critic_learning_rate)
        if not is_number(self.curriculum_pass_threshold):
            raise ConfigError(f"curriculum_pass_threshold={self.curriculum_pass_threshold!r} must be a finite number "
                              "(a completion passes when its reward is >= it)")
        if self.clip_range_high is not None:
            positive("clip_range_high", self.clip_range_high)
            if self.clip_range_high < self.clip_range:
                raise ConfigError(
                    f"clip_range_high={self.clip_range_high!r} is below clip_range={self.clip_range!r}: the upper clip "
                    "must be >= the lower one (DAPO's clip-higher: clip_range=0.2, clip_range_high=0.28), or None for "
                    "the same as clip_range"
                )
        for name in ("kl_coef", "weight_decay", "vf_coef", "vf_clip", "warmup_ratio", "lora_dropout"):
            non_negative(name, getattr(self, name))
        for name in ("top_p", "gamma", "lam", "vllm_gpu_memory_utilization"):
            value = getattr(self, name)
            non_negative(name, value)
            if value > 1 or (name in ("top_p", "vllm_gpu_memory_utilization") and value == 0):
                raise ConfigError(f"{name}={value!r} must be in (0, 1]" if name in ("top_p", "vllm_gpu_memory_utilization")
                                  else f"{name}={value!r} must be in [0, 1]")
        if self.warmup_ratio >= 1:
            raise ConfigError(f"warmup_ratio={self.warmup_ratio!r} must be in [0, 1)")
        if self.lora_dropout >= 1:
            raise ConfigError(f"lora_dropout={self.lora_dropout!r} must be in [0, 1)")

    def _validate_rewards_and_logging(self) -> None:
        if self.reward_timeout_s is not None and (not is_number(self.reward_timeout_s) or self.reward_timeout_s <= 0):
            raise ConfigError(f"reward_timeout_s={self.reward_timeout_s!r} must be a finite number of seconds > 0, or None "
                              "for no deadline")
        if self.reward_weights is not None:
            if not isinstance(self.reward_weights, (list, tuple)) or not self.reward_weights:
                raise ConfigError(f"reward_weights={self.reward_weights!r}: give a non-empty list of numbers or None")
            for w in self.reward_weights:
                if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                    raise ConfigError(f"reward_weights contains {w!r}; every weight must be a finite number")
            self.reward_weights = [float(w) for w in self.reward_weights]
        check_report_to(self.report_to)
        targets = self.lora_target_modules
        if not (isinstance(targets, str) and targets) and not (
                isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)):
            raise ConfigError(f"lora_target_modules={targets!r}: give 'all-linear' or a non-empty list of module names")

    def _validate_combinations(self) -> None:
        """Settings that are each valid but do not go together."""
        if self.critic_model_name_or_path is not None and self.critic_type == "shared":
            raise ConfigError(
                f"critic_model_name_or_path={self.critic_model_name_or_path!r} conflicts with critic_type='shared' "
                "(a shared value head lives on the policy); use critic_type='separate'"
            )
        if self.trainer_type != "grpo":
            for name, default in (("loss_type", "dapo"), ("scale_rewards", "group")):
                if getattr(self, name) != default:
                    raise ConfigError(
                        f"{name}={getattr(self, name)!r} applies to trainer_type='grpo' only (got "
                        f"trainer_type={self.trainer_type!r}); leave it at {default!r}"
                    )
        if self.dynamic_sampling and self.trainer_type == "ppo":
            raise ConfigError("dynamic_sampling=True applies to trainer_type 'grpo' and 'rloo' (groups of completions per "
                              "prompt), not 'ppo'")
        if self.load_in_4bit:
            if not self.use_peft:
                raise ConfigError("load_in_4bit=True needs use_peft=True: a 4-bit base cannot be trained itself, only "
                                  "LoRA adapters on top of it (QLoRA)")
            if self.trainer_type == "ppo":
                raise ConfigError("load_in_4bit=True is supported for trainer_type 'grpo' and 'rloo', not 'ppo': PPO's "
                                  "separate critic is a trainable copy of the policy backbone, which cannot train in 4 bits")
            if not self.use_gpu:
                raise ConfigError("load_in_4bit=True needs use_gpu=True: bitsandbytes' 4-bit layers run on a CUDA GPU")
        if self.use_vllm and not self.use_gpu:
            raise ConfigError("use_vllm=True needs use_gpu=True: vLLM generation runs on a GPU only")
        if self.use_vllm and self.trainer_type == "ppo":
            raise ConfigError("use_vllm=True is supported for trainer_type 'grpo' and 'rloo', not 'ppo'")

    # ------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> "TrainerConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"a TrainerConfig must be built from a mapping, got {type(data).__name__}")
        merged = {**data, **overrides}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ConfigError(f"unknown TrainerConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**merged)

    def save_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "TrainerConfig":
        """Read a YAML file strictly (duplicate keys, encoding, empty files, YAML 1.1 floats: ``config_input``)."""
        path = Path(path)
        data = read_config_yaml(path, cls)
        try:
            return cls.from_dict(data, **overrides)
        except ConfigError as exc:
            raise ConfigError(f"config file {str(path)!r}: {exc}") from None

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "TrainerConfig":
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; available presets: {sorted(PRESETS)}")
        return cls.from_dict(dict(PRESETS[name]), **overrides)

    def replace(self, **changes: Any) -> "TrainerConfig":
        return dataclasses.replace(self, **changes)
