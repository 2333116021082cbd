"""Rewards: the protocol (:mod:`.base`), math correctness, code tests, format checks, weighted composites, and an
LLM judge behind any OpenAI-compatible endpoint (:mod:`.llm_judge`).

Nothing here imports torch; rewards can be built and tested without the training stack.
"""

from .base import (
    STATUSES,
    GuardedReward,
    RewardFunction,
    RewardFunctionError,
    RewardResult,
    completion_text,
    reward_name,
    row_kwargs,
)
from .code import CodeRewardFunction, extract_code
from .composite import CallableReward, CompositeRewardFunction
from .format import FORMAT_KINDS, FormatRewardFunction
from .llm_judge import JUDGE_ERROR_KINDS, LLMJudgeConfig, LLMJudgeReward
from .math import MATH_MODES, MathRewardFunction, answers_equivalent
from .math_answers import extract_boxed_answers, extract_last_number, normalize_answer
from .math_verifier import VerifierCrashed, VerifierTimeout, VerifierUnavailable

__all__ = [
    # base
    "STATUSES",
    "GuardedReward",
    "RewardFunction",
    "RewardFunctionError",
    "RewardResult",
    "completion_text",
    "reward_name",
    "row_kwargs",
    # math
    "MATH_MODES",
    "MathRewardFunction",
    "answers_equivalent",
    "extract_boxed_answers",
    "extract_last_number",
    "normalize_answer",
    "VerifierCrashed",
    "VerifierTimeout",
    "VerifierUnavailable",
    # format / composite
    "FORMAT_KINDS",
    "FormatRewardFunction",
    "CallableReward",
    "CompositeRewardFunction",
    # code
    "CodeRewardFunction",
    "extract_code",
    # LLM judge
    "JUDGE_ERROR_KINDS",
    "LLMJudgeConfig",
    "LLMJudgeReward",
]
