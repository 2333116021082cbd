r"""Classic RLHF end to end, offline: a reward model learned from labelled comparisons of the policy's own samples,
then RL against that reward model alone, next to the same RL with the exact reward as the control.

With no arguments, on the built-in tiny model and the ``a+b`` task of ``train_math``, in order:

1. the supervised warm-up of ``train_math`` (``examples/common.warm_up_tiny_model``, same data and sloppy teacher);
2. preference pairs from the warmed policy's *own* samples: ``--samples-per-prompt`` completions per training
   prompt at temperature 1, graded by the exact checker ``MathRewardFunction``; on a prompt with both a correct and
   an incorrect sample, chosen = correct, rejected = incorrect (``core/data/preference_pairs.pairs_from_graded_samples``).
   The rejected answers are the policy's real mistakes (mostly forgotten carries), not made-up ones. Held-out pairs
   come from other training prompts (the first ``--rm-eval-prompts``), never from the test set;
3. a reward model trained on those pairs with ``train_reward_model``, initialised from the warmed policy (it already
   reads arithmetic); by default a second one from the raw tiny model, to measure what that initialisation buys.
   Held-out pairwise accuracy before and after training;
4. for each of ``--trainers`` (default ``ppo,grpo``, at the ``offline-demo-ppo`` / ``offline-demo`` presets'
   settings): RL with the reward model as the only reward (``RewardModelFunction``, sigmoid of its score), and the
   control with ``MathRewardFunction`` as the only reward. Both runs also carry the *other* reward at weight 0: it
   is logged on the same training batches (``rewards/<name>/mean``) but adds 0 to every reward, so it does not move
   the update (``tests/examples/test_train_rlhf.py`` checks the weights come out identical). Held-out accuracy is
   always the exact checker's (``eval_reward_fn=MathRewardFunction()``), every ``max_steps // 4`` steps;
5. ``rlhf_summary.json`` and ``rlhf_report.md`` in ``--output-dir`` (the pairs next to them, ``pairs_*.jsonl``):
   accuracy before/after per run with the paired McNemar test, the reward model's pairwise accuracy, and the
   reward-hacking curve (the reward model's mean score vs the true accuracy of the same training batches, per
   logged step); the table is printed too.

::

    python -m posttrain_llm.online_rl_trainer.examples.train_rlhf --threads 1
    online-rl train-rlhf --trainers grpo --output-dir outputs/rlhf_grpo

Reading the curve: the reward model's score is ``sigmoid(r)`` of a Bradley-Terry model, which fixes differences
between answers, not a level, so "score − accuracy" is not a calibrated error. Its *trend* is the signal: the score
rising while the true accuracy of the same samples stays flat or falls is reward hacking.

Departures from the usual recipe (InstructGPT-style RLHF): no KL penalty to the starting policy (the presets'
``kl_coef=0``, as in the exact-reward control; the reward model is the only thing that stops drift), a sigmoid on
the reward model's score (keeps rewards in [0, 1], the scale the presets were tuned on with the 0/1 exact reward),
comparisons labelled by a checker instead of people, one round (no re-labelling of the RL policy's samples).

Not covered: other tasks or models than the tiny one with the built-in arithmetic (``--model`` is not offered),
resuming, several processes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from posttrain_llm.online_rl_trainer import MathRewardFunction, ModelEvaluator, OnlineRLTrainer, TrainerConfig
from posttrain_llm.online_rl_trainer.core.common.errors import ConfigError
from posttrain_llm.online_rl_trainer.core.common.names import TINY_MODEL_NAME
from posttrain_llm.online_rl_trainer.core.data.preference_pairs import pairs_from_graded_samples
from posttrain_llm.online_rl_trainer.core.files.atomic import write_json_atomic
from posttrain_llm.online_rl_trainer.core.models.reward_model import RewardModelFunction
from posttrain_llm.online_rl_trainer.core.training.reward_model import RewardModelTrainingConfig, train_reward_model
from posttrain_llm.online_rl_trainer.examples.cli_errors import add_debug_flag, run_cli
from posttrain_llm.online_rl_trainer.examples.common import (
    accuracy_line,
    before_after_report,
    load_math_dataset,
    warm_up_tiny_model,
)
from posttrain_llm.online_rl_trainer.examples.runs import interrupted_exit, with_default_dir_policy

logger = logging.getLogger("train_rlhf")

DEFAULT_OUTPUT_DIR = "./outputs/rlhf"
PRESETS = {"grpo": "offline-demo", "ppo": "offline-demo-ppo"}
RM_NAME = "reward_model"
EXACT_NAME = MathRewardFunction().name  # "math_accuracy"
REWARDS = ("rm", "exact")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    # What to run
    p.add_argument("--trainers", default="ppo,grpo", help="comma-separated, from grpo, ppo (each: RM run + exact run)")
    p.add_argument("--max-steps", type=int, default=None, help="RL steps per run (default: the preset's, 60 GRPO / 10 PPO)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="completions per RL step (default: the preset's, 256); GRPO: whole groups of --num-generations")
    p.add_argument("--num-generations", type=int, default=None, help="GRPO group size (default: the preset's, 16)")
    # Data
    p.add_argument("--num-samples", type=int, default=None, help="training prompts (default: all 700)")
    p.add_argument("--eval-samples", type=int, default=300, help="held-out test problems for accuracy")
    # Warm-up
    p.add_argument("--warmup-steps", type=int, default=800, help="the tiny model's supervised warm-up steps")
    p.add_argument("--warm-model", default=None,
                   help="a folder already warmed up by train_math/train_rlhf with the same --seed: skip the warm-up")
    # Preference pairs and the reward model
    p.add_argument("--samples-per-prompt", type=int, default=8, help="policy samples per training prompt for pairs")
    p.add_argument("--pairs-per-prompt", type=int, default=2, help="pairs per prompt at most (distinct wrong answers)")
    p.add_argument("--rm-eval-prompts", type=int, default=200,
                   help="training prompts whose pairs are held out for the reward model's accuracy")
    p.add_argument("--rm-steps", type=int, default=300, help="reward-model optimizer steps")
    p.add_argument("--rm-learning-rate", type=float, default=1e-3)
    p.add_argument("--rm-batch-size", type=int, default=16, help="pairs per reward-model step")
    p.add_argument("--no-rm-baseline", action="store_true",
                   help="skip the second reward model trained from the raw tiny model (the initialisation check)")
    # Hardware, output
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: fastest for the tiny model)")
    p.add_argument("--output-dir", default=None, help=f"default {DEFAULT_OUTPUT_DIR}")
    p.add_argument("--overwrite", action="store_true", help="replace earlier runs in --output-dir")
    add_debug_flag(p)
    return p


def parse_trainers(value: str) -> list[str]:
    trainers = [t.strip() for t in value.split(",") if t.strip()]
    bad = [t for t in trainers if t not in PRESETS]
    if not trainers or bad or len(set(trainers)) != len(trainers):
        raise ConfigError(f"--trainers {value!r}; give distinct names from {sorted(PRESETS)}, comma-separated")
    return trainers


# ------------------------------------------------------------------------------------------- pure helpers
def reward_gap_curve(history: Sequence[dict[str, Any]], rm_name: str = RM_NAME,
                     exact_name: str = EXACT_NAME) -> list[dict[str, float]]:
    """Per logged training step: the reward model's mean score and the exact checker's accuracy on the same training
    batches, and ``gap = rm_score - true_accuracy`` (rows of ``metrics_history`` that log both rewards)."""
    rm_key, exact_key = f"rewards/{rm_name}/mean", f"rewards/{exact_name}/mean"
    return [{"step": int(row["step"]), "rm_score": float(row[rm_key]), "true_accuracy": float(row[exact_key]),
             "gap": float(row[rm_key]) - float(row[exact_key])}
            for row in history if rm_key in row and exact_key in row]


def eval_curve(history: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """Held-out accuracy per evaluated step (rows of ``metrics_history`` with ``eval/accuracy``), one per step."""
    points: dict[int, float] = {}
    for row in history:
        if "eval/accuracy" in row:
            points[int(row["step"])] = float(row["eval/accuracy"])
    return [{"step": s, "accuracy": a} for s, a in sorted(points.items())]


def record_accuracy(records: Sequence[dict[str, Any]]) -> float:
    """Share of problems whose (first) verdict passed: the accuracy an evaluation's records imply."""
    return sum(r["status"] == "passed" for r in records) / len(records)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------- stages
