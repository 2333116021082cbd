"""The built-in tools: an exact ``calculator`` (no ``eval``) and a ``python`` tool that runs code in our sandbox.

``calculator(expression)`` parses the expression with :mod:`ast` and walks the tree itself: integers, decimal
literals (``0.1`` is exactly 1/10, read from the source text, never through a float), ``+ - * / // % **``, unary
``+``/``-`` and parentheses; everything else (names, calls, attributes, subscripts, comparisons, strings) is refused
with a message saying what is accepted. All arithmetic is on :class:`fractions.Fraction`, so results are exact. The
result is printed as an integer when integral, else as an exact decimal when it terminates (``1/8`` -> ``0.125``),
else as a fraction ``a/b``. Limits keep a hostile expression cheap: at most :data:`MAX_EXPRESSION_CHARS`
characters, integer exponents of at most :data:`MAX_EXPONENT` in size, and no value over :data:`MAX_RESULT_DIGITS`
digits (checked before a power is computed, from its size estimate). A refused or failed expression raises
``ValueError``/``ZeroDivisionError``, which :func:`~.tools.call_tool` turns into a counted ``error`` outcome.

:class:`PythonTool` runs a program in :class:`~..sandbox.Sandbox` (every isolation and limit of the sandbox applies;
see ``core/sandbox/__init__.py`` for what each mode covers) and reports its stdout, then its stderr, cut to
``max_output_chars``. Nothing the program prints is trusted: its exit status comes from the sandbox, a run past the
time limit is a ``timeout`` outcome, a non-zero exit an ``error`` outcome, and a sandbox that cannot start raises
:class:`~.tools.ToolUnavailable` (infrastructure, not the model). The sandbox starts on the first call (a server
start costs about a second) and stays up until :meth:`PythonTool.close`.
"""

from __future__ import annotations

import ast
import math
import threading
from fractions import Fraction

from ..sandbox import Sandbox, SandboxConfig
from .tools import Tool, ToolError, ToolUnavailable, cut_text, tool_from_function

MAX_EXPRESSION_CHARS = 300
MAX_EXPONENT = 10_000
MAX_RESULT_DIGITS = 1_000
ACCEPTED = "numbers, + - * / // % **, unary + and -, and parentheses"

_BINARY = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: Fraction(a // b), ast.Mod: lambda a, b: a % b,
}


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly.

    Args:
        expression: The expression, e.g. "123 * 456" or "(2 + 3) / 4". Numbers, + - * / // % ** and parentheses.
    """
    if not isinstance(expression, str):
        raise ValueError(f"expression must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression of {len(expression)} characters is over the limit of {MAX_EXPRESSION_CHARS}")
    if not expression.strip():
        raise ValueError(f"empty expression; accepted: {ACCEPTED}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot parse {expression!r}: {getattr(exc, 'msg', exc)}; accepted: {ACCEPTED}") from None
    return format_exact(_evaluate(tree.body, expression.strip()))


def _evaluate(node: ast.AST, source: str) -> Fraction:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"unsupported constant {value!r:.40}; accepted: {ACCEPTED}")
        if isinstance(value, int):
            return _checked(Fraction(value))
        literal = (ast.get_source_segment(source, node) or repr(value)).replace("_", "").lower()
        if "e" in literal and abs(int(literal.split("e")[1])) > MAX_RESULT_DIGITS:  # 1e999999999: refuse, not compute
            raise ValueError(f"literal {literal} has an exponent over {MAX_RESULT_DIGITS} in size")
        return _checked(Fraction(literal))  # the literal's exact decimal value, never the float's binary one
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        operand = _evaluate(node.operand, source)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, source), _evaluate(node.right, source)
        if isinstance(node.op, ast.Pow):
            return _checked(_power(left, right))
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ValueError(f"unsupported operator {type(node.op).__name__}; accepted: {ACCEPTED}")
        if right == 0 and isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)):
            raise ZeroDivisionError("division by zero")
        return _checked(op(left, right))
    what = type(node).__name__
    if isinstance(node, ast.Name):
        what = f"name {node.id!r}"
    elif isinstance(node, ast.Call):
        what = "function call"
    elif isinstance(node, ast.Attribute):
        what = f"attribute {node.attr!r}"
    raise ValueError(f"unsupported {what}; accepted: {ACCEPTED}")


def _digits(value: int) -> int:
    return len(str(abs(value))) if abs(value) < 10**50 else int(abs(value).bit_length() * math.log10(2)) + 1


def _checked(value: Fraction) -> Fraction:
    if max(_digits(value.numerator), _digits(value.denominator)) > MAX_RESULT_DIGITS:
        raise ValueError(f"a value has more than {MAX_RESULT_DIGITS} digits; the calculator refuses it")
    return value


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise ValueError(f"exponent {exponent} is not an integer; only integer powers are exact")
    n = exponent.numerator
    if abs(n) > MAX_EXPONENT:
        raise ValueError(f"exponent {n} is over the limit of {MAX_EXPONENT} in size")
    if base == 0 and n < 0:
        raise ZeroDivisionError("zero to a negative power")
    size = max(abs(base.numerator), base.denominator)
    if size > 1 and abs(n) * math.log10(size) > MAX_RESULT_DIGITS:
        raise ValueError(f"the result would have about {abs(n) * math.log10(size):.0f} digits, over the limit "
                         f"of {MAX_RESULT_DIGITS}")
    return base**n


def format_exact(value: Fraction) -> str:
    """An integer, a terminating decimal (``0.125``) or a fraction (``1/3``): always exact."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = abs(value.numerator) * 10**places // value.denominator
    whole, frac = divmod(scaled, 10**places)
    sign = "-" if value < 0 else ""
    return f"{sign}{whole}.{str(frac).rjust(places, '0').rstrip('0')}"


