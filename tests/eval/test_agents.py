"""ModelEvaluator with tools: the trainers' multi-turn rollouts, an ``agent`` summary, transcripts in the records
and the Markdown report (``eval/agents.py``)."""

from __future__ import annotations

import pytest

from posttrain_llm.online_rl_trainer import MathRewardFunction, ModelEvaluator
from posttrain_llm.online_rl_trainer.core.agents import calculator
from posttrain_llm.online_rl_trainer.core.backends import agent_rollouts
from posttrain_llm.online_rl_trainer.core.eval.reports import markdown_summary

CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "12*13"}}\n</tool_call>'


def scripted_generate(tokenizer, turns):
    """A generate_fn that writes ``turns[k]`` (text + end of turn) as every rollout's k-th turn."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def factory(model, tok, **kwargs):
        def generate(sequences, budgets):
            out = []
            for seq, budget in zip(sequences, budgets):
                k = sum(1 for t in seq if t == end) - 1  # end-of-turn tokens after the prompt's own
                ids = tokenizer.encode(turns[min(k, len(turns) - 1)], add_special_tokens=False) + [end]
                out.append((ids[:budget], None))
            return out
        return generate
    return factory


@pytest.fixture()
def tiny(tiny_model_dir):
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    return load_model_and_tokenizer(str(tiny_model_dir))


def test_agent_evaluation_counts_turns_and_calls_and_keeps_transcripts(tiny, monkeypatch):
    model, tok = tiny
    monkeypatch.setattr(agent_rollouts, "hf_generate_fn", scripted_generate(tok, [CALL, "\\boxed{156}"]))
    rows = [{"prompt": [{"role": "user", "content": "12*13="}], "answer": "156"},
            {"prompt": [{"role": "user", "content": "12*13?"}], "answer": "157"}]
    ev = ModelEvaluator(model, tok, max_new_tokens=200, show_progress=False, tools=[calculator],
                        agent_settings={"tools_in_prompt": False})
    res = ev.evaluate(rows, MathRewardFunction())
    assert res["accuracy"] == 0.5 and res["num_correct"] == 1  # judged on the final answer, 156
    agent = res["agent"]
    assert agent["turns_mean"] == 2 and agent["tool_calls_mean"] == 1 and agent["tool_errors_total"] == 0
    assert agent["stop/answered"] == 2 and agent["call_format"] == "chatml"
    transcript = res["records"][0]["transcript"]
    assert [m["role"] for m in transcript] == ["assistant", "tool", "assistant"]
    assert transcript[1]["content"] == "156" and transcript[1]["status"] == "ok"
    assert res["records"][0]["completion"] == "\\boxed{156}"
    report = markdown_summary(res)
    assert "| mean tool calls | 1 |" in report and "## Transcripts (first 2 problems)" in report
    assert "[tool calculator [ok]] 156" in report


def test_budget_hits_are_counted(tiny, monkeypatch):
    model, tok = tiny
    monkeypatch.setattr(agent_rollouts, "hf_generate_fn", scripted_generate(tok, [CALL]))  # never answers
    ev = ModelEvaluator(model, tok, max_new_tokens=400, show_progress=False, tools=[calculator],
                        agent_settings={"tools_in_prompt": False, "max_turns": 3})
    res = ev.evaluate([{"prompt": [{"role": "user", "content": "12*13="}], "answer": "156"}], MathRewardFunction())
    assert res["agent"]["stop/max_turns"] == 1 and res["agent"]["turns_mean"] == 3
    assert res["agent"]["tool_calls_mean"] == 2  # the third turn's call is not run: the turn budget ended it
    assert res["accuracy"] == 0.0


def test_agent_settings_are_checked(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match=r"agent settings \['max_turn'\] unknown"):
        ModelEvaluator(model, tok, tools=[calculator], agent_settings={"max_turn": 2})
    with pytest.raises(ValueError, match="max_turns=0 must be an integer >= 1"):
        ModelEvaluator(model, tok, tools=[calculator], agent_settings={"max_turns": 0})
    with pytest.raises(ValueError, match="given without tools"):
        ModelEvaluator(model, tok, agent_settings={"max_turns": 2})
