"""Shared machinery of the dataset loaders: prompts, row validation, local/Hub resolution, subsets, the loader base
class (reading the files themselves: ``files.py``).

Every loader turns raw records into rows with at least two columns that the trainers and rewards read:

- ``prompt``: a chat conversation in TRL's conversational format, built by :func:`make_prompt`
  (optional system message, optional few-shot user/assistant turns, then the user question);
- ``answer``: the normalized ground-truth string (what ``MathRewardFunction`` compares against);

plus the record's original fields. A bad row raises :class:`DataError` naming the source file, the 0-based row,
the line number (JSON Lines) and the column; with ``skip_invalid=True`` the loader skips it instead, keeps
``(row_ref, reason)`` in ``loader.last_skipped`` and logs one warning with the count. Nothing is dropped silently.

Departures from the usual recipe: ``num_samples`` is a seeded random subset (shuffle the valid rows with ``seed``,
take the first n) rather than the first n rows, because many files are sorted by subject or difficulty; asking
for more rows than exist is an error, not a silent "take all". Without ``num_samples`` rows keep file order.

Not covered: streaming (files are read into memory; the largest here is ~6 MB), remote URLs, tokenization or
prompt-length filtering (the trainer does that with the model's tokenizer).
"""

from __future__ import annotations

import logging
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import datasets

from ..common.errors import UserError, short_repr
from ..rewards.math_answers import extract_boxed_answers

logger = logging.getLogger(__name__)

#: Environment variable naming a folder laid out like the shared data (``<dir>/gsm8k/train.jsonl``, ...).
DATA_DIR_ENV = "ONLINE_RL_DATA_DIR"

FILE_FORMATS = ("jsonl", "json", "csv", "parquet")
_MAX_LISTED_SKIPS = 5


@dataclass(frozen=True)
class RowRef:
    """Where a record came from: a file path (or ``hub:<id>``, ``<list>``), its 0-based row, its 1-based line."""

    source: str
    row: int
    line: int | None = None

    def __str__(self) -> str:
        line = f" (line {self.line})" if self.line is not None else ""
        return f"{self.source}: row {self.row}{line}"


class DataError(ValueError, UserError):
    """A record or file that cannot become a training row. The message names source, row, line and column."""

    def __init__(self, ref: RowRef | str, problem: str, column: str | None = None):
        self.ref = ref
        self.column = column
        self.problem = problem
        where = str(ref) + (f", column {column!r}" if column is not None else "")
        super().__init__(f"{where}: {problem}")


class DataFileNotFoundError(FileNotFoundError, UserError):
    """A data file or folder that does not exist. The message lists what was tried and how to fix it."""


# --------------------------------------------------------------------------------------------- prompts


def make_prompt(
    question: str,
    system_prompt: str | None = None,
    few_shot: Sequence[tuple[str, str]] | None = None,
    template: str = "{question}",
) -> list[dict[str, str]]:
    """Build the chat conversation for one question.

    ``template`` must contain ``{question}``; it is substituted literally (not ``str.format``) so LaTeX braces in
    templates and questions need no escaping. Few-shot pairs become earlier user/assistant turns, with their
    questions passed through the same template so the model sees one consistent format.
    """
    if "{question}" not in template:
        raise ValueError(f"prompt template {template!r} has no '{{question}}' placeholder")
    messages: list[dict[str, str]] = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": system_prompt})
    for shot_question, shot_answer in few_shot or ():
        messages.append({"role": "user", "content": template.replace("{question}", shot_question)})
        messages.append({"role": "assistant", "content": shot_answer})
    messages.append({"role": "user", "content": template.replace("{question}", question)})
    return messages


@dataclass(frozen=True)
class PromptFormat:
    """How a loader turns a question into a prompt.

    Attributes:
        system_prompt: content of the system message, or ``None`` for no system message.
        template: user-message template containing ``{question}``.
        few_shot: (question, answer) pairs inserted as prior user/assistant turns; empty for zero-shot.
    """

    system_prompt: str | None = None
    template: str = "{question}"
    few_shot: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        sp = self.system_prompt
        if sp is not None and (not isinstance(sp, str) or not sp.strip()):
            raise ValueError(f"system_prompt={sp!r}; pass a non-empty string, or None for no system message")
        if not isinstance(self.template, str) or "{question}" not in self.template:
            raise ValueError(f"prompt_template={self.template!r} must be a string containing '{{question}}'")
        shots = tuple(self.few_shot or ())
        for i, shot in enumerate(shots):
            ok = isinstance(shot, (tuple, list)) and len(shot) == 2
            if not ok or not all(isinstance(s, str) and s.strip() for s in shot):
                raise ValueError(
                    f"few_shot[{i}]={shot!r}; each example must be a (question, answer) pair of non-empty strings"
                )
        object.__setattr__(self, "few_shot", tuple(tuple(s) for s in shots))

    def build(self, question: str) -> list[dict[str, str]]:
        """The conversation for ``question``."""
        return make_prompt(question, self.system_prompt, self.few_shot, self.template)


# --------------------------------------------------------------------------------------------- row fields


def require_text(record: Mapping[str, Any], column: str, ref: RowRef) -> str:
    """The non-empty string in ``record[column]``, or a :class:`DataError` saying what is wrong."""
    if column not in record or record[column] is None:
        raise DataError(ref, f"missing value; the row has columns {sorted(record)}", column)
    value = record[column]
    if not isinstance(value, str):
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        hint = f' (write it as the string "{value}")' if is_number else ""
        raise DataError(ref, f"expected a string, got {type(value).__name__} {short_repr(value)}{hint}", column)
    if not value.strip():
        raise DataError(ref, "empty or whitespace-only string", column)
    return value


