"""The reward-model CLI (examples/train_reward_model.py, ``online-rl train-reward-model``) on the tiny model."""

from __future__ import annotations

import json

from posttrain_llm.online_rl_trainer import RewardModelFunction
from posttrain_llm.online_rl_trainer.cli import main as cli_main
from posttrain_llm.online_rl_trainer.examples import train_reward_model


def test_default_run_prints_accuracy_before_and_after_and_saves_a_loadable_model(tmp_path, capsys):
    out = tmp_path / "rm"
    summary = train_reward_model.main(["--max-steps", "3", "--num-pairs", "40", "--num-eval-pairs", "20",
                                       "--output-dir", str(out)])
    printed = capsys.readouterr().out
    line = f"held-out pairwise accuracy: {summary['accuracy_before']:.3f} -> {summary['accuracy_after']:.3f} (20 pairs"
    assert line in printed and "rejected = unformatted:" in printed and "rejected = wrong_number:" in printed
    assert json.loads((out / "reward_model_info.json").read_text())["pairs"] == {"train": 40, "held_out": 20}
    assert RewardModelFunction(str(out))(["\\boxed{2}"], prompts=["1+1="])


def test_the_console_script_runs_it_and_a_missing_file_is_one_error_line(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert cli_main(["train-reward-model", "--pairs", str(missing), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope.jsonl" in err and len(err.strip().splitlines()) == 1
