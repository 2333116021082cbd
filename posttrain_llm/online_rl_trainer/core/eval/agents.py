"""Evaluation of agents: ``ModelEvaluator(tools=..., environment_factory=...)`` runs the trainers' multi-turn rollouts.

The rollouts are those of training (``backends/agent_rollouts.py``: same prompt with the tools, same call format,
same budgets), greedy unless the evaluator samples. The reward judges the final assistant message; the result gets
an ``agent`` summary (mean turns, tool calls, tool errors, malformed calls, budget hits per stop reason) and every
record its full ``transcript`` (assistant turns, calls, tool results), which the Markdown report shows for the first
few problems.

Not covered: environments' ``get_reward`` as the evaluation verdict (the evaluator's reward function decides), vLLM.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, Sequence

#: The multi-turn settings an evaluator takes (``TrainerConfig``'s names and defaults).
AGENT_DEFAULTS = {"max_turns": 4, "max_tool_calls": 8, "tool_timeout_s": 10.0, "max_tool_output_chars": 2000,
                  "tool_call_format": "auto", "tools_in_prompt": True}


def evaluator_agent_setup(tokenizer: Any, tools: Sequence[Callable] | None, environment_factory: Callable | None,
                          max_new_tokens: int, settings: dict[str, Any] | None) -> Any:
    """The evaluator's ``AgentSetup``; ``max_new_tokens`` is the budget of model and tool tokens per rollout."""
    from ..backends.agent_rollouts import build_agent_setup  # torch: imported when an evaluator has tools

    unknown = sorted(set(settings or {}) - set(AGENT_DEFAULTS))
    if unknown:
        raise ValueError(f"agent settings {unknown} unknown; accepted: {sorted(AGENT_DEFAULTS)}")
    from ..config import TrainerConfig

    fields = {**AGENT_DEFAULTS, **(settings or {})}
    TrainerConfig(max_completion_length=max_new_tokens, **fields)  # validates the values, naming the bad one
    config = SimpleNamespace(max_completion_length=max_new_tokens, **fields)
    return build_agent_setup(config, tokenizer, tools, environment_factory)


def agent_generate(model: Any, tokenizer: Any, setup: Any, rows: list[dict], num_return_sequences: int, *,
                   batch_size: int, temperature: float, top_p: float, seed: int,
                   cpu_bf16: bool) -> tuple[list[list[str]], list[list[int]], list[list[Any]]]:
    """Rollouts for every row -> (final texts[row][sample], model tokens[row][sample], rollouts[row][sample])."""
    from ..backends.agent_rollouts import collect_rollouts

    flat = [r for r in rows for _ in range(num_return_sequences)]
    rollouts: list[Any] = []
    texts: list[str] = []
    for start in range(0, len(flat), batch_size):
        chunk = flat[start:start + batch_size]
        batch = collect_rollouts(model, tokenizer, [r["prompt"] for r in chunk], chunk, setup,
                                 temperature=temperature if temperature > 0 else 1.0, top_p=top_p,
                                 do_sample=temperature > 0, seed=seed + start, cpu_bf16=cpu_bf16)
        rollouts += batch.rollouts
        texts += batch.final_texts
    n = num_return_sequences
    per_row = [slice(i * n, (i + 1) * n) for i in range(len(rows))]
    return ([texts[s] for s in per_row], [[r.model_token_count for r in rollouts[s]] for s in per_row],
            [rollouts[s] for s in per_row])


def agent_summary(rollouts: Sequence[Sequence[Any]]) -> dict[str, float]:
    """Means over every rollout: turns, tool calls, tool errors, malformed calls; counts of each stop reason."""
    from ..agents import rollout_stats

    stats = rollout_stats([r for group in rollouts for r in group])
    keep = ("rollouts", "turns_mean", "tool_calls_mean", "tool_errors_mean", "malformed_calls_mean",
            "tool_calls_total", "tool_errors_total", "malformed_calls_total", "tool_time_s_total")
    return {k: v for k, v in stats.items() if k in keep or k.startswith("stop/")}


def add_transcripts(records: list[dict[str, Any]], rollouts: Sequence[Sequence[Any]]) -> None:
    """Give each record its first rollout's transcript, turns, tool calls and stop reason (in place)."""
    for record, group in zip(records, rollouts):
        first = group[0]
        record.update(transcript=list(first.transcript), turns=first.num_turns, tool_calls=first.num_tool_calls,
                      tool_errors=first.num_tool_errors, stop_reason=first.stop_reason)


def transcripts_markdown(records: Sequence[dict[str, Any]], limit: int = 5) -> str:
    """The first ``limit`` transcripts as Markdown (one block per problem), '' when the records have none."""
    shown = [r for r in records if "transcript" in r][:limit]
    if not shown:
        return ""
    parts = [f"## Transcripts (first {len(shown)} problems)"]
    for i, rec in enumerate(shown):
        lines = [f"### Problem {i + 1}: {rec.get('status')} (answer {rec.get('answer')!r}, {rec.get('turns')} turns, "
                 f"{rec.get('tool_calls')} tool calls, stopped: {rec.get('stop_reason')})", "", "```text"]
        for message in rec["transcript"]:
            role = message.get("role")
            label = f"tool {message.get('name')} [{message.get('status')}]" if role == "tool" else role
            lines.append(f"[{label}] {message.get('content')}")
        lines.append("```")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
