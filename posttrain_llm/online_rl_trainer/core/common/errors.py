"""Error types that several rooms raise, and how an error message quotes the value it complains about.

`UserError` is the common base of every error caused by the user's input rather than by a bug in the package.
``ConfigError`` (a bad setting), ``DataError`` (a bad file or row), ``ModelResolutionError`` (no model found) and
the run/checkpoint errors all derive from it, each keeping its historical built-in base too (``ValueError``,
``FileNotFoundError``) so existing ``except ValueError`` code keeps working.

The CLIs print a ``UserError`` as ONE line, ``error: <message>``, on stderr and exit with code 2 (the full
traceback only with ``--debug`` or ``POSTTRAIN_LLM_DEBUG=1``); any other exception is treated as a bug and keeps
its traceback. The message must therefore be complete on its own: what was wrong (naming the value, file, row
or flag) and what would be accepted or how to fix it.

``ConfigError`` lives here, below everything, so that models, backends and the trainer can raise it without
importing the configuration (``core.config`` re-exports it: ``from ...core.config import ConfigError`` keeps
working). ``ModelResolutionError`` is here because resolution and the SmolLM2 conversion, two modules of
``models``, raise it. Errors that belong to one module stay there (``DataError`` in ``data``,
``RewardFunctionError`` in ``rewards``). This is a leaf module (no package imports).
"""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """An error in the user's input (config, data, flags, files). CLIs print it as one line and exit with code 2.

    Subclasses keep their built-in base (``class ConfigError(ValueError, UserError)``); the message names the
    offending value and the fix.
    """


class ConfigError(ValueError, UserError):
    """An invalid configuration value. The message names the field, the value and what is accepted."""


class ModelResolutionError(FileNotFoundError, UserError):
    """No source could provide the model. The message lists what was tried."""


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut after ``limit`` characters with ``...``: a bad value quoted in an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def decode_position(raw: bytes, exc: UnicodeDecodeError) -> str:
    """Where in ``raw`` a UTF-8 decoding error happened, as ``line L, column C (byte 0xNN)`` (1-based), for
    messages about files that are not UTF-8 text (Latin-1 or UTF-16 exports, binary files)."""
    start = exc.start
    line = raw.count(b"\n", 0, start) + 1
    column = start - (raw.rfind(b"\n", 0, start) + 1) + 1
    return f"line {line}, column {column} (byte {raw[start]:#04x})"
