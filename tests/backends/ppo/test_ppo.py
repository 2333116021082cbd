"""PPO (core/backends/ppo, core/models/critic.py) on the tiny built-in model: settings errors, metrics, saving, exact
resume, LoRA, the shared critic, judge errors, and a learning test. Pure rollout helpers are checked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from posttrain_llm.online_rl_trainer.core.backends.ppo import checkpoint as ckpt
from posttrain_llm.online_rl_trainer.core.backends.ppo.rollout import combine_rewards, completion_mask, reward_metrics
from posttrain_llm.online_rl_trainer.core.config import ConfigError, TrainerConfig
from posttrain_llm.online_rl_trainer.core.models.critic import ValueModel, load_critic
from posttrain_llm.online_rl_trainer.core.trainer import OnlineRLTrainer
from tests.backends.callbacks import logged_steps, resume_runs
from tests.builders import plus_one_rows

torch.set_num_threads(1)

STEP_METRICS = (
    "reward", "reward_std", "rewards/frac7/mean", "rewards/frac7/std", "rewards/frac7/judge_errors", "kl", "kl_coef",
    "policy_loss", "value_loss", "explained_variance", "clipfrac/policy", "clipfrac/value", "approx_kl", "entropy",
    "completions/mean_length", "step_time", "learning_rate",
    "timing/generate", "timing/sample", "timing/reward", "timing/tokens_per_s", "timing/update",
)


def frac7(completions, **kwargs):
    """Share of the characters that are '7' (the tiny model starts near 1/100)."""
    texts = [c[0]["content"] for c in completions]
    return [t.count("7") / max(1, len(t)) for t in texts]


def _config(tmp_path, tiny_model_dir, **kw):
    base = dict(trainer_type="ppo", model_name_or_path=str(tiny_model_dir), max_steps=1, learning_rate=1e-3,
                kl_coef=0.05, max_completion_length=5, num_generations=2, per_device_train_batch_size=4, ppo_epochs=2,
                num_mini_batches=2, output_dir=str(tmp_path / "out"), save_steps=1000, torch_num_threads=1)
    base.update(kw)
    return TrainerConfig(**base)


def _trainer(tmp_path, tiny_model_dir, reward=frac7, rows=None, **kw):
    return OnlineRLTrainer(_config(tmp_path, tiny_model_dir, **kw), reward, rows or plus_one_rows(32))


def _steps(trainer):
    return [h for h in trainer.metrics_history if "reward" in h]


# ------------------------------------------------------------------------------------------- pure helpers
def test_completion_mask_keeps_the_first_eos_and_masks_what_follows():
    eos = 4
    ids = torch.tensor([[9, 9, 4, 0, 0],   # EOS in the middle: 3 real tokens (EOS included)
                        [4, 0, 0, 0, 0],   # length-1 completion: just EOS
                        [9, 9, 9, 9, 9],   # truncated: no EOS, all real
                        [9, 4, 9, 4, 0]])  # a second EOS after the first is padding
    mask, terminated = completion_mask(ids, [eos])
    assert mask.int().tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert terminated.tolist() == [True, True, False, True]


def test_combine_rewards_weights_components_and_invalidates_none_rows():
    nan = float("nan")
    matrix = torch.tensor([[1.0, 0.5], [nan, 1.0], [0.0, 2.0]], dtype=torch.float64)
    total, valid = combine_rewards(matrix, [1.0, 0.5])
    assert total.tolist() == [1.25, 0.0, 1.0]  # 1 + 0.5*0.5; invalid row -> placeholder 0; 0 + 0.5*2
    assert valid.tolist() == [True, False, True]


def test_reward_metrics_count_judge_errors_and_average_only_valid_rows():
    nan = float("nan")
    matrix = torch.tensor([[1.0], [nan], [3.0]], dtype=torch.float64)
    m = reward_metrics(matrix, [1.0], ["r"])
    assert m["rewards/r/judge_errors"] == 1.0 and m["samples_excluded"] == 1.0
    assert m["reward"] == 2.0 and m["rewards/r/mean"] == 2.0
    assert m["reward_std"] == pytest.approx(math.sqrt(2.0))  # unbiased std of [1, 3]


# ---------------------------------------------------------------------------------------- settings errors
def test_minibatch_larger_than_the_batch_is_rejected():
    with pytest.raises(ConfigError, match="num_mini_batches=8"):
        TrainerConfig(trainer_type="ppo", num_generations=1, per_device_train_batch_size=4, num_mini_batches=8)


def test_gradient_accumulation_must_divide_the_minibatch(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="gradient_accumulation_steps=3"):
        _trainer(tmp_path, tiny_model_dir, gradient_accumulation_steps=3)


def test_a_critic_path_that_does_not_load_is_named(tmp_path, tiny_model_dir):
    missing = str(tmp_path / "no-such-critic")
    with pytest.raises(ConfigError, match="no-such-critic"):
        _trainer(tmp_path, tiny_model_dir, critic_model_name_or_path=missing)


def test_a_critic_with_a_smaller_vocabulary_is_rejected(tmp_path, tiny_model_dir):
    from transformers import LlamaConfig, LlamaModel

    small = LlamaModel(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1))
    small.save_pretrained(tmp_path / "small-critic")
    with pytest.raises(ConfigError, match="vocab_size=50"):
        _trainer(tmp_path, tiny_model_dir, critic_model_name_or_path=str(tmp_path / "small-critic"))


def test_a_smaller_critic_model_with_the_same_tokenizer_is_used(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    small = LlamaModel(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1))
    small.save_pretrained(tmp_path / "small-critic")
    tokenizer.save_pretrained(tmp_path / "small-critic")
    trainer = _trainer(tmp_path, tiny_model_dir, critic_model_name_or_path=str(tmp_path / "small-critic"))
    assert trainer.backend.critic.value_head.in_features == 32
    trainer.train()
    assert math.isfinite(_steps(trainer)[0]["value_loss"])


def test_a_dataset_smaller_than_one_step_is_rejected(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="train_data has 1 rows"):
        _trainer(tmp_path, tiny_model_dir, rows=plus_one_rows(1))


def test_unsupported_report_to_is_rejected(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="wandb"):
        _trainer(tmp_path, tiny_model_dir, report_to=["wandb"])


# ------------------------------------------------------------------------------------------- one step
def test_one_step_logs_every_metric_finite(tmp_path, tiny_model_dir):
    trainer = _trainer(tmp_path, tiny_model_dir, max_steps=2)
    trainer.train()
    logged = _steps(trainer)[-1]  # step 2: the policy has moved, so KL is not trivially 0
    for key in STEP_METRICS:
        assert key in logged, key
        assert math.isfinite(logged[key]), (key, logged[key])


def test_first_update_sees_a_ratio_of_exactly_one(tmp_path, tiny_model_dir):
    # One epoch, one minibatch: the update's log-probs must equal the rollout's (same positions, temperature, masks).
    trainer = _trainer(tmp_path, tiny_model_dir, ppo_epochs=1, num_mini_batches=1, temperature=0.7)
    trainer.train()
    logged = _steps(trainer)[0]
    assert logged["approx_kl"] < 1e-6 and logged["clipfrac/policy"] == 0.0


def test_tensorboard_receives_the_logs(tmp_path, tiny_model_dir):
    trainer = _trainer(tmp_path, tiny_model_dir, report_to=["tensorboard"])
    trainer.train()
    assert list((tmp_path / "out" / "runs").rglob("events.out.tfevents.*"))


def test_save_model_writes_a_policy_and_a_critic_that_reload(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    trainer = _trainer(tmp_path, tiny_model_dir)
    trainer.train()
    out = trainer.save_model(tmp_path / "final")
    policy = AutoModelForCausalLM.from_pretrained(out)
    for name, tensor in trainer.backend.model.state_dict().items():
        assert torch.equal(policy.state_dict()[name], tensor), name
    critic = load_critic(out / "critic")
    assert isinstance(critic, ValueModel)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = trainer.backend.critic(ids, torch.ones_like(ids))
        assert torch.equal(critic(ids, torch.ones_like(ids)), expected)


def test_shared_critic_trains_and_saves_its_head(tmp_path, tiny_model_dir):
    trainer = _trainer(tmp_path, tiny_model_dir, critic_type="shared")
    head_before = trainer.backend.critic.value_head.weight.detach().clone()
    trainer.train()
    assert not torch.equal(trainer.backend.critic.value_head.weight, head_before)
    out = trainer.save_model(tmp_path / "final")
    reloaded = load_critic(out / "critic")  # the head on the policy saved in the parent folder
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        _, values = reloaded(ids, torch.ones_like(ids))
        _, expected = trainer.backend.critic(ids, torch.ones_like(ids))
    assert torch.equal(values, expected)


def test_lora_trains_the_adapter_only_and_saves_a_merged_policy(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    trainer = _trainer(tmp_path, tiny_model_dir, use_peft=True, lora_r=4, lora_alpha=8, max_steps=2)
    base = {k: v.clone() for k, v in trainer.backend.model.state_dict().items() if "lora_" not in k}
    lora = {k: v.clone() for k, v in trainer.backend.model.state_dict().items() if "lora_B" in k}
    trainer.train()
    now = trainer.backend.model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in base.items())
    assert any(not torch.equal(now[k], v) for k, v in lora.items())
    assert _steps(trainer)[-1]["kl"] != 0.0  # the reference (adapter disabled) differs from the trained policy
    out = trainer.save_model(tmp_path / "final")
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, trainer.backend.model(input_ids=ids).logits, atol=1e-5)


# ----------------------------------------------------------------------------------------- judge errors
class NoneForSomeRows:
    """Returns None (judge could not decide) for every completion of even-numbered prompts."""

    __name__ = "flaky"

    def __call__(self, completions, answer, **kwargs):
        return [None if int(a) % 2 == 0 else 1.0 for a in answer]


def test_judge_errors_are_counted_and_their_samples_get_no_gradient(tmp_path, tiny_model_dir):
    trainer = _trainer(tmp_path, tiny_model_dir, reward=NoneForSomeRows(), num_generations=1)
    backend = trainer.backend
    rows = [backend.train_dataset[i] for i in range(4)]  # answers 1, 2, 3, 4 -> rows 1 and 3 undecided
    batch, metrics = backend.rollout(rows)
    assert metrics["rewards/flaky/judge_errors"] == 2.0 and metrics["samples_excluded"] == 2.0
    assert metrics["reward"] == 1.0  # the mean over the two decided samples only
    excluded = torch.tensor([False, True, False, True])
    assert not batch["train_mask"][excluded].any() and batch["train_mask"][~excluded].any()
    assert torch.all(batch["advantages"][excluded] == 0) and torch.all(batch["returns"][excluded] == 0)


def test_a_batch_without_any_decided_sample_does_not_move_the_policy(tmp_path, tiny_model_dir):
    trainer = _trainer(tmp_path, tiny_model_dir, reward=lambda completions, **kw: [None] * len(completions))
    before = {k: v.clone() for k, v in trainer.backend.model.state_dict().items()}
    trainer.train()
    assert all(torch.equal(v, trainer.backend.model.state_dict()[k]) for k, v in before.items())
    assert _steps(trainer)[0]["rewards/<lambda>/judge_errors"] == 4.0


# ------------------------------------------------------------------------------------------- checkpoints
def test_a_crash_while_saving_leaves_no_checkpoint_folder(tmp_path, tiny_model_dir, monkeypatch):
    from posttrain_llm.online_rl_trainer.core.backends.ppo import trainer as ppo

    trainer = _trainer(tmp_path, tiny_model_dir, save_steps=1)

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(ppo, "save_critic", disk_full)  # the policy is already written when this fails
    with pytest.raises(OSError, match="No space left"):
        trainer.train()
    assert not list((tmp_path / "out").glob("checkpoint-*"))
    assert ckpt.latest_checkpoint(tmp_path / "out") is None


def _all_weights(trainer):
    return {**{f"policy.{k}": v for k, v in trainer.backend.model.state_dict().items()},
            **{f"critic.{k}": v for k, v in trainer.backend.critic.state_dict().items()}}


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path, tiny_model_dir):
    kw = dict(max_steps=4, save_steps=2, adaptive_kl=True, kl_target=0.1, kl_horizon=10)
    straight, interrupted, resumed = resume_runs(lambda out, callbacks: OnlineRLTrainer(
        _config(out, tiny_model_dir, **kw), frac7, plus_one_rows(32), callbacks=callbacks), tmp_path)
    a, b = logged_steps(straight), logged_steps(interrupted, resumed)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        for key in a[step]:
            if key != "step_time" and not key.startswith("timing/"):  # wall-clock times may differ, nothing else
                assert a[step][key] == b[step][key], (step, key, a[step][key], b[step][key])
    assert a[4]["kl_coef"] != a[1]["kl_coef"]  # the adaptive controller moved, and its state was restored
    wa, wb = _all_weights(straight), _all_weights(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# ---------------------------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def learned(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("learn")
    cfg = _config(tmp, tiny_model_dir, max_steps=20, num_generations=4, per_device_train_batch_size=16, ppo_epochs=4,
                  num_mini_batches=1, max_completion_length=6, kl_coef=0.01, seed=0)
    trainer = OnlineRLTrainer(cfg, frac7, plus_one_rows(64))
    reference = trainer.backend.c.reference
    frozen = {k: v.clone() for k, v in reference.state_dict().items()}
    trainer.train()
    return trainer, reference, frozen


def test_ppo_raises_the_reward_for_emitting_sevens(learned):
    trainer, _, _ = learned
    rewards = [h["reward"] for h in _steps(trainer)]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert first < 0.05 and last > 0.3, rewards


def test_kl_penalty_is_active_and_the_reference_stays_frozen(learned):
    trainer, reference, frozen = learned
    assert _steps(trainer)[-1]["kl"] > 0.0
    assert all(not p.requires_grad for p in reference.parameters())
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in frozen.items())
    assert any(not torch.equal(v, trainer.backend.model.state_dict()[k]) for k, v in frozen.items())
