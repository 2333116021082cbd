"""How the command-line drivers end on an error: a user's mistake is one clean line, a bug keeps its traceback.

Every CLI (``examples/train_math.py``, ``evaluate_model.py``, ``train_code.py`` and the ``online-rl`` console
script) runs its ``main`` through :func:`run_cli`:

- a :class:`~posttrain_llm.online_rl_trainer.core.common.errors.UserError` (``ConfigError``, ``DataError``,
  ``ModelResolutionError``, a missing data file, ...) prints ``error: <message>`` on stderr and exits with code 2,
  like argparse's own usage errors. The message already names the value and the fix; where it names an API
  argument that a flag sets (``skip_invalid=True``), the flag is named instead;
- ``--debug`` (every CLI accepts it) or ``POSTTRAIN_LLM_DEBUG=1`` shows the full traceback instead;
- any other exception is a bug (or an environment failure such as a full disk) and keeps its traceback.

``main`` itself still raises, so tests and Python callers of ``main(argv)`` see the exception.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Sequence

from posttrain_llm.online_rl_trainer.core.common.errors import UserError

DEBUG_ENV = "POSTTRAIN_LLM_DEBUG"
USER_ERROR_EXIT = 2

# Library wording -> the CLI flag that sets it, for messages read by someone who typed flags, not Python.
_FLAG_FOR_API = {"skip_invalid=True": "--skip-invalid"}


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of an input error (or set {DEBUG_ENV}=1)")


def debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def cli_message(exc: BaseException) -> str:
    """The error's message as a CLI user should read it (API arguments renamed to their flags)."""
    text = str(exc)
    for api, flag in _FLAG_FOR_API.items():
        text = text.replace(api, flag)
    return text


def run_cli(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; 0 when it returns, 2 with one ``error:`` line for a ``UserError`` (see module doc)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        main(args)
    except UserError as exc:
        if debug_requested(args):
            raise
        sys.stdout.flush()  # the error comes after whatever the run printed
        print(f"error: {cli_message(exc)}", file=sys.stderr)
        return USER_ERROR_EXIT
    return 0
