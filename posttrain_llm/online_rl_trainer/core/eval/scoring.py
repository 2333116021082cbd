"""Scoring an evaluation: judging completions, and the numbers a result reports (accuracy with its interval,
pass@k, maj@k, breakdowns, strict-vs-lenient side by side), plus the fingerprint and versions that make a result
reproducible. Pure Python: no torch, no generation; ``inference.ModelEvaluator`` generates, this module scores.

Conventions:
- accuracy = passed / judged samples, where judge errors (status ``error``, reward ``None``) are left out of the
  denominator and counted in ``judge_errors``: a broken judge never looks like a wrong model;
- every accuracy carries a 95% interval, named in ``accuracy_ci_method``: Wilson's score interval over judged
  samples with one sample per problem; with several, the samples of one problem are not independent, so the
  interval is a percentile bootstrap over problems (pass@k likewise; maj@k, one yes/no per problem, is Wilson);
- pass@k is Chen et al. (2021)'s unbiased estimator, averaged over problems; maj@k is the share of problems whose
  most common normalized answer among the first k samples is right (ties go to the answer seen first).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Callable, Mapping, Sequence

from ..files.run_manifest import package_versions as installed_versions
from ..rewards.base import RewardFunction, RewardResult, as_value_list
from .statistics import bootstrap_ci, majority_vote, mean_pass_at_k, pass_at_k, wilson_interval


def judge(reward_fn: RewardFunction | Callable, completions: list[str], rows: list[dict],
          success_threshold: float = 1.0) -> list[RewardResult]:
    """RewardResults for each completion; plain callables are wrapped (status from ``success_threshold``)."""
    columns = {k: [r.get(k) for r in rows] for k in rows[0] if k != "prompt"}
    if isinstance(reward_fn, RewardFunction):
        # the prompts as trainers pass them (``prompts=``): rewards that read the question (a reward model, an LLM
        # judge) need them; the others ignore them (``row_kwargs`` skips trainer keywords)
        trainer_kwargs = {"prompts": [r.get("prompt") for r in rows]} if "prompts" not in columns else {}
        try:
            return reward_fn.score_batch(completions, **trainer_kwargs, **columns)
        except NotImplementedError:
            pass  # a custom reward that implements __call__ only
    values = as_value_list(reward_fn(completions=completions, prompts=[r["prompt"] for r in rows], **columns),
                           getattr(reward_fn, "__name__", type(reward_fn).__name__), len(completions))
    if len(values) != len(completions):
        raise ValueError(f"reward returned {len(values)} values for {len(completions)} completions")
    out = []
    for v in values:
        if v is None:
            out.append(RewardResult(None, "error", "reward returned None"))
        else:
            v = float(v)
            if not math.isfinite(v):
                raise ValueError(f"reward returned a non-finite value {v}")
            out.append(RewardResult(v, "passed" if v >= success_threshold else "failed"))
    return out


def extraction_variants(reward_fn: Any) -> dict[str, Any]:
    """For a math reward, the strict and lenient graders (same settings otherwise); ``{}`` for other rewards.

    The extraction rule alone can move math scores by tens of points, so a math evaluation reports both.
    """
    from ..rewards.math import MATH_MODES, MathRewardFunction

    if not isinstance(reward_fn, MathRewardFunction):
        return {}
    return {mode: dataclasses.replace(reward_fn, mode=mode) for mode in MATH_MODES}


def summarize(per_problem: list[list[RewardResult]], *, with_maj: bool) -> dict[str, Any]:
    """Accuracy, its 95% interval, counts, mean reward; with n > 1 samples also pass@k (and maj@k if asked).

    ``per_problem[i]`` holds the n verdicts of problem i (the same n for every problem). With one sample per
    problem the interval is Wilson's; with n > 1 the samples of a problem are correlated, so the accuracy interval
    and the pass@k intervals are percentile bootstraps over problems; maj@k (one yes/no per problem) gets Wilson's.
    """
    flat = [r for results in per_problem for r in results]
    judged = [r for r in flat if r.status != "error"]
    num_correct = sum(r.status == "passed" for r in flat)
    out: dict[str, Any] = {
        "num_correct": num_correct,
        "num_judged": len(judged),
        "judge_errors": len(flat) - len(judged),
        "accuracy": num_correct / len(judged) if judged else math.nan,
        "accuracy_ci": wilson_interval(num_correct, len(judged)) if judged else (math.nan, math.nan),
        "accuracy_ci_method": "wilson",
        "mean_reward": sum(r.score for r in judged) / len(judged) if judged else math.nan,
    }
    n_samples = len(per_problem[0]) if per_problem else 0
    if n_samples > 1:
        rates = [sum(r.status == "passed" for r in res) / len(j) for res in per_problem
                 if (j := [r for r in res if r.status != "error"])]
        if len(rates) > 1:
            out["accuracy_ci"] = tuple(bootstrap_ci(rates)[1:])
            out["accuracy_ci_method"] = "bootstrap over problems"
        ks = powers_of_two_up_to(n_samples)
        counts = [(n_samples, sum(r.status == "passed" for r in res)) for res in per_problem]
        out["pass_at_k"] = {k: mean_pass_at_k(counts, k) for k in ks}
        out["pass_at_k_ci"] = {k: tuple(bootstrap_ci([pass_at_k(n, c, k) for n, c in counts])[1:]) for k in ks}
        if with_maj:
            out["maj_at_k"] = {k: maj_at_k(per_problem, k) for k in ks}
            out["maj_at_k_ci"] = {k: wilson_interval(round(v * len(per_problem)), len(per_problem))
                                  for k, v in out["maj_at_k"].items()}
    return out


def breakdown(rows: list[dict], per_problem: list[list[RewardResult]], field_name: str) -> dict[str, Any]:
    """``summarize`` (accuracy and its interval, counts) for the problems of each value of ``field_name``, plus ``n``."""
    groups: dict[str, list[list[RewardResult]]] = {}
    for row, results in zip(rows, per_problem):
        groups.setdefault(str(row.get(field_name)), []).append(results)
    return {key: {"n": len(groups[key]), **summarize(groups[key], with_maj=False)}
            for key in sorted(groups, key=_natural_key)}


def _natural_key(value: str) -> tuple:
    # "Level 10" after "Level 9"; numbers before words.
    import re

    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", value))


def powers_of_two_up_to(n: int) -> list[int]:
    """The k reported for n samples: 1, 2, 4, ... below n, then n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def maj_at_k(per_problem: list[list[RewardResult]], k: int) -> float:
    """Fraction of problems whose most common normalized answer among the first k samples was graded correct.

    The vote is over the judge's own extraction and normalization of each answer; the winner is correct when a
    sample that gave it passed (same normalized answer, same gold). No answer never wins; ties go to the first seen.
    """
    from ..rewards.math_answers import normalize_answer

    wins = 0
    for results in per_problem:
        keys = [normalize_answer(r.extracted) if r.extracted is not None else None for r in results[:k]]
        winner, _ = majority_vote(keys)
        wins += winner is not None and any(key == winner and r.status == "passed" for key, r in zip(keys, results))
    return wins / len(per_problem)


