"""Run every ``benchmarks/bench_*.py`` in its own subprocess, then print one combined table and write one JSON.

Each benchmark gets ``--json DIR/NAME.json`` (``--json-dir``, default ``outputs/benchmarks[/smoke]``); with
``--smoke`` it also gets ``--smoke`` (seconds each), else the quick invocation listed in ``QUICK_ARGS`` (a benchmark
not listed runs with its defaults).
The headline of each row is the ``headline`` dict of the benchmark's JSON (see ``_common.write_result``), else its
``summary`` dict, else its first top-level scalars. A benchmark fails when it exits non-zero, times out or writes
no JSON; each failure is printed at the end in one line with its reason (the last line of its stderr), and the
exit status is 1 only then.

Not covered: comparing against earlier results (read the JSON files), GPU runs.

``--jobs 2`` runs two at a time (each one's output is printed when it ends): fine for ``--smoke``, which checks
that they run, but benchmarks sharing the machine do not measure anything.

Run:  python benchmarks/run_all.py [--smoke] [--jobs 1] [--only NAME[,NAME]] [--json-dir DIR] [--timeout 1800]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import _common

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = _common.REPO_ROOT
OUT_DIR = _common.OUT_DIR  # outputs/ is git-ignored

# The quick invocation of each benchmark this file knows about (a few minutes each on 2 CPU cores).
QUICK_ARGS: dict[str, list[str]] = {
    # Two demo runs at once (~7 min): one seed, native and AVX2 kernels; the README's table is the full grid.
    "bench_cpu_step.py": ["--variants", "ours,trl", "--steps", "3"],
    "bench_decode.py": ["--seeds", "0,1,2"],
    "bench_demo_robustness.py": ["--trainers", "grpo", "--seeds", "0", "--threads", "1", "--float-paths", "native,avx2",
                                 "--jobs", "2"],
    "bench_generation.py": ["--prompts", "32", "--repeats", "2"],
    "bench_math_reward.py": ["--gsm8k", "300", "--math", "100"],
    "bench_ppo_vs_grpo.py": ["--model", "builtin:tiny-char-llama", "--repeats", "2"],
    "bench_reward_model.py": ["--repeats", "2"],
    "bench_sandbox.py": ["--repeat", "2"],
    "bench_trainer_overhead.py": ["--model", "builtin:tiny-char-llama", "--repeats", "3", "--steps", "8"],
}


def discover(bench_dir: Path, only: list[str] | None) -> list[Path]:
    """The bench_*.py files in ``bench_dir``, sorted; ``only`` filters by file name or stem."""
    scripts = sorted(bench_dir.glob("bench_*.py"))
    if only:
        wanted = {name.removesuffix(".py") for name in only}
        unknown = wanted - {s.stem for s in scripts}
        if unknown:
            raise SystemExit(f"--only {sorted(unknown)}: no such benchmark; available: {[s.stem for s in scripts]}")
        scripts = [s for s in scripts if s.stem in wanted]
    return scripts


def command_for(script: Path, smoke: bool, json_dir: Path) -> tuple[list[str], Path]:
    """The command line for ``script`` and the JSON path it will write."""
    json_path = json_dir / f"{script.stem}.json"
    extra = ["--smoke"] if smoke else QUICK_ARGS.get(script.name, [])
    return [sys.executable, str(script), *extra, "--json", str(json_path)], json_path


def headline(result: dict | None, limit: int = 12) -> dict:
    """A benchmark JSON's ``headline`` dict, else its ``summary`` dict, else its top-level scalars (at most ``limit``)."""
    if not isinstance(result, dict):
        return {}
    for key in ("headline", "summary"):
        if isinstance(result.get(key), dict):
            source = result[key]
            break
    else:
        source = result
    scalars = {k: v for k, v in source.items()
               if isinstance(v, (int, float, bool)) or (isinstance(v, str) and len(v) < 40)}
    return dict(list(scalars.items())[:limit])


_PRINT_LOCK = threading.Lock()


def _stream(pipe, sink: list[str], out) -> None:
    for line in pipe:
        if out is not None:
            print(line, end="", file=out, flush=True)
        sink.append(line)


