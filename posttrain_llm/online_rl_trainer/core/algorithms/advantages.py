"""PPO's per-token rewards and Generalized Advantage Estimation over completion tokens.

Shapes: ``(B, T)`` for B completions of T completion tokens (prompt excluded); masks are bool or 0/1 over the real
completion tokens. For ``gae_advantages`` each row's real tokens must be contiguous (right padding, as PPO uses, or
left padding); ``gae_advantages_over_turns`` takes masks with holes (multi-turn rollouts: the environment's tokens
between the model's turns are masked out and skipped, not time steps). ``token_level_rewards`` takes either.
Sources: Ziegler et al. 2019 (arXiv:1909.08593) §2 for the reward placement, GAE (Schulman et al. 2016,
arXiv:1506.02438, eq. 16).
"""

from __future__ import annotations

import torch

from .masked_stats import as_bool_mask, bool_mask_like, check_contiguous, check_same_shape

Tensor = torch.Tensor


def token_level_rewards(
    sequence_rewards: Tensor, mask: Tensor, kl: Tensor | None = None, kl_coef: float = 0.0
) -> Tensor:
    """Per-token rewards for PPO: the sequence reward on each row's last real token, minus ``kl_coef * kl`` at every
    real token (Ziegler et al. 2019 §2; InstructGPT eq. 2).

    sequence_rewards: (B,); mask: (B, T); kl: (B, T) per-token KL estimate or None -> (B, T), 0 where masked.
    Raises ValueError for a row with no real token (its reward would have nowhere to go).
    """
    if sequence_rewards.dim() != 1 or mask.dim() != 2 or sequence_rewards.shape[0] != mask.shape[0]:
        raise ValueError(
            "sequence_rewards must be (B,) and mask (B, T); "
            f"got {tuple(sequence_rewards.shape)} and {tuple(mask.shape)}"
        )
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    m = as_bool_mask(mask)
    empty = (~m.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"rows {empty[:5]} have no real completion token; cannot place their sequence reward")
    positions = torch.arange(m.shape[1], device=m.device).expand_as(m)
    last = torch.where(m, positions, -1).max(dim=1).values
    is_last = positions == last.unsqueeze(1)
    dtype = sequence_rewards.dtype if sequence_rewards.is_floating_point() else torch.get_default_dtype()
    out = torch.where(is_last, sequence_rewards.to(dtype).unsqueeze(1), torch.zeros((), dtype=dtype, device=m.device))
    if kl is not None:
        bool_mask_like(kl, m, "mask (vs kl)")
        out = out - kl_coef * torch.where(m, kl, torch.zeros_like(kl)).to(out.dtype)
    return out


def gae_advantages(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalized Advantage Estimation over completion tokens (Schulman et al. 2016, eq. 16).

    rewards, values, mask: (B, T) -> (advantages, returns), both (B, T), 0 at masked positions.
    delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}, where V beyond a row's last
    real token is 0 (the episode ends there). returns = advantages + values (the critic's regression target).
    Rewards and values at masked positions are ignored. Assumes each row's real tokens are contiguous: right
    padding (PPO's layout) or left padding both work, holes raise. An all-masked row gives zeros. Differentiable
    w.r.t. rewards and values (no in-place ops); call it under ``torch.no_grad()`` for PPO's fixed targets.
    """
    m = _checked_gae_inputs("gae_advantages", rewards, values, mask, gamma, lam)
    check_contiguous(m)
    return _gae(rewards, values, m, gamma, lam)


def gae_advantages_over_turns(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """GAE over the masked-in tokens of each row, which may have holes: multi-turn rollouts, whose environment
    tokens (tool results) sit between the model's turns.

    rewards, values, mask: (B, T) -> (advantages, returns), both (B, T), 0 at masked positions. A masked position is
    not a time step: the next state of a model token is the next *masked-in* token of its row, so the result at
    the masked-in positions equals :func:`gae_advantages` on the row with its masked positions removed (and, for a
    contiguous mask, equals :func:`gae_advantages` exactly). ``gamma`` discounts per model token, not per
    environment token. Rewards and values at masked positions are ignored; put a per-turn reward on the turn's last
    masked-in token.
    """
    m = _checked_gae_inputs("gae_advantages_over_turns", rewards, values, mask, gamma, lam)
    return _gae(rewards, values, m, gamma, lam)


def _checked_gae_inputs(name: str, rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """Shape and range checks of both GAE functions -> the mask as bool."""
    check_same_shape(rewards=rewards, values=values, mask=mask)
    if rewards.dim() != 2:
        raise ValueError(f"{name} expects (B, T) tensors, got shape {tuple(rewards.shape)}")
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must be in [0, 1], got gamma={gamma}, lam={lam}")
    return bool_mask_like(rewards, mask)


def _gae(rewards: Tensor, values: Tensor, m: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """The backward GAE recursion; at a masked position the carried V_{t+1} and A_{t+1} pass through unchanged,
    so a masked run (right padding, or an environment block inside a row) is skipped, not a time step."""
    r = torch.where(m, rewards, torch.zeros_like(rewards))
    v = torch.where(m, values, torch.zeros_like(values))
    batch, length = r.shape
    # Padding after the last real token carries V = A = 0 into the last real token (the episode ends there).
    next_value = torch.zeros(batch, dtype=v.dtype, device=v.device)
    next_adv = torch.zeros_like(next_value)
    reversed_advs = []
    for t in reversed(range(length)):
        delta = r[:, t] + gamma * next_value - v[:, t]
        adv = delta + gamma * lam * next_adv
        real = m[:, t]
        next_adv = torch.where(real, adv, next_adv)
        next_value = torch.where(real, v[:, t], next_value)
        reversed_advs.append(adv)
    advantages = torch.where(m, torch.stack(reversed_advs[::-1], dim=1), torch.zeros_like(r))
    return advantages, advantages + v
