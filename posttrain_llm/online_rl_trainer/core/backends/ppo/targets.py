"""PPO's advantages and value targets from a rollout's values, and the critic pass that computes both in the update.

PPO needs the critic's values of the sampled tokens for GAE before the policy can be updated. With several passes
over a rollout (``ppo_epochs`` > 1 or ``num_mini_batches`` > 1) the values are computed at rollout time and the
critic is then fitted to those fixed targets over the passes. With one pass and one minibatch -- the default, as in
verl and OpenRLHF -- the critic's forward at rollout time and its forward in the update see the same weights, so
the rollout's forward is a copy: :func:`critic_first` runs the critic first in the update, micro-batch by
micro-batch (its values, detached, give each row's GAE returns -- GAE looks only at its own row -- and its value loss
is back-propagated in the same forward), then :func:`advantages_and_returns` whitens the whole batch's advantages,
then the policy's micro-batches follow. Values, returns, advantages and both losses are those of the two-pass order
up to float rounding (the clipped value loss, with old values = values, is the plain squared error in both); one
critic forward per step fewer. Not with PPO's shared critic (its value head rides on the policy's forward, which
costs nothing extra).

No departure from PPO (Schulman et al. 2017) or GAE (Schulman et al. 2016): this is a reordering of the same
computation. The old log-probs are still computed at rollout time (the KL penalty in the reward needs them).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from ...algorithms import (
    explained_variance_pooled,
    gae_advantages,
    gae_advantages_over_turns,
    masked_whiten_pooled,
    ppo_value_loss,
)
from ...config import TrainerConfig
from .components import PPOComponents
from .rollout import critic_values

Tensor = torch.Tensor
SumOverProcesses = Callable[[Tensor], Tensor] | None


def critic_runs_in_update(cfg: TrainerConfig, c: PPOComponents) -> bool:
    """Whether the rollout skips the critic's forward and the update computes the values (:func:`critic_first`)."""
    return cfg.ppo_epochs == 1 and cfg.num_mini_batches == 1 and c.shared_module is None


def advantages_and_returns(cfg: TrainerConfig, rewards: Tensor, values: Tensor, train_mask: Tensor, multi_turn: bool,
                           sum_over_processes: SumOverProcesses) -> tuple[Tensor, Tensor, float]:
    """rewards, values, train_mask: (B, C) -> (advantages (B, C), returns (B, C), explained variance): GAE (over
    turns for multi-turn rollouts), advantages whitened over every process when ``whiten_advantages`` (collective:
    every process calls it). The explained variance is NaN where undefined."""
    gae = gae_advantages_over_turns if multi_turn else gae_advantages
    with torch.no_grad():
        if bool(train_mask.any()):
            advantages, returns = gae(rewards, values, train_mask, cfg.gamma, cfg.lam)
        else:
            advantages, returns = torch.zeros_like(rewards), torch.zeros_like(rewards)
        if cfg.whiten_advantages:
            advantages = masked_whiten_pooled(advantages, train_mask, sum_over_processes)
    return advantages, returns, explained_variance_pooled(values, returns, train_mask, sum_over_processes)


def critic_first(cfg: TrainerConfig, c: PPOComponents, b: dict[str, Tensor], micro_batches: list[Tensor],
                 per_process: float, sum_over_processes: SumOverProcesses) -> tuple[dict[str, float], float]:
    """The critic's forward, value loss and backward over ``micro_batches`` (row indices covering all of ``b``), each
    weighted by its share ``per_process`` of the minibatch's real tokens, as the policy's micro-batches are; then
    ``b`` gets ``old_values``, ``returns`` and ``advantages``. -> (token-weighted sums of the value statistics,
    explained variance)."""
    acc = c.accelerator
    length = b["completion_ids"].shape[1]
    multi_turn = bool(b["multi_turn"])
    gae = gae_advantages_over_turns if multi_turn else gae_advantages
    values = torch.zeros_like(b["rewards"])
    window: dict[str, float] = {}
    for k, idx in enumerate(micro_batches):
        mask = b["train_mask"][idx]
        weight = float(mask.sum()) / per_process
        sync = contextlib.nullcontext() if k == len(micro_batches) - 1 else c.no_sync()
        with sync:
            with c.autocast():
                v = critic_values(c.train_critic, b["input_ids"][idx], b["attention_mask"][idx], length,
                                  c.critic_cache_kw).float()
            with torch.no_grad():  # this row's return: its own rewards and values only
                fixed = v.detach()
                returns = gae(b["rewards"][idx], fixed, mask, cfg.gamma, cfg.lam)[1] if bool(mask.any()) else fixed * 0
            value_loss, clipped = ppo_value_loss(v, fixed, returns, mask, cfg.vf_clip)
            acc.backward(cfg.vf_coef * value_loss * weight)
        values[idx] = fixed
        for key, value in (("value_loss", float(value_loss.detach())), ("clipfrac/value", float(clipped))):
            window[key] = window.get(key, 0.0) + value * weight
    advantages, returns, explained = advantages_and_returns(cfg, b["rewards"], values, b["train_mask"], multi_turn,
                                                            sum_over_processes)
    b.update(old_values=values, returns=returns, advantages=advantages)
    return window, explained
