"""Tools: the schema TRL uses, and guarded calls whose every outcome is an explicit, counted status."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from posttrain_llm.online_rl_trainer.core.agents import (
    Tool,
    ToolDefinitionError,
    ToolError,
    ToolUnavailable,
    abandoned_tool_threads,
    call_named_tool,
    call_tool,
    tool_from_function,
)
from posttrain_llm.online_rl_trainer.core.agents.tools import cut_text


def add(a: int, b: int = 0) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


def test_schema_is_the_one_trl_renders():
    from transformers.utils import get_json_schema

    tool = tool_from_function(add)
    assert tool.schema == {"type": "function", "function": {k: v for k, v in get_json_schema(add)["function"].items()
                                                            if k != "return"}}
    assert tool.parameters["required"] == ["a"] and tool.name == "add"


def test_a_function_without_hints_or_docstring_is_refused_by_name():
    def undocumented(a: int) -> int:
        return a

    def untyped(a):
        """Untyped.

        Args:
            a: something
        """

    for fn in (undocumented, untyped):
        with pytest.raises(ToolDefinitionError, match=fn.__name__):
            tool_from_function(fn)


def test_bound_methods_are_tools_without_self():
    class Counter:
        def bump(self, by: int) -> int:
            """Bump the counter.

            Args:
                by: How much.
            """
            return by + 1

    tool = tool_from_function(Counter().bump)
    assert list(tool.parameters["properties"]) == ["by"]
    assert call_tool(tool, {"by": 2}).text == "3"


@pytest.mark.parametrize("arguments, fragment", [
    ({}, "missing required argument(s) ['a']"),
    ({"a": 1, "c": 2}, "unexpected argument(s) ['c']"),
    ({"a": "1"}, "argument 'a' of add must be integer, got str"),
    ({"a": True}, "must be integer, got bool"),
    ([1, 2], "arguments must be a JSON object, got list"),
])
def test_arguments_that_do_not_fit_are_a_bad_arguments_outcome(arguments, fragment):
    result = call_tool(tool_from_function(add), arguments)
    assert result.status == "bad_arguments" and fragment in result.text and result.is_error


def test_a_tool_that_raises_is_an_error_outcome_with_type_and_message():
    def boom(x: int) -> int:
        """Fail.

        Args:
            x: ignored
        """
        raise KeyError("no such key")

    result = call_tool(tool_from_function(boom), {"x": 1})
    assert (result.status, result.text) == ("error", "KeyError: 'no such key'")


def test_a_tool_that_hangs_is_a_timeout_and_its_thread_is_counted():
    release = threading.Event()

    def hang(x: int) -> int:
        """Hang.

        Args:
            x: ignored
        """
        release.wait(30)
        return x

    before = abandoned_tool_threads()
    start = time.monotonic()
    result = call_tool(tool_from_function(hang), {"x": 1}, timeout_s=0.2)
    assert result.status == "timeout" and "0.2 s" in result.text
    assert time.monotonic() - start < 2
    assert abandoned_tool_threads() == before + 1
    release.set()


def test_tool_error_sets_the_status_and_tool_unavailable_propagates():
    def judged(kind: str) -> str:
        """Report.

        Args:
            kind: which failure
        """
        if kind == "timeout":
            raise ToolError("program killed", status="timeout")
        raise ToolUnavailable("sandbox down")

    tool = tool_from_function(judged)
    assert call_tool(tool, {"kind": "timeout"}).status == "timeout"
    with pytest.raises(ToolUnavailable, match="sandbox down"):
        call_tool(tool, {"kind": "infra"})


def test_unknown_tool_names_the_available_ones():
    result = call_named_tool({"add": tool_from_function(add)}, "mul", {"a": 1})
    assert result.status == "unknown_tool" and "['add']" in result.text


def test_long_results_are_cut_with_a_visible_marker():
    def big(n: int) -> str:
        """Big.

        Args:
            n: length
        """
        return "x" * n

    result = call_tool(tool_from_function(big), {"n": 1000}, max_chars=100)
    assert result.text == "x" * 100 + "\n[... cut 900 chars]" and result.cut_chars == 900
    assert cut_text("short", 10) == ("short", 0)


def test_results_render_as_text_json_or_str_and_async_tools_run():
    async def fetch(q: str) -> dict:
        """Fetch.

        Args:
            q: query
        """
        return {"q": q, "n": [1, 2]}

    assert call_tool(tool_from_function(fetch), {"q": "é"}).text == '{"q": "é", "n": [1, 2]}'
    assert call_tool(tool_from_function(add), {"a": 2, "b": 3}, timeout_s=None).text == "5"


def test_tool_rejects_a_bad_definition():
    with pytest.raises(ToolDefinitionError, match="identifier"):
        Tool("not a name", "", {"type": "object"}, add)
    with pytest.raises(ToolDefinitionError, match="type 'object'"):
        Tool("f", "", {"type": "string"}, add)


def test_agents_import_no_torch():
    code = ("import sys\nfrom posttrain_llm.online_rl_trainer.core.agents import calculator_tool, run_rollouts\n"
            "calculator_tool()\nassert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
