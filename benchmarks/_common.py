"""What every ``benchmarks/bench_*.py`` shares: the common flags, where its data comes from, the machine it ran on,
its table and its JSON file.

The convention (also in ``benchmarks/README.md``):

- ``--smoke``: tiny sizes, one repeat, the built-in tiny model; seconds, exercising the whole path. Pass the
  benchmark's smoke sizes to :func:`parse_args`; a flag given explicitly still wins over them.
- ``--json PATH``: where the result goes; default ``outputs/benchmarks/<stem>.json`` (``.../smoke/<stem>.json``
  with ``--smoke``, so a smoke run never overwrites a measurement).
- ``--data-dir DIR`` / ``--generated-data`` (benchmarks that read datasets): :func:`resolve_data` takes the real
  files from ``--data-dir``, else ``$ONLINE_RL_DATA_DIR``, else ``../shared/data`` beside the repo, else writes a
  small generated set in the upstream layout (``benchmarks/_generated.py``) to a temporary folder. The result says
  which (``"data": "real: <dir>"`` or ``"data": "generated: <what>"``).
- :func:`write_result` adds ``benchmark``, ``smoke``, ``data``, ``machine``, ``date`` and a ``headline`` dict (what
  ``run_all.py`` shows) to the JSON. A module-level ``SMOKE_FIELDS`` list of dotted keys names the fields the
  smoke test (``tests/benchmarks/test_smoke.py``) requires.

Not covered: the measurements themselves (each benchmark), running them all (``run_all.py``).
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "outputs" / "benchmarks"  # outputs/ is git-ignored
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TINY_MODEL = "builtin:tiny-char-llama"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
if str(REPO_ROOT) not in sys.path:  # the package of this checkout, installed or not
    sys.path.insert(0, str(REPO_ROOT))


# ----------------------------------------------------------------------------------------------- flags
def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None, smoke: dict, data: bool = False):
    """Add ``--smoke``/``--json`` (and ``--data-dir``/``--generated-data`` when ``data``) and parse ``argv``.

    ``smoke`` holds the flag defaults of a smoke run (``{"repeats": 1, ...}``, by argparse ``dest``); they apply
    only with ``--smoke`` and only to flags not given on the command line.
    """
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and one repeat: checks the whole path runs")
    parser.add_argument("--json", type=Path, default=None,
                        help="write the result here (default outputs/benchmarks/[smoke/]<benchmark>.json)")
    if data:
        parser.add_argument("--data-dir", type=Path, default=None,
                            help="folder laid out like ../shared/data (default: $ONLINE_RL_DATA_DIR, then "
                                 "../shared/data beside the repo, then a small generated set)")
        parser.add_argument("--generated-data", action="store_true",
                            help="use the small generated set even when real data is found")
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--smoke" in argv:
        unknown = set(smoke) - {a.dest for a in parser._actions}
        if unknown:
            raise ValueError(f"smoke defaults for unknown flags {sorted(unknown)}")
        parser.set_defaults(**smoke)
    return parser.parse_args(argv)


def json_path(args: argparse.Namespace, script: str) -> Path:
    """``--json``, else the default path of benchmark ``script`` (its ``__file__``) for this kind of run."""
    if args.json is not None:
        return args.json
    return OUT_DIR / ("smoke" if args.smoke else "") / f"{Path(script).stem}.json"


# ------------------------------------------------------------------------------------------------ data
def resolve_data(args: argparse.Namespace, needs: Sequence[str], generate: Callable[[Path], str]) -> tuple[Path, str]:
    """The data folder to read and its label for the table/JSON: ``"real: <dir>"`` or ``"generated: <what>"``.

    ``needs`` are the files the benchmark reads, relative to the folder (``"gsm8k/test.jsonl"``). A folder named by
    ``--data-dir`` or ``$ONLINE_RL_DATA_DIR`` must hold them all (an error names the missing ones); ``../shared/data``
    is used only when it does. Otherwise ``generate(folder)`` writes the files into a temporary folder (removed at
    exit) and returns what it wrote, in words.
    """
    explicit = [(f"--data-dir {args.data_dir}", args.data_dir)] if args.data_dir is not None else []
    if not explicit and os.environ.get("ONLINE_RL_DATA_DIR"):
        explicit = [(f"$ONLINE_RL_DATA_DIR={os.environ['ONLINE_RL_DATA_DIR']}", Path(os.environ["ONLINE_RL_DATA_DIR"]))]
    if not args.generated_data:
        for where, folder in explicit:
            missing = [n for n in needs if not (folder / n).is_file()]
            if missing:
                raise SystemExit(f"{where}: missing {missing}; expected a folder laid out like ../shared/data "
                                 "(or pass --generated-data to use a small generated set)")
            return folder, f"real: {folder}"
        if all((SHARED_DATA / n).is_file() for n in needs):
            return SHARED_DATA, f"real: {SHARED_DATA}"
    folder = Path(tempfile.mkdtemp(prefix="bench-data-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder, f"generated: {generate(folder)}"


# ------------------------------------------------------------------------------------------- machine
def machine() -> dict:
    """CPU model and the flags that matter for torch on CPU, core count, load, library versions."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:  # not Linux: the rest still says something
        model = platform.processor() or model
    versions = {}
    for lib in ("torch", "transformers", "trl"):
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return {"cpu": model, "cpus": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags,
            "amx": any(f.startswith("amx") for f in flags), "platform": platform.platform(),
            "python": platform.python_version(), **versions,
            "load_avg": [round(x, 2) for x in os.getloadavg()]}


