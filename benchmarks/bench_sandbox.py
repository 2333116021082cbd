"""Programs judged per second: the sandbox (all protections on) against the usual one-subprocess-per-sample harness.

Workload: the 164 HumanEval canonical solutions, each judged against its ``check`` (every one must pass in both
harnesses, or the benchmark fails). Without the dataset (a bare clone) a small generated set of HumanEval-style
tasks stands in (``benchmarks/_generated.py``); the table and JSON say which.

- ``sandbox``: :class:`CodeRewardFunction` ``score_batch`` with ``--workers`` servers (default: all cores), in
  the strongest isolation this machine offers (the mode is printed); also with one server, to show the cost per
  program apart from parallelism. Servers are started once before timing
  (their start-up is reported separately), as in training where the pool lives for the whole run.
- ``plain``: for each sample in turn, write ``prompt + solution + test + check(entry_point)`` to a file and
  ``subprocess.run([python, file], timeout=...)``: no isolation at all. Run twice: with the host's
  ``sys.executable`` (the usual harness; in a virtualenv its start-up processes site-packages) and with the
  interpreter the sandbox uses (the same Python, so start-up cost is comparable).

Prints a table and one JSON line with the rates, the ratios and the CPU time per program (ours plus every
process the harness started; the sandbox's servers count the programs they reaped). The machine's load from
other processes makes wall-clock rates noisy, and on a busy machine two workers cannot use two cores; the CPU
time per program does not depend on that. ``--repeat`` takes the best of several runs for each harness.

Run:  python benchmarks/bench_sandbox.py [--workers N] [--repeat 3] [--programs N] [--data-dir DIR | --generated-data]
          [--smoke] [--json out.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import _common
import _generated

from posttrain_llm.online_rl_trainer.core.rewards.code import CodeRewardFunction
from posttrain_llm.online_rl_trainer.core.sandbox import SandboxConfig
from posttrain_llm.online_rl_trainer.core.sandbox.runner import _descendants

_TICK = os.sysconf("SC_CLK_TCK")
NEEDS = ("humaneval/HumanEval.jsonl.gz",)
SMOKE_FIELDS = ["programs", "workers", "mode", "seconds.sandbox", "programs_per_second.sandbox",
                "cpu_ms_per_program.sandbox", "speedup_vs_plain_host_python", "speedup_vs_plain_same_python",
                "speedup_1_worker_vs_plain_same_python"]


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and its live descendants, including the children they have reaped."""
    total = 0
    for pid in _descendants(root) | {root}:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        total += sum(int(x) for x in text[text.rindex(")") + 2:].split()[11:15])  # utime stime cutime cstime
    return total / _TICK


def own_cpu_seconds(children: bool) -> float:
    t = os.times()
    return t.user + t.system + ((t.children_user + t.children_system) if children else 0.0)


