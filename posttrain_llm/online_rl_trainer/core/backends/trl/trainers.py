"""Our subclasses of TRL's `GRPOTrainer` / `RLOOTrainer`: atomic checkpoints, exact resume, LoRA save modes.

Training itself is TRL's, untouched. What changes is how checkpoints are written and read back, and how the final
LoRA model is saved:

- **Atomic checkpoints.** transformers writes ``checkpoint-<step>/`` in place, so a crash mid-save leaves a folder
  that ``get_last_checkpoint`` (which looks only at names) would resume from. Here the whole save, transformers'
  files and ours, goes into ``.tmp-checkpoint-<step>/`` and is renamed into place after a completion marker
  (``files/checkpoints.py``, shared with PPO). ``train(resume_from_checkpoint=True)`` takes the latest *complete*
  checkpoint, and ``save_total_limit`` prunes complete checkpoints only.
- **Exact resume.** transformers restores weights, optimizer, scheduler, RNG states and the position in the data.
  Three more things decide what a GRPO/RLOO step computes; without them a resumed run differs from the
  uninterrupted one (measured on the tiny model: different loss, KL and weights from the first resumed step):

  1. TRL's buffered generation batch (``_buffered_inputs``) and its micro-step counter ``_step``. With
     ``num_iterations > 1`` (or ``steps_per_generation > 1``) a checkpoint can fall inside a generation cycle; TRL
     then generates afresh on resume (other completions, from a later RNG state) and uses slice 0 instead of the
     right one. Both are saved per process in ``trl_state_<rank>.pt`` and restored.
  2. The prompt order. TRL's ``RepeatSampler`` draws one permutation per epoch from a private generator that is
     seeded once, never checkpointed, and has no ``set_epoch``: a run resumed in epoch e > 0 replays epoch 0's
     order. :class:`EpochSeededRepeatSampler` derives epoch e's permutation from (seed, e) and yields the same
     sequence of permutations as TRL's sampler does in an uninterrupted run. The trainer hands it the epoch itself
     (``_run_epoch``): accelerate's ``DataLoaderShard.set_epoch`` reaches a sampler at most two wrappers deep, and a
     multi-process run resumed mid-epoch has three (``SkipBatchSampler(BatchSamplerShard(BatchSampler(s)))``), so
     without this the resumed epoch replayed epoch 0's order on 2 processes.
  3. A logging window still open at the checkpoint (``logging_steps`` not dividing the step): TRL's pending
     ``_metrics`` and transformers' running loss sum (``_tr_loss``) are saved and restored.

- **LoRA.** ``save_model`` (the final save, not checkpoints, which keep the adapter) writes the policy as
  ``lora_save`` says: ``merged`` or ``adapter`` (``models/lora.py``).
- **No deprecation noise.** TRL 1.16 (and peft, when TRL wraps the model in LoRA) call transformers' deprecated
  checkpointing aliases; those FutureWarnings, by their exact text, are silenced around those calls
  (``common/deprecations.py``), nothing else is.

Not covered: DeepSpeed/FSDP sharded saves, iterable datasets (no sampler to re-seed), resuming with a different
number of processes (the buffered batch is per process: it is then regenerated, as in TRL, with a warning).
"""

from __future__ import annotations

import logging
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from trl.trainer.utils import RepeatSampler

from ...common.deprecations import quiet_library_checkpointing_aliases
from ...common.errors import ConfigError
from ...common.machine import cpu_bf16_autocast_on
from ...data.curriculum import curriculum_from_config
from ...files import checkpoints as ckpt
from ...models.lora import build_peft_config
from ...trl_arguments import to_trl_args
from ..agent_rollouts import check_reward_columns
from .cpu_speed import CpuSpeedMixin
from .curriculum import CurriculumMixin
from .dynamic_sampling import DynamicSamplingMixin
from .multi_turn import MultiTurnMixin
from .prompt_sharing import PromptSharingMixin
from .zero_advantage import ZeroAdvantageMixin

