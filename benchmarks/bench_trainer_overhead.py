"""Overhead of `OnlineRLTrainer` over raw TRL: seconds per step, completion tokens/s and peak RSS, GRPO and RLOO.

Both sides get the same model folder (loaded the same way: ``AutoTokenizer`` + fp32 ``AutoModelForCausalLM``), the
same dataset rows (``SyntheticArithmeticLoader``), the same plain reward function and the same TRL config: the raw
side's ``GRPOConfig``/``RLOOConfig`` is built from our ``TrainerConfig`` by ``core.trl_arguments.to_trl_args``, so any
difference in the numbers is what our layer adds (``GuardedReward`` around the reward, the metrics-history
callback, the up-front dataset/prompt-length checks; the final metrics JSON and PNG are written after the last
step and show up only in ``outside s``, the part of ``train()`` outside the timed steps).

Method: every run is a fresh ``python`` subprocess (imports and caches favour neither side) with ``--threads``
torch threads and a fixed seed. Runs are interleaved ABBA (ours, raw, raw, ours, ...) per algorithm, so slow
drift from other work on the machine hits both sides alike. A step's time is the wall time between consecutive
``on_step_end`` callbacks (generation, reward, loss, optimizer, logging and every callback included); the first
step (warm-up) is dropped. The same intervals are also taken in process CPU time (``time.process_time``): with
one torch thread it counts the work done and is less sensitive than wall time to other processes on the machine
(not immune: they still share caches and memory bandwidth). Per run: the median step
time and completion tokens / measured time; per side: the median over runs; the ratio is ours / raw of those
medians (the per-repeat paired ratios are in the JSON). Peak RSS is ``ru_maxrss`` of the child (the whole
process, reference model included when ``--kl-coef`` > 0). With 1 thread and a fixed seed both sides generate
the very same completions; ``same work`` checks it (per-step mean completion length and reward identical).
Finally what our layer adds is timed in isolation (reward guard, history callback, once-per-run costs).

Data: generated ``SyntheticArithmeticLoader`` prompts (no dataset files needed).
Not covered: GPUs/vLLM, multi-process, PPO (``bench_ppo_vs_grpo.py``).

Run:  python benchmarks/bench_trainer_overhead.py
      [--model builtin:tiny-char-llama | HuggingFaceTB/SmolLM2-135M-Instruct] [--algorithms grpo,rloo]
      [--repeats 3] [--steps N] [--threads 1] [--grad-accum 1] [--gradient-checkpointing] [--bf16] [--smoke]
      [--json outputs/benchmarks/bench_trainer_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # benchmarks/ is on sys.path: this file's folder

SMOLLM2 = _common.SMOLLM2
SIDES = ("ours", "raw")
SMOKE_FIELDS = ["settings", "summary.grpo_step_time_ratio", "summary.rloo_step_time_ratio",
                "per_algorithm.grpo.ours.step_s", "per_algorithm.grpo.raw.step_s", "per_algorithm.grpo.same_work",
                "added_costs.added_per_step_us"]

MODEL_DEFAULTS = {  # per model: prompts per step, G, max_completion_length, steps, prompt style
    "builtin:tiny-char-llama": dict(prompts=8, num_generations=8, max_completion_length=16, steps=12,
                                    prompt_style="bare"),
    SMOLLM2: dict(prompts=4, num_generations=4, max_completion_length=32, steps=4, prompt_style="chat"),
}


# ----------------------------------------------------------------------------------------------------------
# Child side: one training run, ours or raw.
# ----------------------------------------------------------------------------------------------------------
def exact_answer_reward(completions, answer, **kwargs):
    """1.0 when the last integer in the completion equals the row's ``answer``, else 0.0 (plain, cheap, pure)."""
    scores = []
    for completion, gold in zip(completions, answer):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        numbers = re.findall(r"-?\d+", text)
        scores.append(1.0 if numbers and numbers[-1] == str(gold) else 0.0)
    return scores