class PythonTool:
    """The ``python`` tool: runs a program in a lazily started :class:`Sandbox` and returns its output.

    Args:
        config: the sandbox limits (default: 5 s, 512 MiB, 16 processes, 16 KiB of output, mode ``auto``).
        max_output_chars: characters of stdout + stderr shown to the model (the rest is cut, with a marker).
        workers: sandbox servers (programs that can run at once).

    Give calls a ``tool_timeout_s`` above ``config.timeout_seconds`` (plus a second or two): the sandbox then kills
    a runaway program itself and reports a ``timeout``, and no thread is abandoned.
    """

    def __init__(self, config: SandboxConfig | None = None, max_output_chars: int = 2000, workers: int = 1):
        if isinstance(max_output_chars, bool) or not isinstance(max_output_chars, int) or max_output_chars < 1:
            raise ValueError(f"max_output_chars={max_output_chars!r}; expected an int >= 1")
        self.config = config or SandboxConfig(timeout_seconds=5.0, memory_mb=512, max_processes=16,
                                              max_output_bytes=16 * 1024)
        self.max_output_chars = max_output_chars
        self.workers = workers
        self._sandbox: Sandbox | None = None
        self._lock = threading.Lock()

    def _get_sandbox(self) -> Sandbox:
        with self._lock:
            if self._sandbox is None:
                self._sandbox = Sandbox(self.config, workers=self.workers)
            return self._sandbox

    def python(self, code: str) -> str:
        """Run a Python program and return what it prints.

        Args:
            code: The complete program; use print() to show results. Standard library only.
        """
        if not isinstance(code, str):
            raise ValueError(f"code must be a string, got {type(code).__name__}")
        result = self._get_sandbox().run(code)
        if result.status == "error":
            raise ToolUnavailable(f"the python tool's sandbox failed: {result.error}")
        output = result.stdout
        if result.stderr:
            output += ("" if not output or output.endswith("\n") else "\n") + result.stderr
        if result.output_truncated:
            output += f"\n[output over the sandbox limit of {self.config.max_output_bytes} bytes was dropped]"
        output, _ = cut_text(output, self.max_output_chars)
        if result.status == "timeout":
            raise ToolError(f"{output}\n[timeout: the program ran past {self.config.timeout_seconds:g} s and was "
                            "killed]".lstrip("\n"), status="timeout")
        if result.exit_code not in (0, None):
            raise ToolError(f"{output}\n[exit status {result.exit_code}]".lstrip("\n"))
        return output

    def as_tool(self) -> Tool:
        """This tool as a :class:`Tool` named ``python``."""
        return tool_from_function(self.python)

    def close(self) -> None:
        """Stop the sandbox servers (idempotent; a later call starts them again)."""
        with self._lock:
            if self._sandbox is not None:
                self._sandbox.close()
                self._sandbox = None

    def __enter__(self) -> "PythonTool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def calculator_tool() -> Tool:
    """The calculator as a :class:`Tool` named ``calculator``."""
    return tool_from_function(calculator)
