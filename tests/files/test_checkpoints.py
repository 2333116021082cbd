"""Checkpoint folders shared by every algorithm: finding the latest complete one, refusing others, pruning."""

from __future__ import annotations

import pytest

from posttrain_llm.online_rl_trainer.core.files import checkpoints as ckpt


def test_latest_checkpoint_skips_incomplete_and_temporary_folders(tmp_path):
    for name in ("checkpoint-2", "checkpoint-6", ".tmp-checkpoint-8"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-2" / ckpt.COMPLETE_MARKER).write_text("{}")
    (tmp_path / ".tmp-checkpoint-8" / ckpt.COMPLETE_MARKER).write_text("{}")
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


def test_a_checkpoint_of_another_algorithm_is_refused(tmp_path):
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    ckpt.write_json(folder / ckpt.COMPLETE_MARKER, {"global_step": 4, "trainer_type": "ppo"})
    with pytest.raises(ValueError, match="written by trainer_type='ppo'"):
        ckpt.resolve_resume_path(True, tmp_path, "grpo")
    assert ckpt.resolve_resume_path(True, tmp_path, "ppo") == folder


def test_pruning_counts_and_deletes_complete_checkpoints_only(tmp_path):
    for step, complete in ((1, True), (2, True), (3, True), (9, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            ckpt.write_json(folder / ckpt.COMPLETE_MARKER, {"global_step": step})
    deleted = ckpt.prune_checkpoints(tmp_path, keep=2)
    assert deleted == [tmp_path / "checkpoint-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3", "checkpoint-9"]


def test_commit_renames_the_staging_folder_into_place_with_its_marker(tmp_path):
    staging = ckpt.begin_checkpoint(tmp_path, 3)
    (staging / "weights.bin").write_bytes(b"x")
    assert ckpt.latest_checkpoint(tmp_path) is None  # a staging folder never counts
    final = ckpt.commit_checkpoint(staging, 3, info={"trainer_type": "grpo"})
    assert final == ckpt.checkpoint_dir(tmp_path, 3) and not staging.exists()
    assert ckpt.checkpoint_info(final) == {"global_step": 3, "trainer_type": "grpo", "run": None,  # no manifest here
                                           "files": {"weights.bin": 1}}
    assert ckpt.latest_checkpoint(tmp_path) == final
