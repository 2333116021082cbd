"""Evaluation statistics: pass@k, majority vote / maj@k, confidence intervals, and paired model comparison.

No torch here: these run on plain Python numbers so the evaluator, the reports and the tests can use them
without the training stack. numpy is used only to make the bootstrap fast (it ships with transformers/datasets).

Sources: pass@k is the unbiased estimator of Chen et al. 2021 (arXiv:2107.03374, eq. 1, in its numerically stable
product form); the Wilson score interval (Wilson 1927); the percentile bootstrap (Efron & Tibshirani 1993);
McNemar's test in its exact form (a two-sided binomial test on the discordant pairs, as in statsmodels'
``mcnemar(exact=True)``).

Choices to know about:
- ``majority_vote`` compares answers by exact string equality: normalise them first. Ties go to the answer seen
  first; ``None`` (no extractable answer) never votes.
- maj@k (``eval/scoring.py``) votes with :func:`majority_vote` over the *first* k samples of a problem (they are
  i.i.d., so this is unbiased, but it does not average over all k-subsets the way pass@k does).
- Bootstrap intervals are percentile intervals; with few problems (< ~30) prefer Wilson for a single accuracy.

Not covered: stratified or clustered bootstrap, multiple-comparison corrections, pass@k for k > n.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np

# Resamples drawn per numpy call: bounds memory at chunk * n indices.
_BOOTSTRAP_CHUNK = 1000


def _check_count(name: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


# ------------------------------------------------------------------------------------------------------ pass@k
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021).

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which avoids huge binomials. Raises ValueError unless
    0 <= c <= n and 1 <= k <= n.
    """
    n = _check_count("n", n, minimum=1)
    c = _check_count("c", c)
    k = _check_count("k", k, minimum=1)
    if c > n:
        raise ValueError(f"c (correct samples) = {c} cannot exceed n (samples) = {n}")
    if k > n:
        raise ValueError(f"k = {k} cannot exceed n = {n}: pass@k needs at least k samples per problem")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(per_problem: Sequence[tuple[int, int]], k: int) -> float:
    """Mean of ``pass_at_k(n, c, k)`` over problems given as (n, c) pairs; n may differ between problems."""
    if not per_problem:
        raise ValueError("mean_pass_at_k needs at least one problem, got none")
    total = 0.0
    for index, pair in enumerate(per_problem):
        try:
            n, c = pair
            total += pass_at_k(n, c, k)
        except (TypeError, ValueError) as err:
            raise ValueError(f"problem {index}: (n, c) = {pair!r}: {err}") from err
    return total / len(per_problem)


# -------------------------------------------------------------------------------------------------- majority
def majority_vote(answers: Sequence[str | None]) -> tuple[str | None, int]:
    """The most frequent non-None answer and its count; (None, 0) when no answer votes.

    Ties are broken by first appearance in ``answers`` (deterministic, independent of hashing).
    """
    counts: dict[str, int] = {}
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        if not isinstance(answer, str):
            raise TypeError(f"answer {index} is {type(answer).__name__} {answer!r}; expected str or None")
        counts[answer] = counts.get(answer, 0) + 1
    best: str | None = None
    best_count = 0
    for answer, count in counts.items():  # dicts keep first-seen order, so strict '>' keeps the earliest on ties
        if count > best_count:
            best, best_count = answer, count
    return best, best_count


# ------------------------------------------------------------------------------------------------- intervals
def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion successes/n -> (low, high) within [0, 1].

    Unlike the normal (Wald) interval it stays inside [0, 1] and keeps its coverage near 0% and 100%.
    """
    n = _check_count("n", n, minimum=1)
    successes = _check_count("successes", successes)
    if successes > n:
        raise ValueError(f"successes = {successes} cannot exceed n = {n}")
    _check_confidence(confidence)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denominator = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half_width = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # The bounds at 0/n and n/n are exactly 0 and 1; the formula leaves rounding crumbs like 3e-17 there.
    low = 0.0 if successes == 0 else max(0.0, center - half_width)
    high = 1.0 if successes == n else min(1.0, center + half_width)
    return low, high


def _as_finite_array(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers, got shape {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] = {array[bad[0]]} is not finite")
    return array


def bootstrap_ci(
    values: Sequence[float],
    stat: Callable[[np.ndarray], float] | None = None,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Percentile bootstrap: (stat(values), low, high), resampling ``values`` with replacement.

    ``stat`` receives a 1-D float array; None means the mean (vectorised, fast). Seeded and reproducible.
    """
    array = _as_finite_array(values, "values")
    n_resamples = _check_count("n_resamples", n_resamples, minimum=1)
    _check_confidence(confidence)
    rng = np.random.default_rng(seed)
    estimates = []
    for start in range(0, n_resamples, _BOOTSTRAP_CHUNK):
        size = min(_BOOTSTRAP_CHUNK, n_resamples - start)
        samples = array[rng.integers(0, array.size, size=(size, array.size))]
        estimates.append(samples.mean(axis=1) if stat is None else np.array([stat(s) for s in samples], dtype=float))
    resampled = np.concatenate(estimates)
    alpha = 1.0 - confidence
    low, high = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    point = float(array.mean()) if stat is None else float(stat(array))
    return point, float(low), float(high)


def paired_bootstrap_diff(
    a: Sequence[float], b: Sequence[float], n_resamples: int = 10_000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, float]:
    """mean(a) - mean(b) with a percentile bootstrap interval that resamples *problems* (pairs) jointly.

    a[i], b[i]: the two models' scores (0/1 or float) on the same problem i -> (diff, low, high). Pairing removes
    the between-problem variance, so the interval is much narrower than comparing two independent intervals.
    """
    first = _as_finite_array(a, "a")
    second = _as_finite_array(b, "b")
    if first.size != second.size:
        raise ValueError(f"a and b must score the same problems; got {first.size} and {second.size} values")
    return bootstrap_ci(first - second, None, n_resamples=n_resamples, seed=seed, confidence=confidence)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts (solved only by A, only by B).

    Under H0 each discordant problem is equally likely to favour A or B: p = min(1, 2 * P[X <= min(b, c)]) with
    X ~ Binomial(b + c, 1/2). Computed with exact integers. No discordant pairs gives p = 1.
    """
    only_a = _check_count("only_a", only_a)
    only_b = _check_count("only_b", only_b)
    total = only_a + only_b
    if total == 0:
        return 1.0
    tail = sum(math.comb(total, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**total)
