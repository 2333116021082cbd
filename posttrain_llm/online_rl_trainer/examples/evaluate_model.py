"""Evaluate a model on held-out math problems, optionally against a second model on the same problems.

    python -m posttrain_llm.online_rl_trainer.examples.evaluate_model --model ./outputs/offline_demo/final
    python -m posttrain_llm.online_rl_trainer.examples.evaluate_model --model HuggingFaceTB/SmolLM2-135M-Instruct \\
        --dataset gsm8k --num-samples 50
    python -m posttrain_llm.online_rl_trainer.examples.evaluate_model --model ./outputs/offline_demo/warmup \\
        --compare ./outputs/offline_demo/final

Greedy decoding by default. Math is graded strict (``\\boxed{}`` only) and lenient (else the last number) side by
side; ``--lenient`` makes lenient the headline. Prints a summary table (accuracy with 95% Wilson intervals, pass@k
and maj@k with ``--samples-per-problem``); with ``--compare``, both models on the same problems, the paired
difference with its bootstrap interval, the problems only one of them solved, and the exact McNemar p-value.
Writes a report folder: the full JSON (per-sample records included), a Markdown summary and PNG plots.
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

from posttrain_llm.online_rl_trainer import MathRewardFunction, ModelEvaluator
from posttrain_llm.online_rl_trainer.core.config import ConfigError
from posttrain_llm.online_rl_trainer.core.eval.compare import compare_results
from posttrain_llm.online_rl_trainer.core.eval.reports import summary_table, verdict, write_eval_report
from posttrain_llm.online_rl_trainer.examples.cli_errors import add_debug_flag, run_cli
from posttrain_llm.online_rl_trainer.examples.common import (
    CODE_DATASETS,
    CPU_BF16_FLAG,
    add_cpu_bf16_flag,
    load_code_dataset,
    load_math_dataset,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="folder written by save_model, a Hub id, or builtin:tiny-char-llama")
    p.add_argument("--compare", default=None, help="a second model evaluated on the same problems")
    p.add_argument("--dataset", default="arithmetic",
                   help="arithmetic | gsm8k | math | math500 | a data file (math); humaneval | mbpp | mbpp-sanitized (code)")
    p.add_argument("--data-dir", default=None,
                   help="folder with the datasets in their upstream formats: gsm8k/{train,test}.jsonl, "
                        "math/{train,test,math500_test}.jsonl, humaneval/HumanEval.jsonl.gz, "
                        "mbpp/{mbpp.jsonl,sanitized-mbpp.json} (default: $ONLINE_RL_DATA_DIR, else the Hugging "
                        "Face Hub)")
    p.add_argument("--num-samples", type=int, default=100, help="problems to evaluate (seeded subset)")
    p.add_argument("--skip-invalid", action="store_true", help="skip invalid data rows (counted, logged) instead of "
                                                               "stopping at the first")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: 256, or 16 for the tiny model")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--backend", choices=["hf", "vllm"], default="hf", help="vllm: needs vLLM and a GPU")
    p.add_argument("--samples-per-problem", type=int, default=1,
                   help="n completions per problem (needs --temperature > 0): reports pass@k (and maj@k for math)")
    p.add_argument("--breakdown", nargs="*", default=None,
                   help="row fields to break accuracy down by (default for math/math500: level subject)")
    p.add_argument("--lenient", action="store_true", help="accept the last number when there is no \\boxed{}")
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    add_cpu_bf16_flag(p, "off", "generation")
    p.add_argument("--output-dir", default=None,
                   help="report folder (default: <model>/eval_<dataset>/ for a model folder, else outputs/eval_<dataset>/)")
    p.add_argument("--output", default=None,
                   help="JSON file for the full result; the Markdown and PNG files are written next to it")
    add_debug_flag(p)
    return p


def _is_tiny(model: str) -> bool:
    if model.startswith("builtin:"):
        return True
    from posttrain_llm.online_rl_trainer.core.models.lora import adapter_base_name, is_adapter_folder

    if is_adapter_folder(model):  # a LoRA adapter: the size of its base model decides
        return _is_tiny(adapter_base_name(model))
    cfg = Path(model) / "config.json"
    # A folder saved from the tiny char model has its ~100-token vocabulary.
    return cfg.is_file() and json.loads(cfg.read_text()).get("vocab_size", 10**6) < 200


def evaluate_one(name: str, test_data, reward, args) -> dict[str, Any]:
    max_new = args.max_new_tokens or (16 if _is_tiny(name) else 256)
    evaluator = ModelEvaluator(name, batch_size=args.batch_size, max_new_tokens=max_new, temperature=args.temperature,
                               top_p=args.top_p, seed=args.seed, use_gpu=args.use_gpu, torch_num_threads=args.threads,
                               backend=args.backend,
                               cpu_bf16_autocast=CPU_BF16_FLAG[args.cpu_bf16])
    return evaluator.evaluate(test_data, reward, num_samples_per_problem=args.samples_per_problem,
                              breakdown_by=args.breakdown or ())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    if args.num_samples < 1:
        raise ConfigError(f"--num-samples {args.num_samples}: give the number of problems to evaluate (>= 1)")
    if args.breakdown is None:
        args.breakdown = ["level", "subject"] if args.dataset in ("math", "math500") else []
    if args.dataset in CODE_DATASETS:
        from posttrain_llm.online_rl_trainer import CodeRewardFunction

        _, test_data = load_code_dataset(args.dataset, data_dir=args.data_dir, num_train=None,
                                         num_test=args.num_samples, seed=args.seed, skip_invalid=args.skip_invalid)
        reward, grading = CodeRewardFunction(), "tests run in the sandbox"
    else:
        _, test_data = load_math_dataset(args.dataset, tiny=_is_tiny(args.model), data_dir=args.data_dir,
                                         num_train=None, num_test=args.num_samples, seed=args.seed,
                                         skip_invalid=args.skip_invalid)
        reward = MathRewardFunction(mode="lenient" if args.lenient else "strict")
        grading = reward.mode
    a = evaluate_one(args.model, test_data, reward, args)
    if args.compare:
        b = evaluate_one(args.compare, test_data, reward, args)
        result: dict[str, Any] = {"dataset": args.dataset, "grading": grading, "a": a, "b": b,
                                  "comparison": compare_results(a, b, seed=args.seed)}
    else:
        result = {**a, "dataset": args.dataset, "grading": grading}
    if args.output:
        out_dir, stem = Path(args.output).parent, Path(args.output).stem
    else:
        default = (Path(args.model) if Path(args.model).is_dir() else Path("outputs")) / f"eval_{Path(args.dataset).stem}"
        out_dir, stem = Path(args.output_dir or default), "eval"
    paths = write_eval_report(result, out_dir, stem=stem)
    print()
    if args.compare:
        print(f"A = {args.model}\nB = {args.compare}")
    else:
        print(args.model)
    print(f"{args.dataset}: {len(test_data)} problems, {grading}\n")
    print(summary_table(result))
    if args.compare:
        c = result["comparison"]
        print(f"\nsolved only by A: {c['only_a']}, only by B: {c['only_b']}; exact McNemar p = {c['mcnemar_p']:.4g}")
        print(f"verdict: {verdict(c)}")
    print("\nreport:")
    for kind, path in paths.items():
        print(f"  {kind:<10} {path}")
    return result


if __name__ == "__main__":
    raise SystemExit(run_cli(main, sys.argv[1:]))
