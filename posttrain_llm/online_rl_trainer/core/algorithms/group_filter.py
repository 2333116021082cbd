"""Which GRPO/RLOO groups carry a learning signal: DAPO's dynamic-sampling filter (Yu et al. 2025, arXiv:2503.14476,
eq. 11: keep a prompt only when its samples' rewards are not all equal).

A group is the ``group_size`` consecutive completions of one prompt. When every scorable completion of a group got
the same reward, its group-relative advantages are all 0 (GRPO: reward minus the group mean; RLOO: minus the
leave-one-out mean), so the group adds nothing to the policy gradient; it only dilutes the token count that
normalises the loss. DAPO filters on accuracy (0/1); here the test is on the rewards the advantage is computed from:
the weighted sum of the reward functions (TRL's ``sum_then_normalize``), or, with ``per_function=True``, any one
reward function (TRL's ``normalize_then_sum``, which normalises each function within the group first).

Departures from the paper: a completion every reward function left unscored (``None``/NaN) is ignored, as TRL's
advantages ignore it; a group with fewer than two scorable completions has no spread and counts as uninformative.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def informative_groups(rewards_per_func: Tensor, weights: Tensor, group_size: int,
                       per_function: bool = False) -> Tensor:
    """rewards_per_func: (N, F), NaN where a reward function gave no score; weights: (F,) -> (N // group_size,) bool,
    True where the group's rewards differ (std > 0, TRL's ``torch.isclose`` tolerance).

    Raises ValueError when N is not a multiple of ``group_size`` or the shapes disagree.
    """
    if rewards_per_func.dim() != 2 or weights.dim() != 1 or weights.shape[0] != rewards_per_func.shape[1]:
        raise ValueError(f"rewards_per_func {tuple(rewards_per_func.shape)} must be (N, F) and weights "
                         f"{tuple(weights.shape)} must be (F,)")
    if group_size < 1 or rewards_per_func.shape[0] % group_size:
        raise ValueError(f"{rewards_per_func.shape[0]} completions do not split into groups of {group_size}")
    rewards = rewards_per_func.float()
    columns = rewards if per_function else weighted_reward(rewards, weights).unsqueeze(1)
    grouped = columns.view(-1, group_size, columns.shape[1])  # (groups, G, F')
    return (_nan_std(grouped) > 0).any(dim=1)


def weighted_reward(rewards_per_func: Tensor, weights: Tensor) -> Tensor:
    """(N, F) rewards (NaN: a function gave no score), (F,) weights -> (N,) the weighted sum over the scored functions
    (TRL's ``nansum``), NaN where no function scored the completion."""
    rewards = rewards_per_func.float()
    summed = (rewards * weights.to(rewards).unsqueeze(0)).nansum(dim=1)
    summed[torch.isnan(rewards).all(dim=1)] = torch.nan
    return summed


def _nan_std(grouped: Tensor) -> Tensor:
    """(groups, G, F) -> (groups, F): std over the scorable entries (NaN ignored); 0 where fewer than two, and where
    the spread is within ``torch.isclose``'s default tolerance of 0 (what TRL logs as ``frac_reward_zero_std``)."""
    scorable = ~torch.isnan(grouped)
    count = scorable.sum(dim=1)
    values = torch.where(scorable, grouped, torch.zeros_like(grouped))
    mean = values.sum(dim=1) / count.clamp(min=1)
    centred = torch.where(scorable, grouped - mean.unsqueeze(1), torch.zeros_like(grouped))
    std = (centred.pow(2).sum(dim=1) / (count - 1).clamp(min=1)).sqrt()
    std = torch.where(count >= 2, std, torch.zeros_like(std))
    return torch.where(torch.isclose(std, torch.zeros_like(std)), torch.zeros_like(std), std)