logger = logging.getLogger(__name__)

RESUME_STATE_FILE = "trl_state_{rank}.pt"


class EpochSeededRepeatSampler(RepeatSampler):
    """TRL's ``RepeatSampler`` plus ``set_epoch``: epoch e's permutation is the (e+1)-th draw of a generator seeded
    with ``seed`` -- what TRL's sampler yields when iterated once per epoch from the start -- but computed from
    (seed, e) instead of from how often this object has been iterated, so it survives a restart."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epoch: int | None = None

    @classmethod
    def like(cls, sampler: RepeatSampler) -> "EpochSeededRepeatSampler":
        return cls(data_source=sampler.data_source, mini_repeat_count=sampler.mini_repeat_count,
                   batch_size=sampler.batch_size, repeat_count=sampler.repeat_count, shuffle=sampler.shuffle,
                   seed=sampler.seed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        if self.shuffle and self.epoch is not None:
            self.generator.manual_seed(self.seed)
            for _ in range(self.epoch):
                torch.randperm(self.num_samples, generator=self.generator)
        return super().__iter__()


class _RestoreLoggingWindow(TrainerCallback):
    """Puts back transformers' running loss of an open logging window. transformers zeroes ``_tr_loss`` and sets
    ``_globalstep_last_logged`` at the start of ``train()``, just before ``on_train_begin``."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        pending = self.trainer._pending_loss_window
        if pending is not None:
            tr_loss, last_logged = pending
            self.trainer._tr_loss.copy_(tr_loss.to(self.trainer._tr_loss.device))
            self.trainer._globalstep_last_logged = last_logged
            self.trainer._pending_loss_window = None


