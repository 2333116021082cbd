"""`PPOTrainer`: classic RLHF PPO with a learned critic and GAE, driven by reward *functions*.

The recipe follows Ziegler et al. 2019 (arXiv:1909.08593), Stiennon et al. 2020 (arXiv:2009.01325), InstructGPT
(Ouyang et al. 2022, arXiv:2203.02155) and Huang et al. 2024, "The N+ implementation details of RLHF with PPO"
(arXiv:2403.17031). One step:

1. rollout: ``per_device_train_batch_size`` completions per process (``num_generations`` per prompt), sampled
   with ``generate`` from left-padded prompts (temperature, top_p, stop at EOS); old log-probs of the policy,
   reference log-probs (a frozen copy; the adapter-disabled base with LoRA), values of the critic;
2. rewards: the sequence reward (weighted sum of the reward functions) on the last real token minus
   ``kl_coef * KL`` (k1 or k3) at every token; GAE (``gamma``, ``lam``); advantages whitened; returns = A + V;
3. ``ppo_epochs`` passes over ``num_mini_batches`` shuffled minibatches (each split into
   ``gradient_accumulation_steps`` micro-batches): clipped policy loss + ``vf_coef`` x clipped value loss,
   gradients clipped to ``max_grad_norm`` per model, one optimizer step per minibatch;
4. the LR schedulers step once per PPO step; the adaptive KL controller updates (Ziegler et al. §2.2).

With tools or an environment (``agent_setup``), step 1 runs multi-turn rollouts instead (``multi_turn.py``): the
environment's tokens are context the model attends to, masked out of every loss, the KL, the entropy, GAE and the
statistics; an environment's per-turn rewards go on each turn's last model token.

The math is the pure functions of ``core/algorithms``; in this folder, ``components.py`` builds what a run holds,
``rollout.py`` samples and scores, ``multi_turn.py`` lays out tool rollouts, ``update.py`` runs the PPO epochs,
``checkpoint.py`` saves and restores, and ``reporting.py`` logs; the critic is ``core/models/critic.py``.

Choices to know about (departures from one or more of the papers):
- Dropout is switched off in every model (Huang et al.): the ratio at the first minibatch is then exactly 1.
  This also turns off ``lora_dropout``.
- The critic is initialised from the policy (or ``critic_model_name_or_path``), not from a reward model.
- A completion whose reward is ``None`` for any reward function is excluded from the update (masked out of
  losses, whitening and statistics) and counted in ``rewards/<name>/judge_errors``; if no completion of the
  global batch is valid, the step makes no optimizer update (the scheduler still steps).
- Several processes compute exactly what one process computes on the same global batch: advantages are whitened
  with the statistics of the global batch, and every per-token loss and statistic is a mean over the real tokens
  of the whole minibatch (each micro-batch and process weighted by its share of them), so neither the number of
  processes nor ``gradient_accumulation_steps`` changes the update (``tests/training/test_distributed.py``). Rewards, KL,
  lengths and explained variance are computed over all processes too.
- ``shared`` critic: one AdamW with two parameter groups (policy: ``learning_rate``, value head:
  ``critic_learning_rate``); one loss ``policy_loss + vf_coef * value_loss``; one gradient clip.
- ``separate`` critic: two AdamW optimizers and two schedulers; ``vf_coef`` scales the critic's gradients.
- Without a reference model (``kl_coef == 0`` and no adaptive KL) ``kl`` is not logged (it is not measured).
- ``kl`` is the mean over completions of the summed per-token estimate (nats per completion), the quantity the
  adaptive controller compares to ``kl_target``.

Not covered: reward models, vLLM generation, DeepSpeed/FSDP sharding, the EOS-penalty trick, reward whitening.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ...algorithms import kl_k1, kl_k3, masked_sum, token_level_rewards
from ...config import TrainerConfig
from ...data.curriculum import curriculum_from_config, draw_global_batch, record_groups
from ...models.critic import load_critic_weights_into, save_critic
from ...models.lora import save_lora_policy
from ...rewards.base import reward_name
from ..agent_rollouts import merged_columns
from ..cpu_bf16 import DRIFT_CHECK_ROWS, DriftMonitor, logprob_drift
from . import checkpoint as ckpt
from .components import PPOComponents, build_components
from .multi_turn import sample_multi_turn
from .reporting import CallbackRunner, LogSinks, MetricWindow, rollout_timing, train_summary
from .rollout import (
    combine_rewards,
    fp32_logprobs,
    reward_metrics,
    rollout_passes,
    sample_single_turn,
    score_completions,
)
from .targets import advantages_and_returns, critic_runs_in_update
from .update import ppo_update

logger = logging.getLogger(__name__)
_KL_ESTIMATORS = {"k1": kl_k1, "k3": kl_k3}
CURRICULUM_FILE = "curriculum.npz"


class PPOTrainer:
    """PPO with a critic. Built by ``OnlineRLTrainer`` for ``trainer_type='ppo'``; usable directly with the same
    arguments: ``PPOTrainer(config, model, tokenizer, reward_funcs, reward_weights, train_dataset, callbacks)``.

    ``reward_funcs``: callables (``GuardedReward`` in the package) called TRL-style, returning floats or None.
    ``agent_setup``: ``backends.agent_rollouts.AgentSetup`` for multi-turn tool rollouts, or None (single-turn).
    ``train(resume_from_checkpoint=None|True|path)``, ``save_model(dir)``, ``log(dict)``, ``add_callback(cb)``,
    ``state`` (a ``transformers.TrainerState``) and ``model`` (the policy) mirror transformers' Trainer.
    """

    def __init__(self, config: TrainerConfig, model: Any, tokenizer: Any, reward_funcs: Sequence[Any],
                 reward_weights: Sequence[float], train_dataset: Any, callbacks: Sequence[Any] = (),
                 agent_setup: Any = None) -> None:
        self.config = config
        self.agent_setup = agent_setup
        self.tokenizer = tokenizer
        self.reward_funcs = list(reward_funcs)
        self.reward_weights = [float(w) for w in reward_weights]
        self.reward_names = [reward_name(f) for f in self.reward_funcs]
        self.train_dataset = train_dataset
        self.c: PPOComponents = build_components(config, model, tokenizer, reward_funcs, reward_weights, train_dataset)
        self.accelerator = self.c.accelerator
        from transformers import TrainerControl, TrainerState

        self.state = TrainerState(
            max_steps=self.c.max_steps, logging_steps=config.logging_steps, save_steps=config.save_steps,
            num_train_epochs=math.ceil(self.c.max_steps / self.c.steps_per_epoch),
            train_batch_size=config.per_device_train_batch_size,
            is_local_process_zero=self.accelerator.is_local_main_process, is_world_process_zero=self.accelerator.is_main_process,
        )
        self.state.global_step, self.state.epoch = 0, 0.0
        self.callbacks = CallbackRunner(callbacks, config, self.state, TrainerControl())
        self.window = MetricWindow()
        self._drift = DriftMonitor() if self.c.cpu_bf16 else None
        self.data_epoch, self.data_index = 0, 0
        self.curriculum = curriculum_from_config(config, len(train_dataset))
        self._drawn: np.ndarray | None = None  # the global batch's prompt indices when the curriculum draws them
        self._sinks: LogSinks | None = None
        self.callbacks.call("on_init_end")

    # --------------------------------------------------------------------------------------------- public API
    @property
    def model(self):
        """The policy (a peft model when ``use_peft``), unwrapped from any distributed wrapper."""
        return self.c.policy

    @property
    def critic(self):
        """The critic: a ``ValueModel`` (separate) or the ``PolicyWithValueHead`` (shared)."""
        return self.c.critic

    def add_callback(self, callback: Any) -> None:
        self.callbacks.add(callback)

    def add_callback_first(self, callback: Any) -> None:
        """Put ``callback`` ahead of every other one (the same protocol as the TRL backend)."""
        self.callbacks.add(callback, first=True)

    def log(self, logs: dict[str, Any]) -> None:
        """Send ``logs`` to the callbacks (history/JSON/PNG), the log history, the console and ``report_to``."""
        logs = {k: (float(v) if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) else v)
                for k, v in logs.items()}
        logs.setdefault("epoch", round(float(self.state.epoch), 4))
        self.callbacks.call("on_log", logs=logs)
        self.state.log_history.append({**logs, "step": self.state.global_step})
        if self._sinks is not None:
            self._sinks.write(logs, self.state.global_step)

    def train(self, resume_from_checkpoint: str | bool | None = None):
        """Run PPO until ``max_steps``; returns ``transformers.trainer_utils.TrainOutput``."""
        from tqdm.auto import tqdm
        from transformers.trainer_utils import TrainOutput

        resume = ckpt.resolve_resume_path(resume_from_checkpoint, self.config.output_dir, "ppo")
        if resume is not None:
            self._load_checkpoint(resume)
        self._sinks = LogSinks(self.config, self.accelerator.is_main_process)
        start_step, started, losses = self.state.global_step, time.perf_counter(), []
        self.callbacks.call("on_train_begin", model=self.model, processing_class=self.tokenizer)
        bar = tqdm(total=self.state.max_steps, initial=start_step, disable=not self.accelerator.is_main_process, desc="PPO")
        try:
            while self.state.global_step < self.state.max_steps:
                self.callbacks.call("on_step_begin")
                step_started = time.perf_counter()
                metrics = self._step()
                self.state.global_step += 1
                self.state.epoch = self.data_epoch + self.data_index / len(self.train_dataset)
                metrics["step_time"] = time.perf_counter() - step_started
                if "policy_loss" in metrics:
                    losses.append(metrics["policy_loss"] + self.config.vf_coef * metrics["value_loss"])
                self.window.add(metrics)
                bar.update(1)
                control = self.callbacks.call("on_step_end")
                last = self.state.global_step >= self.state.max_steps or control.should_training_stop
                if self.state.global_step % self.config.logging_steps == 0 or last or control.should_log:
                    self.log(self.window.pop_mean())
                    control.should_log = False  # a callback (periodic evaluation) may ask for a log at this step
                if self.state.global_step % self.config.save_steps == 0 or control.should_save:  # or asked (a signal)
                    self._save_checkpoint()
                    control.should_save = False
                if control.should_training_stop:
                    break
        finally:
            bar.close()
        summary = train_summary(time.perf_counter() - started, self.state.global_step - start_step,
                                self.c.global_batch, losses)
        self.log(summary)
        self.callbacks.call("on_train_end", model=self.model, processing_class=self.tokenizer)
        self._sinks.close()
        return TrainOutput(self.state.global_step, summary["train_loss"], {**summary, "epoch": self.state.epoch})

    def save_model(self, output_dir: str | Path) -> Path:
        """Write the policy as a ``from_pretrained`` folder (with LoRA: as ``lora_save`` says, see ``models/lora.py``) and
        the critic in ``critic/`` (reload with ``models.critic.load_critic(<dir>/critic)``). Tokenizer: by the caller."""
        out = Path(output_dir)
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            if self.c.is_peft:
                save_lora_policy(self.c.policy, out, self.config.lora_save)
            else:
                self.c.policy.save_pretrained(str(out))
            save_critic(self.c.critic, out / "critic")
        self.accelerator.wait_for_everyone()
        return out

    # ------------------------------------------------------------------------------------------------ data
    def _next_rows(self) -> list[dict[str, Any]]:
        """This process's prompts for the next step, from a seeded permutation per data epoch (remainder dropped)."""
        n, need = len(self.train_dataset), self.c.prompts_per_process * self.accelerator.num_processes
        if self.curriculum is not None:  # drawn by pass rate (data/curriculum.py); the epoch counter still advances
            chosen = self._drawn = draw_global_batch(self.curriculum, self.config.seed, self.state.global_step, need)
        if self.data_index + need > n:
            self.data_epoch, self.data_index = self.data_epoch + 1, 0
        if self.curriculum is None:
            chosen = np.random.default_rng([self.config.seed, self.data_epoch]).permutation(n)[self.data_index:][:need]
        self.data_index += need
        rank = self.accelerator.process_index
        local = chosen[rank * self.c.prompts_per_process: (rank + 1) * self.c.prompts_per_process]
        return [self.train_dataset[int(i)] for i in local]

    # ---------------------------------------------------------------------------------------------- one step
    def _step(self) -> dict[str, float]:
        rollout, metrics = self.rollout(self._next_rows())
        total_valid = int(self.accelerator.reduce(rollout["train_mask"].any(dim=1).sum().to(self.accelerator.device), "sum"))
        if total_valid > 0:
            started = time.perf_counter()
            metrics.update(ppo_update(self.config, self.c, rollout, self._sum_over_processes))
            metrics["timing/update"] = time.perf_counter() - started
        else:
            logger.warning("step %d: every completion has a reward of None (judge errors); no update this step",
                           self.state.global_step + 1)
        with warnings.catch_warnings():
            # Without an update torch warns that the scheduler stepped before the optimizer; the schedule counts
            # PPO steps, so it must advance anyway.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            for scheduler in self.c.schedulers:
                scheduler.step()
        if "kl" in metrics:
            self.c.kl_controller.update(metrics["kl"], self.c.global_batch)
        return metrics

    @torch.no_grad()
    def rollout(self, rows: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Sample, score and evaluate one batch of dataset ``rows`` (no update) -> (tensors for the update, metrics).

        The tensors (B = rows x num_generations) include ``train_mask`` (B, C): real completion tokens of samples
        with a decided reward; ``advantages``/``returns`` are 0 outside it. With one pass over the rollout
        (``targets.critic_runs_in_update``) the values, advantages and returns are left to the update.
        """
        cfg, c, acc = self.config, self.c, self.accelerator
        prompts = [row["prompt"] for row in rows for _ in range(cfg.num_generations)]
        columns = {k: [row[k] for row in rows for _ in range(cfg.num_generations)] for k in rows[0] if k != "prompt"}
        c.set_train_mode(False)
        started = time.perf_counter()
        if self.agent_setup is not None:
            s = sample_multi_turn(c, self.tokenizer, self.agent_setup, cfg, rows)
            columns = merged_columns(columns, s.extra_columns)
        else:
            s = sample_single_turn(c, self.tokenizer, rows, cfg.num_generations)
        sampled = time.perf_counter()
        ids, attn, cids, mask = s.input_ids, s.attention_mask, s.completion_ids, s.model_mask
        in_update = critic_runs_in_update(cfg, c)  # one pass over the rollout: the update computes the values
        old_logp, ref_logp, values = rollout_passes(c, ids, attn, cids, cfg.temperature, values=not in_update)
        drift = self._bf16_drift(ids, attn, cids, mask, old_logp)
        reward_started = time.perf_counter()
        matrix = score_completions(self.reward_funcs, s.texts, prompts, s.reward_ids, columns, trainer_state=self.state)
        seq_reward, valid = combine_rewards(matrix, self.reward_weights)
        valid = valid.to(acc.device)
        train_mask = mask & valid.unsqueeze(1)  # the model's tokens of samples with a decided reward
        kl_coef = c.kl_controller.value
        reward_seconds = time.perf_counter() - reward_started
        kl = _KL_ESTIMATORS[cfg.kl_estimator](old_logp, ref_logp) if c.has_reference else None
        rewards = token_level_rewards(seq_reward.float().to(acc.device), mask, kl, kl_coef)
        if s.turn_rewards is not None:
            rewards = rewards + s.turn_rewards
        batch = {"input_ids": ids, "attention_mask": attn, "completion_ids": cids, "train_mask": train_mask,
                 "old_logp": old_logp, "rewards": rewards, "multi_turn": torch.tensor(bool(s.multi_turn))}
        if values is not None:  # collective: every process joins, even one without a valid sample
            advantages, returns, ev = advantages_and_returns(cfg, rewards, values, train_mask, s.multi_turn,
                                                             self._sum_over_processes)
            batch.update(old_values=values, advantages=advantages, returns=returns)
        metrics = reward_metrics(acc.gather(matrix.to(acc.device)).cpu(), self.reward_weights, self.reward_names)
        metrics["completions/mean_length"] = float(acc.gather(mask.sum(dim=1).float()).mean())  # model tokens
        metrics["completions/clipped_ratio"] = float(acc.gather(s.clipped.float()).mean())
        all_valid = acc.gather(valid.float()) > 0.5
        if kl is not None and bool(all_valid.any()):
            metrics["kl"] = float(acc.gather(masked_sum(kl, mask, dim=1))[all_valid].mean())
        metrics["kl_coef"] = kl_coef
        metrics.update(drift)
        metrics.update(s.metrics)
        if self._drawn is not None:  # the curriculum's record, from every process's rewards
            scored = acc.gather(torch.where(valid, seq_reward.float().to(acc.device), torch.nan)).cpu().tolist()
            rows, step = np.repeat(self._drawn, cfg.num_generations).tolist(), self.state.global_step
            rates = record_groups(self.curriculum, rows, scored, cfg.num_generations, step)
            metrics.update(self.curriculum.metrics(step, rates))
            self._drawn = None
        metrics.update(rollout_timing(started, sampled, reward_seconds, int(mask.sum())))
        if values is not None and math.isfinite(ev):
            metrics["explained_variance"] = ev
        return batch, metrics

    def _bf16_drift(self, ids, attn, cids, cmask, bf16_logp) -> dict[str, float]:
        """On the bf16 path, every few rounds: the rollout's log-probs of the first rows against an fp32 pass."""
        if self._drift is None or not self._drift.due():
            return {}
        rows = slice(0, DRIFT_CHECK_ROWS)
        fp32 = fp32_logprobs(self.c, ids[rows], attn[rows], cids[rows], self.config.temperature)
        return self._drift.record(logprob_drift(bf16_logp[rows], fp32, cmask[rows]))

    @property
    def _sum_over_processes(self):
        """``t -> t`` summed over the processes (for the pooled statistics); None in a single process."""
        acc = self.accelerator
        return (lambda t: acc.reduce(t, "sum")) if acc.num_processes > 1 else None

    # ------------------------------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self) -> Path:
        acc, c, step = self.accelerator, self.c, self.state.global_step
        tmp = ckpt.temp_checkpoint_dir(self.config.output_dir, step)
        if acc.is_main_process:
            ckpt.begin_checkpoint(self.config.output_dir, step)
        acc.wait_for_everyone()
        torch.save(ckpt.capture_rng_state(), ckpt.rng_file(tmp, acc.process_index))
        if acc.is_main_process:
            ckpt.save_policy(c.policy, tmp / "policy")
            save_critic(c.critic, tmp / "critic")
            for i, (opt, sched) in enumerate(zip(c.optimizers, c.schedulers)):
                prefix = "" if i == 0 else "critic_"
                torch.save(opt.state_dict(), tmp / f"{prefix}optimizer.pt")
                torch.save(sched.state_dict(), tmp / f"{prefix}scheduler.pt")
            self.state.save_to_json(str(tmp / "trainer_state.json"))
            if self.curriculum is not None:
                np.savez(tmp / CURRICULUM_FILE, **self.curriculum.state_dict())
            ckpt.write_json(tmp / ckpt.PPO_STATE, {
                "global_step": step, "data_epoch": self.data_epoch, "data_index": self.data_index,
                "kl_controller": c.kl_controller.state_dict(), "metric_window": self.window.state_dict(),
                "critic_type": self.config.critic_type, "use_peft": c.is_peft, "num_processes": acc.num_processes,
            })
        acc.wait_for_everyone()
        final = ckpt.checkpoint_dir(self.config.output_dir, step)
        if acc.is_main_process:
            final = ckpt.commit_checkpoint(tmp, step, info={"trainer_type": "ppo", "use_peft": c.is_peft})
            ckpt.prune_checkpoints(self.config.output_dir, self.config.save_total_limit)
        acc.wait_for_everyone()
        return final

    def _load_checkpoint(self, path: Path) -> None:
        from transformers import TrainerState

        acc, c = self.accelerator, self.c
        with ckpt.loading(path, f"reading {ckpt.PPO_STATE}"):
            meta = ckpt.read_json(path / ckpt.PPO_STATE)
        if meta.get("critic_type") != self.config.critic_type or bool(meta.get("use_peft")) != c.is_peft:
            raise ValueError(
                f"checkpoint {str(path)!r} was written with critic_type={meta.get('critic_type')!r}, use_peft="
                f"{meta.get('use_peft')}; this run has critic_type={self.config.critic_type!r}, use_peft={c.is_peft}"
            )
        with ckpt.loading(path, "loading policy/ and critic/ weights"):
            ckpt.load_policy_into(c.policy, path / "policy", c.is_peft)
            load_critic_weights_into(c.critic, path / "critic")
        for i, (opt, sched) in enumerate(zip(c.optimizers, c.schedulers)):
            prefix = "" if i == 0 else "critic_"
            with ckpt.loading(path, f"loading {prefix}optimizer.pt / {prefix}scheduler.pt"):
                opt.load_state_dict(ckpt.load_torch_file(path / f"{prefix}optimizer.pt"))  # moved to the params by torch
                sched.load_state_dict(ckpt.load_torch_file(path / f"{prefix}scheduler.pt"))
        c.kl_controller.load_state_dict(meta["kl_controller"])
        self.window.load_state_dict(meta.get("metric_window", {}))
        self.data_epoch, self.data_index = int(meta["data_epoch"]), int(meta["data_index"])
        if self.curriculum is not None:
            with ckpt.loading(path, f"loading {CURRICULUM_FILE}"), np.load(path / CURRICULUM_FILE) as record:
                self.curriculum.load_state_dict(record)
        with ckpt.loading(path, "reading trainer_state.json"):
            saved = TrainerState.load_from_json(str(path / "trainer_state.json"))
        self.state.global_step, self.state.epoch, self.state.log_history = saved.global_step, saved.epoch, saved.log_history
        rng = ckpt.rng_file(path, acc.process_index)
        if not rng.is_file():
            logger.warning("%s missing (checkpoint from %s processes); using rank 0's RNG state", rng.name,
                           meta.get("num_processes"))
            rng = ckpt.rng_file(path, 0)
        with ckpt.loading(path, f"loading {rng.name}"):
            ckpt.restore_rng_state(ckpt.load_torch_file(rng))
        logger.info("resumed from %s at step %d", path, self.state.global_step)
