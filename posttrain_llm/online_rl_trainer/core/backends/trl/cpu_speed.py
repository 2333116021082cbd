"""The CPU fast path of the GRPO/RLOO backend, and the per-step timing every run logs.

What a profile of a SmolLM2-135M GRPO step on a 2-core CPU showed (``benchmarks/bench_cpu_step.py``): forward and
backward are ~3/4 of the step; on CPU, TRL's fused log-prob head projects *every* position (prompt, completion,
padding) onto the 49k-word vocabulary, while on GPUs it projects only the completion positions; and accelerate's
``bf16=True`` autocast, entered around each forward call, made generation slower than fp32 there. So:

- :func:`compact_lm_head` scores only the positions with a label (the completion tokens), as TRL already does on
  CUDA/XPU: the same log-probs from fewer rows. TRL decides this with a private function
  (``trl.trainer.utils._use_triton``), which is replaced for the duration of one log-prob pass and restored after.
- ``TrainerConfig.cpu_bf16_autocast`` runs generation and each log-prob pass (loss, old, reference) under ONE
  ``torch.autocast("cpu", bfloat16)`` region each, fp32 master weights and optimizer unchanged. ``"auto"`` turns
  it on where the CPU has native bf16 (AVX512-BF16 or AMX), detected at run time. The drift against fp32 is
  measured and logged (``backends/cpu_bf16.py``).
- generation samples tokens by inverse CDF instead of ``torch.multinomial`` on CPU (``backends/cpu_sampling.py``),
  and rows leave the decode batch as soon as they end (``backends/decode_loop.py``; same tokens, fewer rows per step).
- (not CPU-specific, in ``prompt_sharing.py``) generation and every log-prob pass compute each distinct prompt once
  and share its KV cache with the prompt's completions.
- ``timing/generate`` (generation and scoring, seconds per generation round), ``timing/reward`` (the reward
  functions inside it), ``timing/tokens_per_s`` (completion tokens generated per second of generation) and
  ``timing/update`` (forward and backward of the loss, per optimizer step) go into the logs of every step, next to
  ``step_time``.

Not covered: PPO (its own loop, ``backends/ppo``, uses the same autocast and drift check), vLLM generation (its own
process and dtype), GPUs (use ``bf16``).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

import torch

from ...common.patching import patched
from ..cpu_bf16 import DRIFT_CHECK_ROWS, DriftMonitor, bf16_autocast, logprob_drift
from ..cpu_sampling import fast_cpu_sampling
from ..decode_loop import drop_finished_rows

__all__ = ["CpuSpeedMixin", "bf16_autocast", "compact_lm_head"]


@contextlib.contextmanager
def compact_lm_head() -> Iterator[None]:
    """Within the block, TRL's fused log-prob head scores only positions with a label on CPU too.

    If TRL no longer has the hook (a later version), the block runs unchanged: slower, never different.
    """
    from trl.trainer import utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        yield
        return

    def _compact_here(device: torch.device) -> bool:
        return device.type == "cpu" or original(device)

    with patched(trl_utils, "_use_triton", _compact_here):
        yield


class CpuSpeedMixin:
    """Mixed in before TRL's GRPO/RLOO trainer: the compact head on CPU, optional bf16 autocast, step timing."""

    _cpu_bf16: bool = False
    _drift: DriftMonitor | None = None

    def enable_cpu_bf16(self, enabled: bool) -> None:
        self._cpu_bf16 = bool(enabled)
        self._drift = DriftMonitor() if enabled else None

    def _generate_single_turn(self, *args: Any, **kwargs: Any):
        with bf16_autocast(self._cpu_bf16), fast_cpu_sampling(), drop_finished_rows(self.model):
            return super()._generate_single_turn(*args, **kwargs)

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any):
        # Every log-prob pass (the loss, and old/reference log-probs when TRL computes them) takes the same path, so
        # importance ratios compare like with like.
        with compact_lm_head(), bf16_autocast(self._cpu_bf16):
            return super()._get_per_token_logps_and_entropies(*args, **kwargs)

    def _calculate_rewards(self, *args: Any, **kwargs: Any):
        start = time.perf_counter()
        try:
            return super()._calculate_rewards(*args, **kwargs)
        finally:
            self._reward_seconds = getattr(self, "_reward_seconds", 0.0) + time.perf_counter() - start

    def training_step(self, *args: Any, **kwargs: Any):
        """TRL's step of one micro-batch, timed. ``timing/update`` sums, over the micro-batches of one optimizer step,
        their time less any generation inside them (the loss's forward and backward; the optimizer step itself,
        outside ``training_step``, is not included)."""
        self._generation_seconds = 0.0
        start = time.perf_counter()
        loss = super().training_step(*args, **kwargs)
        self._update_seconds = getattr(self, "_update_seconds", 0.0) + time.perf_counter() - start - self._generation_seconds
        self._micro_batches = getattr(self, "_micro_batches", 0) + 1
        if self._micro_batches % max(1, int(self.args.gradient_accumulation_steps)) == 0:
            self._metrics["train"]["timing/update"].append(self._update_seconds)
            self._update_seconds = 0.0
        return loss

    def _timed_generation(self, generate: Any, *args: Any, **kwargs: Any):
        """Run TRL's ``_generate_and_score_completions`` and record its timing metrics."""
        self._reward_seconds = 0.0
        start = time.perf_counter()
        output = generate(*args, **kwargs)
        seconds = time.perf_counter() - start
        self._generation_seconds = getattr(self, "_generation_seconds", 0.0) + seconds
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        metrics["timing/generate"].append(seconds)
        metrics["timing/reward"].append(self._reward_seconds)
        mask = output.get("completion_mask") if isinstance(output, dict) else None
        if mask is not None and seconds > 0:
            metrics["timing/tokens_per_s"].append(float(mask.sum()) / seconds)
        if self._drift is not None and isinstance(output, dict) and self._drift.due():
            for key, value in self._drift.record(self._logprob_drift(output)).items():
                metrics[key].append(value)
        return output

    @torch.no_grad()
    def _logprob_drift(self, output: dict[str, Any]) -> dict[str, float]:
        """bf16 against fp32 log-probs of the first completions of a generation round (TRL's own log-prob pass)."""
        rows = slice(0, DRIFT_CHECK_ROWS)
        completion_ids, completion_mask = output["completion_ids"][rows], output["completion_mask"][rows]
        input_ids = torch.cat([output["prompt_ids"][rows], completion_ids], dim=1)
        attention_mask = torch.cat([output["prompt_mask"][rows], completion_mask], dim=1)
        trl_pass = super()._get_per_token_logps_and_entropies  # TRL's, without this mixin's autocast
        passes = []
        for bf16 in (True, False):
            with compact_lm_head(), bf16_autocast(bf16):
                passes.append(trl_pass(self.model, input_ids, attention_mask, completion_ids.size(1))[0])
        return logprob_drift(passes[0], passes[1], completion_mask)
