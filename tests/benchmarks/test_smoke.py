"""Every ``benchmarks/bench_*.py`` runs in smoke mode and writes the fields it declares; ``run_all.py`` reports
failures one line each; the generated stand-in data has the upstream layout; the shared flag/data helpers.

The benchmarks are found by glob, so a new one is covered without touching this file: it must accept ``--smoke``
and ``--json`` and declare a module-level ``SMOKE_FIELDS`` list (see ``benchmarks/README.md``). They run once,
through ``run_all.py --smoke --jobs 2`` (so the runner is exercised too), with the environment as given: real data where
``$ONLINE_RL_DATA_DIR`` or ``../shared/data`` exists, else the generated sets. Nothing here checks a timing.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO_ROOT / "benchmarks"
SCRIPTS = sorted(BENCH_DIR.glob("bench_*.py"))
sys.path.insert(0, str(BENCH_DIR))

import _common  # noqa: E402 - the benchmarks' helpers are importable only once BENCH_DIR is on sys.path
import _generated  # noqa: E402 - same


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO_ROOT), os.environ.get("PYTHONPATH")))))


def smoke_fields(script: Path) -> list[str]:
    """The literal ``SMOKE_FIELDS = [...]`` of a benchmark, read without importing it."""
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SMOKE_FIELDS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{script.name} declares no module-level SMOKE_FIELDS list (see benchmarks/README.md)")


def field(record: dict, dotted: str):
    value = record
    for key in dotted.split("."):
        assert isinstance(value, dict) and key in value, f"JSON has no field {dotted!r} (missing {key!r})"
        value = value[key]
    return value


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> dict:
    """``run_all.py --smoke`` once for all benchmarks: its exit status, output and combined JSON."""
    out = tmp_path_factory.mktemp("bench-smoke")
    # About a minute on 2 idle cores; the timeouts allow for a machine shared with other jobs (10x slower seen).
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "run_all.py"), "--smoke", "--json-dir", str(out),
                           "--timeout", "900", "--jobs", "2"], cwd=REPO_ROOT, env=_env(), capture_output=True, text=True,
                          timeout=3000)
    combined = json.loads((out / "all.json").read_text()) if (out / "all.json").is_file() else {}
    return {"proc": proc, "dir": out, "combined": combined}


def test_benchmarks_are_found():
    assert len(SCRIPTS) >= 5, [s.name for s in SCRIPTS]


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_benchmark_smoke_run(script: Path, smoke_run):
    fields = smoke_fields(script)
    entry = smoke_run["combined"].get("benchmarks", {}).get(script.stem)
    assert entry is not None, f"run_all did not run {script.name}:\n{smoke_run['proc'].stdout[-3000:]}"
    assert entry["status"] == "ok", f"{script.name}: {entry['reason']}\n{entry['output_tail']}"
    record = json.loads((smoke_run["dir"] / f"{script.stem}.json").read_text())
    assert record["benchmark"] == script.stem and record["smoke"] is True
    assert record["data"].startswith(("real: ", "generated: ")), record["data"]
    assert record["machine"]["cpus"] and record["headline"], record
    for name in fields:
        value = field(record, name)
        assert value is not None, f"{script.name}: {name} is null"
        if isinstance(value, float):
            assert math.isfinite(value), f"{script.name}: {name} = {value}"


def test_run_all_exits_zero_when_every_benchmark_passed(smoke_run):
    assert smoke_run["proc"].returncode == 0, smoke_run["proc"].stdout[-3000:]
    assert "FAILED" not in smoke_run["proc"].stdout


def test_run_all_names_each_failure_in_one_line(tmp_path):
    bench = tmp_path / "benches"
    bench.mkdir()
    (bench / "bench_ok.py").write_text(
        "import argparse, json, pathlib\np = argparse.ArgumentParser()\np.add_argument('--smoke', action='store_true')\n"
        "p.add_argument('--json', type=pathlib.Path)\na = p.parse_args()\n"
        "a.json.write_text(json.dumps({'headline': {'x': 1}}))\n")
    (bench / "bench_broken.py").write_text("from json import no_such_name\n")
    (bench / "bench_silent.py").write_text("print('ran, wrote nothing')\n")
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "run_all.py"), "--smoke", "--bench-dir", str(bench),
                           "--json-dir", str(tmp_path / "out")], env=_env(), capture_output=True, text=True, timeout=120)
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert proc.returncode == 1
    assert failed == [
        "FAILED bench_broken.py: ImportError: cannot import name 'no_such_name' from 'json' "
        f"({Path(json.__file__)}) (exit 1)",
        f"FAILED bench_silent.py: exit 0 but wrote no {tmp_path / 'out' / 'bench_silent.json'}",
    ]
    (bench / "bench_broken.py").unlink()
    (bench / "bench_silent.py").unlink()
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "run_all.py"), "--smoke", "--bench-dir", str(bench),
                           "--json-dir", str(tmp_path / "out")], env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout


def test_generated_sets_load_like_the_upstream_files(tmp_path):
    from posttrain_llm.online_rl_trainer import GSM8KLoader, HumanEvalLoader, MATHLoader

    _generated.write_gsm8k(tmp_path, n=30)
    _generated.write_math500(tmp_path, n=24)
    _generated.write_humaneval(tmp_path, n=12)
    gsm8k = GSM8KLoader(data_dir=tmp_path).load("test")
    math500 = MATHLoader(subset="math500", data_dir=tmp_path).load("test")
    humaneval = HumanEvalLoader(data_dir=tmp_path).load("test")
    assert (len(gsm8k), len(math500), len(humaneval)) == (30, 24, 12)
    assert any("," not in a and float(a) >= 1000 for a in gsm8k["answer"])  # the thousands-separator case occurs
    assert any("\\frac" in a for a in math500["answer"]) and any("\\sqrt" in a for a in math500["answer"])


def test_generated_humaneval_solutions_pass_and_a_wrong_one_fails(tmp_path):
    _generated.write_humaneval(tmp_path, n=12)
    with gzip.open(tmp_path / "humaneval" / "HumanEval.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    for row in rows:  # our own template code, run in-process
        namespace: dict = {}
        exec(row["prompt"] + row["canonical_solution"] + row["test"], namespace)
        namespace["check"](namespace[row["entry_point"]])
        with pytest.raises(AssertionError):
            namespace["check"](lambda *args: None)


def _data_args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"data_dir": None, "generated_data": False, **kw})


def test_resolve_data_falls_back_to_generated_and_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("ONLINE_RL_DATA_DIR", raising=False)
    monkeypatch.setattr(_common, "SHARED_DATA", tmp_path / "no-shared-data")
    folder, label = _common.resolve_data(_data_args(), ["gsm8k/test.jsonl"], _generated.write_gsm8k)
    assert label == "generated: 120 GSM8K-style word problems"
    assert (folder / "gsm8k" / "test.jsonl").is_file()


def test_resolve_data_uses_and_names_the_real_folder(tmp_path, monkeypatch):
    _generated.write_gsm8k(tmp_path, n=3)  # stands for a real folder here: only the layout matters
    monkeypatch.setenv("ONLINE_RL_DATA_DIR", str(tmp_path))
    folder, label = _common.resolve_data(_data_args(), ["gsm8k/test.jsonl"], _generated.write_gsm8k)
    assert (folder, label) == (tmp_path, f"real: {tmp_path}")
    forced = _common.resolve_data(_data_args(generated_data=True), ["gsm8k/test.jsonl"], _generated.write_gsm8k)
    assert forced[0] != tmp_path and forced[1].startswith("generated: ")


def test_resolve_data_rejects_a_named_folder_without_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("ONLINE_RL_DATA_DIR", str(tmp_path))
    with pytest.raises(SystemExit, match=r"ONLINE_RL_DATA_DIR=.*missing \['math/math500_test.jsonl'\]"):
        _common.resolve_data(_data_args(), ["math/math500_test.jsonl"], _generated.write_math500)
    with pytest.raises(SystemExit, match=r"--data-dir .*missing"):
        _common.resolve_data(_data_args(data_dir=tmp_path / "x"), ["gsm8k/test.jsonl"], _generated.write_gsm8k)


def test_smoke_defaults_apply_only_with_smoke_and_never_over_an_explicit_flag():
    def parse(argv):
        parser = argparse.ArgumentParser()
        parser.add_argument("--repeats", type=int, default=3)
        parser.add_argument("--prompts", type=int, default=32)
        return _common.parse_args(parser, argv, {"repeats": 1, "prompts": 2})

    assert (parse([]).repeats, parse([]).prompts, parse([]).smoke) == (3, 32, False)
    args = parse(["--smoke", "--prompts", "5"])
    assert (args.repeats, args.prompts, args.smoke) == (1, 5, True)
    assert _common.json_path(args, "benchmarks/bench_x.py") == _common.OUT_DIR / "smoke" / "bench_x.json"