def machine_line(info: dict) -> str:
    return (f"{info['cpu']}, {info['cpus']} cpus, avx512_bf16 {'yes' if info['avx512_bf16'] else 'no'}, "
            f"AMX {'yes' if info['amx'] else 'no'}, torch {info['torch']}, load avg {info['load_avg'][0]}")


def serve_child(args: argparse.Namespace, run: Callable[[dict], dict]) -> bool:
    """In a child process (``--child SPEC --child-out FILE``): ``run(spec)`` and write its JSON to FILE -> True;
    in the parent -> False (nothing done)."""
    if getattr(args, "child", None) is None:
        return False
    Path(args.child_out).write_text(json.dumps(run(json.loads(args.child))))
    return True


def child_env(threads: int | None = None) -> dict:
    """Environment for a benchmark's child process: offline, the repo importable, ``threads`` BLAS threads."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def step_timer():
    """A transformers callback for a child's training run: ``begin``/``cpu_begin`` at train start, ``ends``/``cpu_ends``
    (wall and process-CPU time) at each step end, every log dict with its ``step`` in ``logs``; ``wall()`` and
    ``cpu()`` give the per-step intervals."""
    import time

    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.begin = self.cpu_begin = 0.0
            self.ends: list[float] = []
            self.cpu_ends: list[float] = []
            self.logs: list[dict] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.begin, self.cpu_begin = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())
            self.cpu_ends.append(time.process_time())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                self.logs.append({**logs, "step": state.global_step})

        def wall(self) -> list[float]:
            return [b - a for a, b in zip([self.begin] + self.ends[:-1], self.ends)]

        def cpu(self) -> list[float]:
            return [b - a for a, b in zip([self.cpu_begin] + self.cpu_ends[:-1], self.cpu_ends)]

    return StepTimer()


# ------------------------------------------------------------------------------------------- output
def print_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> None:
    """One aligned table; ``columns`` are ``(header, key, format spec)``, e.g. ``("s/step", "step_s", ".3f")``."""
    cells = [[h for h, _, _ in columns]]
    for row in rows:
        cells.append([_cell(row.get(key), spec) for _, key, spec in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for r in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


def _cell(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec) if spec and not isinstance(value, (str, bool)) else str(value)


def write_result(args: argparse.Namespace, script: str, result: dict, data: str, headline: dict) -> Path:
    """Add the common fields to ``result``, write it as JSON (see :func:`json_path`), print where; return the path."""
    record = {"benchmark": Path(script).stem, "smoke": bool(args.smoke), "data": data,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "headline": headline, **result}
    path = json_path(args, script)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"data: {data}\nmachine: {machine_line(record['machine'])}\nwrote {path}", flush=True)
    return path


def exit_status_same_tokens(same_tokens: bool) -> int:
    """0, or 1 with the reason on stderr when the compared sides generated different numbers of tokens (their step
    times then compare unequal work: not a measurement)."""
    if same_tokens:
        return 0
    print("some completions were shorter than --length: the variants did not generate the same tokens", file=sys.stderr)
    return 1
