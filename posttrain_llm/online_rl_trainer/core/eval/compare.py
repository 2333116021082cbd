"""Did RL help? A paired comparison of two models on the same problems.

``compare(model_a, model_b, data, reward)`` evaluates both models with the same generation settings and seed and
returns both results plus ``comparison``:

- ``difference_b_minus_a`` with a 95% **paired** percentile bootstrap interval that resamples problems (pairs)
  jointly, which removes the between-problem variance that makes two separate intervals overlap;
- the problems solved only by A and only by B, and the **exact** McNemar p-value from those two counts;
- for math, the same numbers under strict and lenient extraction (``by_extraction``).

Per-problem score: with one sample per problem, 1 if it passed else 0; with n samples, the share of its judged
samples that passed (the bootstrap then compares pass@1). The discordant counts and McNemar use the first sample
of each problem (for greedy decoding, the only one): McNemar needs one yes/no per model and problem. A problem
where either model's verdict is a judge error (status ``error``) is left out of the paired statistics and counted
in ``excluded_problems``, so a broken judge never shows up as a difference between models.

Two results are compared only when they were produced alike: same problems (dataset fingerprint), same reward and
grading settings (e.g. strict vs lenient extraction, ``success_threshold``), same ``temperature``,
``max_new_tokens`` and samples per problem (and ``top_p`` when sampling). Otherwise ``compare_results`` refuses
with a ``ConfigError`` naming each differing setting: a difference in settings would be reported as a difference
between models. ``allow_mismatch=True`` compares anyway and lists the differences in ``setting_mismatches``.
Settings a result does not record (results written by older versions) are not checked. Not checked: the seed,
batch size and backend, which do not change what is being measured.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from ..config import ConfigError
from .statistics import mcnemar_exact, paired_bootstrap_diff

logger = logging.getLogger(__name__)


def compare(
    model_a: Any,
    model_b: Any,
    data: Any,
    reward: Any,
    *,
    num_samples_per_problem: int = 1,
    breakdown_by: Sequence[str] = (),
    seed: int = 42,
    allow_mismatch: bool = False,
    **evaluator_kwargs: Any,
) -> dict[str, Any]:
    """Evaluate ``model_a`` and ``model_b`` (names/folders, or ``ModelEvaluator`` objects) on the same ``data``.

    ``evaluator_kwargs`` (``max_new_tokens``, ``batch_size``, ``temperature``...) go to both ``ModelEvaluator``s
    built from names, so both are generated alike. Returns ``{"a": result_a, "b": result_b, "comparison": ...}``.
    """
    from ..inference import ModelEvaluator

    def evaluator(model: Any) -> ModelEvaluator:
        if isinstance(model, ModelEvaluator):
            return model
        return ModelEvaluator(model, seed=seed, **evaluator_kwargs)

    results = {}
    for key, model in (("a", model_a), ("b", model_b)):
        results[key] = evaluator(model).evaluate(
            data, reward, num_samples_per_problem=num_samples_per_problem, breakdown_by=breakdown_by)
    return {**results, "comparison": compare_results(results["a"], results["b"], seed=seed,
                                                      allow_mismatch=allow_mismatch)}


def compare_results(a: dict[str, Any], b: dict[str, Any], *, seed: int = 0,
                    allow_mismatch: bool = False) -> dict[str, Any]:
    """The paired comparison of two ``ModelEvaluator.evaluate`` results on the same problems (see module doc).

    ``allow_mismatch=True`` compares results whose reward or generation settings differ (listed in
    ``setting_mismatches``) instead of raising ``ConfigError``.
    """
    if a.get("dataset_fingerprint") != b.get("dataset_fingerprint") or len(a["records"]) != len(b["records"]):
        raise ConfigError(
            f"the two results are not on the same problems (fingerprints {a.get('dataset_fingerprint')} and "
            f"{b.get('dataset_fingerprint')}, {len(a['records'])} and {len(b['records'])} problems); evaluate both "
            "models on the same rows in the same order"
        )
    mismatches = setting_mismatches(a, b)
    if mismatches and not allow_mismatch:
        raise ConfigError(
            f"the two results were not produced alike: {'; '.join(mismatches)}. A difference in settings would be "
            "reported as a difference between the models; evaluate both with the same settings (or pass "
            "allow_mismatch=True to compare anyway)"
        )
    if mismatches:
        logger.warning("comparing results produced with different settings (allow_mismatch=True): %s",
                       "; ".join(mismatches))
    out = {"model_a": a.get("model"), "model_b": b.get("model"), "accuracy_a": a["accuracy"],
           "accuracy_b": b["accuracy"], **_paired(a["records"], b["records"], _statuses, seed)}
    if mismatches:
        out["setting_mismatches"] = mismatches
    modes = sorted(set(a.get("by_extraction", {})) & set(b.get("by_extraction", {})))
    if modes:
        out["by_extraction"] = {
            mode: {"accuracy_a": a["by_extraction"][mode]["accuracy"], "accuracy_b": b["by_extraction"][mode]["accuracy"],
                   **_paired(a["records"], b["records"], _mode_statuses(mode), seed)}
            for mode in modes
        }
    return out


def setting_mismatches(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """``"<setting>: A <value>, B <value>"`` for each recorded setting that differs between two results."""
    gen_a, gen_b = a.get("generation") or {}, b.get("generation") or {}
    checked = [(name, a.get(name), b.get(name)) for name in
               ("reward", "reward_settings", "success_threshold", "num_samples_per_problem")]
    checked += [(name, gen_a.get(name), gen_b.get(name)) for name in ("temperature", "max_new_tokens")]
    if (gen_a.get("temperature") or 0) > 0 or (gen_b.get("temperature") or 0) > 0:  # greedy ignores top_p
        checked.append(("top_p", gen_a.get("top_p"), gen_b.get("top_p")))
    out = []
    for name, va, vb in checked:
        if va is None or vb is None or va == vb:
            continue
        if isinstance(va, dict) and isinstance(vb, dict):
            keys = sorted(k for k in set(va) | set(vb) if va.get(k) != vb.get(k))
            out.extend(f"{name} {k}: A {va.get(k)!r}, B {vb.get(k)!r}" for k in keys)
        else:
            out.append(f"{name}: A {va!r}, B {vb!r}")
    return out


def _statuses(record: dict[str, Any]) -> list[str]:
    return record.get("statuses") or [record["status"]]


def _mode_statuses(mode: str) -> Callable[[dict[str, Any]], list[str]]:
    def get(record: dict[str, Any]) -> list[str]:
        value = record["status_by_extraction"][mode]
        return value if isinstance(value, list) else [value]

    return get


def _paired(records_a: list[dict], records_b: list[dict], statuses: Callable[[dict], list[str]],
            seed: int) -> dict[str, Any]:
    scores_a, scores_b, first_a, first_b = [], [], [], []
    excluded = 0
    for ra, rb in zip(records_a, records_b):
        sa, sb = statuses(ra), statuses(rb)
        judged_a = [s for s in sa if s != "error"]
        judged_b = [s for s in sb if s != "error"]
        if not judged_a or not judged_b or sa[0] == "error" or sb[0] == "error":
            excluded += 1
            continue
        scores_a.append(sum(s == "passed" for s in judged_a) / len(judged_a))
        scores_b.append(sum(s == "passed" for s in judged_b) / len(judged_b))
        first_a.append(sa[0] == "passed")
        first_b.append(sb[0] == "passed")
    only_a = sum(x and not y for x, y in zip(first_a, first_b))
    only_b = sum(y and not x for x, y in zip(first_a, first_b))
    out: dict[str, Any] = {"n_paired": len(scores_a), "excluded_problems": excluded, "only_a": only_a,
                           "only_b": only_b, "both": sum(x and y for x, y in zip(first_a, first_b)),
                           "neither": sum(not x and not y for x, y in zip(first_a, first_b)),
                           "mcnemar_p": mcnemar_exact(only_a, only_b), "difference_ci_method": "paired bootstrap"}
    if scores_a:
        diff, lo, hi = paired_bootstrap_diff(scores_b, scores_a, seed=seed)
        out.update(difference_b_minus_a=diff, difference_ci95=[lo, hi])
    else:
        out.update(difference_b_minus_a=float("nan"), difference_ci95=[float("nan"), float("nan")])
    return out
