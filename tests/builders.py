"""Builders the tests share: the tiny model's ``a+1`` rows and one-message chats.

One home, so a change of the row format (a new required column, another prompt shape) is made once. Tests that need
rows of another shape build them where they are used.
"""

from __future__ import annotations

from typing import Any


def chat(text: str, role: str = "user") -> list[dict[str, str]]:
    """A one-message conversation, the prompt format the loaders produce."""
    return [{"role": role, "content": text}]


def plus_one_rows(n: int, start: int = 0, **columns: Any) -> list[dict[str, Any]]:
    """``n`` rows asking ``"a+1="`` (a = start .. start+n-1) as a chat, with the answer ``str(a + 1)`` and any extra
    columns."""
    return [{"prompt": chat(f"{a}+1="), "answer": str(a + 1), **columns} for a in range(start, start + n)]


def tiny_rl_config(tmp_path: Any, **overrides: Any) -> Any:
    """A ``TrainerConfig`` for one quick GRPO step on the tiny model's ``a+1`` rows: 4 prompts x G=4 per step in
    micro-batches of one group, no KL, 1 thread; ``overrides`` replace any field (``model_name_or_path`` is required)."""
    from posttrain_llm.online_rl_trainer import TrainerConfig

    kwargs = dict(model_name_or_path=None, max_steps=1, learning_rate=1e-3, kl_coef=0.0, max_completion_length=6,
                  num_generations=4, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                  output_dir=str(tmp_path / "out"), save_steps=1000, torch_num_threads=1, seed=3)
    kwargs.update(overrides)
    return TrainerConfig(**kwargs)


def generate_through(path: str, tmp_path: Any, model_dir: Any, temperature: float = 1.0) -> None:
    """One generation round on the tiny model through ``path``: ``"evaluator"`` (``ModelEvaluator.evaluate`` of 2
    rows at ``temperature``, 4 new tokens) or a trainer type (``"grpo"``, ``"rloo"``, ``"ppo"``: one step of 8 rows x
    4 completions, 1 thread). For tests that check every generation path goes through some piece."""
    from posttrain_llm.online_rl_trainer import ModelEvaluator, OnlineRLTrainer, TrainerConfig

    reward = lambda completions, **kw: [float(len(str(c))) for c in completions]  # noqa: E731
    if path == "evaluator":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(model_dir)
        evaluator = ModelEvaluator(model, AutoTokenizer.from_pretrained(model_dir), max_new_tokens=4,
                                   temperature=temperature, show_progress=False)
        evaluator.evaluate(plus_one_rows(2), reward)
        return
    config = TrainerConfig(trainer_type=path, model_name_or_path=str(model_dir), max_steps=1, kl_coef=0.0,
                           max_completion_length=4, num_generations=4, per_device_train_batch_size=8,
                           output_dir=str(tmp_path / "out"), save_steps=1000, torch_num_threads=1)
    OnlineRLTrainer(config, reward, plus_one_rows(16)).train()
