"""Classic RLHF end to end (examples/train_rlhf.py, ``online-rl train-rlhf``) at tiny sizes: the outputs exist and
agree with what the trainer logged and the evaluations recorded; the weight-0 control reward leaves the update alone.

Nothing here asserts that learning happens: two RL steps of a barely warmed model prove nothing either way. The
warm-up is 2 steps, so the policy never solves a sum; pairs are graded by a stand-in (even-length completions
"pass") so that the pipeline has pairs to train on. The real run's numbers are in the module docstring's README
section, not in a test.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from posttrain_llm.online_rl_trainer import MathRewardFunction, OnlineRLTrainer, TrainerConfig
from posttrain_llm.online_rl_trainer.cli import main as cli_main
from posttrain_llm.online_rl_trainer.core.models.reward_model import RewardModelFunction
from posttrain_llm.online_rl_trainer.core.rewards.base import RewardFunction, RewardResult, completion_text
from posttrain_llm.online_rl_trainer.examples import train_rlhf
from posttrain_llm.online_rl_trainer.examples.common import load_math_dataset


class EvenLengthGrader(RewardFunction):
    """A stand-in checker: a completion of even length 'passes' (a 2-step warm-up never writes a right sum)."""

    name = "even_length"

    def score(self, completion, **row):
        passed = len(completion_text(completion)) % 2 == 0
        return RewardResult(float(passed), "passed" if passed else "failed")


TINY = ["--warmup-steps", "2", "--num-samples", "110", "--eval-samples", "8", "--samples-per-prompt", "4",
        "--rm-eval-prompts", "10", "--rm-steps", "2", "--rm-batch-size", "4", "--max-steps", "2", "--batch-size", "8",
        "--num-generations", "4", "--threads", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rlhf")
    real = train_rlhf.sample_pairs
    mp = pytest.MonkeyPatch()
    mp.setattr(train_rlhf, "sample_pairs", lambda *a, **kw: real(*a, **kw, grader=EvenLengthGrader()))
    try:
        summary = train_rlhf.main([*TINY, "--output-dir", str(out)])
    finally:
        mp.undo()
    return out, summary


def test_every_run_and_both_reward_models_are_reported(run):
    out, summary = run
    assert [(r["trainer"], r["reward"]) for r in summary["runs"]] == [("ppo", "rm"), ("ppo", "exact"), ("grpo", "rm"),
                                                                      ("grpo", "exact")]
    assert [rm["label"] for rm in summary["reward_models"]] == ["warmed policy", "raw tiny model"]
    assert json.loads((out / "rlhf_summary.json").read_text())["trainers"] == ["ppo", "grpo"]
    report = (out / "rlhf_report.md").read_text()
    assert report.count("| PPO | ") == 2 and report.count("| GRPO | ") == 2
    for run_ in summary["runs"]:
        assert (out / f"{run_['trainer']}_{run_['reward']}" / "final" / "config.json").is_file()


def test_before_and_after_accuracy_are_those_of_the_saved_evaluation_records(run):
    out, summary = run
    for r in summary["runs"]:
        report = json.loads((out / f"{r['trainer']}_{r['reward']}" / "before_vs_after" / "report.json").read_text())
        assert r["before"]["accuracy"] == train_rlhf.record_accuracy(report["a"]["records"])
        assert r["after"]["accuracy"] == train_rlhf.record_accuracy(report["b"]["records"])
        assert r["comparison"]["mcnemar_p"] == report["comparison"]["mcnemar_p"]
        assert r["before"]["reward"] == "math_accuracy" and r["before"]["n"] == 8  # graded by the exact checker


def test_the_trained_on_reward_is_what_the_trainer_logged_as_reward(run):
    out, summary = run
    for r in summary["runs"]:
        logged = json.loads((out / f"{r['trainer']}_{r['reward']}" / "final" / "training_metrics.json").read_text())
        rows = [row for row in logged["history"] if "reward" in row]
        assert rows, r["trainer"]
        column = "rm_score" if r["reward"] == "rm" else "true_accuracy"
        assert [p[column] for p in r["gap_curve"]] == pytest.approx([row["reward"] for row in rows], abs=1e-6)
        assert [p["step"] for p in r["gap_curve"]] == [row["step"] for row in rows]


def test_held_out_pairs_come_from_other_prompts_than_the_training_pairs(run):
    out, summary = run
    pairs = summary["pairs"]
    assert pairs["held_out"]["prompts"] == 10 and pairs["train"]["prompts"] == 100
    assert summary["reward_models"][0]["pairs"] == {"train": pairs["train"]["pairs"], "held_out": pairs["held_out"]["pairs"]}
    rows = {name: [json.loads(line) for line in (out / f"pairs_{name}.jsonl").read_text().splitlines()]
            for name in ("train", "held_out")}
    assert [len(rows["train"]), len(rows["held_out"])] == [pairs["train"]["pairs"], pairs["held_out"]["pairs"]]
    prompts = {name: {json.dumps(r["prompt"]) for r in rs} for name, rs in rows.items()}
    assert prompts["train"] and prompts["held_out"] and not prompts["train"] & prompts["held_out"]


def test_the_console_script_runs_it_and_a_bad_trainer_is_one_error_line(tmp_path, capsys):
    assert cli_main(["train-rlhf", "--trainers", "grpo,dpo", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "dpo" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ the weight-0 control reward
@pytest.mark.parametrize("trainer_type", ["grpo", "ppo"])
def test_a_weight_0_reward_is_logged_but_does_not_change_the_update(run, tmp_path, trainer_type):
    out, _ = run
    train, _ = load_math_dataset("arithmetic", tiny=True, data_dir=None, num_train=16, num_test=0, seed=0)
    weights = {}
    for label, with_control in (("alone", False), ("with_control", True)):
        config = TrainerConfig.from_preset(
            train_rlhf.PRESETS[trainer_type], model_name_or_path=str(out / "warmup"), output_dir=str(tmp_path / label),
            max_steps=1, per_device_train_batch_size=8, num_generations=4 if trainer_type == "grpo" else 1,
            reward_weights=[1.0, 0.0] if with_control else None, seed=3, report_to=["none"])
        rm = RewardModelFunction(str(out / "reward_model"), normalize="sigmoid", name=train_rlhf.RM_NAME)
        trainer = OnlineRLTrainer(config, [rm, MathRewardFunction()] if with_control else [rm], train)
        trainer.train()
        weights[label] = {k: v.detach().clone() for k, v in trainer.backend.model.state_dict().items()}
        logged = [row for row in trainer.metrics_history if "reward" in row][-1]
        assert ("rewards/math_accuracy/mean" in logged) == with_control
        assert logged["reward"] == pytest.approx(logged[f"rewards/{train_rlhf.RM_NAME}/mean"], abs=1e-6)
    assert any(not torch.equal(weights["alone"][k], v) for k, v in _start(out).items())  # the step did change them
    assert all(torch.equal(weights["alone"][k], weights["with_control"][k]) for k in weights["alone"])


def _start(out):
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(str(out / "warmup"))
    return model.state_dict()


# ------------------------------------------------------------------ pure helpers
def test_gap_curve_pairs_the_two_rewards_of_each_logged_step():
    history = [{"step": 1, "reward": 0.7, "rewards/reward_model/mean": 0.7, "rewards/math_accuracy/mean": 0.5},
               {"step": 2, "eval/accuracy": 0.4},  # an evaluation row: no training rewards
               {"step": 3, "rewards/reward_model/mean": 0.9, "rewards/math_accuracy/mean": 0.25}]
    assert train_rlhf.reward_gap_curve(history) == [
        {"step": 1, "rm_score": 0.7, "true_accuracy": 0.5, "gap": pytest.approx(0.2)},
        {"step": 3, "rm_score": 0.9, "true_accuracy": 0.25, "gap": pytest.approx(0.65)}]


def test_eval_curve_keeps_one_point_per_step_in_step_order():
    history = [{"step": 4, "eval/accuracy": 0.5}, {"step": 0, "eval/accuracy": 0.25}, {"step": 4, "eval/accuracy": 0.5},
               {"step": 2, "reward": 1.0}]
    assert train_rlhf.eval_curve(history) == [{"step": 0, "accuracy": 0.25}, {"step": 4, "accuracy": 0.5}]


def test_record_accuracy_counts_first_verdicts():
    records = [{"status": "passed"}, {"status": "failed"}, {"status": "no_answer"}, {"status": "passed"}]
    assert train_rlhf.record_accuracy(records) == 0.5
    assert not math.isnan(train_rlhf.record_accuracy(records[:1]))
