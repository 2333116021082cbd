"""Evaluate a model on held-out math problems, optionally against a second model on the same problems.

    python -m posttrain_llm.online_rl_trainer.examples.evaluate_model --model ./outputs/offline_demo/final
    python -m posttrain_llm.online_rl_trainer.examples.evaluate_model --model HuggingFaceTB/SmolLM2-135M-Instruct \\
        --dataset gsm8k --num-samples 50
    python -m posttrain_llm.online_rl_trainer.examples.evaluate_model --model ./outputs/offline_demo/warmup \\
        --compare ./outputs/offline_demo/final

Greedy decoding, strict ``\\boxed{}`` grading (``--lenient`` also accepts the last number). Prints accuracy with a
95% Wilson interval; with ``--compare``, both models' accuracies on the same problems, the problems only one of them
solved, and the exact McNemar p-value. Writes the full result (per-sample records included) as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from posttrain_llm.online_rl_trainer import MathRewardFunction, ModelEvaluator  # noqa: E402
from posttrain_llm.online_rl_trainer.core.metrics import mcnemar_exact, paired_bootstrap_diff  # noqa: E402
from posttrain_llm.online_rl_trainer.examples.common import (  # noqa: E402
    CODE_DATASETS,
    accuracy_line,
    load_code_dataset,
    load_math_dataset,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="folder written by save_model, a Hub id, or builtin:tiny-char-llama")
    p.add_argument("--compare", default=None, help="a second model evaluated on the same problems")
    p.add_argument("--dataset", default="arithmetic",
                   help="arithmetic | gsm8k | math | math500 | a data file (math); humaneval | mbpp | mbpp-sanitized (code)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--num-samples", type=int, default=100, help="problems to evaluate (seeded subset)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: 256, or 16 for the tiny model")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--samples-per-problem", type=int, default=1,
                   help="n completions per problem (needs --temperature > 0): reports pass@k (and maj@k for math)")
    p.add_argument("--breakdown", nargs="*", default=None,
                   help="row fields to break accuracy down by (default for math/math500: level subject)")
    p.add_argument("--lenient", action="store_true", help="accept the last number when there is no \\boxed{}")
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output", default=None, help="JSON file for the full result (default: <model>/eval_<dataset>.json)")
    return p


def _is_tiny(model: str) -> bool:
    if model.startswith("builtin:"):
        return True
    cfg = Path(model) / "config.json"
    # A folder saved from the tiny char model has its ~100-token vocabulary.
    return cfg.is_file() and json.loads(cfg.read_text()).get("vocab_size", 10**6) < 200


def evaluate_one(name: str, test_data, reward, args) -> dict[str, Any]:
    max_new = args.max_new_tokens or (16 if _is_tiny(name) else 256)
    evaluator = ModelEvaluator(name, batch_size=args.batch_size, max_new_tokens=max_new, temperature=args.temperature,
                               seed=args.seed, use_gpu=args.use_gpu, torch_num_threads=args.threads)
    return evaluator.evaluate(test_data, reward, num_samples_per_problem=args.samples_per_problem,
                              breakdown_by=args.breakdown or ())


def _print_k_metrics(result: dict[str, Any]) -> None:
    for field_name, groups in result.get("breakdowns", {}).items():
        print(f"  by {field_name}:")
        for value, g in groups.items():
            lo, hi = g["accuracy_ci"]
            print(f"    {value:<28} n={g['n']:<4} accuracy {g['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]")
    for key in ("pass_at_k", "maj_at_k"):
        if key in result:
            print(f"  {key.replace('_at_', '@')}: " + ", ".join(f"k={k}: {v:.3f}" for k, v in result[key].items()))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    if args.breakdown is None:
        args.breakdown = ["level", "subject"] if args.dataset in ("math", "math500") else []
    if args.dataset in CODE_DATASETS:
        from posttrain_llm.online_rl_trainer import CodeRewardFunction

        _, test_data = load_code_dataset(args.dataset, data_dir=args.data_dir, num_train=None,
                                         num_test=args.num_samples, seed=args.seed)
        reward, grading = CodeRewardFunction(), "tests run in the sandbox"
    else:
        _, test_data = load_math_dataset(args.dataset, tiny=_is_tiny(args.model), data_dir=args.data_dir,
                                         num_train=None, num_test=args.num_samples, seed=args.seed)
        reward = MathRewardFunction(mode="lenient" if args.lenient else "strict")
        grading = reward.mode
    result: dict[str, Any] = {"dataset": args.dataset, "grading": grading}
    result["a"] = evaluate_one(args.model, test_data, reward, args)
    print(f"\n{args.model} on {args.dataset} ({len(test_data)} problems, {grading}):")
    print(f"  accuracy {accuracy_line(result['a'])}")
    _print_k_metrics(result["a"])
    if args.compare:
        result["b"] = evaluate_one(args.compare, test_data, reward, args)
        # Per problem: solved by the first sample (greedy: the only one).
        a_ok = [r["status"] == "passed" for r in result["a"]["records"]]
        b_ok = [r["status"] == "passed" for r in result["b"]["records"]]
        only_a = sum(x and not y for x, y in zip(a_ok, b_ok))
        only_b = sum(y and not x for x, y in zip(a_ok, b_ok))
        diff, lo, hi = paired_bootstrap_diff([float(x) for x in b_ok], [float(x) for x in a_ok], seed=args.seed)
        result["comparison"] = {
            "accuracy_a": result["a"]["accuracy"], "accuracy_b": result["b"]["accuracy"],
            "difference_b_minus_a": diff, "difference_ci95": [lo, hi], "difference_ci_method": "paired bootstrap",
            "only_a": only_a, "only_b": only_b, "mcnemar_p": mcnemar_exact(only_a, only_b),
        }
        c = result["comparison"]
        print(f"{args.compare}:")
        print(f"  accuracy {accuracy_line(result['b'])}")
        _print_k_metrics(result["b"])
        print(f"difference (compare - model): {c['difference_b_minus_a']:+.3f} (95% paired bootstrap "
              f"[{lo:+.3f}, {hi:+.3f}]); solved only by --model: {only_a}, "
              f"only by --compare: {only_b}; exact McNemar p = {c['mcnemar_p']:.4g}")
    out = Path(args.output) if args.output else (
        (Path(args.model) if Path(args.model).is_dir() else Path("outputs")) / f"eval_{Path(args.dataset).stem}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"full result: {out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
