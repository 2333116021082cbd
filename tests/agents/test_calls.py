"""Tool-call formats: each format's calls parse, malformed ones become values with a reason, and the observation text
is exactly what the model's chat template writes after the turn."""

from __future__ import annotations

import pytest

from posttrain_llm.online_rl_trainer.core.agents import (
    MalformedCall,
    ParsedCall,
    ToolResult,
    parse_tool_calls,
    render_call,
    render_observation,
)
from posttrain_llm.online_rl_trainer.core.models.tiny import build_char_tokenizer

#: The message loop of Qwen2.5-Instruct's chat template (tokenizer_config.json), tool parts verbatim.
QWEN25_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system') or (message.role == 'assistant' and not "
    "message.tool_calls) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>' + message.role }}"
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' }}{{- tool_call.name }}{{- '\", \"arguments\": ' }}"
    "{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != 'tool') %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}"
    "{%- if loop.last or (messages[loop.index0 + 1].role != 'tool') %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
RESULTS = [ToolResult("calculator", "ok", "56088"), ToolResult("python", "error", "ValueError: x")]


def test_hermes_parses_one_block_per_call():
    text = ('Let me compute.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "123*456"}}\n'
            '</tool_call>\n<tool_call>{"name": "python", "arguments": {"code": "print(1)"}}</tool_call>')
    calls = parse_tool_calls(text, "hermes")
    assert [(c.name, c.arguments) for c in calls] == [("calculator", {"expression": "123*456"}),
                                                      ("python", {"code": "print(1)"})]
    assert parse_tool_calls(text, "qwen") == calls == parse_tool_calls(text, "chatml")


def test_smollm2_parses_a_json_list_and_an_empty_list_is_no_call():
    text = ('<tool_call>[\n{"name": "calculator", "arguments": {"expression": "2+2"}},\n'
            '{"name": "python", "arguments": {"code": "print(3)"}}\n]</tool_call>')
    assert [c.name for c in parse_tool_calls(text, "smollm2")] == ["calculator", "python"]
    assert parse_tool_calls("<tool_call>[]</tool_call>", "smollm2") == []
    assert parse_tool_calls('<tool_call>{"name": "f", "arguments": {}}</tool_call>', "smollm2") == \
        [ParsedCall("f", {}, '<tool_call>{"name": "f", "arguments": {}}</tool_call>')]


def test_a_turn_without_tags_has_no_calls():
    assert parse_tool_calls("The answer is 42.", "hermes") == []


def test_arguments_given_as_a_json_string_are_decoded():
    (call,) = parse_tool_calls('<tool_call>{"name": "f", "arguments": "{\\"x\\": 1}"}</tool_call>', "hermes")
    assert call.arguments == {"x": 1}


@pytest.mark.parametrize("fmt", ["hermes", "smollm2", "chatml"])
@pytest.mark.parametrize("text, fragment", [
    ('<tool_call>{"name": "f", "arguments": {"x": 1}</tool_call>', "invalid JSON"),
    ('<tool_call>{"arguments": {"x": 1}}</tool_call>', 'no "name"'),
    ('<tool_call>{"name": 3, "arguments": {}}</tool_call>', 'no "name"'),
    ('<tool_call>{"name": "f", "arguments": [1, 2]}</tool_call>', "must be a JSON object, got list"),
    ('<tool_call>{"name": "f", "arguments": "nope"}</tool_call>', "string that is not JSON"),
    ('<tool_call>"just a string"</tool_call>', "must be a JSON object, got str"),
    ('<tool_call>{"name": "f", "arguments": {}', "is not closed"),
    ("<tool_call>" + "[" * 100_000 + "</tool_call>", "invalid JSON"),
])
def test_malformed_calls_are_values_with_a_reason(fmt, text, fragment):
    calls = parse_tool_calls(text, fmt)
    assert len(calls) == 1 and isinstance(calls[0], MalformedCall) and fragment in calls[0].reason


def test_a_good_call_then_an_unclosed_one_gives_both():
    calls = parse_tool_calls('<tool_call>{"name": "f", "arguments": {}}</tool_call> and <tool_call>{"name"', "hermes")
    assert isinstance(calls[0], ParsedCall) and isinstance(calls[1], MalformedCall)


def test_unknown_format_is_refused_with_the_list():
    with pytest.raises(ValueError, match="accepted: \\['hermes', 'qwen', 'smollm2', 'chatml'\\]"):
        parse_tool_calls("", "llama3")


def _after_first_turn(rendered: str, turn_start: str) -> str:
    """The text after the end-of-turn token of the assistant turn that starts at ``turn_start``."""
    start = rendered.index(turn_start)
    end = rendered.index("<|im_end|>", start) + len("<|im_end|>")
    return rendered[end:]


def test_qwen_call_and_observation_match_qwen25_template():
    tok = build_char_tokenizer()
    call = ParsedCall("calculator", {"expression": "123*456"})
    messages = [{"role": "user", "content": "What is 123*456?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
                {"role": "tool", "content": RESULTS[0].text}, {"role": "tool", "content": RESULTS[1].text}]
    rendered = tok.apply_chat_template(messages, chat_template=QWEN25_TEMPLATE, tokenize=False,
                                       add_generation_prompt=True)
    assert f"<|im_start|>assistant\n{render_call(call, 'qwen')}<|im_end|>" in rendered
    assert _after_first_turn(rendered, "<|im_start|>assistant") == render_observation(RESULTS, "qwen")
    assert render_observation(RESULTS, "qwen") == render_observation(RESULTS, "smollm2")


def test_chatml_observation_matches_the_tiny_models_template_for_tool_messages():
    tok = build_char_tokenizer()
    messages = [{"role": "user", "content": "12*34="},
                {"role": "assistant", "content": render_call(ParsedCall("calculator", {"expression": "12*34"}),
                                                             "chatml")},
                {"role": "tool", "content": RESULTS[0].text}, {"role": "tool", "content": RESULTS[1].text}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert _after_first_turn(rendered, "<|im_start|>assistant") == render_observation(RESULTS, "chatml")
    assert render_observation(RESULTS, "chatml") == ("\n<|im_start|>tool\n56088<|im_end|>\n<|im_start|>tool\n"
                                                     "ValueError: x<|im_end|>\n<|im_start|>assistant\n")


def test_smollm2_call_rendering_is_a_list_and_round_trips():
    call = ParsedCall("calculator", {"expression": "1+1"})
    text = render_call(call, "smollm2")
    assert text == '<tool_call>[{"name": "calculator", "arguments": {"expression": "1+1"}}]</tool_call>'
    assert [(c.name, c.arguments) for c in parse_tool_calls(text, "smollm2")] == [(call.name, call.arguments)]
