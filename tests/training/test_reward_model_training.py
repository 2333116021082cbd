"""train_reward_model (core/training/reward_model.py) on the tiny model and arithmetic pairs, and the trained reward
model as the reward of short GRPO and PPO runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from posttrain_llm.online_rl_trainer import (
    ConfigError,
    OnlineRLTrainer,
    RewardModelFunction,
    RewardModelTrainingConfig,
    TrainerConfig,
    arithmetic_preference_pairs,
    train_reward_model,
)
from posttrain_llm.online_rl_trainer.core.data.base import DataError
from posttrain_llm.online_rl_trainer.core.models.reward_model import INFO_FILENAME
from tests.builders import plus_one_rows

torch.set_num_threads(1)

#: Measured on the tiny model (seed 0, 1 thread on a busy 2-core CPU): 60 steps of 16 pairs take ~9 s and move held-out
#: accuracy 0.29 -> 0.82: "unformatted" pairs 0.08 -> 1.00, "wrong_number" ones 0.50 -> 0.64 (50 pairs: barely off
#: chance; telling a wrong sum from a right one means learning to add, which takes far longer: 1,500 steps reach 0.67).
STEPS = 60


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("rm") / "model"
    summary = train_reward_model(arithmetic_preference_pairs(300, seed=0), model=str(tiny_model_dir),
                                 eval_data=arithmetic_preference_pairs(100, seed=0, split="test"),
                                 output_dir=str(out), max_steps=STEPS, logging_steps=20)
    return summary


def test_training_lifts_held_out_pairwise_accuracy_clearly_above_chance(trained):
    before, after = trained["held_out_before"], trained["held_out_after"]
    assert after["n"] == 100
    assert after["accuracy"] >= 0.7, trained  # chance is 0.5; 0.7 is four standard errors above it at n=100
    assert after["accuracy"] > before["accuracy"]  # before: a random head, often systematically for or against the box
    assert after["by_kind"]["unformatted"] >= 0.95
    assert after["mean_margin"] > before["mean_margin"]


def test_the_folder_holds_a_reward_model_and_the_summary(trained):
    folder = trained["output_dir"]
    info = json.loads((Path(folder) / INFO_FILENAME).read_text())
    assert info["accuracy_before"] == trained["accuracy_before"] and info["accuracy_after"] == trained["accuracy_after"]
    assert info["pairs"] == {"train": 300, "held_out": 100} and info["chat_template"] is True
    assert info["score_stats"]["n"] == 600 and info["score_stats"]["std"] > 0
    assert [h["step"] for h in info["loss_history"]] == [20, 40, 60]
    config = json.loads((Path(folder) / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and len(config["id2label"]) == 1


def test_the_saved_folder_reloads_to_the_scores_it_was_measured_with(trained):
    held_out = arithmetic_preference_pairs(100, seed=0, split="test")
    rm = RewardModelFunction(trained["output_dir"], batch_size=7)
    prompts = [p["prompt"] for p in held_out]
    chosen = rm([p["chosen"] for p in held_out], prompts=prompts)
    rejected = rm([p["rejected"] for p in held_out], prompts=prompts)
    accuracy = sum(c > r for c, r in zip(chosen, rejected)) / len(held_out)
    margin = sum(c - r for c, r in zip(chosen, rejected)) / len(held_out)
    assert accuracy == trained["accuracy_after"]
    assert margin == pytest.approx(trained["held_out_after"]["mean_margin"], abs=1e-4)
    again = RewardModelFunction(trained["output_dir"])([p["chosen"] for p in held_out], prompts=prompts)
    assert again == pytest.approx(chosen, abs=1e-5)


def test_plain_text_pairs_from_a_jsonl_file_with_a_held_out_share(tmp_path, tiny_model_dir):
    path = tmp_path / "prefs.jsonl"
    rows = [{"prompt": f"{a}+1=", "chosen": f"\\boxed{{{a + 1}}}", "rejected": str(a + 1)} for a in range(20)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    summary = train_reward_model(str(path), model=str(tiny_model_dir), output_dir=str(tmp_path / "rm"), max_steps=2,
                                 eval_share=0.25, use_chat_template=False)
    assert summary["pairs"] == {"train": 15, "held_out": 5} and summary["chat_template"] is False
    assert "by_kind" not in summary["held_out_after"]
    assert not RewardModelFunction(summary["output_dir"], use_chat_template=False).use_chat_template


@pytest.mark.parametrize("fields, fragment", [
    (dict(max_steps=0), "max_steps=0"), (dict(learning_rate=-1.0), "learning_rate=-1.0"),
    (dict(eval_share=1.0), "eval_share=1.0"), (dict(center_rewards_coefficient=0.0), "center_rewards_coefficient=0.0"),
    (dict(model=""), "model=''"), (dict(batch_size=True), "batch_size=True"),
])
def test_bad_settings_name_the_value(fields, fragment):
    with pytest.raises(ConfigError, match=fragment):
        RewardModelTrainingConfig(**fields)


def test_bad_pairs_are_named_before_any_model_loads(tmp_path):
    with pytest.raises(DataError, match="row 0, column 'rejected'"):
        train_reward_model([{"prompt": "q", "chosen": "a"}], output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="at least 2 are needed"):
        train_reward_model([{"prompt": "q", "chosen": "a", "rejected": "b"}], output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="not both"):
        train_reward_model([], RewardModelTrainingConfig(), max_steps=3)


# ------------------------------------------------------------------------------------------- as a training reward
class RecordingRewardModel(RewardModelFunction):
    """The reward model, keeping every batch of scores it hands the trainer."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list[list[float]] = []

    def score_batch(self, completions, **kwargs):
        results = super().score_batch(completions, **kwargs)
        self.batches.append([r.score for r in results])
        return results