def build_config(spec: dict, output_dir: str):
    from posttrain_llm.online_rl_trainer.core.config import TrainerConfig

    # One generation batch (prompts x G completions) per optimizer step, trained in grad_accum micro-batches.
    batch = spec["prompts"] * spec["num_generations"] // spec["grad_accum"]
    return TrainerConfig(
        trainer_type=spec["algorithm"], model_name_or_path=spec["model_path"], output_dir=output_dir,
        num_generations=spec["num_generations"], per_device_train_batch_size=batch, max_steps=spec["steps"],
        gradient_accumulation_steps=spec["grad_accum"],
        max_completion_length=spec["max_completion_length"], kl_coef=spec["kl_coef"], learning_rate=1e-5,
        seed=spec["seed"], torch_num_threads=spec["threads"], logging_steps=1, save_steps=10_000,
        report_to=["none"], gradient_checkpointing=spec["gradient_checkpointing"], bf16=spec["bf16"],
    )


def run_child(spec: dict) -> dict:
    """Train once (``spec['side']`` is ours or raw) and return timings, logged lengths/rewards and peak RSS."""
    import resource

    import torch
    from transformers import set_seed

    from posttrain_llm.online_rl_trainer.core.data.synthetic import SyntheticArithmeticLoader

    torch.set_num_threads(spec["threads"])
    set_seed(spec["seed"])
    rows = spec["prompts"] * spec["steps"]
    loader = SyntheticArithmeticLoader(prompt_style=spec["prompt_style"], num_train=max(700, rows))
    dataset = loader.load("train", num_samples=rows, seed=spec["seed"])
    timer = _common.step_timer()
    with tempfile.TemporaryDirectory(prefix=f"bench-{spec['side']}-") as out_dir:
        config = build_config(spec, out_dir)
        t0 = time.perf_counter()
        if spec["side"] == "ours":
            from posttrain_llm.online_rl_trainer.core.trainer import OnlineRLTrainer

            trainer = OnlineRLTrainer(config, exact_answer_reward, dataset, callbacks=[timer])
        else:
            trainer = build_raw_trl(config, dataset, timer)
        setup_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t1
    step_times, cpu_step_times = timer.wall(), timer.cpu()
    logs = [{"step": log["step"], "mean_length": float(log["completions/mean_length"]),
             "reward": float(log.get("reward", float("nan")))} for log in timer.logs if "completions/mean_length" in log]
    return {
        "side": spec["side"], "algorithm": spec["algorithm"], "repeat": spec["repeat"],
        "setup_s": setup_s, "train_s": train_s, "step_times": step_times, "cpu_step_times": cpu_step_times,
        "logs": logs, "completions_per_step": spec["prompts"] * spec["num_generations"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB -> MiB
    }


def measure_added_costs(spec: dict) -> dict:
    """Time, in isolation, what our layer adds: per step (reward guard + history callback) and once per run.

    Contention-robust complement to the interleaved runs: each piece is timed over many calls (median of 11
    alternating rounds) on inputs shaped like one step of the benchmark (same rows, same completion form).
    """
    from posttrain_llm.online_rl_trainer.core.data.synthetic import SyntheticArithmeticLoader
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer
    from posttrain_llm.online_rl_trainer.core.rewards.base import GuardedReward
    from posttrain_llm.online_rl_trainer.core.trainer import check_prompt_lengths
    from posttrain_llm.online_rl_trainer.core.training.callbacks import MetricsHistoryCallback
    from posttrain_llm.online_rl_trainer.core.training.curves import plot_training_curves, write_metrics_json

    n = spec["prompts"] * spec["num_generations"]
    rows = spec["prompts"] * spec["steps"]
    dataset = SyntheticArithmeticLoader(prompt_style=spec["prompt_style"], num_train=max(700, rows)).load(
        "train", num_samples=rows, seed=spec["seed"])
    batch = [dataset[i % len(dataset)] for i in range(n)]  # plain lists per column, as TRL passes them
    text = "x" * spec["max_completion_length"] + " 42"
    completions = [[{"role": "assistant", "content": text}] if spec["prompt_style"] == "chat" else text] * n
    columns = {k: [row[k] for row in batch] for k in dataset.column_names if k != "prompt"}
    kwargs = dict(prompts=[row["prompt"] for row in batch], completion_ids=[[0] * 8] * n, trainer_state=None,
                  log_metric=lambda key, value: None, **columns)
    guarded = GuardedReward(exact_answer_reward)
    logs = {f"metric_{i}": 0.5 for i in range(30)}

    history, state = MetricsHistoryCallback(), type("State", (), {"global_step": 1})

    def callback_step():
        history.on_step_begin(None, state, None)
        history.on_step_end(None, state, None)
        history.on_log(None, state, None, logs=dict(logs))

    plain_us, guarded_us, callback_us = _median_us(
        [lambda: exact_answer_reward(completions=completions, **kwargs), lambda: guarded(completions, **kwargs),
         callback_step], number=500)
    per_call = {"reward_plain_us": plain_us, "reward_guarded_us": guarded_us, "history_callback_us": callback_us,
                "added_per_step_us": guarded_us - plain_us + callback_us}
    _, tokenizer = load_model_and_tokenizer(spec["model_path"])
    fake_history = [{"step": i, "reward": 0.1 * i, "loss": 0.0, **logs} for i in range(1, spec["steps"] + 1)]
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        check_prompt_lengths(dataset, tokenizer, None)
        t1 = time.perf_counter()
        write_metrics_json(fake_history, Path(out) / "m.json")
        plot_training_curves(fake_history, Path(out) / "r.png")  # first call: includes importing matplotlib
        t2 = time.perf_counter()
    per_call["prompt_length_check_s"] = t1 - t0
    per_call["metrics_json_and_plot_s"] = t2 - t1
    return per_call


def _median_us(fns: list, number: int, rounds: int = 11) -> list[float]:
    """Median microseconds per call of each function; rounds alternate between them so drift hits all alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, sink in zip(fns, times):
            t = time.perf_counter()
            for _ in range(number):
                fn()
            sink.append((time.perf_counter() - t) / number * 1e6)
    return [statistics.median(t) for t in times]


def build_raw_trl(config, dataset, timer):
    """TRL's own trainer, as a TRL user would write it: same folder, same args (from ``to_trl_args``), same reward."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain_llm.online_rl_trainer.core.trl_arguments import to_trl_args

    tokenizer = AutoTokenizer.from_pretrained(config.model_name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(config.model_name_or_path, dtype=torch.float32)
    args = to_trl_args(config, [1.0])
    if config.trainer_type == "grpo":
        from trl import GRPOTrainer as cls
    else:
        from trl import RLOOTrainer as cls
    return cls(model=model, reward_funcs=[exact_answer_reward], args=args, train_dataset=dataset,
               processing_class=tokenizer, callbacks=[timer])


# ----------------------------------------------------------------------------------------------------------
# Parent side: schedule, aggregate, report.
# ----------------------------------------------------------------------------------------------------------
def launch(spec: dict, timeout: float) -> dict:
    """Run one child process; return its result dict, or raise with the tail of its output."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = f.name
    try:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec), "--child-out", result_path]
        env = dict(_common.child_env(spec["threads"]), PYTHONHASHSEED="0")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-3000:]
            what = f"{spec['side']}/{spec['algorithm']} run {spec['repeat']}"
            raise RuntimeError(f"{what} exited {proc.returncode}:\n{tail}")
        return json.loads(Path(result_path).read_text())
    finally:
        Path(result_path).unlink(missing_ok=True)


def run_metrics(run: dict) -> dict:
    """Median step time (warm-up step dropped) and completion tokens/s over the measured steps."""
    measured = run["step_times"][1:]
    if not measured:
        raise ValueError("need at least 2 steps to drop the warm-up step; raise --steps")
    lengths = {log["step"]: log["mean_length"] for log in run["logs"]}
    steps = range(2, len(run["step_times"]) + 1)
    tokens = sum(lengths.get(step, float("nan")) * run["completions_per_step"] for step in steps)
    return {"step_s": statistics.median(measured), "cpu_step_s": statistics.median(run["cpu_step_times"][1:]),
            "tokens_per_s": tokens / sum(measured), "outside_steps_s": run["train_s"] - sum(run["step_times"]),
            "peak_rss_mb": run["peak_rss_mb"], "setup_s": run["setup_s"], "train_s": run["train_s"]}


def summarize(runs: list[dict], algorithms: list[str]) -> dict:
    """Per algorithm and side: medians over runs; ours/raw ratios; whether both sides did identical work."""
    summary: dict = {}
    for algo in algorithms:
        entry: dict = {}
        for side in SIDES:
            per_run = [run_metrics(r) for r in runs if r["algorithm"] == algo and r["side"] == side]
            entry[side] = {k: statistics.median(m[k] for m in per_run) for k in per_run[0]}
            entry[side]["peak_rss_mb"] = max(m["peak_rss_mb"] for m in per_run)
            entry[side]["step_s_runs"] = [round(m["step_s"], 4) for m in per_run]
        entry["step_time_ratio"] = entry["ours"]["step_s"] / entry["raw"]["step_s"]
        entry["cpu_step_time_ratio"] = entry["ours"]["cpu_step_s"] / entry["raw"]["cpu_step_s"]
        entry["tokens_per_s_ratio"] = entry["ours"]["tokens_per_s"] / entry["raw"]["tokens_per_s"]
        paired, same = [], []
        repeats = sorted({r["repeat"] for r in runs if r["algorithm"] == algo})
        for rep in repeats:
            pair = {r["side"]: r for r in runs if r["algorithm"] == algo and r["repeat"] == rep}
            if len(pair) == 2:
                paired.append(run_metrics(pair["ours"])["step_s"] / run_metrics(pair["raw"])["step_s"])
                same.append(pair["ours"]["logs"] == pair["raw"]["logs"])
        entry["paired_step_time_ratios"] = [round(x, 4) for x in paired]
        entry["same_work"] = all(same) if same else None
        summary[algo] = entry
    return summary


def print_table(summary: dict, header: str) -> None:
    print(header)
    print(f"{'algo':<6}{'side':<6}{'s/step':>9}{'CPU s/step':>11}{'tok/s':>9}{'peakRSS MiB':>13}{'setup s':>9}"
          f"{'outside s':>11}  runs s/step")
    for algo, entry in summary.items():
        for side in SIDES:
            m = entry[side]
            print(f"{algo:<6}{side:<6}{m['step_s']:>9.4f}{m['cpu_step_s']:>11.4f}{m['tokens_per_s']:>9.1f}"
                  f"{m['peak_rss_mb']:>13.0f}{m['setup_s']:>9.2f}{m['outside_steps_s']:>11.2f}  {m['step_s_runs']}")
        print(f"{algo:<6}ours/raw: step time {entry['step_time_ratio']:.3f}, CPU time "
              f"{entry['cpu_step_time_ratio']:.3f}, tokens/s {entry['tokens_per_s_ratio']:.3f}, paired "
              f"{entry['paired_step_time_ratios']}, same work: {entry['same_work']}")


def headline(summary: dict) -> dict:
    """Flat ``{grpo_step_time_ratio: ..., grpo_peak_rss_mb_ours: ...}`` for run_all's combined table."""
    keys = ("step_time_ratio", "cpu_step_time_ratio", "tokens_per_s_ratio", "added_per_step_fraction")
    flat = {f"{a}_{k}": round(entry[k], 6) for a, entry in summary.items() for k in keys}
    flat.update({f"{a}_peak_rss_mb_{s}": round(entry[s]["peak_rss_mb"]) for a, entry in summary.items() for s in SIDES})
    return flat


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin:tiny-char-llama")
    p.add_argument("--algorithms", default="grpo,rloo", help="comma-separated: grpo, rloo")
    p.add_argument("--repeats", type=int, default=3, help="runs per side and algorithm")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (first one is warm-up)")
    p.add_argument("--prompts", type=int, default=None, help="prompts per step")
    p.add_argument("--num-generations", type=int, default=None)
    p.add_argument("--max-completion-length", type=int, default=None)
    p.add_argument("--gradient-checkpointing", action="store_true", help="both sides (lowers peak RSS)")
    p.add_argument("--bf16", action="store_true", help="both sides (needs a CPU with bf16)")
    p.add_argument("--kl-coef", type=float, default=0.0, help="0 = no reference model (the demo recipe)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--grad-accum", type=int, default=1,
                   help="split each step's prompts x G completions into this many micro-batches (lowers peak RSS)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1800, help="seconds per child run")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    smoke = {"repeats": 1, "steps": 2, "prompts": 2, "num_generations": 2, "max_completion_length": 8}
    args = _common.parse_args(p, argv, smoke)
    if args.child is None:
        algorithms, args.algorithms = args.algorithms, [a.strip() for a in args.algorithms.split(",") if a.strip()]
        if not args.algorithms or set(args.algorithms) - {"grpo", "rloo"}:
            p.error(f"--algorithms {algorithms!r}: accepted values are grpo and rloo")
        if args.repeats < 1:
            p.error(f"--repeats {args.repeats}: need at least 1")
        defaults = MODEL_DEFAULTS.get(args.model, MODEL_DEFAULTS[SMOLLM2])
        for key in ("prompts", "num_generations", "max_completion_length", "steps"):
            if getattr(args, key) is None:
                setattr(args, key, defaults[key])
        if args.grad_accum < 1 or args.prompts % args.grad_accum:
            p.error(f"--grad-accum {args.grad_accum}: must be >= 1 and divide --prompts {args.prompts} (micro-batches "
                    "hold whole groups of completions)")
        if args.steps < 2:
            p.error(f"--steps {args.steps}: need at least 2 (the first step is dropped as warm-up)")
        args.prompt_style = defaults["prompt_style"]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if _common.serve_child(args, lambda spec: measure_added_costs(spec) if spec["side"] == "attribution"
                           else run_child(spec)):
        return 0
    os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    from posttrain_llm.online_rl_trainer.core.models import resolve_model

    model_path = resolve_model(args.model)  # once, so both sides load the very same folder
    base = dict(model_path=model_path, prompts=args.prompts, num_generations=args.num_generations,
                max_completion_length=args.max_completion_length, steps=args.steps, kl_coef=args.kl_coef,
                threads=args.threads, seed=args.seed, prompt_style=args.prompt_style, grad_accum=args.grad_accum,
                gradient_checkpointing=args.gradient_checkpointing, bf16=args.bf16)
    shown = {k: v for k, v in base.items() if k != "model_path"}
    print(f"model {args.model} -> {model_path}\nsettings: {json.dumps(shown)}", flush=True)
    runs: list[dict] = []
    started = time.perf_counter()
    for rep in range(args.repeats):
        for algo in args.algorithms:
            order = SIDES if rep % 2 == 0 else SIDES[::-1]  # ABBA: drift hits both sides alike
            for side in order:
                run = launch({**base, "algorithm": algo, "side": side, "repeat": rep}, args.timeout)
                m = run_metrics(run)
                print(f"  repeat {rep} {algo:<4} {side:<4} step {m['step_s']:.4f} s (CPU {m['cpu_step_s']:.4f} s)  "
                      f"{m['tokens_per_s']:.1f} tok/s  RSS {m['peak_rss_mb']:.0f} MiB", flush=True)
                runs.append(run)
    summary = summarize(runs, args.algorithms)
    added = launch({**base, "algorithm": "-", "side": "attribution", "repeat": -1}, args.timeout)
    for algo in args.algorithms:
        summary[algo]["added_per_step_fraction"] = added["added_per_step_us"] / 1e6 / summary[algo]["raw"]["step_s"]
    load = os.getloadavg()
    header = (f"\n{args.model}: {args.prompts} prompts x G={args.num_generations}, max_completion_length "
              f"{args.max_completion_length}, {args.steps} steps (first dropped), {args.threads} thread(s), "
              f"grad_accum {args.grad_accum}, gradient checkpointing {args.gradient_checkpointing}, bf16 {args.bf16}, "
              f"{args.repeats} repeats, load avg {load[0]:.2f}")
    print_table(summary, header)
    print_added(added, summary)
    result = {
        "model": args.model, "model_path": model_path, "settings": {**base, "repeats": args.repeats},
        "wall_s": time.perf_counter() - started, "summary": headline(summary),
        "added_costs": added, "per_algorithm": summary, "runs": runs,
    }
    short = {f"{a}_{k}": round(summary[a][k], 3) for a in args.algorithms for k in ("step_time_ratio", "cpu_step_time_ratio")}
    short.update({f"{a}_same_work": summary[a]["same_work"] for a in args.algorithms})
    data = f"generated: SyntheticArithmeticLoader a+b prompts ({args.prompt_style})"
    _common.write_result(args, __file__, result, data, short)
    return 0


def print_added(added: dict, summary: dict) -> None:
    print(f"timed in isolation: reward guard {added['reward_guarded_us'] - added['reward_plain_us']:.0f} us + history "
          f"callback {added['history_callback_us']:.0f} us = {added['added_per_step_us']:.0f} us per step ("
          + ", ".join(f"{a} {100 * entry['added_per_step_fraction']:.3f}%" for a, entry in summary.items())
          + f" of raw s/step); once per run: prompt-length check {added['prompt_length_check_s']:.2f} s, "
          f"metrics JSON + PNG {added['metrics_json_and_plot_s']:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
