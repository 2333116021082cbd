"""The cost of a learned reward model as the reward: a GRPO step with ``RewardModelFunction`` vs the exact
``MathRewardFunction`` (tiny model), and the reward model's scoring speed on SmolLM2-135M per batch size and threads.

Part 1, the step (``--variants exact,rm``): the same policy (the built-in tiny model), prompts (``a+b=``), seed and
shape (``--prompts`` x ``--generations`` completions of exactly ``--length`` tokens: EOS is suppressed, so both sides
generate the same tokens) through ``OnlineRLTrainer``; only the reward differs. The reward model is a tiny one
trained here for a few steps on synthetic pairs (its quality does not change its cost) and applied with
``normalize="sigmoid"``, as ``examples/train_rlhf.py`` does. Every run is a fresh subprocess with ``--threads``
torch threads; runs are interleaved (order reversed on odd repeats). Per run: the median wall and process-CPU time
between consecutive ``on_step_end`` callbacks with the first step dropped, the median ``timing/reward`` the trainer
logs (seconds inside the reward functions per step), and the child's peak RSS (``ru_maxrss``). Per variant: the
median over runs; ratios rm / exact.

Part 2, scoring (``--score-model``, default SmolLM2-135M-Instruct as a one-output sequence classifier; the score
head is new and random, which does not change the cost): ``--score-sequences`` chat sequences of ~``--score-tokens``
tokens scored with ``score_token_ids`` at each of ``--score-batch-sizes`` and ``--score-threads``, interleaved,
median of ``--score-repeats``; reported as seconds per sequence. One process (threads are switched with
``torch.set_num_threads``), after one warm-up pass.

Not covered: GPUs, PPO (its reward call is the same function), bf16 reward models.

Run:  python benchmarks/bench_reward_model.py [--repeats 3] [--steps 4] [--skip-scoring] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # benchmarks/ is on sys.path: this file's folder

REPO_ROOT = _common.REPO_ROOT
DATA = "generated: synthetic a+b prompts and preference pairs"
SMOKE_FIELDS = ["step.exact.median_step_s", "step.rm.median_step_s", "step.rm.ratio_vs_exact",
                "step.rm.cpu_ratio_vs_exact", "step.rm.peak_rss_mib", "step.rm.median_reward_s", "same_tokens",
                "scoring.per_sequence_s"]
VARIANTS = ("exact", "rm")


# ----------------------------------------------------------------------------------------------- child side
def run_step_child(spec: dict) -> dict:
    """One GRPO run with the ``spec['variant']`` reward; step intervals, logged reward time and lengths, peak RSS."""
    import resource

    import torch

    from posttrain_llm.online_rl_trainer import MathRewardFunction, OnlineRLTrainer, TrainerConfig
    from posttrain_llm.online_rl_trainer.core.common.tokens import eos_token_ids
    from posttrain_llm.online_rl_trainer.core.data.synthetic import SyntheticArithmeticLoader
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer
    from posttrain_llm.online_rl_trainer.core.models.reward_model import RewardModelFunction

    torch.set_num_threads(spec["threads"])

    model, tokenizer = load_model_and_tokenizer(_common.TINY_MODEL)
    rows = SyntheticArithmeticLoader(prompt_style="bare").load("train", num_samples=64, seed=0)
    reward = (RewardModelFunction(spec["rm_dir"], normalize="sigmoid", name="reward_model")
              if spec["variant"] == "rm" else MathRewardFunction())
    timer = _common.step_timer()
    with tempfile.TemporaryDirectory(prefix=f"bench-rm-{spec['variant']}-") as out:
        config = TrainerConfig.from_preset(
            "offline-demo", output_dir=out, num_generations=spec["generations"],
            per_device_train_batch_size=spec["prompts"] * spec["generations"], max_steps=spec["steps"],
            max_completion_length=spec["length"], seed=0, torch_num_threads=spec["threads"], logging_steps=1,
            report_to=["none"], trl_kwargs={"generation_kwargs": {"suppress_tokens": eos_token_ids(tokenizer, model)}})
        OnlineRLTrainer(config, reward, rows, model=model, tokenizer=tokenizer, callbacks=[timer]).train()
    logs = [{"reward_s": float(log["timing/reward"]), "mean_length": float(log["completions/mean_length"])}
            for log in timer.logs if "timing/reward" in log]
    return {"variant": spec["variant"], "repeat": spec["repeat"], "step_times": timer.wall(),
            "cpu_step_times": timer.cpu(), "logs": logs,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_score_child(spec: dict) -> dict:
    """Seconds per sequence of reward-model scoring, per (threads, batch size), interleaved over repeats."""
    import torch

    from posttrain_llm.online_rl_trainer.core.data.synthetic import SyntheticArithmeticLoader
    from posttrain_llm.online_rl_trainer.core.models.reward_model import (
        encode_for_reward_model,
        load_sequence_classifier,
        score_token_ids,
        wants_chat_template,
    )

    model, tokenizer = load_sequence_classifier(spec["model"], require_trained_head=False)
    chat = wants_chat_template(tokenizer, None)
    rows = SyntheticArithmeticLoader(prompt_style="chat").load("train", num_samples=spec["sequences"], seed=0)
    sequences = []
    for row in rows:  # a worked answer, repeated until the sequence has ``tokens`` tokens (oldest cut)
        line = f"{row['a']} {row['operator']} {row['b']} = {row['answer']}. The answer is \\boxed{{{row['answer']}}}. "
        answer = line
        while len(encode_for_reward_model(tokenizer, row["prompt"], answer, 10**6, chat)[0]) < spec["tokens"]:
            answer += line
        sequences.append(encode_for_reward_model(tokenizer, row["prompt"], answer, spec["tokens"], chat)[0])
    torch.set_num_threads(spec["threads"][0])
    score_token_ids(model, sequences[:2], tokenizer.pad_token_id, 2)  # warm-up pass
    times: dict[str, list[float]] = {}
    for repeat in range(spec["repeats"]):
        grid = [(t, b) for t in spec["threads"] for b in spec["batch_sizes"]]
        for threads, batch in (grid if repeat % 2 == 0 else grid[::-1]):
            torch.set_num_threads(threads)
            start = time.perf_counter()
            score_token_ids(model, sequences, tokenizer.pad_token_id, batch)
            times.setdefault(f"t{threads}_b{batch}", []).append((time.perf_counter() - start) / len(sequences))
    return {"per_sequence_s": {k: statistics.median(v) for k, v in times.items()}, "runs": times,
            "mean_tokens": statistics.mean(len(s) for s in sequences), "sequences": len(sequences),
            "parameters": sum(p.numel() for p in model.parameters())}


# ---------------------------------------------------------------------------------------------- parent side
def run_subprocess(args: argparse.Namespace, kind: str, spec: dict, threads: int | None) -> dict:
    proc = subprocess.run([sys.executable, __file__, f"--child-{kind}", json.dumps(spec)], cwd=REPO_ROOT,
                          env=_common.child_env(threads), capture_output=True, text=True)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not marker:
        raise RuntimeError(f"{kind} run {spec} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads(marker[-1][len("RESULT "):])


def train_tiny_reward_model(folder: Path, steps: int) -> str:
    from posttrain_llm.online_rl_trainer.core.data.preference_pairs import arithmetic_preference_pairs
    from posttrain_llm.online_rl_trainer.core.training.reward_model import train_reward_model

    pairs = arithmetic_preference_pairs(64, seed=0)
    train_reward_model(pairs, model=_common.TINY_MODEL, output_dir=str(folder), max_steps=steps, batch_size=8)
    return str(folder)


def summarise_steps(runs: list[dict], length: int) -> dict:
    out: dict[str, dict] = {}
    for v in VARIANTS:
        mine = [r for r in runs if r["variant"] == v]
        out[v] = {"median_step_s": statistics.median(statistics.median(r["step_times"][1:]) for r in mine),
                  "median_step_cpu_s": statistics.median(statistics.median(r["cpu_step_times"][1:]) for r in mine),
                  "median_reward_s": statistics.median(statistics.median(x["reward_s"] for x in r["logs"][1:])
                                                       for r in mine),
                  "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in mine),
                  "all_full_length": all(x["mean_length"] == length for r in mine for x in r["logs"])}
    for row in out.values():
        row["ratio_vs_exact"] = row["median_step_s"] / out["exact"]["median_step_s"]
        row["cpu_ratio_vs_exact"] = row["median_step_cpu_s"] / out["exact"]["median_step_cpu_s"]
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child-step", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-score", default=None, help=argparse.SUPPRESS)
    # The GRPO step
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=4, help="steps per run (the first is dropped as warm-up)")
    p.add_argument("--prompts", type=int, default=16, help="prompts per step (offline-demo: 16)")
    p.add_argument("--generations", type=int, default=16, help="completions per prompt (offline-demo: 16)")
    p.add_argument("--length", type=int, default=12, help="completion tokens, every completion (offline-demo: 12)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rm-steps", type=int, default=20, help="training steps of the tiny reward model")
    # Scoring
    p.add_argument("--skip-scoring", action="store_true")
    p.add_argument("--score-model", default=_common.SMOLLM2)
    p.add_argument("--score-sequences", type=int, default=64)
    p.add_argument("--score-tokens", type=int, default=119)
    p.add_argument("--score-batch-sizes", default="1,16,64")
    p.add_argument("--score-threads", default="1,2")
    p.add_argument("--score-repeats", type=int, default=1, help="passes over the grid (SmolLM2: ~3 min each on 2 cores)")
    smoke = {"repeats": 1, "steps": 2, "prompts": 2, "generations": 2, "length": 4, "rm_steps": 1,
             "score_model": _common.TINY_MODEL, "score_sequences": 4, "score_tokens": 40, "score_batch_sizes": "1,4",
             "score_threads": "1"}
    args = _common.parse_args(p, argv, smoke)
    if args.steps < 2 or args.repeats < 1:
        p.error(f"--steps {args.steps} --repeats {args.repeats}: need steps >= 2 (one is dropped) and repeats >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    for kind, fn in (("step", run_step_child), ("score", run_score_child)):
        spec = getattr(args, f"child_{kind}")
        if spec is not None:
            print("RESULT " + json.dumps(fn(json.loads(spec))), flush=True)
            return 0
    shape = {"prompts": args.prompts, "generations": args.generations, "length": args.length, "steps": args.steps}
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-rm-") as scratch:
        rm_dir = train_tiny_reward_model(Path(scratch) / "rm", args.rm_steps)
        for repeat in range(args.repeats):
            for v in (VARIANTS if repeat % 2 == 0 else VARIANTS[::-1]):
                spec = {"variant": v, "repeat": repeat, "threads": args.threads, "rm_dir": rm_dir, **shape}
                runs.append(run_subprocess(args, "step", spec, args.threads))
                print(f"repeat {repeat} {v:<6} median step {statistics.median(runs[-1]['step_times'][1:]):.3f} s, "
                      f"peak RSS {runs[-1]['peak_rss_mib']:.0f} MiB", flush=True)
    step = summarise_steps(runs, args.length)
    print(f"\nGRPO step, tiny model: {args.prompts} prompts x {args.generations} completions of {args.length} tokens, "
          f"{args.steps} steps (first dropped), {args.threads} thread(s), median of {args.repeats}")
    _common.print_table([{"variant": v, **row} for v, row in step.items()],
                        [("reward", "variant", ""), ("s/step", "median_step_s", ".3f"),
                         ("CPU s/step", "median_step_cpu_s", ".3f"), ("reward s/step", "median_reward_s", ".4f"),
                         ("× exact", "ratio_vs_exact", ".2f"), ("CPU × exact", "cpu_ratio_vs_exact", ".2f"),
                         ("peak RSS MiB", "peak_rss_mib", ".0f")])
    scoring = None
    if not args.skip_scoring:
        spec = {"model": args.score_model, "sequences": args.score_sequences, "tokens": args.score_tokens,
                "batch_sizes": [int(b) for b in args.score_batch_sizes.split(",")],
                "threads": [int(t) for t in args.score_threads.split(",")], "repeats": args.score_repeats}
        scoring = {"model": args.score_model, **run_subprocess(args, "score", spec, None)}
        print(f"\nreward-model scoring, {args.score_model} ({scoring['parameters'] / 1e6:.0f}M parameters), "
              f"{scoring['sequences']} sequences of {scoring['mean_tokens']:.0f} tokens, median of {args.score_repeats}")
        _common.print_table([{"setting": k, "s": v} for k, v in scoring["per_sequence_s"].items()],
                            [("threads, batch", "setting", ""), ("s/sequence", "s", ".4f")])
    same_tokens = all(row["all_full_length"] for row in step.values())
    result = {"shape": shape, "threads": args.threads, "repeats": args.repeats, "same_tokens": same_tokens,
              "step": step, "scoring": scoring or {"per_sequence_s": {}}, "runs": runs}
    headline = {"rm_step_ratio_vs_exact": step["rm"]["ratio_vs_exact"],
                "rm_step_cpu_ratio_vs_exact": step["rm"]["cpu_ratio_vs_exact"], "same_tokens": same_tokens}
    _common.write_result(args, __file__, result, DATA, headline)
    return _common.exit_status_same_tokens(same_tokens)


if __name__ == "__main__":
    sys.exit(main())
