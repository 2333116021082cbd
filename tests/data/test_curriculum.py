"""The pass-rate curriculum's record and weights, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from posttrain_llm.online_rl_trainer.core.common.errors import ConfigError
from posttrain_llm.online_rl_trainer.core.data.curriculum import (
    CurriculumSettings,
    PassRateCurriculum,
    group_pass_rates,
)


def test_group_pass_rates():
    assert group_pass_rates([1, 0, 1, 1, 0, 0, 0.5, 0.99], 4, 1.0) == [0.75, 0.0]
    assert group_pass_rates([1, 0, 1, 1, 0, 0, 0.5, 0.99], 4, 0.5) == [0.75, 0.5]
    rates = group_pass_rates([math.nan, 1.0, math.nan, math.nan], 2, 1.0)  # unscored ignored; none scored -> NaN
    assert rates[0] == 1.0 and math.isnan(rates[1])
    with pytest.raises(ValueError, match="groups of 4"):
        group_pass_rates([1.0] * 6, 4, 1.0)


def test_weights_follow_the_record():
    c = PassRateCurriculum(5, CurriculumSettings(recheck_steps=10))
    # prompt 0 learning, 1 failed, 2 solved at step 3, 3 unscored (nothing recorded), 4 never drawn
    c.update([0, 1, 2, 3], [0.5, 0.0, 1.0, math.nan], step=3)
    raw = np.array([2.0, 0.25, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(c.weights(step=5), raw / raw.sum())
    # at step 13 (10 steps after it was solved) prompt 2 is due for a re-check: unseen weight again
    raw[2] = 1.0
    np.testing.assert_allclose(c.weights(step=13), raw / raw.sum())
    m = c.metrics(step=5)
    assert m == {"curriculum/seen_share": 0.6, "curriculum/learning_share": 0.2, "curriculum/failed_share": 0.2,
                 "curriculum/retired_share": 0.2}
    assert c.seen.tolist() == [1, 1, 1, 0, 0] and c.last_step.tolist() == [3, 3, 3, -1, -1]


def test_retired_prompts_are_not_drawn_and_all_retired_falls_back_to_uniform():
    c = PassRateCurriculum(6)
    c.update([0, 1, 2], [1.0, 1.0, 1.0], step=0)
    rng = np.random.default_rng(0)
    for step in range(1, 5):
        drawn = c.draw(rng, 3, step)
        assert set(drawn.tolist()) == {3, 4, 5}  # without replacement, among the three with a weight
    c.update([3, 4, 5], [1.0, 1.0, 1.0], step=1)
    np.testing.assert_allclose(c.weights(step=2), np.full(6, 1 / 6))  # nothing left: uniform, never a crash
    assert len(c.draw(rng, 8, step=2)) == 8  # more than the set: with replacement


def test_the_record_round_trips_and_refuses_another_training_set():
    c = PassRateCurriculum(4)
    c.update([1, 2], [0.25, 1.0], step=7)
    d = PassRateCurriculum(4)
    d.load_state_dict(c.state_dict())
    np.testing.assert_array_equal(d.weights(9), c.weights(9))
    assert d.draw(np.random.default_rng(1), 2, 9).tolist() == c.draw(np.random.default_rng(1), 2, 9).tolist()
    with pytest.raises(ValueError, match="same training data"):
        PassRateCurriculum(5).load_state_dict(c.state_dict())


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="recheck_steps=0"):
        CurriculumSettings(recheck_steps=0)
    with pytest.raises(ConfigError, match="failed_weight=-1"):
        CurriculumSettings(failed_weight=-1)
    with pytest.raises(ConfigError, match="at least one prompt"):
        PassRateCurriculum(0)
