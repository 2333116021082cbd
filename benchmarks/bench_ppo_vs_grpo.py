"""PPO step time against GRPO step time through `OnlineRLTrainer`, at the same number of generated tokens.

Both algorithms get the same model folder, the same prompts (``a+b=`` chat prompts), the same number of prompts
and of completions per step (``--prompts`` x ``--generations``), the same ``max_completion_length``, the same
``kl_coef`` (so both run a reference model) and the same plain reward. EOS is suppressed during generation on
both sides (TRL: ``generation_kwargs={"suppress_tokens": eos}``; PPO: the same field of its generation config),
so every completion is exactly ``max_completion_length`` tokens and the generated token count per step is
identical by construction; ``same_tokens`` in the JSON checks it from the logged mean lengths.

Variants (``--variants``): ``grpo`` (TRL, ``num_iterations=1``: one gradient step per generation batch);
``ppo`` (our defaults: ``ppo_epochs=1`` -- one update per rollout, like GRPO's and verl's --, one minibatch,
separate critic); ``ppo_4epochs`` (``ppo_epochs=4``, our default before issue 12 and TRL's legacy PPO's);
``ppo_shared`` (the defaults with the value head on the policy: no second model); ``grpo_noshare`` /
``ppo_noshare`` (``share_prompt_prefix=False``: every row's prompt computed with it, as before issue 12's last
change).
PPO does more work per generated token by design (old log-probs and values at rollout, a critic forward/backward,
``ppo_epochs`` passes); the table shows how much that costs next to generation.

Method: every run is a fresh ``python`` subprocess with ``--threads`` torch threads and a fixed seed; runs are
interleaved (variant order reversed on odd repeats) so drift on the machine hits all variants alike. A step's
time is the wall time between consecutive ``on_step_end`` callbacks (generation, reward, losses, optimizer,
logging); the first step (warm-up) is dropped. Process CPU time is recorded too (with one thread it counts the
work done and is robust to other load). Per run: the median step; per variant: the median over runs; ratio =
variant / grpo of those medians.

Not covered: GPUs, vLLM, multi-process, memory use.

Data: 100 generated chat prompts ``a+b=`` (a, b < 10); the reward does not look at the answer.

Run:  python benchmarks/bench_ppo_vs_grpo.py [--model builtin:tiny-char-llama | HuggingFaceTB/SmolLM2-135M-Instruct]
      [--repeats 3] [--steps 5] [--smoke] [--json outputs/benchmarks/bench_ppo_vs_grpo.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

import _common  # benchmarks/ is on sys.path: this file's folder

REPO_ROOT = _common.REPO_ROOT
SMOLLM2 = _common.SMOLLM2
DATA = "generated: 100 chat prompts 'a+b=' (a, b < 10)"
SMOKE_FIELDS = ["shape", "same_tokens", "ppo_default_ratio_vs_grpo", "summary.grpo.median_step_s",
                "summary.ppo.median_step_s", "summary.ppo.ratio_vs_grpo", "summary.ppo.cpu_ratio_vs_grpo"]
TARGET_RATIO = 1.8
VARIANTS = {
    "grpo": dict(trainer_type="grpo"),
    "ppo": dict(trainer_type="ppo"),
    "ppo_4epochs": dict(trainer_type="ppo", ppo_epochs=4),
    "ppo_shared": dict(trainer_type="ppo", critic_type="shared"),
    "grpo_noshare": dict(trainer_type="grpo", share_prompt_prefix=False),
    "ppo_noshare": dict(trainer_type="ppo", share_prompt_prefix=False),
}
# Per-model defaults: prompts per step, generations per prompt, completion length, steps per run.
MODEL_DEFAULTS = {
    "builtin:tiny-char-llama": dict(prompts=4, generations=4, length=32, steps=6),
    SMOLLM2: dict(prompts=2, generations=2, length=32, steps=3),
}


# ----------------------------------------------------------------------------------------------- child side
def digit_reward(completions, **kwargs):
    """Share of digits in the completion: cheap and pure, so the reward costs the same on both sides."""
    texts = [c[-1]["content"] for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(1, len(t)) for t in texts]


def run_child(spec: dict) -> dict:
    """One training run of ``spec['variant']``; returns step intervals (wall and CPU) and logged lengths."""
    import torch

    from posttrain_llm.online_rl_trainer.core.common.tokens import eos_token_ids
    from posttrain_llm.online_rl_trainer.core.config import TrainerConfig
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer
    from posttrain_llm.online_rl_trainer.core.trainer import OnlineRLTrainer

    torch.set_num_threads(spec["threads"])


    model, tokenizer = load_model_and_tokenizer(spec["model"])
    eos = eos_token_ids(tokenizer, model)
    variant = dict(VARIANTS[spec["variant"]])
    if variant["trainer_type"] == "grpo":
        variant["trl_kwargs"] = {"generation_kwargs": {"suppress_tokens": eos}}
    rows = [{"prompt": [{"role": "user", "content": f"{a}+{b}="}]} for a in range(10) for b in range(10)]
    timer = _common.step_timer()
    with tempfile.TemporaryDirectory(prefix=f"bench-{spec['variant']}-") as out:
        config = TrainerConfig(
            model_name_or_path=spec["model"], output_dir=out, num_generations=spec["generations"],
            per_device_train_batch_size=spec["prompts"] * spec["generations"], max_steps=spec["steps"],
            max_completion_length=spec["length"], kl_coef=0.05, learning_rate=1e-5, seed=spec["seed"],
            torch_num_threads=spec["threads"], logging_steps=1, save_steps=10_000, report_to=["none"], **variant,
        )
        trainer = OnlineRLTrainer(config, digit_reward, rows, model=model, tokenizer=tokenizer, callbacks=[timer])
        if variant["trainer_type"] == "ppo":
            trainer.backend.c.generation_config.suppress_tokens = eos
        trainer.train()
    lengths = [float(log["completions/mean_length"]) for log in timer.logs if "completions/mean_length" in log]
    return {"variant": spec["variant"], "repeat": spec["repeat"], "step_times": timer.wall(),
            "cpu_step_times": timer.cpu(), "mean_lengths": lengths, "completions_per_step": spec["prompts"] * spec["generations"]}


# ---------------------------------------------------------------------------------------------- parent side
def run_subprocess(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], cwd=REPO_ROOT,
                          env=_common.child_env(), capture_output=True, text=True)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not marker:
        raise RuntimeError(f"run {spec} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads(marker[-1][len("RESULT "):])


def summarise(runs: list[dict], variants: list[str], length: int) -> dict:
    """Median step time per run (warm-up step dropped), then the median over runs, per variant; ratios to grpo."""
    out: dict[str, dict] = {}
    for v in variants:
        mine = [r for r in runs if r["variant"] == v]
        wall = statistics.median(statistics.median(r["step_times"][1:]) for r in mine)
        cpu = statistics.median(statistics.median(r["cpu_step_times"][1:]) for r in mine)
        lengths = [x for r in mine for x in r["mean_lengths"]]
        out[v] = {"median_step_s": wall, "median_step_cpu_s": cpu,
                  "tokens_per_step": mine[0]["completions_per_step"] * statistics.mean(lengths),
                  "all_completions_full_length": all(x == length for x in lengths)}
    if "grpo" in out:
        for row in out.values():
            row["ratio_vs_grpo"] = row["median_step_s"] / out["grpo"]["median_step_s"]
            row["cpu_ratio_vs_grpo"] = row["median_step_cpu_s"] / out["grpo"]["median_step_cpu_s"]
    return out


def print_table(summary: dict) -> None:
    print(f"\n{'variant':<20}{'s/step':>9}{'CPU s/step':>12}{'tokens/step':>13}{'ratio':>8}{'CPU ratio':>11}")
    for v, row in summary.items():
        print(f"{v:<20}{row['median_step_s']:>9.3f}{row['median_step_cpu_s']:>12.3f}{row['tokens_per_step']:>13.0f}"
              f"{row.get('ratio_vs_grpo', float('nan')):>8.2f}{row.get('cpu_ratio_vs_grpo', float('nan')):>11.2f}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=_common.TINY_MODEL, help=f"{_common.TINY_MODEL} or {SMOLLM2}")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {list(VARIANTS)}")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=None, help="steps per run (the first is dropped as warm-up)")
    p.add_argument("--prompts", type=int, default=None)
    p.add_argument("--generations", type=int, default=None)
    p.add_argument("--length", type=int, default=None, help="max_completion_length (every completion has it)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    smoke = {"variants": "grpo,ppo", "repeats": 1, "steps": 2, "prompts": 2, "generations": 2, "length": 8}
    args = _common.parse_args(p, argv, smoke)
    if args.child:
        return args
    args.variants = args.variants.split(",")
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or "grpo" not in args.variants:
        p.error(f"--variants {args.variants}: must include 'grpo' and come from {list(VARIANTS)}")
    if args.repeats < 1:
        p.error(f"--repeats {args.repeats}: need at least 1")
    defaults = MODEL_DEFAULTS.get(args.model, MODEL_DEFAULTS[SMOLLM2])
    args.shape = {k: getattr(args, k) if getattr(args, k) is not None else defaults[k]
                  for k in ("prompts", "generations", "length", "steps")}
    if args.shape["steps"] < 2:
        p.error(f"--steps {args.shape['steps']}: must be >= 2 (the first step is dropped as warm-up)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(run_child(json.loads(args.child))), flush=True)
        return 0
    variants, shape = args.variants, args.shape
    runs = []
    for repeat in range(args.repeats):
        for v in (variants if repeat % 2 == 0 else variants[::-1]):
            spec = {"variant": v, "repeat": repeat, "model": args.model, "threads": args.threads, "seed": args.seed, **shape}
            started = time.perf_counter()
            runs.append(run_subprocess(spec))
            print(f"repeat {repeat} {v:<20} median step {statistics.median(runs[-1]['step_times'][1:]):.3f} s "
                  f"(run {time.perf_counter() - started:.0f} s)", flush=True)
    summary = summarise(runs, variants, shape["length"])
    print(f"\n{args.model}: {shape['prompts']} prompts x {shape['generations']} completions of {shape['length']} "
          f"tokens, {shape['steps']} steps (first dropped), {args.threads} thread(s), median of {args.repeats}")
    print_table(summary)
    default_ppo = summary.get("ppo", {}).get("ratio_vs_grpo")
    result = {
        "model": args.model, "shape": shape, "threads": args.threads, "repeats": args.repeats,
        "target_ratio": TARGET_RATIO, "same_tokens": all(row["all_completions_full_length"] for row in summary.values()),
        "ppo_default_ratio_vs_grpo": default_ppo,
        "ppo_default_meets_target": default_ppo is not None and default_ppo <= TARGET_RATIO,
        "summary": {v: {k: (round(x, 4) if isinstance(x, float) else x) for k, x in row.items()} for v, row in summary.items()},
        "runs": runs,
    }
    headline = {f"{v}_ratio_vs_grpo": result["summary"][v]["ratio_vs_grpo"] for v in variants if v != "grpo"}
    headline["same_tokens"] = result["same_tokens"]
    _common.write_result(args, __file__, result, DATA, headline)
    print(f"same generated tokens on every side: {result['same_tokens']}")
    return _common.exit_status_same_tokens(result["same_tokens"])


if __name__ == "__main__":
    sys.exit(main())
