"""GSM8K and MATH / MATH-500 loaders: local JSON Lines first, the Hugging Face Hub as a fallback.

Files are looked up as ``<dir>/gsm8k/{train,test}.jsonl`` and ``<dir>/math/{train,test,math500_test}.jsonl`` in
``data_dir`` and then ``$ONLINE_RL_DATA_DIR`` (the layout of the shared offline data folder); failing that, the
Hub (``openai/gsm8k`` config ``main``; ``EleutherAI/hendrycks_math``, one config per subject, concatenated in the
same subject order as the local file; ``HuggingFaceH4/MATH-500``).

Answers, as the ``answer`` column:
- GSM8K: the number after ``####`` with thousands separators removed (``#### 1,080`` -> ``"1080"``; signs and
  decimals kept). The original full solution is kept as ``solution`` (the source's ``answer`` field).
- MATH: the dataset's own ``answer`` field when present (MATH-500), else the content of the last ``\\boxed{}``
  of ``solution`` found by brace matching (answers contain nested braces, so no regex).

Prompts are deliberately short (training on CPU costs time per prompt token): the question, then one line
asking for step-by-step reasoning and a ``\\boxed{}`` answer. Small models (SmolLM2-135M) only use ``\\boxed{}``
after seeing an example: pass ``few_shot=[DEFAULT_MATH_ONE_SHOT]``; it is off by default.

Not covered: answer equivalence (the reward does that), the 12k "MATH train + non-500 test" pool (build it by
concatenating and dropping the MATH-500 problems), GSM8K's socratic variant.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .base import DataError, LocalOrHubLoader, RowRef, last_boxed_content, require_text
from .files import resolve_records

DEFAULT_MATH_SYSTEM_PROMPT = "You are a helpful math assistant."
DEFAULT_MATH_TEMPLATE = "{question}\nReason step by step, then give the final answer in \\boxed{}."
#: A one-shot example that teaches small models the ``\boxed{}`` format (pass ``few_shot=[DEFAULT_MATH_ONE_SHOT]``).
DEFAULT_MATH_ONE_SHOT = ("What is 7 + 5?", "7 + 5 = 12. The answer is \\boxed{12}.")

GSM8K_HUB_ID = "openai/gsm8k"
MATH_HUB_ID = "EleutherAI/hendrycks_math"
MATH500_HUB_ID = "HuggingFaceH4/MATH-500"
#: The EleutherAI configs, in the order the local file concatenates them.
MATH_SUBJECT_CONFIGS = (
    "algebra", "counting_and_probability", "geometry", "intermediate_algebra",
    "number_theory", "prealgebra", "precalculus",
)
MATH_SUBSETS = ("full", "math500")

_GSM8K_NUMBER = re.compile(r"[-+]?\d+(\.\d+)?")


def normalize_gsm8k_answer(solution: str) -> str:
    """The final answer of a GSM8K solution: the text after the last ``####``, commas removed.

    ``"... #### 1,080"`` -> ``"1080"``; ``"#### -3"`` -> ``"-3"``; ``"#### 0.5"`` -> ``"0.5"``. A leading ``+`` is
    dropped. Raises ``ValueError`` when there is no ``####`` or what follows is not a plain number.
    """
    if "####" not in solution:
        raise ValueError("no '#### <number>' final-answer line")
    raw = solution.rsplit("####", 1)[1].strip()
    number = raw.replace(",", "")
    if not _GSM8K_NUMBER.fullmatch(number):
        raise ValueError(f"the text after '####' is {raw!r}, not a number like '1,234', '-3' or '0.5'")
    return number.lstrip("+")


class GSM8KLoader(LocalOrHubLoader):
    """GSM8K (7,473 train / 1,319 test). Columns: ``prompt``, ``answer`` (normalized), ``question``, ``solution``.

    Args:
        data_dir: folder holding ``gsm8k/{train,test}.jsonl``; else ``$ONLINE_RL_DATA_DIR``; else the Hub.
        system_prompt: system message, or ``None`` for none.
        prompt_template: user message; ``{question}`` is replaced by the problem.
        few_shot: (question, answer) example pairs inserted before the question, e.g. ``[DEFAULT_MATH_ONE_SHOT]``.
        skip_invalid: skip bad rows (recorded in ``last_skipped``) instead of raising :class:`DataError`.
        use_hub: allow the Hub fallback.
    """

    splits = ("train", "test")

    def __init__(
        self,
        data_dir: str | Path | None = None,
        system_prompt: str | None = DEFAULT_MATH_SYSTEM_PROMPT,
        prompt_template: str = DEFAULT_MATH_TEMPLATE,
        few_shot: Sequence[tuple[str, str]] | None = None,
        skip_invalid: bool = False,
        use_hub: bool = True,
    ):
        super().__init__(data_dir, system_prompt, prompt_template, few_shot, skip_invalid, use_hub)

    def _records(self, split: str) -> Iterable[tuple[RowRef, Mapping[str, Any]]]:
        hub = [(GSM8K_HUB_ID, "main", split)]
        return resolve_records("GSM8K", f"gsm8k/{split}.jsonl", hub, self.data_dir, self.use_hub)

    def _convert(self, record: Mapping[str, Any], ref: RowRef) -> dict[str, Any]:
        question = require_text(record, "question", ref)
        solution = require_text(record, "answer", ref)
        try:
            answer = normalize_gsm8k_answer(solution)
        except ValueError as exc:
            raise DataError(ref, str(exc), "answer") from None
        extra = {k: v for k, v in record.items() if k not in ("question", "answer")}
        return {"prompt": self.prompt_format.build(question), "answer": answer, "question": question,
                "solution": solution, **extra}


class MATHLoader(LocalOrHubLoader):
    """MATH (``subset="full"``: 7,500 train / 5,000 test) or MATH-500 (``subset="math500"``: 500, split "test").

    Columns: ``prompt``, ``answer``, ``problem``, ``solution``, ``level``, ``subject``, plus the source's other
    fields: full MATH keeps ``type`` (``subject`` is a copy of it) and ``level`` as a string (``"Level 5"``; two
    train rows have ``"Level ?"``); MATH-500 has ``level`` as an int 1-5 and ``unique_id``.
    Other arguments as for :class:`GSM8KLoader`.
    """

    def __init__(
        self,
        subset: str = "full",
        data_dir: str | Path | None = None,
        system_prompt: str | None = DEFAULT_MATH_SYSTEM_PROMPT,
        prompt_template: str = DEFAULT_MATH_TEMPLATE,
        few_shot: Sequence[tuple[str, str]] | None = None,
        skip_invalid: bool = False,
        use_hub: bool = True,
    ):
        if subset not in MATH_SUBSETS:
            raise ValueError(f"MATHLoader subset={subset!r}; accepted: {list(MATH_SUBSETS)}")
        super().__init__(data_dir, system_prompt, prompt_template, few_shot, skip_invalid, use_hub)
        self.subset = subset

    @property
    def splits(self) -> tuple[str, ...]:
        return ("test",) if self.subset == "math500" else ("train", "test")

    def _records(self, split: str) -> Iterable[tuple[RowRef, Mapping[str, Any]]]:
        if self.subset == "math500":
            return resolve_records("MATH-500", "math/math500_test.jsonl", [(MATH500_HUB_ID, None, "test")],
                                   self.data_dir, self.use_hub)
        hub = [(MATH_HUB_ID, config, split) for config in MATH_SUBJECT_CONFIGS]
        return resolve_records("MATH", f"math/{split}.jsonl", hub, self.data_dir, self.use_hub)

    def _convert(self, record: Mapping[str, Any], ref: RowRef) -> dict[str, Any]:
        problem = require_text(record, "problem", ref)
        solution = require_text(record, "solution", ref)
        if "answer" in record:
            answer = require_text(record, "answer", ref)
        else:
            answer = last_boxed_content(solution)
            if answer is None:
                raise DataError(ref, "no \\boxed{...} answer (with balanced braces) in the solution", "solution")
            if not answer:
                # MATH train row 5341 (line 5342) really has an empty box; its answer is not ours to invent.
                raise DataError(ref, "the last \\boxed{} in the solution is empty", "solution")
        for column in ("level",) + (("subject",) if "subject" in record else ("type",)):
            if record.get(column) is None:
                raise DataError(ref, f"missing value; the row has columns {sorted(record)}", column)
        subject = record.get("subject", record.get("type"))
        return {**record, "prompt": self.prompt_format.build(problem), "answer": answer.strip(), "subject": subject}