def _last_line(lines: list[str]) -> str:
    """The last non-blank line (progress bars redraw with carriage returns: keep the last redraw)."""
    for line in reversed(lines):
        line = line.rsplit("\r", 1)[-1].strip() or line.strip()
        if line:
            return line
    return ""


def run_one(script: Path, timeout: float, smoke: bool, json_dir: Path, stream: bool = True) -> dict:
    """Run one benchmark, streaming its output (else printing it when it ends); return its status, failure reason,
    wall time and JSON result."""
    cmd, json_path = command_for(script, smoke, json_dir)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.unlink(missing_ok=True)  # a stale file must not pass for this run's result
    title = f"\n=== {script.name}: {' '.join(cmd[1:])}"
    if stream:
        print(title, flush=True)
    started = time.perf_counter()
    out: list[str] = []
    err: list[str] = []
    try:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=_common.child_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
    except OSError as exc:
        return {"command": cmd[1:], "status": "failed", "reason": f"could not start: {exc}", "returncode": None,
                "wall_s": 0.0, "headline": {}, "result": None, "output_tail": ""}
    # Reader threads stream the output, so a benchmark that hangs silently still hits the timeout.
    readers = [threading.Thread(target=_stream, args=(proc.stdout, out, sys.stdout if stream else None), daemon=True),
               threading.Thread(target=_stream, args=(proc.stderr, err, sys.stderr if stream else None), daemon=True)]
    for r in readers:
        r.start()
    reason = None
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the benchmark and the runs it started
        rc, reason = proc.wait(), f"timed out after {timeout:g} s"
    for r in readers:
        r.join(timeout=5)
    if not stream:
        with _PRINT_LOCK:
            print(title + "\n" + "".join(out) + "".join(err), end="", flush=True)
    result = None
    if reason is None and rc != 0:
        reason = f"{_last_line(err) or '(nothing on stderr)'} (exit {rc})"
    elif reason is None and not json_path.is_file():
        reason = f"exit 0 but wrote no {json_path}"
    elif reason is None:
        try:
            result = json.loads(json_path.read_text())
        except json.JSONDecodeError as exc:
            reason = f"{json_path} is not JSON: {exc}"
    return {"command": cmd[1:], "status": "ok" if reason is None else "failed", "reason": reason, "returncode": rc,
            "wall_s": round(time.perf_counter() - started, 1), "headline": headline(result), "result": result,
            "output_tail": "".join(out + err)[-4000:]}


def print_table(results: dict[str, dict]) -> None:
    print(f"\n{'benchmark':<28}{'status':<8}{'wall s':>8}  headline")
    for name, r in results.items():
        head = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["headline"].items())
        print(f"{name:<28}{r['status']:<8}{r['wall_s']:>8.1f}  {head or '-'}")
    for name, r in results.items():
        if r["reason"] is not None:
            print(f"FAILED {name}.py: {r['reason']}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="run every benchmark with --smoke (seconds each)")
    p.add_argument("--only", default=None, help="comma-separated benchmark names (e.g. bench_trainer_overhead)")
    p.add_argument("--json-dir", type=Path, default=None,
                   help="where each benchmark's JSON and the combined all.json go (default outputs/benchmarks[/smoke])")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark")
    p.add_argument("--jobs", type=int, default=1,
                   help="benchmarks run side by side (for --smoke: their timings are then not measurements)")
    p.add_argument("--bench-dir", type=Path, default=BENCH_DIR, help=argparse.SUPPRESS)  # tests of this runner
    args = p.parse_args(argv)
    scripts = discover(args.bench_dir, args.only.split(",") if args.only else None)
    if not scripts:
        raise SystemExit(f"no bench_*.py found in {args.bench_dir}")
    json_dir = args.json_dir or OUT_DIR / ("smoke" if args.smoke else "")
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: must be >= 1")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # threads only wait on the subprocesses
        futures = {s.stem: pool.submit(run_one, s, args.timeout, args.smoke, json_dir, args.jobs == 1) for s in scripts}
        results = {name: f.result() for name, f in futures.items()}
    print_table(results)
    out = json_dir / "all.json"
    combined = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "smoke": args.smoke,
                "machine": _common.machine(), "benchmarks": results}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(combined, indent=1) + "\n")
    print(f"wrote {out}")
    return 0 if all(r["reason"] is None for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
