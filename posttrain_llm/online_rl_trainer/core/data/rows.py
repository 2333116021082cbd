"""Rows as the trainer and the evaluator take them: one rule for a valid prompt, and the list/Dataset conversions.

A prompt is a non-empty string, or a non-empty list of ``{"role": "system" | "user" | "assistant", "content": str}``
messages ending with a non-empty user turn (what :func:`make_prompt` and every loader produce). The loaders raise
``DataError`` naming the file, row and column (:func:`validate_messages`); the trainer raises ``ConfigError``
naming the row of the data it was given (:func:`as_dataset`); both apply :func:`prompt_problem`.

Not covered: multi-modal content parts, tool messages (no trainer here sends them yet).
"""

from __future__ import annotations

from typing import Any, Mapping

import datasets

from ..common.errors import ConfigError, short_repr
from .base import DataError, RowRef, rows_to_dataset

#: Roles accepted in a prompt conversation.
MESSAGE_ROLES = ("system", "user", "assistant")
#: What a valid prompt looks like, as error messages say it.
PROMPT_FORM = ("a non-empty string or a non-empty list of {'role': ..., 'content': str} messages ending with a user "
               "turn")


def prompt_problem(prompt: Any, allow_string: bool = True) -> str | None:
    """Why ``prompt`` is not a valid prompt (see the module docstring), or None when it is."""
    if isinstance(prompt, str) and allow_string:
        return None if prompt.strip() else "the prompt is an empty string"
    if not isinstance(prompt, list) or not prompt:
        return f"expected a non-empty list of messages, got {short_repr(prompt)}"
    for i, m in enumerate(prompt):
        if not isinstance(m, Mapping) or m.get("role") not in MESSAGE_ROLES or not isinstance(m.get("content"), str):
            return f"message {i} is {short_repr(m)}; each message must be {{'role': one of {MESSAGE_ROLES}, 'content': str}}"
    if prompt[-1]["role"] != "user":
        return f"the last message has role {prompt[-1]['role']!r}; a prompt must end with a user turn"
    if not prompt[-1]["content"].strip():
        return "the last user message is empty"
    return None


def validate_messages(messages: Any, ref: RowRef, column: str) -> list[dict[str, str]]:
    """A ready-made conversation, checked (``DataError`` naming ``ref`` and ``column``) and reduced to role/content."""
    problem = prompt_problem(messages, allow_string=False)
    if problem is not None:
        raise DataError(ref, problem, column)
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def check_prompt(prompt: Any, row: int, what: str) -> None:
    """ConfigError naming row ``row`` of ``what`` (e.g. ``train_data``) unless ``prompt`` is a valid prompt."""
    problem = prompt_problem(prompt)
    if problem is not None:
        raise ConfigError(f"{what} row {row}: prompt is {short_repr(prompt)} ({type(prompt).__name__}); expected "
                          f"{PROMPT_FORM} (the loaders produce these): {problem}")


def as_dataset(data: Any, what: str = "train_data") -> datasets.Dataset:
    """A ``datasets.Dataset`` from a Dataset or a list of row dicts; ConfigError for no rows or a bad ``prompt``."""
    if isinstance(data, list):
        if data and not all(isinstance(r, dict) for r in data):
            raise ConfigError(f"{what} must be a datasets.Dataset or a list of dicts")
        if data and any("prompt" in r for r in data):
            for i, row in enumerate(data):
                check_prompt(row.get("prompt"), i, what)
        data = rows_to_dataset(data, what) if data else datasets.Dataset.from_list(data)
    if not isinstance(data, datasets.Dataset):
        raise ConfigError(f"{what} must be a datasets.Dataset or a list of dicts, got {type(data).__name__}")
    if len(data) == 0:
        raise ConfigError(f"{what} is empty: there is nothing to train or evaluate on")
    if "prompt" not in data.column_names:
        raise ConfigError(f"{what} has no 'prompt' column (columns: {data.column_names}); the loaders produce one")
    for i, prompt in enumerate(data["prompt"]):
        check_prompt(prompt, i, what)
    return data


def as_rows(data: Any) -> list[dict]:
    """A list of row dicts from a list, a ``datasets.Dataset`` or any iterable of mappings."""
    if isinstance(data, list):
        return data
    if hasattr(data, "to_list"):
        return data.to_list()
    return [dict(r) for r in data]
