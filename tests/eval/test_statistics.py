"""Known-value checks of the evaluation statistics (core/eval/statistics.py). Expected numbers are worked out in comments."""

from __future__ import annotations

import math

import pytest

from posttrain_llm.online_rl_trainer.core.eval.statistics import (
    bootstrap_ci,
    majority_vote,
    mcnemar_exact,
    mean_pass_at_k,
    paired_bootstrap_diff,
    pass_at_k,
    wilson_interval,
)


# ------------------------------------------------------------------------------------------------------ pass@k
@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (10, 3, 1, 0.3),  # k = 1 is c / n
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (3, 0, 3, 0.0),  # n = k, nothing correct
        (3, 1, 3, 1.0),  # n = k, one correct sample is in every k-subset
        (4, 4, 2, 1.0),  # c = n
        (4, 3, 2, 1.0),  # n - c < k: every 2-subset holds a correct one
        (200, 1, 100, 0.5),  # C(199,100)/C(200,100) = 100/200; the naive binomials here exceed 1e58
    ],
)
def test_pass_at_k_known_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_exact_binomial_formula():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12), (n, c, k)


@pytest.mark.parametrize(
    "n, c, k, message",
    [
        (3, 0, 4, "k = 4 cannot exceed n = 3"),
        (3, 4, 1, "c .* cannot exceed"),
        (3, -1, 1, "c must be"),
        (3, 1, 0, "k must be"),
        (0, 0, 1, "n must be"),
        (3, 1.0, 1, "c must be an integer"),
        (3, True, 1, "c must be"),
    ],
)
def test_pass_at_k_rejects_bad_counts(n, c, k, message):
    with pytest.raises(ValueError, match=message):
        pass_at_k(n, c, k)


def test_mean_pass_at_k_averages_problems():
    assert mean_pass_at_k([(5, 2), (3, 0), (4, 4)], 2) == pytest.approx((0.7 + 0.0 + 1.0) / 3)


def test_mean_pass_at_k_names_the_bad_problem():
    with pytest.raises(ValueError, match=r"problem 1: \(n, c\) = \(2, 3\)"):
        mean_pass_at_k([(5, 2), (2, 3)], 1)
    with pytest.raises(ValueError, match="at least one problem"):
        mean_pass_at_k([], 1)


# ------------------------------------------------------------------------------------------------ majority vote
def test_majority_vote_counts():
    assert majority_vote(["3", "4", "3", None]) == ("3", 2)


def test_majority_vote_tie_goes_to_first_seen():
    assert majority_vote(["4", "3", "3", "4"]) == ("4", 2)
    assert majority_vote(["3", "4", "4", "3"]) == ("3", 2)


def test_majority_vote_none_does_not_vote():
    assert majority_vote([None, None, "5"]) == ("5", 1)
    assert majority_vote([None, None]) == (None, 0)
    assert majority_vote([]) == (None, 0)


def test_majority_vote_rejects_non_strings():
    with pytest.raises(TypeError, match="answer 1 is int"):
        majority_vote(["3", 3])


# ------------------------------------------------------------------------------------------------- intervals
def test_wilson_8_of_10():
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))


def test_wilson_extremes_stay_in_unit_interval():
    # 0/10: high = z^2 / (n + z^2) = 3.841459 / 13.841459 = 0.277533
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.277533, abs=1e-6))
    assert wilson_interval(10, 10) == (pytest.approx(1 - 0.277533, abs=1e-6), 1.0)


def test_wilson_lower_confidence_is_narrower():
    low95, high95 = wilson_interval(8, 10)
    low90, high90 = wilson_interval(8, 10, confidence=0.90)
    assert low95 < low90 < high90 < high95


