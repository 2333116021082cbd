"""Multi-turn rollouts for the trainers and the evaluator: tools in the prompt, the rollout engine, padded tensors.

``OnlineRLTrainer(tools=..., environment_factory=...)`` builds one :class:`AgentSetup` from the ``TrainerConfig``
(``max_turns``, ``max_tool_calls``, ``tool_timeout_s``, ``max_tool_output_chars``, ``tool_call_format``,
``tools_in_prompt``; ``max_completion_length`` is the budget of model and tool tokens after the prompt) and hands it
to the backend, which calls :func:`collect_rollouts` where it would call ``generate``. GRPO, RLOO and PPO share this
path, so a rollout is the same token sequence whichever algorithm trains on it.

How the tools reach the prompt (``tools_in_prompt``): through the chat template's ``tools=`` when it renders them
(Qwen2.5 and other Hermes-style templates), else as a system message that lists each tool's JSON schema and shows
the call syntax of the format (SmolLM2's template and the built-in tiny model's have no tool support). ``reset()``
text of an environment is appended to the last prompt message, as TRL does.

Rewards see the *final* assistant message as the completion (the answer after the tool calls), and the whole
transcript as ``agent_transcript``; an environment's ``get_reward()`` arrives as ``agent_env_reward``
(:class:`EnvironmentReward` turns it into a reward function). Not covered: vLLM generation, images, asynchronous
rollouts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..agents import (
    MultiTurnConfig,
    ParsedCall,
    Rollout,
    Tool,
    append_to_prompt,
    as_tools,
    environment_tools,
    render_call,
    rollout_stats,
    run_rollouts,
    start_sessions,
)
from ..common.errors import ConfigError
from .agent_generation import hf_generate_fn
from .cpu_bf16 import bf16_autocast


@dataclass(frozen=True)
class AgentSetup:
    """What a multi-turn run needs: standalone tools, an environment factory (or None), the budgets and format."""

    tools: tuple[Tool, ...]
    environment_factory: Callable[[], Any] | None
    multi_turn: MultiTurnConfig
    tools_in_prompt: bool = True
    env_reward_name: str | None = None
    """The environment class's name when it defines ``get_reward`` (then :class:`EnvironmentReward` scores it)."""

    def tool_schemas(self) -> list[dict[str, Any]]:
        """The JSON schemas of every tool a rollout can call (standalone ones, then the environment's)."""
        tools = {t.name: t for t in self.tools}
        if self.environment_factory is not None:
            tools.update(environment_tools(self.environment_factory()))
        return [t.schema for t in tools.values()]


def resolve_call_format(setting: str, tokenizer: Any) -> str:
    """``auto`` -> ``smollm2`` for SmolLM2's tokenizer, ``hermes`` when the chat template renders ``tools=``, else
    ``chatml``; anything else is returned as given."""
    if setting != "auto":
        return setting
    name = str(getattr(tokenizer, "name_or_path", "")).lower()
    if "smollm" in name:
        return "smollm2"
    return "hermes" if template_renders_tools(tokenizer) else "chatml"


