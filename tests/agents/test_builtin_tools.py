"""The built-in tools: the calculator is exact and refuses anything but arithmetic; the python tool keeps every
sandbox guarantee and reports each failure as a counted outcome."""

from __future__ import annotations

import os
import time
import uuid
from fractions import Fraction
from pathlib import Path

import pytest

from posttrain_llm.online_rl_trainer.core.agents import PythonTool, calculator, calculator_tool, call_tool, format_exact
from posttrain_llm.online_rl_trainer.core.agents.builtin_tools import MAX_EXPRESSION_CHARS
from posttrain_llm.online_rl_trainer.core.sandbox import SandboxConfig


@pytest.mark.parametrize("expression, expected", [
    ("123 * 456", "56088"),
    ("987654321987654321 * 123456789123456789", str(987654321987654321 * 123456789123456789)),
    ("0.1 + 0.2", "0.3"),              # exact decimals: a float would give 0.30000000000000004
    ("1 / 8", "0.125"),
    ("1 / 3", "1/3"),
    ("(1 / 3) * 3", "1"),
    ("-7 // 2", "-4"), ("-7 % 3", "2"), ("7 - -2", "9"), ("+5", "5"),
    ("2 ** -2", "0.25"), ("(2 / 3) ** 2", "4/9"), ("1.5e2", "150"), ("1_000 * 3", "3000"),
    ("-1 / 8", "-0.125"), ("10 / 4", "2.5"),
])
def test_calculator_is_exact(expression, expected):
    assert calculator(expression) == expected


def test_format_exact_covers_integers_decimals_and_fractions():
    assert [format_exact(Fraction(n, d)) for n, d in ((6, 3), (-3, 40), (2, 7), (1, 1024))] == \
        ["2", "-0.075", "2/7", "0.0009765625"]


@pytest.mark.parametrize("expression, fragment", [
    ("x + 1", "unsupported name 'x'"),
    ("abs(-1)", "unsupported function call"),
    ("__import__('os').system('true')", "unsupported function call"),
    ("(1).__class__", "unsupported attribute '__class__'"),
    ("[1][0]", "unsupported"),
    ("'a' * 3", "unsupported constant"),
    ("1 < 2", "unsupported"),
    ("2 ** 0.5", "not an integer"),
    ("2 ** 10 ** 10", "over the limit of 10000"),
    ("9 ** 9999", "digits, over the limit"),
    ("1e999999999", "exponent over"),
    ("1 +", "cannot parse"),
    ("", "empty expression"),
    ("1" * (MAX_EXPRESSION_CHARS + 1), "over the limit"),
])
def test_calculator_refuses_what_is_not_bounded_arithmetic(expression, fragment):
    start = time.monotonic()
    with pytest.raises(ValueError, match=None) as info:
        calculator(expression)
    assert fragment in str(info.value)
    assert time.monotonic() - start < 1  # refused before any big computation


def test_calculator_errors_are_counted_tool_errors():
    tool = calculator_tool()
    assert call_tool(tool, {"expression": "1/0"}).text == "ZeroDivisionError: division by zero"
    result = call_tool(tool, {"expression": "os.getcwd()"})
    assert result.status == "error" and result.text.startswith("ValueError: unsupported")
    assert call_tool(tool, {"expression": 12}).status == "bad_arguments"


# ------------------------------------------------------------------------------------------- python tool
LIMITS = SandboxConfig(timeout_seconds=2.0, memory_mb=512, max_processes=16, max_output_bytes=4096,
                       max_file_size_mb=4, tmp_size_mb=16, mode=os.environ.get("ONLINE_RL_SANDBOX_TEST_MODE", "auto"))


@pytest.fixture(scope="module")
def python_tool():
    with PythonTool(LIMITS, max_output_chars=500) as tool:
        yield tool


def _run(python_tool, code: str):
    return call_tool(python_tool.as_tool(), {"code": code}, timeout_s=30, max_chars=2000)


def test_python_tool_returns_stdout_and_stderr(python_tool):
    result = _run(python_tool, "import sys\nprint(6 * 7)\nprint('note', file=sys.stderr)\n")
    assert (result.status, result.text) == ("ok", "42\nnote\n")


def test_python_tool_exception_is_an_error_with_the_traceback(python_tool):
    result = _run(python_tool, "raise ValueError('bad input')\n")
    assert result.status == "error" and "ValueError: bad input" in result.text and "[exit status 1]" in result.text


def test_python_tool_infinite_loop_is_a_timeout(python_tool):
    start = time.monotonic()
    result = _run(python_tool, "print('start', flush=True)\nwhile True:\n    pass\n")
    assert result.status == "timeout" and "ran past 2 s" in result.text and result.text.startswith("start")
    assert time.monotonic() - start < LIMITS.timeout_seconds + 8


def test_python_tool_huge_output_is_cut_and_marked(python_tool):
    result = _run(python_tool, "print('x' * 10_000_000)\n")
    assert result.status == "ok" and "[... cut" in result.text
    assert len(result.text) < 700


def test_python_tool_fork_bomb_is_capped_and_leaves_nothing(python_tool):
    marker = "agentfork" + uuid.uuid4().hex[:8]
    code = ("import os, time\nn = 0\nfor _ in range(200):\n    try:\n        if os.fork() == 0:\n"
            f"            import ctypes; ctypes.CDLL(None).prctl(15, b'{marker}', 0, 0, 0)\n"
            "            time.sleep(60)\n            os._exit(0)\n        n += 1\n    except OSError:\n        break\n"
            "print('forked', n)\n")
    result = _run(python_tool, code)
    assert result.status == "ok" and int(result.text.split()[1]) <= LIMITS.max_processes
    time.sleep(0.5)
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _comm(p) == marker[:15]]
    assert not leftovers


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_python_tool_cannot_write_outside(python_tool, tmp_path):
    target = Path("/var/tmp") / f"agent-escape-{uuid.uuid4().hex}"
    inside_repo = Path(__file__).with_name(f"escape-{uuid.uuid4().hex}")
    code = "".join(f"try:\n    open({str(p)!r}, 'w').write('x')\nexcept OSError as e:\n    print(type(e).__name__)\n"
                   for p in (target, inside_repo))
    result = _run(python_tool, code)
    assert result.status == "ok"
    if python_tool._get_sandbox().mode == "none":
        pytest.skip("mode 'none' does not isolate the file system")
    assert not target.exists() and not inside_repo.exists()


def test_python_tool_that_cannot_start_its_sandbox_is_unavailable_not_a_wrong_answer():
    from posttrain_llm.online_rl_trainer.core.agents import ToolUnavailable

    broken = PythonTool(SandboxConfig(timeout_seconds=1, python_executable="/bin/true", startup_timeout_seconds=2))
    try:
        with pytest.raises(ToolUnavailable, match="sandbox"):
            call_tool(broken.as_tool(), {"code": "print(1)"}, timeout_s=30)
    finally:
        broken.close()
