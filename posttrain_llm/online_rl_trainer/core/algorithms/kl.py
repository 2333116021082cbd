"""KL to the reference policy: the per-token estimators k1 and k3, and the fixed and adaptive KL coefficients.

Sources: the estimators of Schulman's note (http://joschu.net/blog/kl-approx.html); k3 is GRPO's per-token KL
(DeepSeekMath eq. 4); the adaptive controller is Ziegler et al. 2019 (arXiv:1909.08593) §2.2.
"""

from __future__ import annotations

import math

import torch

from .masked_stats import check_same_shape

Tensor = torch.Tensor


def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = log p(x) - log q(x): unbiased for KL(p || q) with x ~ p, high variance, can be negative.

    logp: log-probs of the sampled tokens under the policy p; ref_logp: under the reference q. Same shape -> same.
    """
    check_same_shape(logp=logp, ref_logp=ref_logp)
    return logp - ref_logp


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = (q/p - 1) - log(q/p): unbiased for KL(p || q) with x ~ p, low variance, >= 0 (Schulman's blog).

    This is GRPO's per-token KL (DeepSeekMath eq. 4). Same shape in and out.
    """
    check_same_shape(logp=logp, ref_logp=ref_logp)
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
