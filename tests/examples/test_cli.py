"""The command-line drivers, run as a user would, on the tiny model with small sizes."""

from __future__ import annotations

import json

import pytest

from posttrain_llm.online_rl_trainer import ConfigError, TrainerConfig
from posttrain_llm.online_rl_trainer.cli import main as cli_main
from posttrain_llm.online_rl_trainer.examples import evaluate_model, train_math


def test_train_math_then_evaluate_and_compare(tmp_path, capsys):
    out = tmp_path / "run"
    summary = train_math.main([
        "--max-steps", "2", "--num-generations", "4", "--eval-samples", "20", "--output-dir", str(out),
        "--threads", "1", "--no-warmup",
    ])
    printed = capsys.readouterr().out
    assert "before RL:" in printed and "after RL:" in printed
    assert summary["steps"] == 2
    after = summary["after"]
    assert after["n"] == 20 and after["num_judged"] == 20 - after["judge_errors"]
    assert after["accuracy"] == after["num_correct"] / after["num_judged"]  # the headline is the counted verdicts
    assert summary["comparison"]["accuracy_b"] == after["accuracy"]  # the before/after report used the same result
    final = out / "final"
    assert (final / "config.json").is_file() and (final / "reward_curve.png").is_file()
    saved = json.loads((out / "demo_summary.json").read_text())
    assert saved["accuracy_gain"] == pytest.approx(summary["after"]["accuracy"] - summary["before"]["accuracy"])
    assert TrainerConfig.from_yaml(final / "online_rl_config.yaml").max_steps == 2

    result = evaluate_model.main(["--model", str(final), "--compare", str(final), "--num-samples", "10",
                                  "--output", str(tmp_path / "eval.json")])
    c = result["comparison"]
    assert c["only_a"] == c["only_b"] == 0 and c["mcnemar_p"] == 1.0
    assert c["difference_b_minus_a"] == 0.0 and c["difference_ci95"] == [0.0, 0.0]
    assert json.loads((tmp_path / "eval.json").read_text())["a"]["n"] == 10
    printed = capsys.readouterr().out
    # The summary table, strict and lenient side by side, and the paths of the report files.
    assert "| accuracy (strict) |" in printed and "| accuracy (lenient) |" in printed
    assert "no significant difference" in printed
    for name in ("eval.md", "eval_accuracy.png"):
        assert (tmp_path / name).is_file() and str(tmp_path / name) in printed
    # The main job wrote the paired before/after report without generating again.
    report = (out / "before_vs_after" / "report.md").read_text()
    assert "McNemar" in report and saved["comparison"]["n_paired"] == 20


def test_train_math_flags_override_the_preset(tmp_path):
    args = train_math.build_parser().parse_args(["--trainer", "rloo", "--num-generations", "4", "--max-steps", "3",
                                                 "--output-dir", str(tmp_path)])
    c = train_math.build_config(args)
    assert (c.trainer_type, c.num_generations, c.per_device_train_batch_size, c.max_steps) == ("rloo", 4, 8, 3)
    assert c.learning_rate == TrainerConfig.from_preset("offline-demo").learning_rate
    assert not c.dynamic_sampling
    c = train_math.build_config(train_math.build_parser().parse_args(["--dynamic-sampling", "--max-sampling-rounds",
                                                                      "2"]))
    assert (c.dynamic_sampling, c.max_sampling_rounds) == (True, 2)


def test_train_math_config_file(tmp_path):
    path = TrainerConfig.from_preset("cpu-smoke", learning_rate=1e-3).save_yaml(tmp_path / "c.yaml")
    c = train_math.build_config(train_math.build_parser().parse_args(["--config", str(path), "--seed", "7"]))
    assert c.learning_rate == 1e-3 and c.seed == 7


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(ConfigError, match="--dataset 'nope'"):
        train_math.main(["--dataset", "nope", "--max-steps", "1"])


def test_console_script_dispatch(capsys):
    assert cli_main(["bogus"]) == 2
    assert "unknown command 'bogus'" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["train", "--help"])
    assert "--num-generations" in capsys.readouterr().out


def test_train_math_resume_continues_from_the_latest_checkpoint(tmp_path):
    out = tmp_path / "run"
    common = ["--num-generations", "4", "--eval-samples", "0", "--output-dir", str(out), "--threads", "1",
              "--no-warmup", "--save-steps", "1"]
    with pytest.raises(ValueError, match="no complete checkpoint"):
        train_math.main([*common, "--max-steps", "2", "--resume"])
    train_math.main([*common, "--max-steps", "2"])
    assert (out / "checkpoint-2" / "checkpoint_complete.json").is_file()
    stale = out / ".tmp-checkpoint-7"  # what a crash while saving leaves behind
    stale.mkdir()
    summary = train_math.main([*common, "--max-steps", "3", "--resume"])
    assert summary["steps"] == 3 and not stale.exists()
    history = json.loads((out / "final" / "training_metrics.json").read_text())["history"]
    # Only step 3 was trained in this process: steps 1-2 came from checkpoint-2.
    assert [h["step"] for h in history if "reward" in h] == [3]
