"""The ``online-rl`` console script: ``online-rl train|train-code|train-tools|train-reward-model|train-rlhf|evaluate [flags]``.

Thin dispatch to the example drivers, so the flags are the same as ``python -m ...examples.train_math`` and
``...examples.evaluate_model`` (``online-rl train --help`` lists them). Errors end as in the drivers: an input error
is one ``error:`` line and exit code 2 (``--debug`` for the traceback), see ``examples/cli_errors.py``.
"""

from __future__ import annotations

import sys

COMMANDS = {
    "train": "posttrain_llm.online_rl_trainer.examples.train_math",
    "train-code": "posttrain_llm.online_rl_trainer.examples.train_code",
    "train-tools": "posttrain_llm.online_rl_trainer.examples.train_tools",
    "train-reward-model": "posttrain_llm.online_rl_trainer.examples.train_reward_model",
    "train-rlhf": "posttrain_llm.online_rl_trainer.examples.train_rlhf",
    "evaluate": "posttrain_llm.online_rl_trainer.examples.evaluate_model",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        bad = f"unknown command {argv[0]!r}. " if argv and argv[0] not in ("-h", "--help") else ""
        print(f"{bad}usage: online-rl {{{'|'.join(COMMANDS)}}} [flags]   (online-rl train --help for the flags)")
        return 0 if not bad and argv else 2
    import importlib

    from posttrain_llm.online_rl_trainer.examples.cli_errors import run_cli

    return run_cli(importlib.import_module(COMMANDS[argv[0]]).main, argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
