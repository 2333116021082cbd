"""Atomic writes: a failed write leaves the old file, never a truncated one; JSON of tensors, numpy values and NaN."""

from __future__ import annotations

import json
import math

import pytest

from posttrain_llm.online_rl_trainer.core.files.atomic import json_default, write_json_atomic, write_text_atomic


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    from pathlib import Path

    target = write_text_atomic(tmp_path / "metrics.json", "old")

    def disk_full(self, text, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomic(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_json_of_tensors_numpy_and_non_finite_values(tmp_path):
    import numpy as np
    import torch

    path = write_json_atomic(tmp_path / "m.json", {"loss": torch.tensor(0.5), "n": np.int64(3), "kl": float("nan"),
                                                    "v": torch.tensor([1.0, 2.0]), "p": tmp_path})
    data = json.loads(path.read_text())
    assert math.isnan(data.pop("kl"))  # written as NaN, read back as nan
    assert data == {"loss": 0.5, "n": 3, "v": [1.0, 2.0], "p": str(tmp_path)}
    assert json_default(torch.tensor(2)) == 2 and json_default(object).startswith("<class")
