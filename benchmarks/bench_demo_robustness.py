"""Does the offline demo learn on any machine? `train_math` (the README's `make demo`) over seeds x thread counts.

Each run is the demo exactly as a user starts it (``python -m ...examples.train_math --seed S --threads T``, with
``--trainer`` for RLOO/PPO), in a fresh subprocess with its own output folder. Two axes stand in for other CPUs:
the thread count (1 or 2), and the float path (``--float-paths``): ``native`` runs the kernels this CPU selects,
``avx2`` forces torch's AVX2 kernels and MKL's AVX2 code path (``ATEN_CPU_CAPABILITY=avx2``,
``MKL_ENABLE_INSTRUCTIONS=AVX2``), as on a CPU without AVX-512; ``default`` forces the non-vectorized ATen kernels
and MKL's SSE4.2 path. Measured: for the tiny model 1 and 2 threads give bit-identical weights (its matrices are
too small for torch to split), while ``avx2`` and ``default`` change the float results after the first optimizer
step; so the float-path axis is the one that really tests another machine. A recipe that only works on one float
path fails here. Per run the table shows the warm-up (steps, its final accuracy on held-out *training* problems),
held-out accuracy before and after RL (300 test problems, greedy, strict), the paired difference with its
bootstrap interval, the exact McNemar p of the paired verdicts, and the wall time.

The bar (issue 10): every GRPO run gains with p < 0.01. ``summary`` says per algorithm how many runs did.

Not covered: other models (SmolLM2 has its own README section), GPUs. Times are wall times on whatever else the
machine was doing (the JSON records the load average).

Run:  python benchmarks/bench_demo_robustness.py [--trainers grpo,rloo,ppo] [--seeds 0,1,2] [--threads 1,2]
      [--float-paths native,avx2,default]
      [--jobs 1] [--smoke] [--json outputs/benchmarks/bench_demo_robustness.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _common  # benchmarks/ is on sys.path: this file's folder

DATA = "generated: the synthetic a+b task of the demo (train_math --dataset arithmetic)"
SMOKE_FIELDS = ["runs", "summary.grpo.runs", "summary.grpo.gained_p001", "runs_table"]
P_BAR = 0.01
# A smoke run exercises the whole path (warm-up, evaluation before/after, RL, the paired report) in seconds.
SMOKE_DEMO_ARGS = ["--max-steps", "2", "--eval-samples", "40", "--warmup-steps", "25"]


# What each float path sets in the child's environment (read by torch and MKL when they load).
FLOAT_PATHS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}


def run_one(trainer: str, seed: int, threads: int, path: str, extra: list[str], root: Path) -> dict:
    """One demo run in a fresh process; returns its row (or the error tail when it failed)."""
    out = root / f"{trainer}-seed{seed}-t{threads}-{path}"
    cmd = [sys.executable, "-m", "posttrain_llm.online_rl_trainer.examples.train_math", "--trainer", trainer,
           "--seed", str(seed), "--threads", str(threads), "--output-dir", str(out), *extra]
    start = time.perf_counter()
    env = {**_common.child_env(threads), **FLOAT_PATHS[path]}
    proc = subprocess.run(cmd, cwd=_common.REPO_ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    row = {"trainer": trainer, "seed": seed, "threads": threads, "float_path": path, "seconds": seconds,
           "env": FLOAT_PATHS[path], "command": " ".join(cmd[1:])}
    summary_path = out / "demo_summary.json"
    if proc.returncode != 0 or not summary_path.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {**row, "error": f"exit {proc.returncode}: {tail[0]}"}
    s = json.loads(summary_path.read_text())
    c = s["comparison"]
    warm = s.get("warmup") or {}
    return {**row, "warmup_steps": warm.get("steps"), "warmup_holdout": warm.get("holdout_accuracy"),
            "before": s["before"]["accuracy"], "after": s["after"]["accuracy"], "n": s["after"]["n"],
            "difference": c["difference_b_minus_a"], "difference_ci95": c["difference_ci95"],
            "only_before": c["only_a"], "only_after": c["only_b"], "mcnemar_p": c["mcnemar_p"],
            "rl_steps": s["steps"], "rl_seconds": s["train_seconds"], "total_seconds": s["total_seconds"],
            "gained_p001": bool(c["difference_b_minus_a"] > 0 and c["mcnemar_p"] < P_BAR)}


def summarize(rows: list[dict]) -> dict:
    out = {}
    for trainer in dict.fromkeys(r["trainer"] for r in rows):
        mine = [r for r in rows if r["trainer"] == trainer]
        ok = [r for r in mine if "error" not in r]
        out[trainer] = {"runs": len(mine), "failed": len(mine) - len(ok),
                        "gained_p001": sum(r["gained_p001"] for r in ok),
                        "min_difference": min((r["difference"] for r in ok), default=None),
                        "max_mcnemar_p": max((r["mcnemar_p"] for r in ok), default=None),
                        "mean_before": sum(r["before"] for r in ok) / len(ok) if ok else None,
                        "mean_after": sum(r["after"] for r in ok) / len(ok) if ok else None}
        out[trainer]["all_gained_p001"] = bool(ok) and out[trainer]["gained_p001"] == len(mine)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trainers", default="grpo,rloo,ppo", help="comma-separated: grpo, rloo, ppo")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (each is the demo's --seed)")
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    p.add_argument("--float-paths", default="native,avx2", help=f"comma-separated, of {list(FLOAT_PATHS)}")
    p.add_argument("--jobs", type=int, default=1,
                   help="cores to fill: runs of T threads go jobs // T at a time (default 1: times stay comparable)")
    p.add_argument("--demo-args", default="", help="extra train_math flags for every run, e.g. '--max-steps 40'")
    args = _common.parse_args(p, argv, smoke={"trainers": "grpo", "seeds": "0", "threads": "1", "float_paths": "avx2"})
    paths = args.float_paths.split(",")
    if set(paths) - set(FLOAT_PATHS):
        raise SystemExit(f"--float-paths {args.float_paths}: accepted {list(FLOAT_PATHS)}")
    extra = args.demo_args.split() + (SMOKE_DEMO_ARGS if args.smoke else [])
    # Thread counts x float paths: the 2-thread runs use the native path (2 threads change nothing else here).
    plan = [(t, int(s), int(n), path) for t in args.trainers.split(",") for s in args.seeds.split(",")
            for n in args.threads.split(",") for path in paths if n == "1" or path == "native"]
    rows_by_job = {}
    with tempfile.TemporaryDirectory(prefix="demo-robustness-") as root:
        # Runs of one thread count at a time, as many at once as fit in --jobs cores (2-thread runs alone by
        # default): oversubscribed torch threads slow a CPU run several-fold.
        for threads in sorted({job[2] for job in plan}):
            group = [job for job in plan if job[2] == threads]
            with ThreadPoolExecutor(max_workers=max(1, args.jobs // threads)) as pool:
                rows_by_job.update(zip(group, pool.map(lambda job: run_one(*job, extra, Path(root)), group)))
    rows = [rows_by_job[job] for job in plan]
    for r in rows:
        if "error" not in r:
            lo, hi = r["difference_ci95"]
            r["difference_text"] = f"{r['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    _common.print_table(rows, [("trainer", "trainer", ""), ("seed", "seed", ""), ("threads", "threads", ""),
                               ("float path", "float_path", ""),
                               ("warm-up steps", "warmup_steps", ""), ("warm-up acc", "warmup_holdout", ".2f"),
                               ("before", "before", ".3f"), ("after", "after", ".3f"),
                               ("after - before [95%]", "difference_text", ""), ("only before", "only_before", ""),
                               ("only after", "only_after", ""), ("McNemar p", "mcnemar_p", ".1e"),
                               ("RL s", "rl_seconds", ".0f"), ("total s", "total_seconds", ".0f"),
                               ("error", "error", "")])
    summary = summarize(rows)
    for trainer, s in summary.items():
        failed = f", {s['failed']} failed" if s["failed"] else ""
        print(f"{trainer}: {s['gained_p001']}/{s['runs']} runs gained with McNemar p < {P_BAR}{failed}")
    result = {"runs": rows, "summary": summary, "p_bar": P_BAR, "demo_args": extra,
              "float_paths": {p: FLOAT_PATHS[p] for p in paths},
              "runs_table": [[r["trainer"], r["seed"], r["threads"], r["float_path"], r.get("before"), r.get("after"),
                              r.get("mcnemar_p")] for r in rows]}
    headline = {t: f"{s['gained_p001']}/{s['runs']} gained (p<{P_BAR})" for t, s in summary.items()}
    _common.write_result(args, __file__, result, DATA, headline)
    if any("error" in r for r in rows):
        raise SystemExit(f"{sum('error' in r for r in rows)} demo run(s) failed: "
                         + "; ".join(f"{r['trainer']} seed {r['seed']} t{r['threads']} {r['float_path']}: {r['error']}"
                                     for r in rows if "error" in r))
    return result


if __name__ == "__main__":
    main()
