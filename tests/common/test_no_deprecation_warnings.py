"""A training step emits no FutureWarning/DeprecationWarning from transformers, TRL or peft.

transformers 5 renamed ``gradient_checkpointing`` to ``activation_checkpointing`` (the config argument and the model
methods) and warns on the old names; every demo run used to print one. These tests run one step per algorithm, with
checkpointing off and on and with LoRA, and fail on any such warning raised from inside those libraries (TRL and
peft call the old names themselves: ``common/deprecations.py``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from posttrain_llm.online_rl_trainer import MathRewardFunction, OnlineRLTrainer, TrainerConfig
from posttrain_llm.online_rl_trainer.core.trl_arguments import to_trl_args
from tests.builders import plus_one_rows

torch.set_num_threads(1)

_LIBRARIES = ("transformers", "trl", "peft")


def _library_deprecations(caught: list[warnings.WarningMessage]) -> list[str]:
    found = []
    for w in caught:
        parts = Path(w.filename).parts
        if issubclass(w.category, (FutureWarning, DeprecationWarning)) and any(lib in parts for lib in _LIBRARIES):
            found.append(f"{w.category.__name__} at {w.filename}:{w.lineno}: {w.message}")
    return found


@pytest.mark.parametrize("algo, checkpointing, lora_save", [
    ("grpo", False, None), ("grpo", True, None), ("rloo", True, None), ("ppo", True, None),
    ("grpo", True, "adapter"), ("ppo", True, "adapter"),
])
def test_one_step_emits_no_library_deprecation_warning(algo, checkpointing, lora_save, tmp_path, tiny_model_dir):
    """Training, saving and (for a LoRA adapter) loading the folder back: peft wraps models in both."""
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    rows = plus_one_rows(16)
    lora = dict(use_peft=True, lora_r=4, lora_alpha=8, lora_save=lora_save) if lora_save else {}
    config = TrainerConfig(trainer_type=algo, model_name_or_path=str(tiny_model_dir), max_steps=1, learning_rate=1e-3,
                           kl_coef=0.0, max_completion_length=6, num_generations=4, per_device_train_batch_size=8,
                           output_dir=str(tmp_path / "out"), save_steps=1000, torch_num_threads=1,
                           gradient_checkpointing=checkpointing, **lora)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = OnlineRLTrainer(config, MathRewardFunction(), rows)
        trainer.train()
        folder = trainer.save_model(tmp_path / "final")
        if lora_save:
            load_model_and_tokenizer(str(folder))
    assert trainer.summary["global_step"] == 1
    assert _library_deprecations(caught) == []


@pytest.mark.parametrize("checkpointing", [False, True])
def test_trl_config_gets_the_checkpointing_setting_under_its_current_name(checkpointing, tmp_path):
    config = TrainerConfig(output_dir=str(tmp_path), gradient_checkpointing=checkpointing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = to_trl_args(config, None)
    assert _library_deprecations(caught) == []
    assert args.gradient_checkpointing is checkpointing  # TRL's own default is True: ours must win
    if hasattr(args, "activation_checkpointing"):
        assert args.activation_checkpointing is checkpointing
