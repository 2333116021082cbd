"""Builders the tests share: the tiny model's ``a+1`` rows and one-message chats.

One home, so a change of the row format (a new required column, another prompt shape) is made once. Tests that need
rows of another shape build them where they are used.
"""

from __future__ import annotations

from typing import Any


def chat(text: str, role: str = "user") -> list[dict[str, str]]:
    """A one-message conversation, the prompt format the loaders produce."""
    return [{"role": role, "content": text}]


def plus_one_rows(n: int, start: int = 0, **columns: Any) -> list[dict[str, Any]]:
    """``n`` rows asking ``"a+1="`` (a = start .. start+n-1) as a chat, with the answer ``str(a + 1)`` and any extra
    columns."""
    return [{"prompt": chat(f"{a}+1="), "answer": str(a + 1), **columns} for a in range(start, start + n)]