def load_humaneval(data_dir: Path) -> list[dict]:
    with gzip.open(data_dir / "humaneval" / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def run_plain(rows: list[dict], python: str, timeout: float) -> tuple[float, float, int]:
    """Wall seconds and CPU seconds (ours + the interpreters') for judging every row with one fresh interpreter
    each, and how many passed."""
    passed = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "program.py"
        start, cpu = time.perf_counter(), own_cpu_seconds(children=True)
        for r in rows:
            path.write_text(f"{r['prompt']}{r['canonical_solution']}\n{r['test']}\ncheck({r['entry_point']})\n")
            proc = subprocess.run([python, str(path)], capture_output=True, timeout=timeout, cwd=tmp)
            passed += proc.returncode == 0
        return time.perf_counter() - start, own_cpu_seconds(children=True) - cpu, passed


def run_sandbox(reward: CodeRewardFunction, rows: list[dict]) -> tuple[float, float, int]:
    """Wall seconds and CPU seconds (ours + every sandbox process') for judging every row, and how many passed."""
    completions = [f"```python\n{r['prompt']}{r['canonical_solution']}\n```" for r in rows]
    columns = {"test": [r["test"] for r in rows], "entry_point": [r["entry_point"] for r in rows],
               "code_prompt": [r["prompt"] for r in rows]}
    servers = [s.proc.pid for s in reward.sandbox._all]
    start, cpu = time.perf_counter(), own_cpu_seconds(children=False) + sum(map(tree_cpu_seconds, servers))
    results = reward.score_batch(completions, **columns)
    cpu = own_cpu_seconds(children=False) + sum(map(tree_cpu_seconds, servers)) - cpu
    return time.perf_counter() - start, cpu, sum(r.status == "passed" for r in results)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--programs", type=int, default=None, help="judge only the first N tasks (default: all)")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = _common.parse_args(parser, argv, smoke={"repeat": 1, "programs": 8}, data=True)
    if args.repeat < 1 or (args.programs is not None and args.programs < 1):
        parser.error(f"--repeat {args.repeat} / --programs {args.programs}: both must be >= 1")
    data_dir, data = _common.resolve_data(args, NEEDS, _generated.write_humaneval)

    rows = load_humaneval(data_dir)[:args.programs]
    n = len(rows)
    config = SandboxConfig(timeout_seconds=args.timeout)
    reward = CodeRewardFunction(sandbox=config, max_workers=args.workers)
    single = CodeRewardFunction(sandbox=config, max_workers=1)
    start = time.perf_counter()
    warm = reward.score_batch(["```python\nx = 1\n```"] * args.workers, tests=[["assert x == 1"]] * args.workers)
    startup = time.perf_counter() - start
    warm += single.score_batch(["```python\nx = 1\n```"], tests=[["assert x == 1"]])
    if any(r.status != "passed" for r in warm):
        raise SystemExit(f"sandbox warm-up failed: {[r.reason for r in warm]}")
    sandbox = reward.sandbox
    interpreter = sandbox._all[0].interpreter.executable

    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, fn in (
            ("sandbox", lambda: run_sandbox(reward, rows)),
            ("sandbox (1 worker)", lambda: run_sandbox(single, rows)),
            ("plain (host sys.executable)", lambda: run_plain(rows, sys.executable, args.timeout)),
            ("plain (sandbox's interpreter)", lambda: run_plain(rows, interpreter, args.timeout)),
        ):
            seconds, cpu_seconds, passed = fn()
            if passed != n:
                raise SystemExit(f"{name}: only {passed}/{n} canonical solutions passed")
            timings[name] = min(timings.get(name, float("inf")), seconds)
            cpu[name] = min(cpu.get(name, float("inf")), cpu_seconds)
    reward.close()
    single.close()

    rate = {name: n / s for name, s in timings.items()}
    print(f"{n} canonical solutions, best of {args.repeat}; sandbox mode {sandbox.mode!r}, {args.workers} workers, "
          f"interpreter {interpreter}; server start-up {startup:.2f}s (excluded)")
    _common.print_table([{"harness": name, "seconds": s, "rate": rate[name], "speedup": rate["sandbox"] / rate[name],
                          "cpu_ms": cpu[name] / n * 1000} for name, s in timings.items()],
                        [("harness", "harness", ""), ("seconds", "seconds", ".2f"), ("programs/s", "rate", ".1f"),
                         ("sandbox speed-up", "speedup", ".2f"), ("CPU ms/program", "cpu_ms", ".1f")])
    record = {
        "programs": n, "workers": args.workers, "mode": sandbox.mode, "repeat": args.repeat,
        "interpreter": interpreter, "host_python": sys.executable,
        "startup_seconds": round(startup, 3), "seconds": {k: round(v, 3) for k, v in timings.items()},
        "programs_per_second": {k: round(v, 1) for k, v in rate.items()},
        "cpu_ms_per_program": {k: round(v / n * 1000, 2) for k, v in cpu.items()},
        "speedup_vs_plain_host_python": round(rate["sandbox"] / rate["plain (host sys.executable)"], 2),
        "speedup_vs_plain_same_python": round(rate["sandbox"] / rate["plain (sandbox's interpreter)"], 2),
        "speedup_1_worker_vs_plain_same_python": round(
            rate["sandbox (1 worker)"] / rate["plain (sandbox's interpreter)"], 2),
    }
    headline = {k: record[k] for k in ("mode", "workers", "speedup_vs_plain_host_python",
                                       "speedup_vs_plain_same_python")}
    headline["sandbox_programs_per_s"] = record["programs_per_second"]["sandbox"]
    _common.write_result(args, __file__, record, data, headline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
