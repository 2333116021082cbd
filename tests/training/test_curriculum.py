"""The pass-rate curriculum in GRPO, RLOO and PPO: solved prompts stop being drawn, the record is checkpointed and a
resumed run draws exactly what the uninterrupted one drew (with dynamic sampling on top too)."""

from __future__ import annotations

import pytest

from posttrain_llm.online_rl_trainer import OnlineRLTrainer, TrainerConfig
from tests.backends.callbacks import assert_exact_resume, logged_steps, with_callbacks
from tests.builders import chat

G = 4


def rows_of(n_solved: int, n_open: int) -> list[dict]:
    rows = [{"prompt": chat(f"{a}+{a}="), "kind": "solved"} for a in range(n_solved)]
    return rows + [{"prompt": chat(f"{a}*{a}="), "kind": "open"} for a in range(n_open)]


class Drawn:
    """A reward that always passes ``solved`` rows (1.0) and passes ``open`` ones only for a completion whose length
    is a multiple of 3, recording which prompts each step drew."""

    __name__ = "drawn"

    def __init__(self):
        self.by_step: dict[int, list[str]] = {}

    def __call__(self, prompts, completions, kind, trainer_state, **kwargs):
        self.by_step.setdefault(trainer_state.global_step, []).extend(p[0]["content"] for p in prompts[::G])
        return [1.0 if k == "solved" else float(len(c[0]["content"]) % 3 == 0) for c, k in zip(completions, kind)]


def make_config(tmp_path, tiny_model_dir, **overrides):
    values = dict(model_name_or_path=str(tiny_model_dir), num_generations=G, per_device_train_batch_size=4 * G,
                  max_completion_length=8, temperature=1.0, kl_coef=0.0, max_steps=4, save_steps=2,
                  learning_rate=1e-3, curriculum=True, curriculum_recheck_steps=100, output_dir=str(tmp_path / "run"))
    values.update(overrides)
    return TrainerConfig(**values)


@pytest.mark.parametrize("trainer_type", ["grpo", "rloo", "ppo"])
def test_solved_prompts_are_retired(tmp_path, tiny_model_dir, trainer_type):
    reward = Drawn()
    rows = rows_of(n_solved=8, n_open=8)
    trainer = OnlineRLTrainer(make_config(tmp_path, tiny_model_dir, trainer_type=trainer_type), reward, rows)
    trainer.train()
    solved = {r["prompt"][0]["content"] for r in rows if r["kind"] == "solved"}
    seen_solved: set[str] = set()
    for step in sorted(reward.by_step):
        drawn = reward.by_step[step]
        assert len(drawn) == len(set(drawn)) == 4  # without replacement within a batch
        assert not (set(drawn) & seen_solved), f"step {step} drew a prompt solved before: {set(drawn) & seen_solved}"
        seen_solved |= set(drawn) & solved
    assert seen_solved, "no solved prompt was drawn at all: the test shows nothing"
    last = logged_steps(trainer)[4]
    assert last["curriculum/retired_share"] == len(seen_solved) / len(rows)
    assert 0 < last["curriculum/seen_share"] <= 1 and "curriculum/drawn_pass_rate" in last


@pytest.mark.parametrize("trainer_type, dynamic", [("grpo", False), ("grpo", True), ("ppo", False)])
def test_resume_is_exact_with_the_record_restored(tmp_path, tiny_model_dir, trainer_type, dynamic):
    rows = rows_of(n_solved=8, n_open=8)
    draws = {}

    def make(out_dir, callbacks):
        reward = draws.setdefault(out_dir.name, Drawn())
        cfg = make_config(tmp_path, tiny_model_dir, output_dir=str(out_dir), dynamic_sampling=dynamic,
                          curriculum_recheck_steps=2, trainer_type=trainer_type)
        return with_callbacks(OnlineRLTrainer(cfg, reward, rows), callbacks)

    loss = "policy_loss" if trainer_type == "ppo" else "loss"
    assert_exact_resume(make, tmp_path, (loss, "reward", "curriculum/seen_share", "curriculum/retired_share",
                                         "curriculum/drawn_pass_rate"))
    assert draws["a"].by_step == draws["b"].by_step  # the same prompts, step by step, across the interruption
