"""PPO's losses: the clipped policy surrogate, the clipped value loss, and the critic's explained variance.

Shapes ``(B, T)`` over completion tokens; masks as in ``masked_stats.py``. ``ppo_policy_loss`` clamps the log-ratio
to [-20, 20] before ``exp`` (as verl does) so one stale token cannot make the loss infinite; inside that range the
loss is the paper's. Sources: PPO (Schulman et al. 2017, arXiv:1707.06347, eq. 7), the PPO2 value clip (OpenAI
baselines), clip-higher (DAPO, arXiv:2503.14476), the token-mean aggregation of DAPO and Dr.GRPO (arXiv:2503.20783).
"""

from __future__ import annotations

from typing import Literal

import torch

from .masked_stats import bool_mask_like, check_same_shape, masked_mean, masked_sum, pooled_moments

Tensor = torch.Tensor
LossAggregation = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"]
LOSS_AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum")
_MAX_LOG_RATIO = 20.0


def _aggregate(loss: Tensor, m: Tensor, loss_agg: str) -> Tensor:
    if loss_agg == "token_mean":
        return masked_mean(loss, m)
    per_row = masked_mean(loss, m, dim=1) if loss_agg == "seq_mean_token_mean" else masked_sum(loss, m, dim=1)
    nonempty = m.any(dim=1)
    return masked_mean(per_row, nonempty)


def ppo_policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_range: float,
    clip_range_high: float | None = None,
    loss_agg: LossAggregation = "token_mean",
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7), negated to a loss, per token.

    logp, old_logp, advantages, mask: (B, T) -> (loss scalar, stats). ratio = exp(logp - old_logp); per-token
    loss = max(-A * ratio, -A * clip(ratio, 1 - clip_range, 1 + clip_range_high)); ``clip_range_high`` defaults to
    ``clip_range`` (a larger one is DAPO's clip-higher). ``loss_agg``: ``token_mean`` = mean over all real tokens
    of the batch (DAPO, Dr.GRPO); ``seq_mean_token_mean`` = mean per completion, then over completions (GRPO
    paper); ``seq_mean_token_sum`` = sum per completion, then mean over completions. All-masked rows are left
    out of the per-completion means. Stats (detached scalars): ``clipfrac`` (share of real tokens where the
    clipped term is the one used), ``approx_kl`` (k3 estimate of KL(old || new) from the old policy's samples),
    ``ratio_mean``, and the ratio's tails over the real tokens, ``ratio_max`` / ``ratio_min`` (1 with no real token).
    """
    check_same_shape(logp=logp, old_logp=old_logp, advantages=advantages, mask=mask)
    high = clip_range if clip_range_high is None else clip_range_high
    if not (0 < clip_range < 1) or not high > 0:
        raise ValueError(f"need 0 < clip_range < 1 and clip_range_high > 0, got {clip_range} and {clip_range_high}")
    if loss_agg not in LOSS_AGGREGATIONS:
        raise ValueError(f"loss_agg must be one of {LOSS_AGGREGATIONS}, got {loss_agg!r}")
    m = bool_mask_like(logp, mask)
    zero = torch.zeros_like(logp)
    log_ratio = torch.where(m, logp - old_logp, zero).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    adv = torch.where(m, advantages, zero)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_range, 1.0 + high)
    loss = _aggregate(torch.maximum(unclipped, clipped), m, loss_agg)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).to(logp.dtype), m),
            "approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, m),
            "ratio_mean": masked_mean(ratio, m),
            "ratio_max": torch.where(m, ratio, zero).max() if bool(m.any()) else torch.ones(()),
            "ratio_min": torch.where(m, ratio, torch.full_like(ratio, torch.inf)).min() if bool(m.any()) else torch.ones(()),
        }
    return loss, stats


def ppo_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range_value: float
) -> tuple[Tensor, Tensor]:
    """Clipped value loss of PPO2 (baselines/OpenAI RLHF): 0.5 * max((V - R)^2, (V_clip - R)^2), token mean.

    values (new critic), old_values (critic at rollout), returns (GAE targets), mask: (B, T) -> (loss scalar,
    clipfrac detached scalar). V_clip = old_values + clip(values - old_values, -clip_range_value, +clip_range_value);
    clipfrac is the share of real tokens where the clipped error is the larger one. ``float('inf')`` disables clipping.
    """
    check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    if not clip_range_value > 0:
        raise ValueError(f"clip_range_value must be > 0, got {clip_range_value}")
    m = bool_mask_like(values, mask)
    zero = torch.zeros_like(values)
    v, old, ret = (torch.where(m, t, zero) for t in (values, old_values, returns))
    # clamp to [old - c, old + c] rather than old + clamp(v - old): inside the band it returns v itself, so an
    # unclipped token has exactly equal errors and never counts in clipfrac through a rounding tie.
    v_clipped = torch.minimum(torch.maximum(v, old - clip_range_value), old + clip_range_value)
    err_unclipped = (v - ret) ** 2
    err_clipped = (v_clipped - ret) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err_unclipped, err_clipped), m)
    clipfrac = masked_mean((err_clipped > err_unclipped).to(values.dtype), m).detach()
    return loss, clipfrac


def explained_variance_pooled(values: Tensor, returns: Tensor, mask: Tensor, all_reduce_sum=None) -> float:
    """1 - Var[returns - values] / Var[returns] over the real tokens of every process: 1 is a perfect critic, 0 no
    better than a constant, negative worse. (B, T) each -> a float, the same on every process: that of the
    concatenated batches (``all_reduce_sum`` as in :func:`pooled_moments`; None for one process). NaN when fewer
    than 2 tokens or the returns do not vary (undefined there)."""
    check_same_shape(values=values, returns=returns, mask=mask)
    with torch.no_grad():
        n, _, var_returns = pooled_moments(returns, mask, all_reduce_sum)
        _, _, var_residual = pooled_moments(returns - values, mask, all_reduce_sum)
    if int(n) < 2 or float(var_returns) == 0.0:
        return float("nan")
    return float(1.0 - var_residual / var_returns)