def sample_pairs(model_dir: str, rows: Any, k: int, pairs_per_prompt: int, max_new_tokens: int, seed: int,
                 grader: Any = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Pairs from ``k`` policy samples (temperature 1) per row, graded by ``grader`` (default: the exact checker)
    -> (pairs, stats)."""
    evaluator = ModelEvaluator(model_dir, temperature=1.0, max_new_tokens=max_new_tokens, batch_size=64, seed=seed,
                               show_progress=False)
    result = evaluator.evaluate(rows, grader or MathRewardFunction(), num_samples_per_problem=k)
    pairs = pairs_from_graded_samples(result["records"], max_pairs_per_prompt=pairs_per_prompt)
    stats = {"prompts": result["n"], "samples_per_prompt": k, "sample_accuracy": result["accuracy"],
             "prompts_with_a_pair": len({json.dumps(p["prompt"]) for p in pairs}), "pairs": len(pairs),
             "rejected_kinds": {kind: sum(p["rejected_kind"] == kind for p in pairs) for kind in ("failed", "no_answer")},
             "seconds": result["seconds"]}
    return pairs, stats


def build_pairs(warm_dir: str, train_data: Any, max_new_tokens: int, out: Path,
                args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(training pairs, held-out pairs, stats): the first ``--rm-eval-prompts`` training prompts give the held-out
    pairs, the rest the training pairs; both are written to ``out`` as JSONL."""
    held_rows = train_data.select(range(args.rm_eval_prompts))
    pair_rows = train_data.select(range(args.rm_eval_prompts, len(train_data)))
    k, per_prompt = args.samples_per_prompt, args.pairs_per_prompt
    train_pairs, train_stats = sample_pairs(warm_dir, pair_rows, k, per_prompt, max_new_tokens, args.seed)
    held_pairs, held_stats = sample_pairs(warm_dir, held_rows, k, per_prompt, max_new_tokens, args.seed + 1)
    if len(train_pairs) < 2 or not held_pairs:
        raise ConfigError(f"the policy's samples gave {len(train_pairs)} training and {len(held_pairs)} held-out pairs "
                          "(a prompt gives a pair only when some samples pass and some fail); raise "
                          "--samples-per-prompt or --num-samples")
    for name, rows in (("pairs_train.jsonl", train_pairs), ("pairs_held_out.jsonl", held_pairs)):
        (out / name).write_text("".join(json.dumps(row) + "\n" for row in rows))  # the RM's data, for inspection
    logger.info("pairs: %d training (from %d prompts), %d held-out (from %d prompts); sample accuracy %.2f",
                len(train_pairs), train_stats["prompts"], len(held_pairs), held_stats["prompts"],
                train_stats["sample_accuracy"])
    return train_pairs, held_pairs, {"train": train_stats, "held_out": held_stats}


def train_rm(pairs: list[dict[str, Any]], held_out: list[dict[str, Any]], init: str, out: Path,
             args: argparse.Namespace) -> dict[str, Any]:
    cfg = RewardModelTrainingConfig(model=init, output_dir=str(out), max_steps=args.rm_steps,
                                    learning_rate=args.rm_learning_rate, batch_size=args.rm_batch_size, seed=args.seed)
    info = train_reward_model(pairs, cfg, eval_data=held_out)
    return {"init": init, "folder": str(out), "accuracy_before": info["accuracy_before"],
            "accuracy_after": info["accuracy_after"], "held_out_after": info["held_out_after"],
            "pairs": info["pairs"], "score_stats": info["score_stats"], "train_seconds": info["train_seconds"]}


def rl_config(trainer: str, reward: str, warm_dir: Path, out_dir: Path, args: argparse.Namespace) -> TrainerConfig:
    """The preset of ``trainer`` from the warmed model, with this run's folder and the two rewards' weights."""
    overrides: dict[str, Any] = {"model_name_or_path": str(warm_dir), "output_dir": str(out_dir), "seed": args.seed,
                                 "torch_num_threads": args.threads, "report_to": ["none"],
                                 # reward model first, exact checker second; the one not trained on has weight 0
                                 "reward_weights": [1.0, 0.0] if reward == "rm" else [0.0, 1.0],
                                 "run_name": f"{trainer.upper()} on {reward_label(reward)}"}
    for flag, field in (("max_steps", "max_steps"), ("batch_size", "per_device_train_batch_size"),
                        ("num_generations", "num_generations")):
        if getattr(args, flag) is not None and not (flag == "num_generations" and trainer == "ppo"):
            overrides[field] = getattr(args, flag)
    if args.overwrite:
        overrides["overwrite_output_dir"] = True
    config = TrainerConfig.from_preset(PRESETS[trainer], **overrides)
    logging_steps = 1 if trainer == "ppo" else max(1, min(config.logging_steps, config.max_steps // 12 or 1))
    config = config.replace(eval_steps=max(1, config.max_steps // 4), logging_steps=logging_steps)
    return with_default_dir_policy(config, default_dir=args.output_dir is None, resume=False)


def run_rl(trainer_type: str, reward: str, rm_dir: Path, warm_dir: Path, train_data: Any, test_data: Any,
           out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One RL run; returns its results (held-out before/after with records, curves, timings)."""
    config = rl_config(trainer_type, reward, warm_dir, out / f"{trainer_type}_{reward}", args)
    rm = RewardModelFunction(str(rm_dir), normalize="sigmoid", name=RM_NAME)
    exact = MathRewardFunction()
    trainer = OnlineRLTrainer(config, [rm, exact], train_data, eval_data=test_data, eval_reward_fn=MathRewardFunction())
    before = trainer.evaluate()
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    final = trainer.save_model(Path(config.output_dir) / "final")
    after = trainer.evaluate()
    history = trainer.metrics_history
    comparison, paths = before_after_report(
        before, after, base=str(warm_dir), trained=str(final), dataset="arithmetic",
        grading="greedy, strict \\boxed{} (exact checker)", seed=args.seed, out_dir=Path(config.output_dir) / "before_vs_after",
        title=f"Before vs after {trainer_type.upper()} on {reward_label(reward)}")
    rm_held_out = {name: _mean([v.score for v in rm.score_batch([r["completion"] for r in res["records"]],
                                                                prompts=[r["prompt"] for r in res["records"]])])
                   for name, res in (("before", before), ("after", after))}
    result = {
        "trainer": trainer_type, "reward": reward, "trained_on": RM_NAME if reward == "rm" else EXACT_NAME,
        "output_dir": config.output_dir, "model_dir": str(final), "steps": trainer.summary.get("global_step"),
        "train_seconds": train_seconds, "before": before, "after": after, "comparison": comparison,
        "report": str(paths["markdown"]), "rm_score_held_out": rm_held_out,
        "gap_curve": reward_gap_curve(history), "eval_curve": eval_curve(history),
        "logged_reward": [{"step": int(r["step"]), "reward": float(r["reward"])} for r in history if "reward" in r],
    }
    logger.info("%s on %s: %s -> %s in %.0f s", trainer_type, reward, accuracy_line(before), accuracy_line(after),
                train_seconds)
    return result


def reward_label(reward: str, short: bool = False) -> str:
    label = "reward model" if reward == "rm" else "exact reward"
    return label if short else f"the {label}"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


# ------------------------------------------------------------------------------------------- report
def markdown_report(summary: dict[str, Any]) -> str:
    """The Markdown tables of ``rlhf_report.md`` (also printed)."""
    lines = ["## Reward model (held-out pairwise accuracy, pairs from the policy's own samples)", "",
             "| initialised from | pairs train / held-out | before training | after training |", "|---|---|---|---|"]
    for rm in summary["reward_models"]:
        lines.append(f"| {rm['label']} | {rm['pairs']['train']} / {rm['pairs']['held_out']} | "
                     f"{rm['accuracy_before']:.3f} | **{rm['accuracy_after']:.3f}** |")
    lines += ["", "## RL: held-out accuracy by the exact checker (greedy, strict)", "",
              "| run | trained on | before | after | after − before [95% paired CI] | only before / only after | "
              "McNemar p | RM score on train batches, first → last | true accuracy of those batches, first → last | "
              "RM score on held-out answers, before → after | RL s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in summary["runs"]:
        c, gap = run["comparison"], run["gap_curve"]
        lo, hi = c["difference_ci95"]
        first, last = (gap[0], gap[-1]) if gap else ({}, {})
        lines.append(
            f"| {run['trainer'].upper()} | {reward_label(run['reward'], short=True)} | "
            f"{run['before']['accuracy']:.3f} | **{run['after']['accuracy']:.3f}** | "
            f"{c['difference_b_minus_a']:+.3f} [{lo:+.3f}, {hi:+.3f}] | {c['only_a']} / {c['only_b']} | "
            f"{c['mcnemar_p']:.2g} | {first.get('rm_score', math.nan):.3f} → {last.get('rm_score', math.nan):.3f} | "
            f"{first.get('true_accuracy', math.nan):.3f} → {last.get('true_accuracy', math.nan):.3f} | "
            f"{run['rm_score_held_out']['before']:.3f} → {run['rm_score_held_out']['after']:.3f} | "
            f"{run['train_seconds']:.0f} |")
    for run in summary["runs"]:
        evals = {p["step"]: p["accuracy"] for p in run["eval_curve"]}
        lines += ["", f"### {run['trainer'].upper()} on {reward_label(run['reward'])}: "
                  "RM score vs true accuracy of the same training batches", "",
                  "| step | RM score (sigmoid) | true accuracy | gap | held-out accuracy |", "|---|---|---|---|---|"]
        steps = sorted({p["step"] for p in run["gap_curve"]} | set(evals))
        by_step = {p["step"]: p for p in run["gap_curve"]}
        for s in steps:
            p = by_step.get(s)
            cells = (f"{p['rm_score']:.3f} | {p['true_accuracy']:.3f} | {p['gap']:+.3f}" if p else " | | ")
            lines.append(f"| {s} | {cells} | {evals[s]:.3f} |" if s in evals else f"| {s} | {cells} | |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    trainers = parse_trainers(args.trainers)
    try:
        return _run(args, trainers)
    except KeyboardInterrupt as exc:  # a signal during a run (TrainingInterrupted) or a Ctrl-C outside it
        raise interrupted_exit(exc, "posttrain_llm.online_rl_trainer.examples.train_rlhf", argv, can_resume=False) from None


def _run(args: argparse.Namespace, trainers: list[str]) -> dict[str, Any]:
    import torch

    start = time.perf_counter()
    torch.set_num_threads(args.threads)  # before the warm-up too, not only inside the trainers
    out = Path(args.output_dir or DEFAULT_OUTPUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    train_data, test_data = load_math_dataset("arithmetic", tiny=True, data_dir=None, num_train=args.num_samples,
                                              num_test=args.eval_samples, seed=args.seed)
    if not 0 < args.rm_eval_prompts < len(train_data):
        raise ConfigError(f"--rm-eval-prompts {args.rm_eval_prompts}; expected 1..{len(train_data) - 1} "
                          f"(of {len(train_data)} training prompts)")
    base = TrainerConfig.from_preset(PRESETS[trainers[0]], output_dir=str(out), seed=args.seed,
                                     torch_num_threads=args.threads)
    summary: dict[str, Any] = {"seed": args.seed, "threads": args.threads, "trainers": trainers,
                               "data": {"train_prompts": len(train_data), "test_problems": len(test_data)}}

    # 1. warm-up (the demo's)
    t = time.perf_counter()
    if args.warm_model:
        warm_dir = Path(args.warm_model)
        summary["warmup"] = {"reused": str(warm_dir)}
    else:
        warm_dir, summary["warmup"] = warm_up_tiny_model(base, train_data, MathRewardFunction(),
                                                         max_steps=args.warmup_steps)
    timings["warmup"] = time.perf_counter() - t

    # 2. preference pairs from the policy's own samples; held-out pairs from other prompts
    t = time.perf_counter()
    train_pairs, held_pairs, summary["pairs"] = build_pairs(str(warm_dir), train_data, base.max_completion_length,
                                                           out, args)
    timings["pairs"] = time.perf_counter() - t

    # 3. the reward model, from the warmed policy (and from the raw tiny model, for comparison)
    t = time.perf_counter()
    inits = [("warmed policy", str(warm_dir), out / "reward_model")]
    if not args.no_rm_baseline:
        inits.append(("raw tiny model", TINY_MODEL_NAME, out / "reward_model_from_raw"))
    summary["reward_models"] = [{"label": label, **train_rm(train_pairs, held_pairs, init, folder, args)}
                                for label, init, folder in inits]
    rm_dir = out / "reward_model"
    timings["reward_models"] = time.perf_counter() - t

    # 4. RL on the reward model alone, and on the exact reward (the control), per algorithm
    runs = []
    for trainer_type in trainers:
        for reward in REWARDS:
            t = time.perf_counter()
            runs.append(run_rl(trainer_type, reward, rm_dir, warm_dir, train_data, test_data, out, args))
            timings[f"{trainer_type}_{reward}"] = time.perf_counter() - t
    summary["runs"] = [{k: v for k, v in run.items() if k not in ("before", "after")} | {
        "before": {k: v for k, v in run["before"].items() if k != "records"},
        "after": {k: v for k, v in run["after"].items() if k != "records"}} for run in runs]
    timings["total"] = time.perf_counter() - start
    summary["seconds"] = timings
    summary["peak_rss_mib"] = peak_rss_mib()

    # 5. the report
    report = markdown_report(summary)
    (out / "rlhf_report.md").write_text(f"# Classic RLHF on a+b (tiny model, seed {args.seed})\n\n{report}")
    write_json_atomic(out / "rlhf_summary.json", summary)
    print()
    print(report)
    print(f"total {timings['total']:.0f} s (warm-up {timings['warmup']:.0f} s, pairs {timings['pairs']:.0f} s, "
          f"reward models {timings['reward_models']:.0f} s); peak RSS {summary['peak_rss_mib']:.0f} MiB")
    print(f"summary: {out / 'rlhf_summary.json'}\nreport:  {out / 'rlhf_report.md'}")
    return summary


if __name__ == "__main__":
    raise SystemExit(run_cli(main, sys.argv[1:]))
