"""`UserError`: the common base of every error caused by the user's input rather than by a bug in the package.

``ConfigError`` (a bad setting), ``DataError`` (a bad file or row), ``ModelResolutionError`` (no model found) and
the run/checkpoint errors all derive from it, each keeping its historical built-in base too (``ValueError``,
``FileNotFoundError``) so existing ``except ValueError`` code keeps working.

The CLIs print a ``UserError`` as ONE line, ``error: <message>``, on stderr and exit with code 2 (the full
traceback only with ``--debug`` or ``POSTTRAIN_LLM_DEBUG=1``); any other exception is treated as a bug and keeps
its traceback. The message must therefore be complete on its own: what was wrong (naming the value, file, row
or flag) and what would be accepted or how to fix it.

This is a leaf module (no imports) so every part of the package can raise a ``UserError`` subclass.
"""

from __future__ import annotations


class UserError(Exception):
    """An error in the user's input (config, data, flags, files). CLIs print it as one line and exit with code 2.

    Subclasses keep their built-in base (``class ConfigError(ValueError, UserError)``); the message names the
    offending value and the fix.
    """


def decode_position(raw: bytes, exc: UnicodeDecodeError) -> str:
    """Where in ``raw`` a UTF-8 decoding error happened, as ``line L, column C (byte 0xNN)`` (1-based), for
    messages about files that are not UTF-8 text (Latin-1 or UTF-16 exports, binary files)."""
    start = exc.start
    line = raw.count(b"\n", 0, start) + 1
    column = start - (raw.rfind(b"\n", 0, start) + 1) + 1
    return f"line {line}, column {column} (byte {raw[start]:#04x})"
