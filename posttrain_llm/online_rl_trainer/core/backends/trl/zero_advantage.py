"""Micro-batches whose advantages are all exactly zero skip their forward and backward (GRPO, RLOO).

A group whose completions all got the same reward has advantage 0 for every completion, and TRL's policy losses
multiply every per-token term by the advantage (``-min(r A, clip(r) A)``, CISPO's ``-clip(r) A log p``, SAPO's
``-g(r) A``; RLOO's per-sequence form alike), so such a micro-batch adds exactly zero to the gradient and to the
logged loss, whatever its log-probs are. On the README's SmolLM2 task (one group per micro-batch) 25-75% of the
groups of a step have identical rewards (``frac_reward_zero_std``), and each one cost a full forward and backward.
Here such a micro-batch returns a zero loss tied to every trainable weight instead (``p[0] * 0``), so the weights get
the same exact-zero gradients the real pass would have given them: the optimizer, gradient clipping and AdamW's
moments and weight decay see what they would have seen (a step where *every* group was skipped still steps AdamW
with zero gradients, as TRL does).

Only where the skip cannot change the update: one process (DDP, and TRL's metric gathers, expect every rank in every
pass), a KL term outside the advantage off (GRPO ``beta=0``; RLOO folds its KL into the reward, so its advantages
carry it), no entropy bonus, no MoE auxiliary loss, and a loss type known to be proportional to the advantage.
Anywhere else it turns itself off with one log line. What changes: TRL's per-micro-batch metrics (``entropy``,
clip ratios) are averaged over the micro-batches that ran, and ``update/skipped_micro_batches`` (the fraction
skipped in the step) says how many did not. Weights no forward pass touches get a zero gradient here instead of
none (AdamW then applies weight decay to them); the models this trainer builds have no such weights.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["ZeroAdvantageMixin", "ADVANTAGE_LINEAR_LOSSES", "zero_skip_blocker"]

#: TRL GRPO loss types whose every per-token term is a finite factor times the advantage.
ADVANTAGE_LINEAR_LOSSES = frozenset({"grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"})


def zero_skip_blocker(trainer: Any) -> str | None:
    """Why a zero-advantage micro-batch could still move the update in this trainer (None: it cannot)."""
    if trainer.accelerator.num_processes > 1:
        return f"{trainer.accelerator.num_processes} processes"
    if getattr(trainer.accelerator.state, "deepspeed_plugin", None) is not None:
        return "DeepSpeed"
    if getattr(trainer, "aux_loss_enabled", False):
        return "an MoE auxiliary loss"
    if getattr(trainer, "_entropy_bonus_enabled", False):
        return "an entropy bonus"
    if getattr(trainer, "online_rl_trainer_type", "grpo") == "grpo":
        if float(getattr(trainer, "beta", 0.0)) != 0.0:
            return f"beta={trainer.beta} (a KL term outside the advantage)"
        loss_type = getattr(trainer, "loss_type", None)
        if loss_type not in ADVANTAGE_LINEAR_LOSSES:
            return f"loss_type={loss_type!r}"
    return None


def zero_loss(model: Any) -> torch.Tensor:
    """A scalar 0 whose backward gives every trainable weight of ``model`` an exact-zero gradient."""
    terms = [(p.reshape(-1)[:1] * 0).sum() for p in model.parameters() if p.requires_grad]
    return torch.stack(terms).sum() if terms else torch.zeros((), requires_grad=True)


class ZeroAdvantageMixin:
    """Mixed in before TRL's GRPO/RLOO trainer; see the module docstring."""

    _skip_zero_advantage: bool = False

    def enable_zero_advantage_skip(self, enabled: bool) -> None:
        """Skip all-zero-advantage micro-batches when asked and when it cannot change the update."""
        self._skip_zero_advantage = False
        if not enabled:
            return
        reason = zero_skip_blocker(self)
        if reason:
            logger.info("skip_zero_advantage: off for this run (%s); every micro-batch runs", reason)
            return
        self._skip_zero_advantage = True

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None):
        if self._skip_zero_advantage and self.model.training and not return_outputs:
            advantages = inputs.get("advantages") if isinstance(inputs, dict) else None
            if isinstance(advantages, torch.Tensor) and advantages.numel():
                skip = not bool(advantages.any())
                self._metrics["train"]["update/skipped_micro_batches"].append(float(skip))
                if skip:
                    return zero_loss(model)
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)
