# The two commands of the README, plus benchmarks. Each installs what it needs first (scripts/setup.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast lint bench setup

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

setup: $(VENV)/.installed

# The offline demo: tiny built-in model, warm-up, GRPO on a+b, held-out accuracy before/after + curves.
demo: $(VENV)/.installed
	$(PY) -m posttrain_llm.online_rl_trainer.examples.train_math $(ARGS)

# The whole test suite, SmolLM2 end-to-end tests included (offline).
test: $(VENV)/.installed
	$(PY) -m pytest -q $(ARGS)

# The linter (ruff, configured in pyproject.toml); .ci/run runs it before the tests.
lint: $(VENV)/.installed
	$(PY) -m ruff check .

# Unit tests only (skips the SmolLM2 end-to-end tests).
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" $(ARGS)

bench: $(VENV)/.installed
	$(PY) benchmarks/run_all.py $(ARGS)
