"""Do dynamic sampling (and the other sampling features) buy accuracy per generated token and per minute?

Each run is ``train_math`` as a user starts it (fresh subprocess, own output folder) on the arithmetic task, from a
``--config`` YAML: the model's preset (``offline-demo`` for the tiny model, after its supervised warm-up;
``smollm2-cpu`` for SmolLM2-135M-Instruct) with ``logging_steps=1``, held-out evaluation every ``--eval-every``
steps, and each feature's fields on top. Features (``--features``): ``base`` (the preset), ``dyn``
(``dynamic_sampling=True``), ``cur`` (``curriculum=True``), ``dyn+cur``. Same seeds for every feature, so a seed's
runs share their warm-up and data. ``--num-samples`` shrinks the training set (the curriculum only matters once
prompts come back: a run must draw more prompts than the set holds).

Per run, from its ``training_metrics.json``: held-out accuracy (greedy, strict; ``--eval-samples`` problems) at each
evaluation step, against the completion+prompt tokens generated so far (``num_tokens``, which counts every rollout
drawn, refill rounds included) and the training wall time so far (the sum of ``step_time``, evaluation excluded).
Then, per target accuracy (``--targets``): the tokens, seconds and steps at the first evaluation at or above it,
and per feature the ratio to ``base`` of the same seed (< 1: the feature got there with less). A run that never
reached a target has no number there (shown ``-``), never a made-up one.

Not covered: other tasks and models; curves are as fine as ``--eval-every``.

Run:  python benchmarks/bench_sampling.py [--models tiny,smollm2] [--features base,dyn] [--seeds 0,1,2]
      [--threads 1] [--jobs 1] [--max-steps N] [--eval-every 4] [--eval-samples 200] [--targets 0.9,0.95]
      [--num-samples N]
      [--smoke] [--json outputs/benchmarks/bench_sampling.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _common  # benchmarks/ is on sys.path: this file's folder

from posttrain_llm.online_rl_trainer import TrainerConfig

DATA = "generated: the synthetic arithmetic task of train_math (--dataset arithmetic)"
SMOKE_FIELDS = ["runs", "ratios", "runs_table"]
MODELS = {"tiny": ("builtin:tiny-char-llama", "offline-demo"),
          "smollm2": ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-cpu")}
FEATURES = {"base": {}, "dyn": {"dynamic_sampling": True}, "cur": {"curriculum": True},
            "dyn+cur": {"dynamic_sampling": True, "curriculum": True}}
SMOKE_ARGS = ["--warmup-steps", "25"]


def run_one(model: str, feature: str, seed: int, args: argparse.Namespace, root: Path) -> dict:
    """One training run in a fresh process -> its row: the accuracy curve and where it crossed each target."""
    name, preset = MODELS[model]
    out = root / f"{model}-{feature}-seed{seed}"
    out.mkdir(parents=True)
    overrides = dict(logging_steps=1, eval_steps=args.eval_every, output_dir=str(out), seed=seed,
                     torch_num_threads=args.threads, **FEATURES[feature])
    if args.max_steps:
        overrides["max_steps"] = args.max_steps
    config = TrainerConfig.from_preset(preset, model_name_or_path=name, **overrides).save_yaml(out / "config.yaml")
    cmd = [sys.executable, "-m", "posttrain_llm.online_rl_trainer.examples.train_math", "--config", str(config),
           "--eval-samples", str(args.eval_samples), *(SMOKE_ARGS if args.smoke else []),
           *(["--num-samples", str(args.num_samples)] if args.num_samples else [])]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=_common.REPO_ROOT, env=_common.child_env(args.threads), capture_output=True,
                          text=True)
    row = {"model": model, "feature": feature, "seed": seed, "seconds": time.perf_counter() - start}
    metrics = out / "training_metrics.json"
    if proc.returncode != 0 or not metrics.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {**row, "error": f"exit {proc.returncode}: {tail[0]}"}
    return {**row, **curve(json.loads(metrics.read_text())["history"], args.targets)}


def curve(history: list[dict], targets: list[float]) -> dict:
    """Accuracy at each evaluation against tokens generated and training seconds so far; the first crossing of each
    target."""
    tokens, seconds, points = 0.0, 0.0, []
    by_step: dict[int, tuple[float, float]] = {0: (0.0, 0.0)}
    zero_share = []
    for row in sorted(history, key=lambda r: r.get("step", 0)):
        if "loss" in row and "step_time" in row:
            seconds += float(row["step_time"])
            tokens = float(row.get("num_tokens", tokens))
            by_step[int(row["step"])] = (tokens, seconds)
            if "frac_reward_zero_std" in row:
                zero_share.append(float(row.get("sampling/zero_variance_share", row["frac_reward_zero_std"])))
    for row in history:
        if "eval/accuracy" in row:
            step = int(row.get("step", 0))
            done = max((s for s in by_step if s <= step), default=0)
            points.append({"step": step, "tokens": by_step[done][0], "seconds": by_step[done][1],
                           "accuracy": float(row["eval/accuracy"])})
    points.sort(key=lambda p: p["step"])
    reached = {}
    for target in targets:
        first = next((p for p in points if p["accuracy"] >= target), None)
        reached[f"{target:g}"] = first
    return {"points": points, "reached": reached, "before": points[0]["accuracy"] if points else None,
            "after": points[-1]["accuracy"] if points else None, "tokens": tokens, "train_seconds": seconds,
            "zero_variance_share_mean": statistics.fmean(zero_share) if zero_share else None}


def ratios(rows: list[dict], targets: list[float]) -> dict:
    """Per model, feature and target: the median over seeds of (feature / base) tokens and seconds to the target,
    over the seeds where both reached it, and how many seeds each reached it."""
    out: dict = {}
    ok = [r for r in rows if "error" not in r]
    for model in dict.fromkeys(r["model"] for r in ok):
        base = {r["seed"]: r for r in ok if r["model"] == model and r["feature"] == "base"}
        for feature in dict.fromkeys(r["feature"] for r in ok if r["model"] == model):
            mine = [r for r in ok if r["model"] == model and r["feature"] == feature]
            for target in (f"{t:g}" for t in targets):
                pairs = [(r["reached"][target], base[r["seed"]]["reached"][target]) for r in mine
                         if r["seed"] in base and r["reached"][target] and base[r["seed"]]["reached"][target]]
                out[f"{model}/{feature}/{target}"] = {
                    "seeds_reached": sum(1 for r in mine if r["reached"][target]), "seeds": len(mine),
                    "tokens_ratio": statistics.median(a["tokens"] / b["tokens"] for a, b in pairs) if pairs else None,
                    "seconds_ratio": statistics.median(a["seconds"] / b["seconds"] for a, b in pairs) if pairs else None,
                    "steps_ratio": statistics.median(a["step"] / max(b["step"], 1) for a, b in pairs) if pairs else None,
                    "final_accuracy_mean": statistics.fmean(r["after"] for r in mine),
                }
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="tiny", help=f"comma-separated, of {list(MODELS)}")
    p.add_argument("--features", default="base,dyn", help=f"comma-separated, of {list(FEATURES)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (each --threads threads)")
    p.add_argument("--max-steps", type=int, default=None, help="RL steps (default: the preset's)")
    p.add_argument("--eval-every", type=int, default=4)
    p.add_argument("--num-samples", type=int, default=None, help="training prompts (default: train_math's)")
    p.add_argument("--eval-samples", type=int, default=200)
    p.add_argument("--targets", default="0.9,0.95", help="comma-separated held-out accuracies")
    args = _common.parse_args(p, argv, smoke={"seeds": "0", "features": "base,dyn+cur", "max_steps": 2, "eval_every": 1,
                                                  "eval_samples": 20})
    models, features = args.models.split(","), args.features.split(",")
    if set(models) - set(MODELS) or set(features) - set(FEATURES):
        raise SystemExit(f"--models {args.models} / --features {args.features}: accepted {list(MODELS)} / "
                         f"{list(FEATURES)}")
    args.targets = [float(t) for t in args.targets.split(",")]
    plan = [(m, f, int(s)) for m in models for s in args.seeds.split(",") for f in features]
    with tempfile.TemporaryDirectory(prefix="bench-sampling-") as root:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            rows = list(pool.map(lambda job: run_one(*job, args, Path(root)), plan))
    for r in rows:
        for t in args.targets:
            hit = (r.get("reached") or {}).get(f"{t:g}")
            r[f"tokens@{t:g}"] = hit["tokens"] if hit else None
            r[f"s@{t:g}"] = hit["seconds"] if hit else None
    columns = [("model", "model", ""), ("feature", "feature", ""), ("seed", "seed", ""), ("before", "before", ".3f"),
               ("after", "after", ".3f"), ("zero-var share", "zero_variance_share_mean", ".2f"),
               ("tokens", "tokens", ".3g"), ("train s", "train_seconds", ".0f")]
    for t in args.targets:
        columns += [(f"tokens to {t:g}", f"tokens@{t:g}", ".3g"), (f"s to {t:g}", f"s@{t:g}", ".0f")]
    _common.print_table(rows, columns + [("error", "error", "")])
    summary = ratios(rows, args.targets)
    for key, s in summary.items():
        tr, sr = s["tokens_ratio"], s["seconds_ratio"]
        print(f"{key}: reached by {s['seeds_reached']}/{s['seeds']} seeds; vs base: tokens x"
              f"{'-' if tr is None else f'{tr:.2f}'}, seconds x{'-' if sr is None else f'{sr:.2f}'}; "
              f"final accuracy {s['final_accuracy_mean']:.3f}")
    result = {"runs": rows, "ratios": summary, "targets": args.targets, "features": {f: FEATURES[f] for f in features},
              "num_samples": args.num_samples, "max_steps": args.max_steps,
              "runs_table": [[r["model"], r["feature"], r["seed"], r.get("before"), r.get("after")] for r in rows]}
    headline = {k: (f"tokens x{s['tokens_ratio']:.2f} vs base" if s["tokens_ratio"] is not None
                    else f"reached by {s['seeds_reached']}/{s['seeds']} seeds")
                for k, s in summary.items() if k.split("/")[1] != "base"}
    _common.write_result(args, __file__, result, DATA, headline)
    if any("error" in r for r in rows):
        raise SystemExit(f"{sum('error' in r for r in rows)} run(s) failed: "
                         + "; ".join(f"{r['model']} {r['feature']} seed {r['seed']}: {r['error']}"
                                     for r in rows if "error" in r))
    return result


if __name__ == "__main__":
    main()
