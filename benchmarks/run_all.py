"""Run every ``benchmarks/bench_*.py`` in its own subprocess, then print one combined table and write one JSON.

Each known benchmark runs with the quick invocation listed in ``QUICK_ARGS`` (``{json}`` is replaced by the path
where that benchmark writes its own JSON); a benchmark not listed there runs with no arguments, and only its exit
status, wall time and output tail are recorded. The headline of each row is the JSON keys named in
``HEADLINE_KEYS``, else the benchmark JSON's ``summary`` dict, else its first top-level scalars.

Not covered: comparing against earlier results (read the JSON files), GPU runs.

Run:  python benchmarks/run_all.py [--only NAME[,NAME]] [--out outputs/benchmarks/all.json] [--timeout 1800]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = REPO_ROOT / "outputs" / "benchmarks"  # outputs/ is git-ignored

# The quick invocation of each benchmark this file knows about (a few minutes each on 2 CPU cores).
QUICK_ARGS: dict[str, list[str]] = {
    "bench_generation.py": ["--prompts", "32", "--repeats", "2", "--json", "{json}"],
    "bench_math_reward.py": ["--gsm8k", "300", "--math", "100", "--json", "{json}"],
    "bench_ppo_vs_grpo.py": ["--model", "builtin:tiny-char-llama", "--repeats", "2", "--json", "{json}"],
    "bench_sandbox.py": ["--repeat", "2", "--json", "{json}"],
    "bench_trainer_overhead.py": ["--model", "builtin:tiny-char-llama", "--repeats", "3", "--steps", "8",
                                  "--json", "{json}"],
}
# Which top-level JSON keys make a benchmark's headline (default: its "summary" dict, else its first scalars).
HEADLINE_KEYS: dict[str, tuple[str, ...]] = {
    "bench_generation.py": ("evaluator_vs_naive", "evaluator_vs_plain_batched"),
    "bench_math_reward.py": ("ours_seconds", "trl_seconds", "time_ratio_ours_over_trl"),
    "bench_ppo_vs_grpo.py": ("same_tokens", "ppo_default_ratio_vs_grpo", "ppo_default_meets_target"),
    "bench_sandbox.py": ("mode", "workers", "speedup_vs_plain_host_python", "speedup_vs_plain_same_python"),
}


def discover(only: list[str] | None) -> list[Path]:
    """The bench_*.py files next to this one, sorted; ``only`` filters by file name or stem."""
    scripts = sorted(BENCH_DIR.glob("bench_*.py"))
    if only:
        wanted = {name.removesuffix(".py") for name in only}
        unknown = wanted - {s.stem for s in scripts}
        if unknown:
            raise SystemExit(f"--only {sorted(unknown)}: no such benchmark; available: {[s.stem for s in scripts]}")
        scripts = [s for s in scripts if s.stem in wanted]
    return scripts


def command_for(script: Path) -> tuple[list[str], Path | None]:
    """The command line for ``script`` and the JSON path it will write (None for benchmarks not in QUICK_ARGS)."""
    if script.name not in QUICK_ARGS:
        return [sys.executable, str(script)], None
    json_path = OUT_DIR / f"{script.stem}.json"
    args = [a.replace("{json}", str(json_path)) for a in QUICK_ARGS[script.name]]
    return [sys.executable, str(script), *args], json_path


def headline(result: dict | None, keys: tuple[str, ...] = (), limit: int = 12) -> dict:
    """``keys`` of a benchmark's JSON, else its ``summary`` dict, else its top-level scalars (at most ``limit``)."""
    if not isinstance(result, dict):
        return {}
    if keys:
        return {k: result.get(k) for k in keys}
    source = result.get("summary") if isinstance(result.get("summary"), dict) else result
    scalars = {k: v for k, v in source.items()
               if isinstance(v, (int, float, bool)) or (isinstance(v, str) and len(v) < 40)}
    return dict(list(scalars.items())[:limit])


def _stream(pipe, sink: list[str]) -> None:
    for line in pipe:
        print(line, end="", flush=True)
        sink.append(line)


def run_one(script: Path, timeout: float) -> dict:
    """Run one benchmark, streaming its output; return its status, wall time and JSON result."""
    cmd, json_path = command_for(script)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.unlink(missing_ok=True)  # a stale file must not pass for this run's result
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    print(f"\n=== {script.name}: {' '.join(cmd[1:])}", flush=True)
    started = time.perf_counter()
    lines: list[str] = []
    try:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    except OSError as exc:
        return {"command": cmd[1:], "status": f"could not start: {exc}", "returncode": None, "wall_s": 0.0,
                "headline": {}, "result": None, "output_tail": ""}
    # A reader thread streams the output, so a benchmark that hangs silently still hits the timeout.
    reader = threading.Thread(target=_stream, args=(proc.stdout, lines), daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=timeout)
        status = "ok" if rc == 0 else f"exit {rc}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the benchmark and the runs it started
        rc, status = proc.wait(), "timeout"
    reader.join(timeout=5)
    result = None
    if json_path is not None and json_path.is_file():
        result = json.loads(json_path.read_text())
    elif status == "ok" and json_path is not None:
        status = f"ok but wrote no {json_path.name}"
    return {"command": cmd[1:], "status": status, "returncode": rc, "wall_s": round(time.perf_counter() - started, 1),
            "headline": headline(result, HEADLINE_KEYS.get(script.name, ())), "result": result,
            "output_tail": "".join(lines)[-4000:]}


def print_table(results: dict[str, dict]) -> None:
    print(f"\n{'benchmark':<28}{'status':<10}{'wall s':>8}  headline")
    for name, r in results.items():
        head = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["headline"].items())
        head = head or "-"
        print(f"{name:<28}{r['status']:<10}{r['wall_s']:>8.1f}  {head}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=None, help="comma-separated benchmark names (e.g. bench_trainer_overhead)")
    p.add_argument("--out", type=Path, default=OUT_DIR / "all.json")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark")
    args = p.parse_args(argv)
    scripts = discover(args.only.split(",") if args.only else None)
    if not scripts:
        raise SystemExit(f"no bench_*.py found in {BENCH_DIR}")
    results = {s.stem: run_one(s, args.timeout) for s in scripts}
    print_table(results)
    combined = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_end": os.getloadavg()},
                "benchmarks": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(combined, indent=1))
    print(f"wrote {args.out}")
    return 0 if all(r["status"] == "ok" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
