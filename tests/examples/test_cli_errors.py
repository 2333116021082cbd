"""The CLIs on bad input: one ``error:`` line on stderr and exit code 2; the traceback only with ``--debug`` or
``POSTTRAIN_LLM_DEBUG=1``; a bug keeps its traceback (issue 16). Before, every ConfigError/DataError came with a
~20-line traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from posttrain_llm.online_rl_trainer import ConfigError
from posttrain_llm.online_rl_trainer.cli import main as cli_main
from posttrain_llm.online_rl_trainer.examples import evaluate_model, train_code, train_math
from posttrain_llm.online_rl_trainer.examples.cli_errors import DEBUG_ENV, run_cli
from posttrain_llm.online_rl_trainer.examples.common import load_math_dataset

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def dup_yaml(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("seed: 1\nseed: 2\n")
    return path


def _one_error_line(capsys) -> str:
    """The error line: the last one on stderr, the only one starting with "error:", and no traceback (progress
    bars from loading the model may come before it)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and sum(line.startswith("error: ") for line in err) == 1, err
    assert not any("Traceback" in line for line in err), err
    return err[-1]


def test_user_error_is_one_line_and_exit_code_2_in_a_real_process(tmp_path, dup_yaml):
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    env.pop(DEBUG_ENV, None)
    cmd = [sys.executable, "-m", "posttrain_llm.online_rl_trainer.examples.train_math", "--config", str(dup_yaml),
           "--output-dir", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"error: config file {str(dup_yaml)!r}: key 'seed' appears twice (lines 1 and 2); " \
                                  "the last one would silently win. Keep one 'seed'"
    # With the environment variable, the full traceback (and Python's exit code 1).
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**env, DEBUG_ENV: "1"}, timeout=300)
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr
    assert "ConfigError: config file" in proc.stderr


@pytest.mark.parametrize("module", [train_math, train_code, evaluate_model])
def test_every_cli_prints_one_line_and_returns_2(module, dup_yaml, tmp_path, capsys):
    argv = {train_math: ["--config", str(dup_yaml), "--output-dir", str(tmp_path)],
            train_code: ["--config", str(dup_yaml), "--output-dir", str(tmp_path)],
            evaluate_model: ["--model", "builtin:tiny-char-llama", "--num-samples", "0"]}[module]
    assert run_cli(module.main, argv) == 2
    line = _one_error_line(capsys)
    assert ("appears twice" in line) if module is not evaluate_model else ("--num-samples 0" in line)


def test_console_script_prints_one_line_and_returns_2(dup_yaml, tmp_path, capsys):
    assert cli_main(["train", "--config", str(dup_yaml), "--output-dir", str(tmp_path)]) == 2
    assert "appears twice" in _one_error_line(capsys)


def test_debug_flag_and_environment_variable_show_the_traceback(dup_yaml, tmp_path, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(ConfigError, match="appears twice"):
        run_cli(train_math.main, ["--config", str(dup_yaml), "--output-dir", str(tmp_path), "--debug"])
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ConfigError, match="appears twice"):
        run_cli(train_math.main, ["--config", str(dup_yaml), "--output-dir", str(tmp_path)])


def test_a_bug_keeps_its_traceback():
    def buggy(argv):
        return {}["missing"]

    with pytest.raises(KeyError):
        run_cli(buggy, [])
    assert run_cli(lambda argv: {"ok": True}, []) == 0


def test_unknown_dataset_is_one_line(capsys):
    assert run_cli(train_math.main, ["--dataset", "nope", "--max-steps", "1"]) == 2
    assert "--dataset 'nope': not one of" in _one_error_line(capsys)


# --------------------------------------------------------------------------------------------- cases from the issue

def test_too_few_prompts_for_one_step_from_the_cli(tmp_path, capsys):
    # Before: `train_math --num-samples 10` (demo preset, 16 prompts a step) trained 0 steps and exited 0.
    code = run_cli(train_math.main, ["--num-samples", "10", "--no-warmup", "--eval-samples", "0",
                                     "--output-dir", str(tmp_path / "a")])
    assert code == 2
    assert "train_data has 10 prompts but one grpo step needs 16" in _one_error_line(capsys)
    assert not (tmp_path / "a" / "final").exists()
    # With the warm-up, its own minimum comes first, as one line too.
    assert run_cli(train_math.main, ["--num-samples", "10", "--output-dir", str(tmp_path / "b")]) == 2
    assert "warm-up needs more than 100 training prompts (got 10)" in _one_error_line(capsys)


def test_one_row_dataset_with_eval_samples(tmp_path, capsys):
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n")
    code = run_cli(train_math.main, ["--dataset", str(data), "--eval-samples", "5", "--no-warmup",
                                     "--output-dir", str(tmp_path / "out")])
    assert code == 2
    assert "gives 1 row; holding out problems for evaluation (--eval-samples 5) needs at least 2" in \
        _one_error_line(capsys)


def test_top_p_out_of_range_from_the_cli(capsys):
    assert run_cli(evaluate_model.main, ["--model", "builtin:tiny-char-llama", "--top-p", "7",
                                         "--num-samples", "2"]) == 2
    assert "top_p=7.0 must be in (0, 1]" in _one_error_line(capsys)


def test_skip_invalid_flag_exists_and_load_errors_name_it(tmp_path, capsys):
    # Before: the message suggested skip_invalid=True, which no CLI flag exposed.
    data = tmp_path / "d.jsonl"
    rows = [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(6)]
    rows[3]["answer"] = ""
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_cli(evaluate_model.main, ["--model", "builtin:tiny-char-llama", "--dataset", str(data)]) == 2
    line = _one_error_line(capsys)
    assert "row 3 (line 4), column 'answer'" in line and "(or pass --skip-invalid to skip invalid rows)" in line
    train, _ = load_math_dataset(str(data), tiny=True, data_dir=None, num_train=None, num_test=0, seed=0,
                                 skip_invalid=True)
    assert len(train) == 5
    for module in (train_math, train_code, evaluate_model):
        extra = ["--model", "m"] if module is evaluate_model else []
        assert module.build_parser().parse_args([*extra, "--skip-invalid", "--debug"]).skip_invalid


def test_cpu_bf16_on_without_native_bf16_from_the_cli(capsys, monkeypatch):
    from posttrain_llm.online_rl_trainer.core.common import machine

    monkeypatch.setattr(machine, "_cpu_supports_bf16", lambda: False)
    assert run_cli(evaluate_model.main, ["--model", "builtin:tiny-char-llama", "--cpu-bf16", "on",
                                         "--num-samples", "2"]) == 2
    assert "(--cpu-bf16 on) but this CPU has no native bfloat16" in _one_error_line(capsys)
