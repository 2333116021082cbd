"""Hand-computed checks of the RL tensor math (core/algorithms/). Each expected number is worked out in a comment."""

from __future__ import annotations

import math

import pytest
import torch

from posttrain_llm.online_rl_trainer.core.algorithms import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    explained_variance_pooled,
    gae_advantages,
    gae_advantages_over_turns,
    kl_k1,
    kl_k3,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    masked_whiten_pooled,
    pooled_moments,
    ppo_policy_loss,
    ppo_value_loss,
    token_level_rewards,
)
from posttrain_llm.online_rl_trainer.core.algorithms.logits import LOGIT_CHUNK_ROWS

D = torch.float64
NAN = float("nan")


def t(*rows):
    """t(1.0, 2.0) and t([1.0, 2.0]) are 1-D; t([..], [..]) is 2-D (one argument per row)."""
    return torch.tensor(rows[0] if len(rows) == 1 else rows, dtype=D)


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=D), torch.as_tensor(expected, dtype=D), atol=atol, rtol=0)


# ------------------------------------------------------------------------------------------ masked statistics
X = t([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
M = t([1, 1, 0], [1, 0, 0])


def test_masked_mean_pools_only_real_entries():
    close(masked_mean(X, M), 7 / 3)  # (1 + 2 + 4) / 3


def test_masked_mean_per_row_with_all_masked_row_is_zero_not_nan():
    close(masked_mean(X, t([1, 1, 0], [0, 0, 0]), dim=1), [1.5, 0.0])


def test_masked_sum_per_row():
    close(masked_sum(X, M, dim=1), [3.0, 4.0])


def test_masked_positions_may_hold_nan():
    x = t([1.0, NAN], [3.0, math.inf])
    close(masked_mean(x, t([1, 0], [1, 0])), 2.0)


def test_bool_and_float_masks_agree():
    close(masked_mean(X, M.bool()), masked_mean(X, M))


def test_mask_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        masked_mean(X, torch.ones(2, 2))


def test_fractional_mask_is_an_error():
    with pytest.raises(ValueError, match="only 0 and 1"):
        masked_mean(X, M * 0.5)


def test_pooled_moments_of_one_process_by_hand():
    # entries 1,2,3,4 (the 100 is masked): mean 2.5, squared deviations sum to 2.25+0.25+0.25+2.25 = 5 -> biased 5/4
    n, mean, var = pooled_moments(t([1.0, 2.0, 3.0, 4.0, 100.0]), t([1, 1, 1, 1, 0]))
    close(n, 4.0)
    close(mean, 2.5)
    close(var, 5 / 4)


def test_masked_whiten_hand_values_and_zero_at_padding():
    # mean 2.5, unbiased std sqrt(5/3) = 1.290994; (x - 2.5) / 1.290994
    out = masked_whiten_pooled(t([1.0, 2.0, 3.0, 4.0, 100.0]), t([1, 1, 1, 1, 0]), eps=0.0)
    close(out, [-1.161895, -0.387298, 0.387298, 1.161895, 0.0])


def test_masked_whiten_single_entry_gives_zero_not_nan():
    close(masked_whiten_pooled(t([7.0, 9.0]), t([1, 0])), [0.0, 0.0])


def test_masked_whiten_all_masked_gives_zeros():
    close(masked_whiten_pooled(t([7.0, 9.0]), t([0, 0])), [0.0, 0.0])


# -------------------------------------------------------------------------------------- token rewards and GAE
def test_token_level_rewards_last_token_and_kl():
    # row 0 ends at t=1 (EOS mid-row): [-0.5*0.1, 1 - 0.5*0.2, pad]; row 1: [-0.2, -0.25, 2 - 0.3]
    out = token_level_rewards(t(1.0, 2.0), t([1, 1, 0], [1, 1, 1]), t([0.1, 0.2, 0.3], [0.4, 0.5, 0.6]), 0.5)
    close(out, [[-0.05, 0.9, 0.0], [-0.2, -0.25, 1.7]])


def test_token_level_rewards_left_padding_and_no_kl():
    close(token_level_rewards(t([5.0]), t([[0, 1, 1]])), [[0.0, 0.0, 5.0]])


def test_token_level_rewards_empty_row_is_an_error():
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        token_level_rewards(t(1.0, 1.0), t([1, 0], [0, 0]))


def test_gae_1x3_by_hand():
    # gamma=1, lam=0.95, r=[0,0,1], V=[0.5,0.6,0.7], V after the last token = 0
    # t=2: delta = 1 + 0 - 0.7 = 0.3                      A2 = 0.3
    # t=1: delta = 0 + 0.7 - 0.6 = 0.1                    A1 = 0.1 + 0.95*0.3   = 0.385
    # t=0: delta = 0 + 0.6 - 0.5 = 0.1                    A0 = 0.1 + 0.95*0.385 = 0.46575
    adv, ret = gae_advantages(t([[0.0, 0.0, 1.0]]), t([[0.5, 0.6, 0.7]]), t([[1, 1, 1]]), gamma=1.0, lam=0.95)
    close(adv, [[0.46575, 0.385, 0.3]])
    close(ret, [[0.96575, 0.985, 1.0]])


def test_gae_with_discount():
    # gamma=0.9, lam=0.5, r=[0,1], V=[0.5,0.5]: A1 = 1 - 0.5 = 0.5; A0 = (0 + 0.9*0.5 - 0.5) + 0.9*0.5*0.5 = 0.175
    adv, _ = gae_advantages(t([[0.0, 1.0]]), t([[0.5, 0.5]]), t([[1, 1]]), gamma=0.9, lam=0.5)
    close(adv, [[0.175, 0.5]])


def test_gae_eos_mid_row_ignores_padding_values():
    # row [0, 1, pad] with a junk value 99 on the pad: A1 = 1 - 0.8 = 0.2; A0 = (0.8 - 0.5) + 0.95*0.2 = 0.49
    adv, ret = gae_advantages(t([[0.0, 1.0, 5.0]]), t([[0.5, 0.8, 99.0]]), t([[1, 1, 0]]))
    close(adv, [[0.49, 0.2, 0.0]])
    close(ret, [[0.99, 1.0, 0.0]])


def test_gae_left_padding_matches_right_padding():
    left, _ = gae_advantages(t([[5.0, 0.0, 1.0]]), t([[99.0, 0.5, 0.8]]), t([[0, 1, 1]]))
    close(left, [[0.0, 0.49, 0.2]])


def test_gae_length_one_completion():
    adv, ret = gae_advantages(t([[1.0, 0.0]]), t([[0.4, 3.0]]), t([[1, 0]]))  # A = 1 - 0.4
    close(adv, [[0.6, 0.0]])
    close(ret, [[1.0, 0.0]])


def test_gae_all_masked_row_is_zero_not_nan():
    adv, ret = gae_advantages(t([1.0, 1.0], [NAN, NAN]), t([0.1, 0.2], [NAN, NAN]), t([1, 1], [0, 0]))
    close(adv[1], [0.0, 0.0])
    close(ret[1], [0.0, 0.0])


def test_gae_lambda_one_gives_monte_carlo_returns():
    rewards = t([[0.5, -1.0, 2.0, 0.0]])
    _, ret = gae_advantages(rewards, t([[0.3, 0.1, -0.4, 0.0]]), t([[1, 1, 1, 0]]), gamma=1.0, lam=1.0)
    close(ret, [[1.5, 1.0, 2.0, 0.0]])  # reward-to-go


def test_gae_rejects_holes_in_mask():
    with pytest.raises(ValueError, match="holes"):
        gae_advantages(t([[0.0, 0.0, 1.0]]), t([[0.0, 0.0, 0.0]]), t([[1, 0, 1]]))


def test_gae_gradient_flows_to_real_values_only():
    # sum A = d0 + 1.95 d1 + 2.8525 d2 with d0 = v1 - v0, d1 = v2 - v1, d2 = 1 - v2
    # -> dV0 = -1, dV1 = 1 - 1.95 = -0.95, dV2 = 1.95 - 2.8525 = -0.9025, padding 0
    values = t([[0.5, 0.6, 0.7, 9.0]]).requires_grad_()
    adv, _ = gae_advantages(t([[0.0, 0.0, 1.0, 0.0]]), values, t([[1, 1, 1, 0]]))
    adv.sum().backward()
    close(values.grad, [[-1.0, -0.95, -0.9025, 0.0]])


def test_gae_over_turns_skips_an_environment_block_as_if_it_were_not_there():
    # model tokens at 0 and 3, environment tokens (junk r and V) at 1-2: the model tokens alone are r=[0, 1],
    # V=[0.5, 0.8] -> A1 = 1 - 0.8 = 0.2; A0 = (0 + 0.8 - 0.5) + 0.95*0.2 = 0.49 (as in the contiguous case above)
    adv, ret = gae_advantages_over_turns(t([[0.0, 9.0, 9.0, 1.0]]), t([[0.5, 7.0, 7.0, 0.8]]), t([[1, 0, 0, 1]]))
    close(adv, [[0.49, 0.0, 0.0, 0.2]])
    close(ret, [[0.99, 0.0, 0.0, 1.0]])


def test_gae_over_turns_discounts_per_model_token_not_per_environment_token():
    # gamma=0.9, lam=0.5, model r=[0, 1], V=[0.5, 0.5] (one env token between, one pad after):
    # A1 = 1 - 0.5 = 0.5; A0 = (0 + 0.9*0.5 - 0.5) + 0.9*0.5*0.5 = 0.175 (0.9^2 would appear if env were a step)
    adv, _ = gae_advantages_over_turns(t([[0.0, 5.0, 1.0, 3.0]]), t([[0.5, 99.0, 0.5, 42.0]]), t([[1, 0, 1, 0]]),
                                       gamma=0.9, lam=0.5)
    close(adv, [[0.175, 0.0, 0.5, 0.0]])


def test_gae_over_turns_with_turn_rewards_gives_reward_to_go_at_lambda_one():
    # three turns [0,1], [3], [6]; a turn reward 0.5 at position 1, the final reward 1 at 6: model rewards
    # [0, 0.5, 0, 1] -> reward-to-go [1.5, 1.5, 1, 1] (gamma = lam = 1), whatever the values
    mask = t([[1, 1, 0, 1, 0, 0, 1]])
    rewards = t([[0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 1.0]])
    values = t([[0.2, 0.4, NAN, 0.1, NAN, NAN, 0.6]])
    adv, ret = gae_advantages_over_turns(rewards, values, mask, gamma=1.0, lam=1.0)
    close(ret, [[1.5, 1.5, 0.0, 1.0, 0.0, 0.0, 1.0]])
    close(adv, [[1.3, 1.1, 0.0, 0.9, 0.0, 0.0, 0.4]])


def test_gae_over_turns_equals_gae_on_contiguous_masks_exactly():
    gen = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(5, 7, generator=gen), torch.randn(5, 7, generator=gen)
    lengths = torch.tensor([7, 3, 1, 0, 5])
    mask = torch.arange(7).unsqueeze(0) < lengths.unsqueeze(1)
    for a, b in zip(gae_advantages(rewards, values, mask, 0.99, 0.9),
                    gae_advantages_over_turns(rewards, values, mask, 0.99, 0.9)):
        assert torch.equal(a, b)


def test_gae_over_turns_gradient_reaches_model_values_only():
    # model tokens 0 and 2 (env at 1): sum A = d0 + 1.95 d2 with d0 = v2 - v0, d2 = r - v2 -> dV0 = -1, dV2 = -0.95
    values = t([[0.5, 3.0, 0.7]]).requires_grad_()
    adv, _ = gae_advantages_over_turns(t([[0.0, 0.0, 1.0]]), values, t([[1, 0, 1]]))
    adv.sum().backward()
    close(values.grad, [[-1.0, 0.0, -0.95]])


# --------------------------------------------------------------------------------------------- KL estimators
LOGP, REF = torch.log(t(0.5)), torch.log(t(0.25))  # q/p = 0.5, log(q/p) = -0.693147


def test_kl_estimators_by_hand():
    close(kl_k1(LOGP, REF), 0.693147)  # -log(q/p)
    close(kl_k3(LOGP, REF), 0.193147)  # (0.5 - 1) + 0.693147


def test_kl_estimators_zero_when_policies_agree():
    lp = torch.log(t(0.1, 0.7))
    for kl in (kl_k1, kl_k3):
        close(kl(lp, lp), [0.0, 0.0])


def test_k3_is_nonnegative_where_k1_is_not():
    lp, ref = torch.log(t(0.2)), torch.log(t(0.6))
    assert kl_k1(lp, ref).item() < 0 <= kl_k3(lp, ref).item()


def test_fixed_kl_controller_does_not_move():
    ctl = FixedKLController(0.05)
    assert ctl.update(100.0, 512) == 0.05


@pytest.mark.parametrize(
    "kl, n_steps, expected",
    [
        (9.0, 256, 0.201024),  # error clip(9/6 - 1) = 0.2; 0.2 * (1 + 0.2 * 256/10000)
        (3.0, 100, 0.1996),  # error clip(3/6 - 1) = -0.2; 0.2 * (1 - 0.2 * 100/10000)
        (6.6, 1000, 0.202),  # error 0.1 (unclipped); 0.2 * (1 + 0.1 * 1000/10000)
    ],
)
def test_adaptive_kl_controller_by_hand(kl, n_steps, expected):
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    assert ctl.update(kl, n_steps) == pytest.approx(expected, abs=1e-12)


def test_adaptive_kl_controller_state_round_trip():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    ctl.update(9.0, 256)
    other = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    other.load_state_dict(ctl.state_dict())
    assert other.value == ctl.value != 0.2


def test_kl_controller_bad_settings():
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(0.1, target=0.0, horizon=100)
    with pytest.raises(ValueError, match="kl_coef"):
        FixedKLController(-1.0)


# ------------------------------------------------------------------------------------------------ PPO losses
# Five real tokens (row 0 is padded at t=2 with NaN junk), clip 0.2:
#   ratio 1.5, A=+1: max(-1.5, -1.2) = -1.2 (clipped)   ratio 0.5, A=+1: max(-0.5, -0.8) = -0.5
#   ratio 0.5, A=-1: max( 0.5,  0.8) =  0.8 (clipped)   ratio 1.5, A=-1: max( 1.5,  1.2) =  1.5
#   ratio 1.0, A=+2: -2.0
RATIOS = t([1.5, 0.5, 1.0], [0.5, 1.5, 1.0])
OLD = t([-1.0, -2.0, -1.0], [-0.5, -3.0, -0.7])
NEW = torch.where(torch.isnan(t([0, 0, NAN], [0, 0, 0])), t(NAN), OLD + torch.log(RATIOS))
ADV = t([1.0, 1.0, 0.0], [-1.0, -1.0, 2.0])
MASK = t([1, 1, 0], [1, 1, 1])


def test_ppo_policy_loss_token_mean_and_stats():
    loss, stats = ppo_policy_loss(NEW, OLD, ADV, MASK, clip_range=0.2)
    close(loss, -1.4 / 5)  # (-1.2 - 0.5 + 0.8 + 1.5 - 2.0) / 5
    close(stats["clipfrac"], 2 / 5)
    close(stats["ratio_mean"], 1.0)  # (1.5 + 0.5 + 0.5 + 1.5 + 1) / 5
    # k3 with r = new/old: r - 1 - log r = 0.094535 (r=1.5), 0.193147 (r=0.5), 0 (r=1)
    close(stats["approx_kl"], (2 * 0.094535 + 2 * 0.193147) / 5)
    close(stats["ratio_max"], 1.5)
    close(stats["ratio_min"], 0.5)
    # the tails cover real tokens only: a ratio of 10 (or 0.01) at the padded position changes nothing
    for junk in (10.0, 0.01):
        padded = torch.where(MASK.bool(), NEW, OLD + math.log(junk))
        _, tails = ppo_policy_loss(padded, OLD, ADV, MASK, clip_range=0.2)
        close(tails["ratio_max"], 1.5)
        close(tails["ratio_min"], 0.5)
    _, empty = ppo_policy_loss(NEW, OLD, ADV, torch.zeros_like(MASK), clip_range=0.2)
    assert float(empty["ratio_max"]) == float(empty["ratio_min"]) == 1.0


def test_ppo_policy_loss_sequence_aggregations():
    # row 0: -1.2, -0.5 (sum -1.7, mean -0.85); row 1: 0.8, 1.5, -2.0 (sum 0.3, mean 0.1)
    close(ppo_policy_loss(NEW, OLD, ADV, MASK, 0.2, loss_agg="seq_mean_token_mean")[0], (-0.85 + 0.1) / 2)
    close(ppo_policy_loss(NEW, OLD, ADV, MASK, 0.2, loss_agg="seq_mean_token_sum")[0], (-1.7 + 0.3) / 2)


def test_ppo_policy_loss_all_masked_row_is_left_out():
    def extra(x, fill):
        return torch.cat([x, t([[fill, fill, fill]])])

    loss, _ = ppo_policy_loss(
        extra(NEW, NAN), extra(OLD, NAN), extra(ADV, NAN), extra(MASK, 0.0), 0.2, loss_agg="seq_mean_token_mean"
    )
    close(loss, (-0.85 + 0.1) / 2)


def test_ppo_policy_gradient_is_zero_where_clipped():
    # d loss / d logp = -A * ratio / 5 on unclipped tokens, 0 on clipped ones:
    # ratio 0.5, A=+1 -> -0.1; ratio 1.5, A=-1 -> 0.3; ratio 1, A=2 -> -0.4
    logp = torch.where(MASK.bool(), NEW, t(0.0)).requires_grad_()
    ppo_policy_loss(logp, OLD, ADV, MASK, 0.2)[0].backward()
    close(logp.grad, [[0.0, -0.1, 0.0], [0.0, 0.3, -0.4]])


@pytest.mark.parametrize("ratio, clipped", [(1.19, False), (1.21, True), (0.81, False), (0.79, True)])
def test_ppo_clip_boundaries(ratio, clipped):
    adv = 1.0 if ratio > 1 else -1.0  # the side where clipping binds
    old = t([-1.0])
    loss, stats = ppo_policy_loss(old + math.log(ratio), old, t([adv]), t([1]), clip_range=0.2)
    bound = 1.2 if ratio > 1 else 0.8
    close(loss, -adv * (bound if clipped else ratio))
    close(stats["clipfrac"], 1.0 if clipped else 0.0)


def test_ppo_clip_higher_widens_the_upper_bound_only():
    old = t([-1.0])
    loss, _ = ppo_policy_loss(old + math.log(1.25), old, t([1.0]), t([1]), clip_range=0.2, clip_range_high=0.28)
    close(loss, -1.25)  # inside [0.8, 1.28]; with the symmetric 0.2 it would be -1.2


def test_ppo_policy_loss_rejects_bad_settings():
    with pytest.raises(ValueError, match="clip_range"):
        ppo_policy_loss(NEW, OLD, ADV, MASK, clip_range=0.0)
    with pytest.raises(ValueError, match="loss_agg"):
        ppo_policy_loss(NEW, OLD, ADV, MASK, 0.2, loss_agg="sum")


def test_ppo_value_loss_by_hand():
    # token 1: V_clip = 0.5 + 0.2 = 0.7; max((1-2)^2, (0.7-2)^2) = 1.69 (clipped)
    # token 2: V_clip = 0.5 - 0.2 = 0.3; max((0-0.4)^2, (0.3-0.4)^2) = 0.16
    # loss = 0.5 * (1.69 + 0.16) / 2 = 0.4625; grad: token 1 clipped -> 0, token 2 -> 0.5 * 2 * (0 - 0.4) / 2 = -0.2
    values = t([1.0, 0.0, 7.0]).requires_grad_()
    loss, clipfrac = ppo_value_loss(values, t([0.5, 0.5, 0.0]), t([2.0, 0.4, 0.0]), t([1, 1, 0]), 0.2)
    close(loss, 0.4625)
    close(clipfrac, 0.5)
    loss.backward()
    close(values.grad, [0.0, -0.2, 0.0])


def test_explained_variance_by_hand():
    returns, mask = t([1.0, 2.0, 3.0, 4.0, 50.0]), t([1, 1, 1, 1, 0])
    close(explained_variance_pooled(returns, returns, mask), 1.0)
    close(explained_variance_pooled(t([2.5, 2.5, 2.5, 2.5, 0.0]), returns, mask), 0.0)
    # residual [0, 0, 0, -1]: var 0.1875; var(returns) 1.25 -> 1 - 0.15
    close(explained_variance_pooled(t([1.0, 2.0, 3.0, 5.0, 0.0]), returns, mask), 0.85)


def test_explained_variance_constant_returns_or_one_token_is_nan():
    assert math.isnan(explained_variance_pooled(t([1.0, 2.0]), t([3.0, 3.0]), t([1, 1])))
    assert math.isnan(explained_variance_pooled(t([1.0, 2.0]), t([3.0, 4.0]), t([1, 0])))


# ------------------------------------------------------------------------------------------ logits utilities
def naive_logprobs(logits, labels):
    return torch.log_softmax(logits.double(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def test_logprobs_by_hand():
    close(logprobs_from_logits(t([0.0, math.log(3.0)]), torch.tensor(1)), math.log(0.75))


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-12), (torch.float32, 1e-5), (torch.bfloat16, 1e-5)])
def test_logprobs_match_naive(dtype, atol):
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 500, 11, generator=gen) * 4).to(dtype)  # 1500 rows: crosses the chunk boundary
    labels = torch.randint(0, 11, (3, 500), generator=gen)
    out = logprobs_from_logits(logits, labels)
    assert out.dtype == (dtype if dtype != torch.bfloat16 else torch.float32)
    close(out, naive_logprobs(logits, labels), atol=atol)


def test_logprobs_gradient_matches_naive():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 7, generator=gen, dtype=D)
    labels = torch.randint(0, 7, (2, 4), generator=gen)
    mine, ref = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    logprobs_from_logits(mine, labels).sum().backward()
    naive_logprobs(ref, labels).sum().backward()
    close(mine.grad, ref.grad, atol=1e-12)


def test_logprobs_reject_ignore_index():
    with pytest.raises(ValueError, match="-100"):
        logprobs_from_logits(torch.zeros(2, 5), torch.tensor([1, -100]))


def test_entropy_by_hand():
    close(entropy_from_logits(torch.zeros(4, dtype=D)), math.log(4))  # uniform
    close(entropy_from_logits(t([0.0, math.log(3.0)])), 0.562335)  # p = [0.25, 0.75]


def test_entropy_bf16_matches_float64():
    logits = (torch.randn(1100, 9, generator=torch.Generator().manual_seed(2)) * 3).bfloat16()
    probs = torch.softmax(logits.double(), -1)
    close(entropy_from_logits(logits), -(probs * probs.log()).sum(-1), atol=1e-5)


def test_chunking_constant_is_exercised():
    assert LOGIT_CHUNK_ROWS < 1100  # the bf16 tests above must cross a chunk boundary
