"""The tensor math of our PPO, as pure functions: token rewards and GAE, KL estimators and controllers, PPO losses,
log-probabilities from logits, and masked statistics pooled over processes.

Every function is pure (no module state, no in-place edits of its inputs) and differentiable where that makes
sense, so trainers compose them and tests check them against numbers worked out by hand. Shapes use ``B`` for
completions in the batch, ``T`` for completion tokens, ``V`` for the vocabulary. Masks are ``(B, T)`` bool or 0/1
float tensors over *completion* tokens only (prompt excluded); values at masked positions are ignored, even NaN, and
outputs there are 0. Means over an empty mask are 0, not NaN: an all-masked row contributes nothing instead of
poisoning the batch.

``advantages.py`` (token rewards, GAE), ``kl.py`` (k1/k3, fixed and adaptive coefficients), ``losses.py``
(clipped policy and value losses, explained variance), ``logits.py`` (log-probs, entropy), ``masked_stats.py``
(sums, means, whitening pooled over processes). GRPO's and RLOO's sequence-level advantages are TRL's own;
``tests/backends/trl/test_trl_advantages.py`` checks them against the papers' formulas on a real batch.

Multi-turn masks with holes (environment tokens between the model's turns): ``gae_advantages_over_turns``; the
rest take any mask. Not covered: sequence packing, token-level reward models, dual-clip PPO.
"""

from .advantages import gae_advantages, gae_advantages_over_turns, token_level_rewards
from .kl import AdaptiveKLController, FixedKLController, kl_k1, kl_k3
from .logits import entropy_from_logits, logprobs_from_logits
from .losses import LOSS_AGGREGATIONS, LossAggregation, explained_variance_pooled, ppo_policy_loss, ppo_value_loss
from .masked_stats import masked_mean, masked_sum, masked_whiten_pooled, pooled_moments

__all__ = [
    "LOSS_AGGREGATIONS", "AdaptiveKLController", "FixedKLController", "LossAggregation", "entropy_from_logits",
    "explained_variance_pooled", "gae_advantages", "gae_advantages_over_turns", "kl_k1", "kl_k3",
    "logprobs_from_logits", "masked_mean", "masked_sum", "masked_whiten_pooled", "pooled_moments", "ppo_policy_loss",
    "ppo_value_loss", "token_level_rewards",
]
