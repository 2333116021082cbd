r"""Correctness and speed of MathRewardFunction against TRL's ``accuracy_reward`` on dataset gold answers.

Cases are built from the offline datasets (no model involved); without them (a bare clone), from a small generated
GSM8K-/MATH-500-style set (``benchmarks/_generated.py``), and the table and JSON say which:

- GSM8K test (1319 rows): the gold number written as ``\boxed{72}``, ``\boxed{1,000}`` (rows >= 1000),
  ``\boxed{\$72}``, ``\boxed{\$1,000}``, ``\boxed{72.00}``, ``\boxed{72 \text{ dollars}}`` -> all must be 1;
  another row's gold (a different number) -> must be 0.
- MATH-500 (first N rows): the gold (last ``\boxed{}`` of ``solution``) as ``\boxed{gold}``, with ``\dfrac``
  for ``\frac``, without spaces, and as a decimal where it is a terminating fraction -> 1; the gold of the row 7
  further on (skipped when the two are the same string) -> 0.

TRL gets ``solution=`` the numeric gold for GSM8K (commas removed) and, for MATH, both the bare gold and the full
``solution`` text are tried; the better of the two is reported as TRL's score. Both run single-threaded in the
main thread (TRL's signal timeouts are active there). Our pool's one-time start-up is excluded from the time;
TRL's time is that of its faster solution form.

Run:  python benchmarks/bench_math_reward.py [--gsm8k N] [--math N] [--data-dir DIR | --generated-data] [--smoke]
          [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import _common
import _generated

from posttrain_llm.online_rl_trainer.core.rewards.math import MathRewardFunction
from posttrain_llm.online_rl_trainer.core.rewards.math_answers import final_answer_from_gold

NEEDS = ("gsm8k/test.jsonl", "math/math500_test.jsonl")
SMOKE_FIELDS = ["cases", "totals", "ours_correct", "trl_correct", "ours_seconds", "trl_seconds",
                "time_ratio_ours_over_trl", "ours_errors"]


@dataclass(frozen=True)
class Case:
    dataset: str
    variant: str
    completion: str
    gold: str  # what our reward gets in the `answer` column
    trl_solutions: tuple[str, ...]  # what TRL's `solution` column gets, one per tried form
    expected: bool


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _say(answer: str) -> str:
    return f"Let me work through it step by step. The answer is \\boxed{{{answer}}}."


def gsm8k_cases(data_dir: Path, limit: int | None = None) -> list[Case]:
    rows = _read_jsonl(data_dir / "gsm8k" / "test.jsonl")[:limit]
    golds = [row["answer"].split("####")[-1].strip().replace(",", "") for row in rows]
    cases = []
    for i, gold in enumerate(golds):
        value = float(gold)
        with_commas = f"{int(value):,}" if value.is_integer() else gold
        forms = {"plain": gold, "dollar": "\\$" + gold, "decimal": gold + (".00" if "." not in gold else "0"),
                 "units": gold + " \\text{ dollars}"}
        if with_commas != gold:
            forms.update({"commas": with_commas, "dollar_commas": "\\$" + with_commas})
        for variant, form in forms.items():
            cases.append(Case("gsm8k", variant, _say(form), gold, (gold,), True))
        other = golds[(i + 1) % len(golds)]
        if float(other) != value:
            cases.append(Case("gsm8k", "negative", _say(other), gold, (gold,), False))
    return cases


def _terminating_decimal(gold: str) -> str | None:
    """``\\frac{3}{4}`` -> ``0.75`` when the fraction has a finite decimal expansion, else None."""
    m = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", gold.strip())
    if not m or int(m.group(3)) == 0:
        return None
    value = Fraction(int(m.group(2)), int(m.group(3)))
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den != 1 or value.denominator == 1:
        return None
    text = f"{float(value):.12f}".rstrip("0")
    return m.group(1) + text


def math_cases(data_dir: Path, limit: int | None = 500) -> list[Case]:
    rows = _read_jsonl(data_dir / "math" / "math500_test.jsonl")[:limit]
    golds = [final_answer_from_gold(row["solution"]) for row in rows]
    cases = []
    for i, (row, gold) in enumerate(zip(rows, golds)):
        trl = (gold, row["solution"])
        cases.append(Case("math", "plain", _say(gold), gold, trl, True))
        if "\\frac" in gold:
            cases.append(Case("math", "dfrac", _say(gold.replace("\\frac", "\\dfrac")), gold, trl, True))
        if " " in gold:
            cases.append(Case("math", "nospace", _say(gold.replace(" ", "")), gold, trl, True))
        decimal = _terminating_decimal(gold)
        if decimal is not None:
            cases.append(Case("math", "decimal", _say(decimal), gold, trl, True))
        other = golds[(i + 7) % len(golds)]
        if other.replace(" ", "") != gold.replace(" ", ""):
            cases.append(Case("math", "negative", _say(other), gold, trl, False))
    return cases


def run_ours(cases: list[Case], batch_size: int = 64) -> tuple[list[float | None], float]:
    reward = MathRewardFunction()
    reward.score("\\boxed{x+1}", answer="1+x")  # start the checking process outside the timed region
    scores: list[float | None] = []
    start = time.perf_counter()
    for b in range(0, len(cases), batch_size):
        batch = cases[b : b + batch_size]
        scores += reward(completions=[[{"role": "assistant", "content": c.completion}] for c in batch],
                         answer=[c.gold for c in batch])
    return scores, time.perf_counter() - start


def run_trl(cases: list[Case], form: int, batch_size: int = 64) -> tuple[list[float | None], float]:
    from trl.rewards import accuracy_reward

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    accuracy_reward([[{"content": "\\boxed{x+1}"}]], solution=["1+x"])  # import/compile outside the timing
    scores: list[float | None] = []
    start = time.perf_counter()
    for b in range(0, len(cases), batch_size):
        batch = cases[b : b + batch_size]
        scores += accuracy_reward([[{"role": "assistant", "content": c.completion}] for c in batch],
                                  solution=[c.trl_solutions[min(form, len(c.trl_solutions) - 1)] for c in batch])
    return scores, time.perf_counter() - start


def count_correct(cases: list[Case], scores: list[float | None]) -> dict[str, int]:
    """Right verdicts per dataset/polarity; None (undecided) counts as not right."""
    counts: dict[str, int] = {}
    for case, score in zip(cases, scores):
        key = f"{case.dataset}/{'negative' if not case.expected else 'positive'}"
        counts.setdefault(key, 0)
        counts[key] += int(score is not None and (score > 0.5) == case.expected)
    return counts


def compare(data_dir: Path, n_gsm8k: int | None, n_math: int | None) -> dict:
    cases = gsm8k_cases(data_dir, n_gsm8k) + math_cases(data_dir, n_math)
    ours, ours_s = run_ours(cases)
    trl_runs = [run_trl(cases, form) for form in (0, 1)]
    per_form = [count_correct(cases, s) for s, _ in trl_runs]
    # Per dataset, TRL is credited with whichever solution form served it better.
    trl_counts, trl_s = {}, min(t for _, t in trl_runs)
    for dataset in ("gsm8k", "math"):
        best = max(per_form, key=lambda c: sum(v for k, v in c.items() if k.startswith(dataset)))
        trl_counts.update({k: v for k, v in best.items() if k.startswith(dataset)})
    totals = {}
    for case in cases:
        key = f"{case.dataset}/{'negative' if not case.expected else 'positive'}"
        totals[key] = totals.get(key, 0) + 1
    ours_counts = count_correct(cases, ours)
    misses = [(c.dataset, c.variant, c.gold, c.completion[-80:], s) for c, s in zip(cases, ours)
              if s is None or (s > 0.5) != c.expected]
    return {
        "cases": len(cases),
        "totals": totals,
        "ours_correct": ours_counts,
        "trl_correct": trl_counts,
        "trl_correct_by_solution_form": {"bare_gold": per_form[0], "full_solution": per_form[1]},
        "ours_errors": sum(s is None for s in ours),
        "ours_seconds": round(ours_s, 3),
        "trl_seconds": round(trl_s, 3),
        "trl_seconds_by_solution_form": {
            "bare_gold": round(trl_runs[0][1], 3),
            "full_solution": round(trl_runs[1][1], 3),
        },
        "time_ratio_ours_over_trl": round(ours_s / trl_s, 3),
        "ours_misses": misses[:20],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gsm8k", type=int, default=None, help="GSM8K test rows (default: all 1319)")
    parser.add_argument("--math", type=int, default=500, help="MATH-500 rows (default: 500)")
    args = _common.parse_args(parser, argv, smoke={"gsm8k": 20, "math": 24}, data=True)
    data_dir, data = _common.resolve_data(args, NEEDS, lambda folder: " + ".join(
        (_generated.write_gsm8k(folder), _generated.write_math500(folder))))
    result = compare(data_dir, args.gsm8k, args.math)
    rows = [{"split": key, "cases": total, "ours": result["ours_correct"].get(key, 0),
             "trl": result["trl_correct"].get(key, 0)} for key, total in sorted(result["totals"].items())]
    _common.print_table(rows, [("split", "split", ""), ("cases", "cases", "d"), ("ours", "ours", "d"),
                               ("TRL", "trl", "d")])
    print(f"seconds: ours {result['ours_seconds']}  TRL {result['trl_seconds']}  "
          f"ratio {result['time_ratio_ours_over_trl']}")
    if result["ours_misses"]:
        print(f"ours missed (first {len(result['ours_misses'])}): {result['ours_misses']}")
    right = {who: sum(result[f"{who}_correct"].values()) for who in ("ours", "trl")}
    headline = {"cases": result["cases"], "ours_right": right["ours"], "trl_right": right["trl"],
                "time_ratio_ours_over_trl": result["time_ratio_ours_over_trl"]}
    _common.write_result(args, __file__, result, data, headline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