def template_renders_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template writes a ``tools=`` schema into the prompt."""
    from jinja2 import TemplateError

    probe = [{"type": "function", "function": {"name": "zz_probe_tool", "description": "probe",
                                               "parameters": {"type": "object", "properties": {}}}}]
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tools=probe, tokenize=False,
                                             add_generation_prompt=True)
    except (TemplateError, TypeError, ValueError, KeyError):  # a template that cannot take tools at all
        return False
    return "zz_probe_tool" in str(text)


def build_agent_setup(config: Any, tokenizer: Any, tools: Sequence[Callable[..., Any] | Tool] | None,
                      environment_factory: Callable[[], Any] | None) -> AgentSetup | None:
    """The run's :class:`AgentSetup` from a ``TrainerConfig``, or None without tools and environment."""
    if not tools and environment_factory is None:
        return None
    standalone = tuple(as_tools(tools or (), owner="tools").values())
    env_reward = None
    if environment_factory is not None:
        if not callable(environment_factory):
            raise ConfigError(f"environment_factory={environment_factory!r:.80} is not callable; pass a class or a "
                              "zero-argument function that returns an environment")
        probe = environment_factory()  # as TRL does: one instance to read its tools and whether it owns a reward
        environment_tools(probe)
        if callable(getattr(probe, "get_reward", None)):
            env_reward = type(probe).__name__
    multi_turn = MultiTurnConfig(
        max_turns=config.max_turns, max_tool_calls=config.max_tool_calls,
        max_total_tokens=config.max_completion_length, max_new_tokens=config.max_completion_length,
        tool_timeout_s=config.tool_timeout_s, max_observation_chars=config.max_tool_output_chars,
        call_format=resolve_call_format(config.tool_call_format, tokenizer))
    return AgentSetup(standalone, environment_factory, multi_turn, config.tools_in_prompt, env_reward)


def tools_system_message(schemas: Sequence[Mapping[str, Any]], call_format: str) -> str:
    """The system text that describes the tools for a template without tool support."""
    lines = [json.dumps(s["function"], ensure_ascii=False) for s in schemas]
    example_name = schemas[0]["function"]["name"] if schemas else "tool_name"
    example = render_call(ParsedCall(example_name, {"argument": "value"}), call_format)
    return ("You can call tools. Each is described by a JSON schema:\n" + "\n".join(lines)
            + f"\nTo call a tool, write {example} and end your turn; its result comes back in the next message. "
              "When you have what you need, give the final answer without a tool call.")


def agent_prompt_ids(tokenizer: Any, prompt: Sequence[Mapping[str, Any]], setup: AgentSetup,
                     schemas: Sequence[Mapping[str, Any]] | None = None) -> list[int]:
    """Token ids of a chat ``prompt`` with the tools described (see the module docstring), ending with the
    assistant header."""
    messages = [dict(m) for m in prompt]
    kwargs: dict[str, Any] = {}
    if setup.tools_in_prompt:
        schemas = list(schemas if schemas is not None else setup.tool_schemas())
        if template_renders_tools(tokenizer):
            kwargs["tools"] = schemas
        else:
            text = tools_system_message(schemas, setup.multi_turn.call_format)
            if messages and messages[0].get("role") == "system":
                messages[0]["content"] = f"{messages[0].get('content') or ''}\n\n{text}"
            else:
                messages.insert(0, {"role": "system", "content": text})
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **kwargs)
    if isinstance(ids, Mapping):  # transformers 5 may return a BatchEncoding
        ids = ids["input_ids"]
    return [int(t) for t in ids]


#: The extra reward-function keyword arguments of a multi-turn rollout (:meth:`AgentBatch.reward_kwargs`).
AGENT_REWARD_KWARGS = ("agent_transcript", "agent_env_reward", "agent_num_tool_calls", "agent_stop_reason")


@dataclass
class AgentBatch:
    """One batch of finished rollouts, in input order, with what the trainers read from them."""

    rollouts: list[Rollout]
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    env_mask: list[list[int]]
    final_texts: list[str]
    """The last assistant message of each rollout (what the rewards judge)."""

    @property
    def transcripts(self) -> list[list[dict[str, Any]]]:
        return [list(r.transcript) for r in self.rollouts]

    @property
    def env_rewards(self) -> list[float | None]:
        return [r.reward for r in self.rollouts]

    def reward_kwargs(self) -> dict[str, list[Any]]:
        """Extra reward-function keyword arguments, one list entry per rollout."""
        values = (self.transcripts, self.env_rewards, [r.num_tool_calls for r in self.rollouts],
                  [r.stop_reason for r in self.rollouts])
        return dict(zip(AGENT_REWARD_KWARGS, values))

    def metrics(self) -> dict[str, float]:
        """``agent/*`` means and counts (turns, tool calls, errors, malformed calls, stop reasons)."""
        return {f"agent/{k}": v for k, v in rollout_stats(self.rollouts).items()}


