"""TrainerConfig: SEED defaults, validation messages, presets, YAML round-trip, TRL mapping."""

from __future__ import annotations

import dataclasses

import pytest

from posttrain_llm.online_rl_trainer import ConfigError, TrainerConfig
from posttrain_llm.online_rl_trainer.core.presets import PRESETS
from posttrain_llm.online_rl_trainer.core.trl_arguments import to_trl_args


def test_seed_defaults():
    c = TrainerConfig(model_name_or_path="m")
    assert (c.trainer_type, c.num_generations, c.learning_rate, c.num_train_epochs) == ("grpo", 4, 5e-6, 1)
    assert (c.kl_coef, c.clip_range, c.use_gpu, c.bf16) == (0.1, 0.2, False, False)


def test_default_batch_holds_whole_groups():
    c = TrainerConfig(model_name_or_path="m", num_generations=6)
    assert c.per_device_train_batch_size == 12


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(trainer_type="dpo"), "trainer_type='dpo'"),
        (dict(num_generations=1), "num_generations=1"),
        (dict(num_generations=4, per_device_train_batch_size=6), "per_device_train_batch_size=6 is not a multiple"),
        (dict(learning_rate=-1e-5), "learning_rate=-1e-05"),
        (dict(learning_rate=float("nan")), "learning_rate=nan"),
        (dict(kl_coef=-0.1), "kl_coef=-0.1"),
        (dict(temperature=0), "temperature=0"),
        (dict(top_p=1.5), "top_p=1.5"),
        (dict(loss_type="ppo"), "loss_type='ppo'"),
        (dict(max_steps=0), "max_steps=0"),
        (dict(model_name_or_path=""), "model_name_or_path=''"),
        (dict(trainer_type="rloo", loss_type="dr_grpo"), "applies to trainer_type='grpo' only"),
        (dict(trainer_type="ppo", ppo_epochs=0), "ppo_epochs=0"),
        (dict(num_generations=4, per_device_train_batch_size=8, num_mini_batches=3), "num_mini_batches=3"),
        (dict(use_vllm=True), "use_vllm=True needs use_gpu=True"),
        (dict(reward_weights=[1.0, float("inf")]), "reward_weights contains inf"),
        (dict(lora_save="full"), "lora_save='full' is not supported; accepted values: merged, adapter"),
    ],
)
def test_bad_values_name_the_value(kwargs, fragment):
    kwargs.setdefault("model_name_or_path", "m")
    with pytest.raises(ConfigError) as err:
        TrainerConfig(**kwargs)
    assert fragment in str(err.value)


def test_ppo_accepts_one_generation():
    assert TrainerConfig(model_name_or_path="m", trainer_type="ppo", num_generations=1).per_device_train_batch_size == 2


def test_unknown_trl_kwarg_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="'not_a_trl_arg'"):
        TrainerConfig(model_name_or_path="m", trl_kwargs={"not_a_trl_arg": 1})


def test_trl_kwarg_owned_by_a_field_is_rejected():
    with pytest.raises(ConfigError, match="set by TrainerConfig.kl_coef"):
        TrainerConfig(model_name_or_path="m", trl_kwargs={"beta": 0.3})


def test_trl_kwargs_pass_through():
    c = TrainerConfig(model_name_or_path="m", trl_kwargs={"top_k": 5, "repetition_penalty": 1.1})
    args = to_trl_args(c, reward_weights=[1.0])
    assert args.top_k == 5 and args.repetition_penalty == 1.1


def test_mapping_onto_trl_names():
    c = TrainerConfig(model_name_or_path="m", kl_coef=0.03, clip_range=0.15, clip_range_high=0.3, learning_rate=1e-5,
                      loss_type="dr_grpo", scale_rewards="none", output_dir="/tmp/x")
    a = to_trl_args(c, reward_weights=[2.0, 1.0])
    assert (a.beta, a.epsilon, a.epsilon_high, a.learning_rate) == (0.03, 0.15, 0.3, 1e-5)
    assert (a.loss_type, a.scale_rewards, a.reward_weights) == ("dr_grpo", "none", [2.0, 1.0])
    assert a.use_cpu is True and a.bf16 is False and a.gradient_checkpointing is False


def test_rloo_mapping_has_no_grpo_only_fields():
    a = to_trl_args(TrainerConfig(model_name_or_path="m", trainer_type="rloo", kl_coef=0.0), reward_weights=None)
    assert type(a).__name__ == "RLOOConfig" and a.beta == 0.0


def test_unknown_field_in_dict_is_an_error():
    with pytest.raises(ConfigError, match="unknown TrainerConfig field"):
        TrainerConfig.from_dict({"model_name_or_path": "m", "learning_rat": 1e-5})


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_and_round_trip_yaml(name, tmp_path):
    overrides = {"use_gpu": False, "bf16": False} if PRESETS[name].get("use_gpu") else {}
    c = TrainerConfig.from_preset(name, **overrides)
    path = c.save_yaml(tmp_path / "c.yaml")
    assert TrainerConfig.from_yaml(path) == c


def test_required_presets_exist():
    assert {"cpu-smoke", "offline-demo", "gsm8k-0.5b-gpu", "dr-grpo", "dapo"} <= set(PRESETS)
    dapo = TrainerConfig.from_preset("dapo")  # issue 14: "dynamic_sampling=True, or the dapo preset"
    assert (dapo.dynamic_sampling, dapo.clip_range_high, dapo.kl_coef) == (True, 0.28, 0.0)


def test_gpu_preset_is_refused_where_training_starts_on_a_cpu_machine():
    from posttrain_llm.online_rl_trainer.core.common.machine import Machine, check_machine

    config = TrainerConfig.from_preset("gsm8k-0.5b-gpu")  # values only: builds on any machine
    with pytest.raises(ConfigError, match="use_gpu=True but no CUDA device is visible"):
        check_machine(config, Machine(cpu_bf16=True))
    check_machine(config, Machine(cuda=True, cuda_bf16=True))


def test_preset_overrides_win():
    c = TrainerConfig.from_preset("dr-grpo", model_name_or_path="x", num_generations=4, per_device_train_batch_size=4)
    assert (c.loss_type, c.scale_rewards, c.num_generations) == ("dr_grpo", "none", 4)


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match="available presets"):
        TrainerConfig.from_preset("nope")


def test_yaml_round_trip_exact_for_every_field(tmp_path):
    c = TrainerConfig(model_name_or_path="m", reward_weights=[0.5, 2.0], report_to=["tensorboard"],
                      trl_kwargs={"top_k": 3}, lora_target_modules=["q_proj", "v_proj"], max_prompt_length=None,
                      lora_save="adapter")
    back = TrainerConfig.from_yaml(c.save_yaml(tmp_path / "c.yaml"))
    for f in dataclasses.fields(TrainerConfig):
        assert getattr(back, f.name) == getattr(c, f.name), f.name