class CheckpointingMixin:
    """Mixed in before TRL's trainer class (see :func:`trainer_class`)."""

    online_rl_trainer_type = ""

    def __init__(self, *args: Any, lora_save: str = "merged", **kwargs: Any) -> None:
        self._epoch_sampler: EpochSeededRepeatSampler | None = None  # the training sampler, once built
        with quiet_library_checkpointing_aliases():  # peft's get_peft_model, with use_peft
            super().__init__(*args, **kwargs)
        self.lora_save = lora_save
        self._staging: Path | None = None
        self._pending_loss_window: tuple[torch.Tensor, int] | None = None
        self.add_callback(_RestoreLoggingWindow(self))

    def add_callback_first(self, callback: Any) -> None:
        """Put ``callback`` ahead of every other one, transformers' ``report_to`` integrations included, so what it
        adds to a log dict reaches all of them (``training/callbacks.py``: ``PendingLogsCallback``)."""
        self.callback_handler.callbacks.insert(0, callback)

    # ----------------------------------------------------------------------------------------------- saving
    def _get_output_dir(self, trial):
        # While a checkpoint is being saved, transformers' and TRL's code writes into the staging folder.
        return str(self._staging) if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        step, acc = self.state.global_step, self.accelerator
        run_dir = Path(super()._get_output_dir(trial))
        staging = ckpt.temp_checkpoint_dir(run_dir, step)
        if self.args.should_save:
            ckpt.begin_checkpoint(run_dir, step)
        acc.wait_for_everyone()
        self._staging = staging
        try:
            super()._save_checkpoint(model, trial)  # -> <staging>/checkpoint-<step>/
        finally:
            self._staging = None
        written = ckpt.checkpoint_dir(staging, step)
        written.mkdir(parents=True, exist_ok=True)
        torch.save(self._resume_state(), written / RESUME_STATE_FILE.format(rank=acc.process_index))
        acc.wait_for_everyone()
        if self.args.should_save:
            ckpt.commit_checkpoint(written, step, output_dir=run_dir, info={
                "trainer_type": self.online_rl_trainer_type, "num_processes": acc.num_processes,
                "use_peft": _is_peft(acc.unwrap_model(self.model)),
            })
            shutil.rmtree(staging, ignore_errors=True)
            ckpt.prune_checkpoints(run_dir, self.args.save_total_limit)
        acc.wait_for_everyone()

    def _resume_state(self) -> dict[str, Any]:
        return {
            "step": self._step,
            "buffered_inputs": self._buffered_inputs,
            "pending_metrics": {k: list(v) for k, v in self._metrics["train"].items()},
            "tr_loss": self._tr_loss.detach().clone(),
            "globalstep_last_logged": self._globalstep_last_logged,
            "curriculum": None if self._curriculum is None else self._curriculum.state_dict(),
        }

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """Writes nothing. TRL writes its generic card ("fine-tuned version of ...") into ``output_dir`` at every
        checkpoint; the model folders get ours from ``OnlineRLTrainer.save_model`` (``training/model_card.py``)."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """The final save: with LoRA, ``lora_save`` decides the layout; checkpoints (``_internal_call``) and full
        models go through transformers unchanged."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        if _internal_call or not _is_peft(unwrapped):
            return super().save_model(output_dir, _internal_call)
        from ...models.lora import save_lora_policy

        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            save_lora_policy(unwrapped, output_dir or self.args.output_dir, self.lora_save)
        self.accelerator.wait_for_everyone()

    # ----------------------------------------------------------------------------------------------- resuming
    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        path = ckpt.resolve_resume_path(resume_from_checkpoint, self.args.output_dir, self.online_rl_trainer_type)
        if path is not None:
            self._load_resume_state(path)
        return super().train(str(path) if path is not None else None, *args, **kwargs)

    # Every load of a checkpoint's files names the checkpoint and the files when it fails (checkpoints.loading).
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        with ckpt.loading(resume_from_checkpoint, "loading the model weights (model.safetensors / adapter)"):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_optimizer_and_scheduler(self, checkpoint):
        with ckpt.loading(checkpoint, "loading optimizer.pt / scheduler.pt"):
            return super()._load_optimizer_and_scheduler(checkpoint)

    def _load_rng_state(self, checkpoint):
        with ckpt.loading(checkpoint, "loading rng_state*.pth"):
            return super()._load_rng_state(checkpoint)

    def _load_resume_state(self, path: Path) -> None:
        acc = self.accelerator
        saved_processes = ckpt.checkpoint_info(path).get("num_processes")
        state_file = path / RESUME_STATE_FILE.format(rank=acc.process_index)
        if saved_processes != acc.num_processes or not state_file.is_file():
            logger.warning("%s: written by %s processes, resumed with %d; the buffered generation batch is "
                           "generated again, so the resumed run will not match an uninterrupted one exactly",
                           path, saved_processes, acc.num_processes)
            return
        # weights_only=False: a file this trainer wrote itself (tensors, python numbers and lists).
        # A CPU process's device can read "cpu:0", which torch.load does not accept as a location.
        location = "cpu" if acc.device.type == "cpu" else acc.device
        with ckpt.loading(path, f"loading {state_file.name}"):
            state = torch.load(str(state_file), map_location=location, weights_only=False)
        self._step = state["step"]
        self._buffered_inputs = state["buffered_inputs"]
        self._metrics["train"].clear()
        self._metrics["train"].update(state["pending_metrics"])
        self._pending_loss_window = (state["tr_loss"], state["globalstep_last_logged"])
        if self._curriculum is not None:
            if state.get("curriculum") is None:
                raise ValueError(f"{path} was written without curriculum=True; its record cannot be restored")
            self._curriculum.load_state_dict(state["curriculum"])

    # ----------------------------------------------------------------------------------------------- generation
    def _generate_and_score_completions(self, *args: Any, **kwargs: Any):
        # TRL calls transformers' deprecated checkpointing aliases around every generation (common/deprecations.py).
        with quiet_library_checkpointing_aliases():
            return self._timed_generation(super()._generate_and_score_completions, *args, **kwargs)

    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        if isinstance(sampler, RepeatSampler) and sampler.shuffle and sampler.seed is not None:
            self._epoch_sampler = EpochSeededRepeatSampler.like(sampler)
            return self._epoch_sampler
        return sampler

    def _run_epoch(self, *args: Any, **kwargs: Any):
        # transformers passes everything by keyword; set the epoch on the sampler itself (see the module docstring:
        # the dataloader's set_epoch does not reach it in a multi-process run resumed mid-epoch).
        if self._epoch_sampler is not None and "epoch" in kwargs:
            self._epoch_sampler.set_epoch(kwargs["epoch"])
        return super()._run_epoch(*args, **kwargs)


