"""Agents: tools, tool-call formats, environments and the multi-turn rollout engine, in plain Python (no torch).

- ``tools.py``: :class:`Tool` from a typed, documented function (TRL's schema) and :func:`call_tool`, which always
  returns a :class:`ToolResult` with an explicit status (timeouts, errors, bad arguments are counted outcomes).
- ``builtin_tools.py``: the exact ``calculator`` and the sandboxed ``python`` tool (:class:`PythonTool`).
- ``calls.py``: the ``hermes``/``qwen``, ``smollm2`` and ``chatml`` call formats: parsing (malformed calls are
  values, never exceptions) and the observation text appended after a turn.
- ``environment.py``: TRL's ``environment_factory`` contract (``reset``, tool methods, ``get_reward``) plus our
  per-turn ``get_turn_reward``; :class:`ToolsEnvironment` for a plain tool list.
- ``rollout.py``: :class:`MultiTurnConfig`, :func:`run_rollouts` (turn-synchronous, exact model tokens, ``env_mask``)
  and :func:`rollout_stats`.

A torch ``generate_fn`` for transformers models is in ``backends/agent_generation.py``. Not covered here: the
trainers' use of rollouts (masking the loss), evaluation reports.
"""

from .builtin_tools import PythonTool, calculator, calculator_tool, format_exact
from .calls import CALL_FORMATS, MalformedCall, ParsedCall, parse_tool_calls, render_call, render_observation
from .environment import (
    EnvironmentContractError,
    EnvironmentSession,
    ToolsEnvironment,
    append_to_prompt,
    as_tools,
    environment_tools,
    start_sessions,
)
from .rollout import STOP_REASONS, MultiTurnConfig, Rollout, end_of_turn_ids, rollout_stats, run_rollouts
from .tools import (
    TOOL_STATUSES,
    Tool,
    ToolDefinitionError,
    ToolError,
    ToolResult,
    ToolUnavailable,
    abandoned_tool_threads,
    call_named_tool,
    call_tool,
    tool_from_function,
)

__all__ = [
    "CALL_FORMATS",
    "STOP_REASONS",
    "TOOL_STATUSES",
    "EnvironmentContractError",
    "EnvironmentSession",
    "MalformedCall",
    "MultiTurnConfig",
    "ParsedCall",
    "PythonTool",
    "Rollout",
    "Tool",
    "ToolDefinitionError",
    "ToolError",
    "ToolResult",
    "ToolUnavailable",
    "ToolsEnvironment",
    "abandoned_tool_threads",
    "append_to_prompt",
    "as_tools",
    "calculator",
    "calculator_tool",
    "call_named_tool",
    "call_tool",
    "end_of_turn_ids",
    "environment_tools",
    "format_exact",
    "parse_tool_calls",
    "render_call",
    "render_observation",
    "rollout_stats",
    "run_rollouts",
    "start_sessions",
    "tool_from_function",
]
