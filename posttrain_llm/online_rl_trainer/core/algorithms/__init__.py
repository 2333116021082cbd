"""The tensor math of our PPO: token rewards and GAE, KL estimators and controllers, PPO losses (masked statistics
live in ``algorithms/masked_stats.py`` and are re-exported here). GRPO's and RLOO's sequence-level advantages are
TRL's own; ``tests/backends/trl/test_trl_advantages.py`` checks them against the papers' formulas on a real batch.

Every function is pure (no module state, no in-place edits of its inputs) and differentiable where that makes
sense, so trainers compose them and tests check them against numbers worked out by hand. Shapes use ``B`` for
completions in the batch, ``T`` for completion tokens, ``G`` for generations per prompt, ``V`` for the
vocabulary. Masks are ``(B, T)`` bool or 0/1 float tensors over *completion* tokens only (prompt excluded);
values at masked positions are ignored, even NaN, and outputs there are 0.

Sources: PPO (Schulman et al. 2017, arXiv:1707.06347), GAE (Schulman et al. 2016, arXiv:1506.02438), KL in the
reward with an adaptive coefficient (Ziegler et al. 2019, arXiv:1909.08593; InstructGPT, Ouyang et al. 2022),
KL estimators k1/k3 (Schulman, http://joschu.net/blog/kl-approx.html), GRPO (DeepSeekMath, arXiv:2402.03300),
Dr.GRPO (arXiv:2503.20783), RLOO (Ahmadian et al. 2024, arXiv:2402.14740), clip-higher (DAPO, arXiv:2503.14476).

Departures from the papers, on purpose:
- Means over an empty mask are 0, not NaN: an all-masked row contributes nothing instead of poisoning the batch.
- ``ppo_policy_loss`` clamps the log-ratio to [-20, 20] before ``exp`` (as verl does) so one stale token cannot
  make the loss infinite; inside that range the loss is the paper's.
- ``gae_advantages`` needs each row's real tokens to be contiguous (right padding, as PPO uses, or left padding).

Not covered: sequence packing, multi-turn masks with holes, token-level reward models, dual-clip PPO.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Tensor = torch.Tensor
LossAggregation = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"]
LOSS_AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum")
_MAX_LOG_RATIO = 20.0
# Rows of (rows, V) logits processed at once in the low-precision path: bounds the float32 copy.
_LOGIT_CHUNK_ROWS = 1024


from .masked_stats import (  # noqa: F401 - re-exported: this module is the public home of the RL math
    _as_bool,
    _bool_mask,
    _same_shape,
    _check_contiguous,
    masked_sum,
    masked_mean,
    pooled_moments,
    masked_whiten_pooled,
)


# ----------------------------------------------------------------------------------- token-level rewards, GAE
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
    m = _as_bool(mask)
    empty = (~m.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"rows {empty[:5]} have no real completion token; cannot place their sequence reward")
    positions = torch.arange(m.shape[1], device=m.device).expand_as(m)
    last = torch.where(m, positions, -1).max(dim=1).values
    is_last = positions == last.unsqueeze(1)
    dtype = sequence_rewards.dtype if sequence_rewards.is_floating_point() else torch.get_default_dtype()
    out = torch.where(is_last, sequence_rewards.to(dtype).unsqueeze(1), torch.zeros((), dtype=dtype, device=m.device))
    if kl is not None:
        _bool_mask(kl, m, "mask (vs kl)")
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
    _same_shape(rewards=rewards, values=values, mask=mask)
    if rewards.dim() != 2:
        raise ValueError(f"gae_advantages expects (B, T) tensors, got shape {tuple(rewards.shape)}")
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must be in [0, 1], got gamma={gamma}, lam={lam}")
    m = _bool_mask(rewards, mask)
    _check_contiguous(m)
    r = torch.where(m, rewards, torch.zeros_like(rewards))
    v = torch.where(m, values, torch.zeros_like(values))
    batch, length = r.shape
    # Padding after the last real token has r = V = 0, so the recursion carries 0 into the last real token; with
    # left padding the positions before the first real token get junk that the final mask removes.
    next_value = torch.zeros(batch, dtype=v.dtype, device=v.device)
    next_adv = torch.zeros_like(next_value)
    reversed_advs = []
    for t in reversed(range(length)):
        delta = r[:, t] + gamma * next_value - v[:, t]
        next_adv = delta + gamma * lam * next_adv
        next_value = v[:, t]
        reversed_advs.append(next_adv)
    advantages = torch.where(m, torch.stack(reversed_advs[::-1], dim=1), torch.zeros_like(r))
    return advantages, advantages + v


# ---------------------------------------------------------------------------------------------- KL estimators
def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = log p(x) - log q(x): unbiased for KL(p || q) with x ~ p, high variance, can be negative.

    logp: log-probs of the sampled tokens under the policy p; ref_logp: under the reference q. Same shape -> same.
    """
    _same_shape(logp=logp, ref_logp=ref_logp)
    return logp - ref_logp


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = (q/p - 1) - log(q/p): unbiased for KL(p || q) with x ~ p, low variance, >= 0 (Schulman's blog).

    This is GRPO's per-token KL (DeepSeekMath eq. 4). Same shape in and out.
    """
    _same_shape(logp=logp, ref_logp=ref_logp)
    log_ratio = ref_logp - logp
    return torch.expm1(log_ratio) - log_ratio


class FixedKLController:
    """A constant KL coefficient (Ziegler et al. 2019, the non-adaptive setting). ``update`` is a no-op."""

    def __init__(self, kl_coef: float) -> None:
        if not (math.isfinite(kl_coef) and kl_coef >= 0):
            raise ValueError(f"kl_coef must be a finite number >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Adaptive KL coefficient (Ziegler et al. 2019 §2.2):
    beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon).

    ``update(current_kl, n_steps)`` takes the measured mean KL of the last batch and the number of samples
    (or steps) it covered, and returns the new coefficient.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        super().__init__(init_kl_coef)
        if not (math.isfinite(target) and target > 0):
            raise ValueError(f"target KL must be a finite number > 0, got {target}")
        if not (math.isfinite(horizon) and horizon > 0):
            raise ValueError(f"horizon must be a finite number > 0, got {horizon}")
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        if not math.isfinite(current_kl):
            raise ValueError(f"current_kl must be finite, got {current_kl}")
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


# ------------------------------------------------------------------------------------------------ PPO losses
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
    ``ratio_mean``.
    """
    _same_shape(logp=logp, old_logp=old_logp, advantages=advantages, mask=mask)
    high = clip_range if clip_range_high is None else clip_range_high
    if not (0 < clip_range < 1) or not high > 0:
        raise ValueError(f"need 0 < clip_range < 1 and clip_range_high > 0, got {clip_range} and {clip_range_high}")
    if loss_agg not in LOSS_AGGREGATIONS:
        raise ValueError(f"loss_agg must be one of {LOSS_AGGREGATIONS}, got {loss_agg!r}")
    m = _bool_mask(logp, mask)
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
    _same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    if not clip_range_value > 0:
        raise ValueError(f"clip_range_value must be > 0, got {clip_range_value}")
    m = _bool_mask(values, mask)
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
    _same_shape(values=values, returns=returns, mask=mask)
    with torch.no_grad():
        n, _, var_returns = pooled_moments(returns, mask, all_reduce_sum)
        _, _, var_residual = pooled_moments(returns - values, mask, all_reduce_sum)
    if int(n) < 2 or float(var_returns) == 0.0:
        return float("nan")
    return float(1.0 - var_residual / var_returns)


# ------------------------------------------------------------------------------------------ logits utilities
def _rowwise(fn, logits: Tensor, *others: Tensor) -> Tensor:
    """Apply ``fn`` on float32 chunks of flattened rows: bf16/fp16 log-softmax is too coarse for PPO ratios, and a
    full float32 copy of (B, T, V) logits would double the peak memory."""
    vocab = logits.shape[-1]
    flat = logits.reshape(-1, vocab)
    flat_others = [o.reshape(-1) for o in others]
    parts = [
        fn(flat[i : i + _LOGIT_CHUNK_ROWS].float(), *(o[i : i + _LOGIT_CHUNK_ROWS] for o in flat_others))
        for i in range(0, flat.shape[0], _LOGIT_CHUNK_ROWS)
    ]
    out = torch.cat(parts) if parts else flat.new_zeros(0, dtype=torch.float32)
    return out.reshape(logits.shape[:-1])


def logprobs_from_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """log softmax(logits)[label] without materialising the full log-softmax.

    logits: (..., V); labels: (...) int in [0, V) -> (...). float32/float64 logits: gather minus logsumexp, in
    their dtype. bf16/fp16 logits: computed in float32 chunk by chunk and returned as float32.
    """
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels shape {tuple(labels.shape)} must equal logits shape {tuple(logits.shape)} minus V")
    vocab = logits.shape[-1]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= vocab):
        raise ValueError(
            f"labels must be token ids in [0, {vocab}); got range [{int(labels.min())}, {int(labels.max())}] "
            "(ignore-index -100 must be replaced and masked before this call)"
        )

    def gather_minus_lse(lg: Tensor, lab: Tensor) -> Tensor:
        return lg.gather(-1, lab.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(lg, dim=-1)

    if logits.dtype in (torch.float32, torch.float64):
        return gather_minus_lse(logits, labels)
    return _rowwise(gather_minus_lse, logits, labels)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) in nats: logsumexp(l) - sum softmax(l) * l. (..., V) -> (...).

    float32/float64 in their dtype; bf16/fp16 in float32 chunks, returned as float32.
    """

    def entropy(lg: Tensor) -> Tensor:
        return torch.logsumexp(lg, dim=-1) - (torch.softmax(lg, dim=-1) * lg).sum(dim=-1)

    if logits.dtype in (torch.float32, torch.float64):
        return entropy(logits)
    return _rowwise(entropy, logits)