def _run(tmp_path, tiny_model_dir, rm, **config):
    base = dict(model_name_or_path=str(tiny_model_dir), max_steps=1, learning_rate=1e-3, kl_coef=0.0,
                max_completion_length=6, num_generations=4, per_device_train_batch_size=8, logging_steps=1,
                output_dir=str(tmp_path / "out"), save_steps=1000, torch_num_threads=1)
    base.update(config)
    trainer = OnlineRLTrainer(TrainerConfig(**base), rm, plus_one_rows(16))
    trainer.train()
    return [h for h in trainer.metrics_history if "rewards/reward_model/mean" in h]


@pytest.mark.parametrize("algo, extra", [
    ("grpo", {}),
    ("ppo", dict(num_generations=1, per_device_train_batch_size=8, ppo_epochs=1, num_mini_batches=2)),
])
def test_its_scores_reach_the_trainers_reward_metrics(algo, extra, trained, tmp_path, tiny_model_dir):
    rm = RecordingRewardModel(trained["output_dir"])
    logged = _run(tmp_path, tiny_model_dir, rm, trainer_type=algo, **extra)
    assert len(logged) == 1 and len(rm.batches) == 1 and len(rm.batches[0]) == 8
    scores = rm.batches[0]
    assert logged[0]["rewards/reward_model/mean"] == pytest.approx(sum(scores) / len(scores), abs=1e-4)
    assert logged[0]["reward"] == pytest.approx(sum(scores) / len(scores), abs=1e-4)  # the only reward, weight 1
    assert len(set(scores)) > 1  # the completions differ, and so do their scores


@pytest.mark.slow
def test_smollm2_trains_on_chat_pairs_and_reloads_as_a_chat_reward(smollm2_dir, tmp_path):
    """SmolLM2-135M-Instruct as the starting model: chat-template rendering end to end (a few steps, not accuracy)."""
    held_out = arithmetic_preference_pairs(8, seed=0, split="test", prompt_style="chat")
    summary = train_reward_model(arithmetic_preference_pairs(16, seed=0, prompt_style="chat"), model=str(smollm2_dir),
                                 eval_data=held_out, output_dir=str(tmp_path / "rm"), max_steps=3, batch_size=4,
                                 learning_rate=1e-5, logging_steps=1)
    assert summary["chat_template"] is True and summary["truncated_sequences"] == {"train": 0, "held_out": 0}
    rm = RewardModelFunction(summary["output_dir"], batch_size=4)
    assert rm.use_chat_template
    prompts = [p["prompt"] for p in held_out]
    chosen = rm([p["chosen"] for p in held_out], prompts=prompts)
    rejected = rm([p["rejected"] for p in held_out], prompts=prompts)
    margin = sum(c - r for c, r in zip(chosen, rejected)) / len(held_out)
    assert margin == pytest.approx(summary["held_out_after"]["mean_margin"], abs=1e-3)