def test_wilson_rejects_bad_input():
    with pytest.raises(ValueError, match="n must be"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes = 11 cannot exceed n = 10"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 10, confidence=95)


def test_bootstrap_two_points_spans_both():
    # resampled means of [0, 1] are 0, 0.5, 1 with probability 1/4, 1/2, 1/4: the 2.5% / 97.5% quantiles are 0 and 1
    assert bootstrap_ci([0.0, 1.0], n_resamples=4000, seed=3) == (0.5, 0.0, 1.0)


def test_bootstrap_constant_is_degenerate():
    assert bootstrap_ci([0.7] * 20, n_resamples=500) == pytest.approx((0.7, 0.7, 0.7))


def test_bootstrap_matches_normal_width_for_large_sample():
    # 200 ones, 200 zeros: standard error sqrt(0.25 / 400) = 0.025, so the 95% interval is about 0.5 +- 0.049
    mean, low, high = bootstrap_ci([1.0] * 200 + [0.0] * 200, n_resamples=5000, seed=0)
    assert mean == 0.5
    assert low == pytest.approx(0.451, abs=0.006) and high == pytest.approx(0.549, abs=0.006)


def test_bootstrap_is_seeded():
    values = [0.1, 0.5, 0.9, 0.3, 0.2, 0.8]
    assert bootstrap_ci(values, seed=7, n_resamples=300) == bootstrap_ci(values, seed=7, n_resamples=300)
    assert bootstrap_ci(values, seed=7, n_resamples=300) != bootstrap_ci(values, seed=8, n_resamples=300)


def test_bootstrap_custom_statistic():
    def upper_median(s):
        return float(sorted(s)[len(s) // 2])

    values = [1.0, 2.0, 3.0, 100.0]
    point, low, high = bootstrap_ci(values, stat=upper_median, n_resamples=200)
    # the statistic is the one given: an upper median is always one of the values (a mean of resamples rarely is)
    assert point == 3.0 and low in values and high in values and low <= point <= high
    assert bootstrap_ci(values, n_resamples=200)[0] == 26.5  # the default statistic, the mean, for contrast


def test_bootstrap_rejects_nan_and_empty():
    with pytest.raises(ValueError, match=r"values\[1\] = nan is not finite"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci([])


def test_paired_diff_identical_models_is_zero():
    scores = [1, 0, 1, 1, 0]
    assert paired_bootstrap_diff(scores, scores, n_resamples=200) == (0.0, 0.0, 0.0)


def test_paired_diff_detects_what_unpaired_intervals_miss():
    # B solves the first 50 of 100 problems; A solves the same plus 5 more: diff = 0.05.
    # The two Wilson intervals overlap widely, but every discordant pair favours A, so the paired interval excludes 0.
    b = [1] * 50 + [0] * 50
    a = [1] * 55 + [0] * 45
    diff, low, high = paired_bootstrap_diff(a, b, n_resamples=4000, seed=0)
    assert diff == pytest.approx(0.05)
    assert 0.0 < low <= 0.02 and 0.08 <= high <= 0.11
    assert wilson_interval(55, 100)[0] < wilson_interval(50, 100)[1]


def test_paired_diff_rejects_unpaired_lengths():
    with pytest.raises(ValueError, match="same problems; got 3 and 2"):
        paired_bootstrap_diff([1, 0, 1], [1, 0])


@pytest.mark.parametrize(
    "only_a, only_b, expected",
    [
        (1, 9, 0.021484375),  # 2 * (C(10,0) + C(10,1)) / 2^10 = 22/1024
        (9, 1, 0.021484375),  # symmetric
        (0, 5, 0.0625),  # 2 / 2^5
        (2, 10, 0.03857421875),  # 2 * (1 + 12 + 66) / 4096
        (5, 5, 1.0),  # 2 * P[X <= 5] > 1, capped
        (0, 0, 1.0),  # no discordant pairs: no evidence
    ],
)
def test_mcnemar_exact_known_values(only_a, only_b, expected):
    assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, abs=1e-15)


def test_mcnemar_exact_large_counts_do_not_overflow():
    # continuity-corrected chi-square (|500-600|-1)^2/1100 = 8.91 gives p ~ 0.0028; the exact test agrees closely
    assert 0.002 < mcnemar_exact(500, 600) < 0.0035
    assert mcnemar_exact(0, 3000) == 0.0  # below the smallest float, not an OverflowError


def test_mcnemar_rejects_negative():
    with pytest.raises(ValueError, match="only_b must be an integer >= 0, got -1"):
        mcnemar_exact(3, -1)