def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - depends on the environment
        return False
    return isinstance(model, PeftModel)


@lru_cache(maxsize=None)
def trainer_class(trainer_type: str) -> type:
    """TRL's trainer for ``trainer_type`` ('grpo' or 'rloo') with :class:`CheckpointingMixin`,
    :class:`CpuSpeedMixin` (``cpu_speed.py``), :class:`CurriculumMixin` (``curriculum.py``),
    :class:`DynamicSamplingMixin` (``dynamic_sampling.py``), :class:`MultiTurnMixin` (``multi_turn.py``) and
    :class:`PromptSharingMixin` (``prompt_sharing.py``) and :class:`ZeroAdvantageMixin` (``zero_advantage.py``) in
    front."""
    if trainer_type == "grpo":
        from trl import GRPOTrainer as base
    elif trainer_type == "rloo":
        from trl import RLOOTrainer as base
    else:
        raise ValueError(f"trainer_type {trainer_type!r} has no TRL trainer (TRL trainers: grpo, rloo)")
    mixins = (CheckpointingMixin, CpuSpeedMixin, CurriculumMixin, DynamicSamplingMixin, MultiTurnMixin,
              PromptSharingMixin, ZeroAdvantageMixin)
    return type(base.__name__, (*mixins, base), {"online_rl_trainer_type": trainer_type, "__module__": __name__})


def build_trl_trainer(config: Any, model: Any, tokenizer: Any, reward_funcs: list[Any], reward_weights: list[float],
                      train_dataset: Any, callbacks: list[Any], agent_setup: Any = None) -> Any:
    """TRL's GRPOTrainer or RLOOTrainer (with :class:`CheckpointingMixin`) for a ``TrainerConfig``, with our guarded
    rewards and callbacks."""
    if config.dynamic_sampling and agent_setup is not None:
        raise ConfigError("dynamic_sampling=True is not supported with tools or an environment yet (multi-turn "
                          "rollouts); turn one of them off")
    if agent_setup is not None:
        check_reward_columns(getattr(train_dataset, "column_names", None) or [])
    args = to_trl_args(config, reward_weights)
    check_enough_prompts(args, config.trainer_type, len(train_dataset))
    peft_config = build_peft_config(config) if config.use_peft else None
    if config.load_in_4bit:  # QLoRA: TRL adds the adapter but leaves peft's k-bit preparation to the caller
        from ...models.quantization import prepare_for_kbit_training

        model = prepare_for_kbit_training(model, args.gradient_checkpointing, args.gradient_checkpointing_kwargs)
    cls = trainer_class(config.trainer_type)
    trainer = cls(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                  processing_class=tokenizer, callbacks=callbacks, peft_config=peft_config, lora_save=config.lora_save)
    trainer.enable_cpu_bf16(cpu_bf16_autocast_on(config.cpu_bf16_autocast, config.use_gpu))
    trainer.enable_multi_turn(agent_setup)
    trainer.enable_prompt_sharing(config.share_prompt_prefix)
    trainer.enable_zero_advantage_skip(config.skip_zero_advantage)
    trainer.enable_dynamic_sampling(config.max_sampling_rounds if config.dynamic_sampling else 0)
    trainer.enable_curriculum(curriculum_from_config(config, len(train_dataset)))
    return trainer


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
