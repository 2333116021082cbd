"""Shared by the multi-turn tests of every backend: a one-tool environment with per-turn rewards, rewards that read
the multi-turn reward arguments, and the scripted tool call that opens every rollout (``conftest.first_turn_calls``)."""

from __future__ import annotations

from posttrain_llm.online_rl_trainer.core.agents import ParsedCall, render_call

CALL = render_call(ParsedCall("add", {"a": 2, "b": 3}), "chatml")


class AddEnv:
    """An environment with one tool; a turn that called it earns a per-turn reward of 0.5, a turn that did not
    earns None (no per-turn reward)."""

    def reset(self, **row) -> None:
        self.calls, self.rewarded = 0, 0

    def add(self, a: int, b: int) -> str:
        """Add two integers.

        Args:
            a: The first integer.
            b: The second integer.
        """
        self.calls += 1
        return str(a + b)

    def get_turn_reward(self) -> float | None:
        fresh, self.rewarded = self.calls > self.rewarded, self.calls
        return 0.5 if fresh else None


def used_tool(completions, agent_num_tool_calls, **kwargs):
    """1 for a rollout that called a tool (reads the multi-turn reward arguments)."""
    return [float(n > 0) for n in agent_num_tool_calls]


def frac7(completions, **kwargs):
    return [c[0]["content"].count("7") / max(1, len(c[0]["content"])) for c in completions]
