"""Fixtures of the backend tests."""

from __future__ import annotations

import pytest

from posttrain_llm.online_rl_trainer.core.backends import agent_rollouts
from tests.backends.multi_turn_helpers import CALL


@pytest.fixture
def first_turn_calls(monkeypatch):
    """Every rollout's first turn is ``CALL`` + EOS (log-probs 0: not the policy's); later turns are sampled by the
    policy. Patched where ``collect_rollouts`` builds its generator, so the rest of the path is the real one."""
    real = agent_rollouts.hf_generate_fn

    def factory(model, tokenizer, **kwargs):
        sample = real(model, tokenizer, **kwargs)
        script = tokenizer.encode(CALL, add_special_tokens=False) + [tokenizer.eos_token_id]
        state = {"first": True}

        def generate(sequences, budgets):
            if state.pop("first", False):
                return [(script[:b], [0.0] * len(script[:b])) for b in budgets]
            return sample(sequences, budgets)

        return generate

    monkeypatch.setattr(agent_rollouts, "hf_generate_fn", factory)
