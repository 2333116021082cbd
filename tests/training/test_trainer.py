"""OnlineRLTrainer on the tiny built-in model: GRPO/RLOO wiring, reward guarding, outputs, evaluation."""

from __future__ import annotations

import json

import pytest
import torch

from posttrain_llm.online_rl_trainer import (
    CompositeRewardFunction,
    ConfigError,
    FormatRewardFunction,
    MathRewardFunction,
    ModelEvaluator,
    OnlineRLTrainer,
    RewardFunction,
    RewardFunctionError,
    TrainerConfig,
)
from tests.builders import plus_one_rows

torch.set_num_threads(1)


def _config(tmp_path, tiny_model_dir, **kw):
    base = dict(model_name_or_path=str(tiny_model_dir), max_steps=2, learning_rate=1e-3, kl_coef=0.0,
                max_completion_length=6, num_generations=4, per_device_train_batch_size=8, output_dir=str(tmp_path / "out"),
                save_steps=1000, torch_num_threads=1)
    base.update(kw)
    return TrainerConfig(**base)


class ContainsSeven(RewardFunction):
    name = "has7"

    def __call__(self, completions, **kwargs):
        return [1.0 if "7" in c[0]["content"] else 0.0 for c in completions]


@pytest.mark.parametrize("algo, kl", [("grpo", 0.0), ("rloo", 0.05)])
def test_two_steps_log_metrics_and_save_a_loadable_model(algo, kl, tmp_path, tiny_model_dir):
    config = _config(tmp_path, tiny_model_dir, trainer_type=algo, kl_coef=kl)
    trainer = OnlineRLTrainer(config, ContainsSeven(), plus_one_rows(16))
    trainer.train()
    steps = [h for h in trainer.metrics_history if "reward" in h]
    assert [h["step"] for h in steps] == [1, 2]
    for key in ("reward", "reward_std", "rewards/has7/mean", "completions/mean_length", "step_time",
                "timing/generate", "timing/reward", "timing/tokens_per_s"):
        assert key in steps[0], key
    # generation (with its rewards) is part of the step, the rewards part of generation; tokens/s is mean tokens
    # per completion x completions / generation seconds, so it cannot be zero when completions have tokens
    assert 0 <= steps[0]["timing/reward"] <= steps[0]["timing/generate"] <= steps[0]["step_time"]
    assert steps[0]["timing/tokens_per_s"] > 0
    if kl > 0:
        assert "kl" in steps[0]
    out = trainer.save_model(tmp_path / "final")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok("12+7=")["input_ids"] and model.config.vocab_size == len(tok)
    assert TrainerConfig.from_yaml(out / "online_rl_config.yaml") == trainer.config
    metrics = json.loads((out / "training_metrics.json").read_text())
    assert len([h for h in metrics["history"] if "reward" in h]) == 2
    assert (out / "reward_curve.png").stat().st_size > 1000


def test_training_changes_the_weights(tmp_path, tiny_model_dir):
    trainer = OnlineRLTrainer(_config(tmp_path, tiny_model_dir, max_steps=3), ContainsSeven(), plus_one_rows(16))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_composite_is_logged_per_component(tmp_path, tiny_model_dir):
    composite = CompositeRewardFunction([MathRewardFunction(), FormatRewardFunction(kind="boxed")], weights=[1.0, 0.5])
    trainer = OnlineRLTrainer(_config(tmp_path, tiny_model_dir, max_steps=1), composite, plus_one_rows(16))
    assert trainer.reward_weights == [1.0, 0.5]
    trainer.train()
    logged = trainer.metrics_history[0]
    assert "rewards/math_accuracy/mean" in logged and "rewards/format_boxed/mean" in logged


class Raises(RewardFunction):
    name = "broken"

    def __call__(self, completions, **kwargs):
        raise KeyError("no such column")


class ReturnsNaN(RewardFunction):
    name = "nan_reward"

    def __call__(self, completions, **kwargs):
        return [float("nan")] * len(completions)


class WrongLength(RewardFunction):
    name = "short"

    def __call__(self, completions, **kwargs):
        return [0.0]


