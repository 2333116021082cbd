"""Loader for your own prompt/answer data: a jsonl/json/csv/parquet file, a ``datasets.Dataset`` or a list of dicts.

The prompt column holds either a plain string (wrapped into a user message, with ``system_prompt`` and
``prompt_template`` applied) or a ready-made conversation (a list of ``{"role", "content"}`` messages ending with
a user turn; validated, and ``system_prompt`` is prepended only if it has no system message). The answer column
must hold non-empty strings: numbers are rejected rather than converted, because ``0.1`` or ``1e3`` would not
survive a round trip through float formatting. CSV cells are always strings.

Output columns: ``prompt`` (the conversation), ``answer``, and every other source column unchanged. When the prompt
or answer is read from a differently named column, that column is kept too; a source column literally named
``prompt``/``answer`` that is *not* the chosen one is kept as ``source_prompt``/``source_answer`` instead of being
overwritten.

Splits: one source has the single split ``None``; pass a mapping ``{"train": src, "test": src}`` (a
``datasets.DatasetDict`` works) to have named splits.

Not covered: Hub dataset ids (call ``datasets.load_dataset`` yourself and pass the result), streaming, URLs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import datasets

from .base import (
    FILE_FORMATS,
    DataError,
    DatasetLoader,
    PromptFormat,
    RowRef,
    require_text,
)
from .files import read_records
from .rows import validate_messages


def iter_source(source: Any, file_format: str | None = None) -> Iterable[tuple[RowRef, Mapping[str, Any]]]:
    """``(RowRef, record)`` for each record of a file path, a ``datasets.Dataset`` or a list of dicts."""
    if isinstance(source, (str, Path)):
        return read_records(source, file_format)
    if isinstance(source, datasets.Dataset):
        return ((RowRef("<datasets.Dataset>", i), r) for i, r in enumerate(source))
    if isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        return (_list_item(i, r) for i, r in enumerate(source))
    raise TypeError(
        f"source of type {type(source).__name__} is not supported; pass a path to a {'/'.join(FILE_FORMATS)} file, "
        "a datasets.Dataset, a list of dicts, or a mapping of split name to one of these"
    )


def _list_item(index: int, record: Any) -> tuple[RowRef, Mapping[str, Any]]:
    ref = RowRef("<list>", index)
    if not isinstance(record, Mapping):
        raise DataError(ref, f"expected a dict of column values, got {type(record).__name__}")
    return ref, record


class CustomLoader(DatasetLoader):
    """Prompt/answer rows from your own data.

    Args:
        source: a file path (format from the extension or ``file_format``), a ``datasets.Dataset``, a list of
            dicts, or a mapping ``{split_name: one of those}``.
        prompt_column: column with the question string or the message list.
        answer_column: column with the ground-truth answer string.
        system_prompt: system message added to every prompt, or ``None``.
        file_format: one of ``jsonl``, ``json``, ``csv``, ``parquet`` when the extension does not tell.
        prompt_template: user message for string prompts; ``{question}`` is replaced by the prompt text.
        few_shot: (question, answer) example pairs inserted before string prompts.
        skip_invalid: skip bad rows (recorded in ``last_skipped``) instead of raising :class:`DataError`.
    """

    def __init__(
        self,
        source: Any,
        prompt_column: str = "prompt",
        answer_column: str = "answer",
        system_prompt: str | None = None,
        file_format: str | None = None,
        prompt_template: str = "{question}",
        few_shot: Sequence[tuple[str, str]] | None = None,
        skip_invalid: bool = False,
    ):
        super().__init__(skip_invalid=skip_invalid)
        for arg, value in (("prompt_column", prompt_column), ("answer_column", answer_column)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{arg}={value!r}; pass the column name as a non-empty string")
        if prompt_column == answer_column:
            raise ValueError(f"prompt_column and answer_column are both {prompt_column!r}; they must differ")
        if file_format is not None and file_format not in FILE_FORMATS:
            raise ValueError(f"file_format={file_format!r}; expected one of {FILE_FORMATS} or None")
        self.source = source
        self.prompt_column = prompt_column
        self.answer_column = answer_column
        self.file_format = file_format
        self.prompt_format = PromptFormat(system_prompt, prompt_template, tuple(few_shot or ()))

    @property
    def splits(self) -> tuple[Any, ...]:
        if isinstance(self.source, Mapping):
            return tuple(self.source)
        return (None,)

    def load(self, split: Any = None, num_samples: int | None = None, seed: int = 42) -> datasets.Dataset:
        """The rows of ``split`` (``None`` for a single source); ``num_samples``: seeded subset, as in the base."""
        return super().load(split, num_samples, seed)

    def describe(self, split: Any) -> str:
        source = self.source[split] if isinstance(self.source, Mapping) else self.source
        return super().describe(split) + (f" ({source})" if isinstance(source, (str, Path)) else "")

    def _records(self, split: Any) -> Iterable[tuple[RowRef, Mapping[str, Any]]]:
        source = self.source[split] if isinstance(self.source, Mapping) else self.source
        return iter_source(source, self.file_format)

    def _convert(self, record: Mapping[str, Any], ref: RowRef) -> dict[str, Any]:
        prompt = self._prompt(record, ref)
        answer = require_text(record, self.answer_column, ref)
        row = dict(record)
        for name, chosen in (("prompt", self.prompt_column), ("answer", self.answer_column)):
            if chosen != name and name in row:
                row[f"source_{name}"] = row.pop(name)
        row["prompt"] = prompt
        row["answer"] = answer.strip()
        return row

    def _prompt(self, record: Mapping[str, Any], ref: RowRef) -> list[dict[str, str]]:
        value = record.get(self.prompt_column)
        if isinstance(value, list):
            messages = validate_messages(value, ref, self.prompt_column)
            if self.prompt_format.system_prompt is not None and messages[0]["role"] != "system":
                messages.insert(0, {"role": "system", "content": self.prompt_format.system_prompt})
            return messages
        return self.prompt_format.build(require_text(record, self.prompt_column, ref))
