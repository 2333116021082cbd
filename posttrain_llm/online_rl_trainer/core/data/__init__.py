"""Dataset loaders: each ``load(split, num_samples=None, seed=42)`` returns a ``datasets.Dataset`` whose ``prompt``
column is a chat conversation (TRL conversational format) and whose ``answer`` column is the normalized ground truth.

- :mod:`.base`: prompt building (:func:`make_prompt`), row validation (:class:`DataError`), local-folder / Hub
  resolution, seeded subsets, the :class:`DatasetLoader` base class; :mod:`.files` reads jsonl/json/csv/parquet.
- :mod:`.math`: :class:`GSM8KLoader`, :class:`MATHLoader` (full MATH and MATH-500).
- :mod:`.custom`: :class:`CustomLoader` for your own files, ``datasets.Dataset`` or list of dicts.
- :mod:`.synthetic`: :class:`SyntheticArithmeticLoader`, the tiny offline demo task.
- :mod:`.preference_pairs`: chosen/rejected pairs from that task, and reading preference rows (reward models).
"""

from .base import DATA_DIR_ENV, DataError, DatasetLoader, PromptFormat, RowRef, last_boxed_content, make_prompt
from .code import HumanEvalLoader, MBPPLoader
from .custom import CustomLoader
from .math import (
    DEFAULT_MATH_ONE_SHOT,
    DEFAULT_MATH_SYSTEM_PROMPT,
    DEFAULT_MATH_TEMPLATE,
    GSM8KLoader,
    MATHLoader,
    normalize_gsm8k_answer,
)
from .synthetic import ArithmeticProblem, SyntheticArithmeticLoader

__all__ = [
    "ArithmeticProblem",
    "CustomLoader",
    "DATA_DIR_ENV",
    "DEFAULT_MATH_ONE_SHOT",
    "DEFAULT_MATH_SYSTEM_PROMPT",
    "DEFAULT_MATH_TEMPLATE",
    "DataError",
    "DatasetLoader",
    "GSM8KLoader",
    "HumanEvalLoader",
    "MBPPLoader",
    "MATHLoader",
    "PromptFormat",
    "RowRef",
    "SyntheticArithmeticLoader",
    "last_boxed_content",
    "make_prompt",
    "normalize_gsm8k_answer",
]