@pytest.mark.parametrize("reward, fragment", [
    (Raises(), "reward 'broken' raised KeyError"),
    (ReturnsNaN(), "reward 'nan_reward' returned nan for sample 0"),
    (WrongLength(), "reward 'short' returned 1 values for 8 completions"),
])
def test_misbehaving_reward_stops_training_with_its_name(reward, fragment, tmp_path, tiny_model_dir):
    trainer = OnlineRLTrainer(_config(tmp_path, tiny_model_dir, max_steps=1), reward, plus_one_rows(16))
    with pytest.raises(RewardFunctionError) as err:
        trainer.train()
    assert fragment in str(err.value)


def test_prompt_longer_than_max_prompt_length_names_the_row(tmp_path, tiny_model_dir):
    rows = plus_one_rows(4)
    rows[2]["prompt"] = [{"role": "user", "content": "9" * 80}]
    with pytest.raises(ConfigError, match="prompt of row 2 is .* tokens, over max_prompt_length=40"):
        OnlineRLTrainer(_config(tmp_path, tiny_model_dir, max_prompt_length=40), ContainsSeven(), rows)


@pytest.mark.parametrize("data, fragment", [([], "train_data is empty"), ([{"question": "x"}], "no 'prompt' column")])
def test_bad_training_data(data, fragment, tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match=fragment):
        OnlineRLTrainer(_config(tmp_path, tiny_model_dir), ContainsSeven(), data)


def test_duplicate_reward_names_rejected(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="duplicated"):
        OnlineRLTrainer(_config(tmp_path, tiny_model_dir), [ContainsSeven(), ContainsSeven()], plus_one_rows(16))


def test_eval_steps_log_task_accuracy(tmp_path, tiny_model_dir):
    trainer = OnlineRLTrainer(_config(tmp_path, tiny_model_dir, max_steps=2, eval_steps=1), MathRewardFunction(),
                              plus_one_rows(16), eval_data=plus_one_rows(4))
    start = trainer.evaluate()
    trainer.train()
    evals = [h for h in trainer.metrics_history if "eval/accuracy" in h]
    assert [h["step"] for h in evals] == [0, 1, 2]
    assert evals[0]["eval/accuracy"] == start["accuracy"] and all(h["eval/n"] == 4 for h in evals)
    # The final evaluation is cached per step: asking again after train() does not generate again.
    assert trainer.evaluate() is trainer.evaluate()
    assert len([h for h in trainer.metrics_history if "eval/accuracy" in h]) == 3


def test_evaluator_accuracy_counts_exact_matches(tiny_model_dir):
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(tiny_model_dir))
    ev = ModelEvaluator(model, tok, max_new_tokens=4, show_progress=False)
    texts, _ = ev.generate([r["prompt"] for r in plus_one_rows(3)])
    # Grade against the model's own greedy outputs: rows whose gold is what it wrote are right, the others wrong.
    rows = [{"prompt": r["prompt"], "answer": t[0]} for r, t in zip(plus_one_rows(3), texts)]
    rows[1]["answer"] = texts[1][0] + "x"

    def exact(completions, answer, **kw):
        return [1.0 if c == a else 0.0 for c, a in zip(completions, answer)]

    res = ev.evaluate(rows, exact)
    assert res["n"] == 3 and res["num_correct"] == 2 and res["accuracy"] == pytest.approx(2 / 3)
    assert [r["status"] for r in res["records"]] == ["passed", "failed", "passed"]
    assert res["mean_completion_length"] <= 4


def test_evaluator_greedy_is_batch_invariant(tiny_model_dir):
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(tiny_model_dir))
    prompts = [[{"role": "user", "content": "1" * k}] for k in (1, 5, 9, 13)]
    one = ModelEvaluator(model, tok, batch_size=1, max_new_tokens=5, show_progress=False).generate(prompts)[0]
    many = ModelEvaluator(model, tok, batch_size=4, max_new_tokens=5, show_progress=False).generate(prompts)[0]
    assert one == many
