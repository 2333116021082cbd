"""Shared by the loader tests: no test here sees the caller's ``$ONLINE_RL_DATA_DIR`` unless it sets it itself
(the full-data tests get the folder through the ``real_data_dir`` fixture, so a bare clone and CI behave alike)."""

import pytest

from posttrain_llm.online_rl_trainer.core.data.base import DATA_DIR_ENV


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
