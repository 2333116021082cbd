"""The dynamic-sampling filter on hand-written rewards."""

from __future__ import annotations

import math

import pytest
import torch

from posttrain_llm.online_rl_trainer.core.algorithms.group_filter import informative_groups, weighted_reward

NAN = math.nan


def test_groups_with_equal_rewards_are_uninformative():
    rewards = torch.tensor([[1.0], [0.0], [1.0], [1.0],     # spread -> keep
                            [1.0], [1.0], [1.0], [1.0],     # all 1 -> drop
                            [0.0], [0.0], [0.0], [0.0]])    # all 0 -> drop
    assert informative_groups(rewards, torch.ones(1), 4).tolist() == [True, False, False]


def test_the_weighted_sum_decides_not_each_function():
    # two functions that cancel in the weighted sum: 1*a + (-1)*b is 0 for every completion -> no advantage
    rewards = torch.tensor([[1.0, 1.0], [0.0, 0.0], [2.0, 2.0]])
    assert informative_groups(rewards, torch.tensor([1.0, -1.0]), 3).tolist() == [False]
    # normalize_then_sum normalises each function within the group: each one's spread counts
    assert informative_groups(rewards, torch.tensor([1.0, -1.0]), 3, per_function=True).tolist() == [True]
    # a zero weight silences a function's spread in the sum
    assert informative_groups(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([0.0, 1.0]), 2).tolist() == [False]


def test_unscored_completions_are_ignored():
    # a NaN (every function gave None) is not a different reward: the scorable two are equal -> drop
    assert informative_groups(torch.tensor([[1.0], [NAN], [1.0]]), torch.ones(1), 3).tolist() == [False]
    # fewer than two scorable: no spread
    assert informative_groups(torch.tensor([[1.0], [NAN], [NAN]]), torch.ones(1), 3).tolist() == [False]
    # a NaN from one of two functions: the other still scores (nansum, as TRL) -> 1, 0 differ -> keep
    assert informative_groups(torch.tensor([[1.0, NAN], [0.0, 0.0]]), torch.ones(2), 2).tolist() == [True]


def test_float_noise_below_torch_isclose_is_zero_spread():
    rewards = torch.tensor([[0.3], [0.1 + 0.2]])  # 0.30000000000000004 in float64, equal in float32
    assert informative_groups(rewards.double(), torch.ones(1), 2).tolist() == [False]


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="groups of 4"):
        informative_groups(torch.zeros(6, 1), torch.ones(1), 4)
    with pytest.raises(ValueError, match=r"\(F,\)"):
        informative_groups(torch.zeros(4, 2), torch.ones(3), 2)


def test_weighted_reward_is_nan_only_where_nothing_scored():
    rewards = torch.tensor([[1.0, 2.0], [NAN, 2.0], [NAN, NAN]])
    out = weighted_reward(rewards, torch.tensor([1.0, 0.5]))
    assert out[:2].tolist() == [2.0, 1.0] and math.isnan(out[2])