def final_assistant_text(rollout: Rollout) -> str:
    """The content of the rollout's last assistant message ('' when there is none)."""
    for message in reversed(rollout.transcript):
        if message.get("role") == "assistant":
            return str(message.get("content") or "")
    return ""


def collect_rollouts(model: Any, tokenizer: Any, prompts: Sequence[Sequence[Mapping[str, Any]]],
                     rows: Sequence[Mapping[str, Any]], setup: AgentSetup, *, temperature: float = 1.0,
                     top_p: float = 1.0, top_k: int = 0, do_sample: bool = True, seed: int | None = None,
                     cpu_bf16: bool = False) -> AgentBatch:
    """Run one multi-turn rollout per chat prompt (``rows[i]`` is passed to the environment's ``reset``)."""
    if len(prompts) != len(rows):
        raise ValueError(f"{len(prompts)} prompts for {len(rows)} rows")
    sessions = start_sessions(setup.environment_factory, rows, setup.tools)
    schemas = setup.tool_schemas() if setup.tools_in_prompt else None
    prompt_ids = [agent_prompt_ids(tokenizer, append_to_prompt(p, s.reset_text), setup, schemas)
                  for p, s in zip(prompts, sessions)]
    generate = hf_generate_fn(model, tokenizer, temperature=temperature, top_p=top_p, top_k=top_k,
                              do_sample=do_sample, seed=seed)
    with bf16_autocast(cpu_bf16):
        rollouts = run_rollouts(prompt_ids, rows, generate, tokenizer, None, setup.multi_turn, sessions=sessions)
    return AgentBatch(rollouts, [list(r.prompt_ids) for r in rollouts], [list(r.completion_ids) for r in rollouts],
                      [list(r.env_mask) for r in rollouts], [final_assistant_text(r) for r in rollouts])


#: Stop reasons that mean a length budget cut the rollout (counted in ``completions/clipped_ratio``).
LENGTH_STOPS = frozenset({"truncated", "max_total_tokens"})


def agent_metrics(batch: AgentBatch, accelerator: Any) -> dict[str, float]:
    """``agent/*`` of the whole launch: totals and stop counts summed over the processes, per-rollout means averaged
    (every process runs as many rollouts)."""
    local = batch.metrics()
    if accelerator.num_processes == 1:
        return local
    import torch  # only here: the evaluator imports this module and needs no torch collective

    summed = accelerator.reduce(torch.tensor(list(local.values()), dtype=torch.float64, device=accelerator.device),
                                "sum").tolist()
    return {k: (v / accelerator.num_processes if k.endswith("_mean") else v) for k, v in zip(local, summed)}


def check_reward_columns(column_names: Sequence[str]) -> None:
    """ConfigError when a dataset column has the name of a multi-turn reward argument (it would be overwritten)."""
    clash = sorted(set(column_names) & set(AGENT_REWARD_KWARGS))
    if clash:
        raise ConfigError(f"train_data columns {clash} clash with the multi-turn reward arguments "
                          f"{list(AGENT_REWARD_KWARGS)}; rename those columns")


def merged_columns(columns: Mapping[str, list], extra: Mapping[str, list]) -> dict[str, list]:
    """Dataset columns plus the rollouts' reward kwargs (:meth:`AgentBatch.reward_kwargs`); a dataset column of the
    same name is an error (:func:`check_reward_columns`)."""
    check_reward_columns(list(columns))
    return {**columns, **extra}


class EnvironmentReward:
    """A reward function that returns each rollout's environment ``get_reward()`` (None when it has none)."""

    def __init__(self, name: str) -> None:
        self.__name__ = name

    def __call__(self, completions: Sequence[Any], agent_env_reward: Sequence[float | None] | None = None,
                 **kwargs: Any) -> list[float | None]:
        if agent_env_reward is None:
            raise ValueError(f"{self.__name__}: no agent_env_reward passed; it scores multi-turn rollouts only")
        return list(agent_env_reward)
