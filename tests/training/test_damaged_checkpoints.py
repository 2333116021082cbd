"""Damaged checkpoints (issue 16): a checkpoint with a truncated file used to fail on resume with the raw library
error, naming neither the checkpoint nor the file, and never offered the previous complete checkpoint. Now the
damaged file is named, ``resume_from_checkpoint=True`` falls back to the newest undamaged checkpoint with a warning
naming both, and says so when there is none. GRPO's and PPO's files alike; checkpoints written before the marker
recorded file sizes are checked by format.
"""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from posttrain_llm.online_rl_trainer import OnlineRLTrainer, TrainerConfig
from posttrain_llm.online_rl_trainer.core.files import checkpoints as ckpt
from tests.builders import plus_one_rows

torch.set_num_threads(1)
GRPO_FILES = ["model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json", "trl_state_0.pt",
              "rng_state.pth"]
PPO_FILES = ["policy/model.safetensors", "critic/value_head.safetensors", "optimizer.pt", "critic_optimizer.pt",
             "ppo_state.json", "trainer_state.json", "rng_state_0.pth"]


def length_reward(completions, **kwargs):
    return [len(c[0]["content"]) / 10 for c in completions]


def _config(out, model_dir, algo="grpo", **kw):
    ppo = algo == "ppo"
    base = dict(trainer_type=algo, model_name_or_path=str(model_dir), max_steps=2, learning_rate=1e-3, kl_coef=0.0,
                max_completion_length=5, num_generations=2 if ppo else 4, per_device_train_batch_size=4 if ppo else 8,
                save_steps=1, save_total_limit=None, output_dir=str(out), torch_num_threads=1,
                **({"ppo_epochs": 1} if ppo else {}))
    base.update(kw)
    return TrainerConfig(**base)


def _rows(n=8):
    return plus_one_rows(n)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """algo -> an output folder with checkpoint-1 and checkpoint-2 (trained once; tests work on copies)."""
    folders = {}
    for algo in ("grpo", "ppo"):
        out = tmp_path_factory.mktemp(algo) / "out"
        OnlineRLTrainer(_config(out, tiny_model_dir, algo), length_reward, _rows()).train()
        folders[algo] = out
    return folders


def _copy(trained, algo, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(trained[algo], out)
    return out


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _forget_sizes(checkpoint):
    """What a checkpoint of an earlier version looks like: a marker without the file sizes."""
    info = ckpt.read_json(checkpoint / ckpt.COMPLETE_MARKER)
    info.pop("files")
    ckpt.write_json(checkpoint / ckpt.COMPLETE_MARKER, info)


@pytest.mark.parametrize("sizes", ["recorded", "legacy marker"])
@pytest.mark.parametrize("algo,name", [("grpo", f) for f in GRPO_FILES] + [("ppo", f) for f in PPO_FILES])
def test_a_truncated_file_is_named_and_resume_falls_back_to_the_previous_checkpoint(algo, name, sizes, trained,
                                                                                    tmp_path, caplog):
    out = _copy(trained, algo, tmp_path)
    newest = out / "checkpoint-2"
    assert (newest / name).is_file(), sorted(p.name for p in newest.rglob("*"))
    if sizes == "legacy marker":
        _forget_sizes(newest)
    _truncate(newest / name)
    problem = ckpt.verify_checkpoint(newest)
    assert problem is not None and problem.startswith(f"{name}: ")
    with pytest.raises(ckpt.CheckpointError, match=rf"checkpoint '{newest}' is damaged: {name}: "):
        ckpt.resolve_resume_path(str(newest), out, algo)
    with caplog.at_level(logging.WARNING, logger="posttrain_llm.online_rl_trainer.core.files.checkpoints"):
        assert ckpt.resolve_resume_path(True, out, algo) == out / "checkpoint-1"
    assert f"{newest} is damaged ({name}: " in caplog.text and "falling back to checkpoint-1" in caplog.text
    assert ckpt.verify_checkpoint(out / "checkpoint-1") is None


def test_a_removed_file_is_named(trained, tmp_path):
    out = _copy(trained, "grpo", tmp_path)
    (out / "checkpoint-2" / "optimizer.pt").unlink()
    assert ckpt.verify_checkpoint(out / "checkpoint-2") == "optimizer.pt: missing"


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_resume_true_trains_on_from_the_previous_checkpoint(algo, trained, tmp_path, tiny_model_dir):
    out = _copy(trained, algo, tmp_path)
    _truncate(out / "checkpoint-2" / ("model.safetensors" if algo == "grpo" else "policy/model.safetensors"))
    trainer = OnlineRLTrainer(_config(out, tiny_model_dir, algo, max_steps=3), length_reward, _rows())
    trainer.train(resume_from_checkpoint=True)
    assert [row["step"] for row in trainer.metrics_history if "reward" in row] == [2, 3]  # from checkpoint-1
    assert ckpt.verify_checkpoint(out / "checkpoint-2") is None  # step 2 saved again, whole this time


def test_no_undamaged_checkpoint_is_an_error_naming_each(trained, tmp_path):
    out = _copy(trained, "grpo", tmp_path)
    _truncate(out / "checkpoint-1" / "trainer_state.json")
    _truncate(out / "checkpoint-2" / "optimizer.pt")
    with pytest.raises(ckpt.CheckpointError) as caught:
        ckpt.resolve_resume_path(True, out, "grpo")
    message = str(caught.value)
    assert "no checkpoint in" in message and "can be loaded" in message
    assert f"{out / 'checkpoint-2'} is damaged (optimizer.pt: " in message
    assert f"{out / 'checkpoint-1'} is damaged (trainer_state.json: " in message


def test_a_file_that_passes_the_checks_but_fails_to_load_is_named(trained, tmp_path, tiny_model_dir):
    """Another valid torch file in place of the optimizer state (sizes updated, as a careless copy would leave it):
    the load itself fails, and the error names the checkpoint and the file instead of the raw KeyError."""
    out = _copy(trained, "grpo", tmp_path)
    newest = out / "checkpoint-2"
    torch.save({"not": "an optimizer state"}, newest / "optimizer.pt")
    info = ckpt.read_json(newest / ckpt.COMPLETE_MARKER)
    info["files"]["optimizer.pt"] = (newest / "optimizer.pt").stat().st_size
    ckpt.write_json(newest / ckpt.COMPLETE_MARKER, info)
    assert ckpt.verify_checkpoint(newest) is None
    trainer = OnlineRLTrainer(_config(out, tiny_model_dir, max_steps=3), length_reward, _rows())
    with pytest.raises(ckpt.CheckpointError, match=rf"checkpoint '{newest}' could not be loaded: loading optimizer.pt "):
        trainer.train(resume_from_checkpoint=True)