def last_boxed_content(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, or ``None`` when there is none.

    Uses the reward's own extractor, so gold answers and model answers are read by the same code: nested braces
    are matched, an unbalanced box is not an answer, and the brace-less ``\\boxed 2`` (two MATH train rows use
    it) gives the token after the space.
    """
    boxes = extract_boxed_answers(text)
    return boxes[-1] if boxes else None


# --------------------------------------------------------------------------------------------- subsets, tables


def check_split(split: Any, accepted: Sequence[Any], loader: str) -> None:
    """Raise ``ValueError`` naming the accepted splits when ``split`` is not one of them."""
    if split not in accepted:
        raise ValueError(f"{loader}: unknown split {split!r}; accepted splits: {list(accepted)}")


def seeded_subset(rows: list[Any], num_samples: int | None, seed: int, what: str) -> list[Any]:
    """All ``rows`` in order when ``num_samples`` is None; else shuffle with ``seed`` and take the first n."""
    if num_samples is None:
        return rows
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise DataError(what, f"num_samples={num_samples!r}; pass a positive integer, or None for all rows")
    if num_samples > len(rows):
        raise DataError(what,
            f"num_samples={num_samples} but {what} has only {len(rows)} valid rows; ask for at most {len(rows)}"
        )
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    return [rows[i] for i in order[:num_samples]]


def rows_to_dataset(rows: list[dict[str, Any]], what: str) -> datasets.Dataset:
    """A ``datasets.Dataset`` with the union of the rows' columns (missing values become None).

    ``Dataset.from_list`` keeps only the first row's keys; this keeps every column and names the one whose
    values Arrow cannot store together (e.g. strings in some rows and numbers in others).
    """
    columns: dict[str, list[Any]] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, [])
    for key, values in columns.items():
        values.extend(row.get(key) for row in rows)
    try:
        return datasets.Dataset.from_dict(columns)
    except (TypeError, ValueError, OverflowError) as exc:  # pyarrow's ArrowInvalid/ArrowTypeError subclass these
        for key, values in columns.items():
            try:
                datasets.Dataset.from_dict({key: values})
            except (TypeError, ValueError, OverflowError):
                kinds = sorted({type(v).__name__ for v in values if v is not None})
                raise DataError(what, f"values of mixed types {kinds} cannot form one column ({exc})", key) from None
        raise


class DatasetLoader(ABC):
    """Base class: ``load(split, num_samples=None, seed=42) -> datasets.Dataset``.

    Subclasses give ``splits``, ``_records(split)`` (raw records with their :class:`RowRef`) and
    ``_convert(record, ref)`` (one output row, or :class:`DataError`).
    """

    def __init__(self, skip_invalid: bool = False):
        if not isinstance(skip_invalid, bool):
            raise ValueError(f"skip_invalid={skip_invalid!r}; pass True or False")
        self.skip_invalid = skip_invalid
        #: (row_ref, reason) of the rows skipped by the last ``load`` (empty unless ``skip_invalid``).
        self.last_skipped: list[tuple[RowRef | str, str]] = []

    @property
    @abstractmethod
    def splits(self) -> tuple[Any, ...]:
        """The accepted values of ``split``."""

    @abstractmethod
    def _records(self, split: Any) -> Iterable[tuple[RowRef, Mapping[str, Any]]]:
        """The raw records of ``split``."""

    @abstractmethod
    def _convert(self, record: Mapping[str, Any], ref: RowRef) -> dict[str, Any]:
        """One output row (with ``prompt`` and ``answer``) or :class:`DataError`."""

    def describe(self, split: Any) -> str:
        """How messages name this loader's ``split`` (subclasses add their source)."""
        return f"{type(self).__name__} split {split!r}"

    def load(self, split: Any = "train", num_samples: int | None = None, seed: int = 42) -> datasets.Dataset:
        """The rows of ``split``; with ``num_samples``, a random subset: shuffle with ``seed``, take the first n."""
        name = type(self).__name__
        check_split(split, self.splits, name)
        self.last_skipped = []
        rows = []
        for ref, record in self._records(split):
            try:
                rows.append(self._convert(record, ref))
            except DataError as exc:
                if not self.skip_invalid:
                    raise DataError(exc.ref, f"{exc.problem} (or pass skip_invalid=True to skip invalid rows)",
                                    exc.column) from None
                self.last_skipped.append((exc.ref, str(exc)))
        what = self.describe(split)
        if self.last_skipped:
            first = ", ".join(str(ref) for ref, _ in self.last_skipped[:_MAX_LISTED_SKIPS])
            logger.warning("%s: skipped %d invalid rows (skip_invalid=True); first: %s. First reason: %s",
                           what, len(self.last_skipped), first, self.last_skipped[0][1])
        if not rows:
            raise DataError(what, f"no valid rows ({len(self.last_skipped)} skipped as invalid); a split needs at least "
                                  "one row with a prompt and an answer")
        return rows_to_dataset(seeded_subset(rows, num_samples, seed, what), what)


class LocalOrHubLoader(DatasetLoader):
    """The constructor shared by the loaders whose files live in the data folder (``data_dir`` or
    ``$ONLINE_RL_DATA_DIR``) or on the Hub: GSM8K, MATH, HumanEval, MBPP."""

    def __init__(self, data_dir: str | Path | None, system_prompt: str | None, prompt_template: str,
                 few_shot: Sequence[tuple[str, str]] | None, skip_invalid: bool, use_hub: bool):
        super().__init__(skip_invalid=skip_invalid)
        self.data_dir = data_dir
        self.prompt_format = PromptFormat(system_prompt, prompt_template, tuple(few_shot or ()))
        self.use_hub = use_hub
