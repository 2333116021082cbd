"""The tools demo (examples/train_tools.py), run as a user would, with small sizes on the tiny model."""

from __future__ import annotations

import json

import pytest

from posttrain_llm.online_rl_trainer.core.agents import parse_tool_calls
from posttrain_llm.online_rl_trainer.examples import train_tools


def test_teacher_examples_call_the_calculator_for_the_given_share():
    rows = [{"prompt": [{"role": "user", "content": f"{a}*{b}="}], "a": a, "b": b, "answer": str(a * b)}
            for a, b in zip(range(100, 120), range(200, 220))]
    examples = train_tools.teacher_examples(rows, 0.3, "chatml")
    with_tool = [e for e in examples if isinstance(e[1], list)]
    assert len(with_tool) == 6  # 3 of every 10
    prompt, segments = with_tool[0]
    (call, trained), (result, result_trained), (answer, answer_trained) = segments
    assert trained and answer_trained and not result_trained  # the tool's result is context, never a label
    parsed = parse_tool_calls(call, "chatml")
    assert parsed[0].name == "calculator" and parsed[0].arguments == {"expression": "100*200"}
    assert "20000" in result and answer.startswith("\\boxed{20000}")
    assert all(e[1] == f"\\boxed{{{r['answer']}}}" for e, r in zip(examples, rows) if not isinstance(e[1], list))
    with pytest.raises(ValueError, match="--tool-share 1.5"):
        train_tools.teacher_examples(rows, 1.5, "chatml")


@pytest.mark.parametrize("trainer", ["grpo", "ppo"])
def test_train_tools_runs_end_to_end(tmp_path, capsys, trainer):
    out = tmp_path / "run"
    summary = train_tools.main(["--trainer", trainer, "--warmup-steps", "3", "--max-steps", "1", "--num-samples", "40",
                                "--eval-samples", "4", "--prompts-per-step", "2", "--num-generations", "2",
                                "--output-dir", str(out), "--threads", "1"])
    printed = capsys.readouterr().out
    assert "before RL:" in printed and "after RL:" in printed and "tool calls/problem" in printed
    assert summary["steps"] == 1 and summary["warmup"]["steps"] == 3
    for side in ("before", "after"):
        assert summary[side]["n"] == 4 and "tool_calls_mean" in summary[side]["agent"]
    saved = json.loads((out / "tools_summary.json").read_text())
    assert saved["comparison"]["n_paired"] == 4
    report = (out / "before_vs_after" / "report.md").read_text()
    assert "McNemar" in report and "tool calls" in report