def gold_answer(reward_fn: Any, row: Mapping[str, Any]) -> str | None:
    """The final gold answer the reward compares against (math), else None."""
    from ..rewards.math import MathRewardFunction
    from ..rewards.math_answers import final_answer_from_gold

    if isinstance(reward_fn, MathRewardFunction):
        value = row.get(reward_fn.answer_column)
        return final_answer_from_gold(str(value)) if value is not None else None
    return None


# Reward attributes that change how fast a verdict comes, not which: they differ between machines.
_NOT_GRADING = frozenset({"max_workers"})


def reward_settings(reward_fn: Any) -> dict[str, Any]:
    """What decides the reward's verdicts, for checking that two evaluations were graded alike: its class and its
    public scalar settings (a dataclass's fields, else its instance attributes), e.g. a math reward's ``mode``."""
    out: dict[str, Any] = {"class": type(reward_fn).__qualname__}
    if dataclasses.is_dataclass(reward_fn):
        items = [(f.name, getattr(reward_fn, f.name)) for f in dataclasses.fields(reward_fn)]
    else:
        items = list(getattr(reward_fn, "__dict__", {}).items())
    for name, value in items:
        if not name.startswith("_") and name not in _NOT_GRADING and (
                value is None or isinstance(value, (bool, int, float, str))):
            out[name] = value
    return out


def dataset_fingerprint(rows: list[dict]) -> str:
    """SHA-256 (first 16 hex digits) of the rows' prompts and answers, in order: same problems, same fingerprint."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row.get("prompt"), row.get("answer")], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def package_versions() -> dict[str, str]:
    """The versions an evaluation result records (a training run's manifest records a few more)."""
    return installed_versions(("posttrain-llm", "torch", "transformers", "trl", "math-verify", "vllm"))


def check_rows(rows: list[dict], breakdown_by: Sequence[str]) -> None:
    if not rows:
        raise ValueError("test_data is empty: nothing to evaluate")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or "prompt" not in row:
            raise ValueError(f"row {i} of test_data has no 'prompt' column; rows need a chat or string 'prompt'")
    for field_name in breakdown_by:
        if field_name not in rows[0]:
            raise ValueError(f"breakdown_by field {field_name!r} is not a column of test_data "
                             f"(columns: {sorted(rows[0])})")
