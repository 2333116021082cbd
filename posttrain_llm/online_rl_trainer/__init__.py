"""posttrain-llm's Online RL Trainer: GRPO, RLOO and PPO behind one config and one trainer class.

Public API (what SEED.md imports, and the rest of the toolkit)::

    from posttrain_llm.online_rl_trainer import (
        TrainerConfig, OnlineRLTrainer,                                   # training
        RewardFunction, MathRewardFunction, CodeRewardFunction,           # rewards
        FormatRewardFunction, CompositeRewardFunction,
        LLMJudgeReward, LLMJudgeConfig,
        GSM8KLoader, MATHLoader, CustomLoader, SyntheticArithmeticLoader, # data
        HumanEvalLoader, MBPPLoader,
        ModelEvaluator, compare, compare_results, write_eval_report,      # evaluation
        RewardModelFunction, train_reward_model,                          # reward models
    )

Names are loaded lazily: importing a reward or a loader does not import torch or TRL.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # training
    "TrainerConfig": "core.config",
    "ConfigError": "core.config",
    "UserError": "core.common.errors",
    "OnlineRLTrainer": "core.trainer",
    # rewards (no torch)
    "RewardFunction": "core.rewards.base",
    "RewardResult": "core.rewards.base",
    "RewardFunctionError": "core.rewards.base",
    "MathRewardFunction": "core.rewards.math",
    "FormatRewardFunction": "core.rewards.format",
    "CompositeRewardFunction": "core.rewards.composite",
    "CodeRewardFunction": "core.rewards.code",
    "LLMJudgeReward": "core.rewards.llm_judge",
    "LLMJudgeConfig": "core.rewards.llm_judge",
    "SandboxConfig": "core.sandbox",
    "Sandbox": "core.sandbox",
    # data
    "GSM8KLoader": "core.data",
    "MATHLoader": "core.data",
    "CustomLoader": "core.data",
    "SyntheticArithmeticLoader": "core.data",
    "DataError": "core.data",
    "make_prompt": "core.data",
    "HumanEvalLoader": "core.data.code",
    "MBPPLoader": "core.data.code",
    # evaluation
    "ModelEvaluator": "core.inference",
    "compare": "core.eval.compare",
    "compare_results": "core.eval.compare",
    "write_eval_report": "core.eval.reports",
    # models
    "resolve_model": "core.models",
    "ModelResolutionError": "core.models",
    # reward models (torch)
    "RewardModelFunction": "core.models.reward_model",
    "RewardModelConfig": "core.models.reward_model",
    "train_reward_model": "core.training.reward_model",
    "RewardModelTrainingConfig": "core.training.reward_model",
    "arithmetic_preference_pairs": "core.data.preference_pairs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
