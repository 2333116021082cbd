"""PPO's update: ``ppo_epochs`` passes over shuffled minibatches, each split into micro-batches, one optimizer step
per minibatch (clipped policy loss + ``vf_coef`` x clipped value loss). With one pass and one minibatch the rollout
carries no values: the critic's micro-batches run first and give the advantages (``targets.py``), then the policy's.

Every per-token loss is a mean over the real tokens of the whole minibatch of every process: a micro-batch's token
mean is weighted by its share of those tokens (times the number of processes, as DDP averages the processes'
gradients), so neither gradient accumulation nor the number of processes changes the update. The losses are the pure
functions of ``core/algorithms``; the rollout that produced ``b`` is ``rollout.py``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from ...algorithms import entropy_from_logits, masked_mean, ppo_policy_loss, ppo_value_loss
from ...config import TrainerConfig
from ..shared_prompt import group_blocks
from .components import PPOComponents
from .rollout import critic_values, policy_forward, token_logprobs
from .targets import critic_first


def ppo_update(cfg: TrainerConfig, c: PPOComponents, b: dict[str, torch.Tensor],
               sum_over_processes: Any = None) -> dict[str, float]:
    """``ppo_epochs`` passes over ``num_mini_batches`` shuffled minibatches of the rollout ``b``; one optimizer step
    per minibatch -> the step's mean losses and statistics (over the processes) and learning rates. A rollout
    without ``advantages`` gets them from :func:`targets.critic_first` (``sum_over_processes`` as there)."""
    acc = c.accelerator
    size, length = b["input_ids"].shape[0], b["completion_ids"].shape[1]
    minibatch = size // cfg.num_mini_batches
    sums: dict[str, list[float]] = {}
    tails = [0.0, -float("inf")]  # the largest importance ratio and minus the smallest, over every token of the step
    critic_in_update = "advantages" not in b
    explained = float("nan")
    c.set_train_mode(True)
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(size)
        if c.policy_cache_kw and size % c.group_size == 0:  # whole groups per micro-batch: their prompt computed once
            order = group_blocks(order, c.group_size)
        for start in range(0, size, minibatch):
            rows = order[start: start + minibatch].to(acc.device)
            # Token means over the whole minibatch: a micro-batch's token mean weighs its share of the real tokens
            # of all processes (times num_processes, as DDP averages the processes' gradients).
            tokens = b["train_mask"][rows].sum().float().reshape(1)
            tokens = float(acc.reduce(tokens, "sum")[0]) if acc.num_processes > 1 else float(tokens[0])
            per_process = max(tokens, 1.0) / acc.num_processes
            micro_batches = rows.split(c.micro_batch)
            window: dict[str, float] = {}
            if critic_in_update:  # one pass over the rollout: the critic first, then the advantages
                window, explained = critic_first(cfg, c, b, list(micro_batches), per_process, sum_over_processes)
            for k, idx in enumerate(micro_batches):
                weight = float(b["train_mask"][idx].sum()) / per_process
                sync = contextlib.nullcontext() if k == len(micro_batches) - 1 else c.no_sync()
                with sync:
                    stats, (ratio_max, ratio_min) = _micro_step(cfg, c, b, idx, length, weight,
                                                                with_critic=not critic_in_update)
                if float(b["train_mask"][idx].sum()) > 0:
                    tails = [max(tails[0], ratio_max), max(tails[1], -ratio_min)]
                for key, value in stats.items():
                    window[key] = window.get(key, 0.0) + value * weight
            for key, value in window.items():
                sums.setdefault(key, []).append(value)
            for key, value in c.clip_and_step().items():
                sums.setdefault(key, []).append(value)
    c.set_train_mode(False)
    local = {k: float(np.mean(v)) for k, v in sums.items()}
    reduced = acc.reduce(torch.tensor(list(local.values()), device=acc.device), "mean")
    metrics = dict(zip(local, reduced.tolist()))
    top, neg_bottom = acc.gather(torch.tensor([tails], device=acc.device)).max(dim=0).values.tolist()
    if top > 0:  # some process had a real token
        metrics["ratio/max"], metrics["ratio/min"] = top, -neg_bottom
    if np.isfinite(explained):
        metrics["explained_variance"] = explained
    metrics["learning_rate"] = c.optimizers[0].param_groups[0]["lr"]
    if c.shared_module is not None:
        metrics["learning_rate/critic"] = c.optimizers[0].param_groups[1]["lr"]
    else:
        metrics["learning_rate/critic"] = c.optimizers[1].param_groups[0]["lr"]
    return metrics

def _micro_step(cfg: TrainerConfig, c: PPOComponents, b: dict[str, torch.Tensor], idx: torch.Tensor, length: int,
                weight: float, with_critic: bool = True) -> tuple[dict[str, float], tuple[float, float]]:
    """Forward, losses and backward of one micro-batch (rows ``idx`` of ``b``), scaled by its token ``weight``;
    returns its statistics (token means, weighted by the caller) and its importance ratios' (max, min).
    ``with_critic=False``: the separate critic already had its pass (``targets.critic_first``): policy loss only."""
    acc = c.accelerator
    ids, attn, mask = b["input_ids"][idx], b["attention_mask"][idx], b["train_mask"][idx]
    with c.autocast():
        logits, values = policy_forward(c.train_policy, ids, attn, length, cfg.temperature, c.shared_module is not None,
                                        c.policy_cache_kw)
        if values is None and with_critic:
            values = critic_values(c.train_critic, ids, attn, length, c.critic_cache_kw)
    logp = token_logprobs(logits, b["completion_ids"][idx])
    policy_loss, pstats = ppo_policy_loss(logp, b["old_logp"][idx], b["advantages"][idx], mask,
                                          cfg.clip_range, cfg.clip_range_high)
    stats = {"policy_loss": float(policy_loss.detach()), "clipfrac/policy": float(pstats["clipfrac"]),
             "approx_kl": float(pstats["approx_kl"])}
    loss = policy_loss
    if values is not None:
        value_loss, vclip = ppo_value_loss(values.float(), b["old_values"][idx], b["returns"][idx], mask, cfg.vf_clip)
        loss = loss + cfg.vf_coef * value_loss
        stats.update({"value_loss": float(value_loss.detach()), "clipfrac/value": float(vclip)})
    acc.backward(loss * weight)
    with torch.no_grad():
        stats["entropy"] = float(masked_mean(entropy_from_logits(logits.detach()).float(), mask))
    return stats, (float(pstats["ratio_max"]), float(pstats["ratio_min"]))
