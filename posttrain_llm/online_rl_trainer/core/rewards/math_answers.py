r"""Pure string helpers for math answers: find them in a completion, normalise them, read exact numbers.

- :func:`extract_boxed_answers` returns the contents of every ``\boxed{...}`` / ``\fbox{...}`` with real brace
  matching (answers such as ``\frac{1}{\sqrt{2}}`` nest braces; escaped ``\{ \}`` are set braces, not groups), and
  the TeX shorthand ``\boxed 5``.
- :func:`extract_last_number` reads the last number in free text (the lenient fallback used for GSM8K).
- :func:`normalize_answer` maps an answer to a canonical key: two answers with the same key are equal. It is also
  the key for majority voting. Numbers become their exact value (``0.5``, ``1/2``, ``\dfrac{1}{2}`` -> ``1/2``).
- :func:`answer_number` reads an answer as an exact :class:`~fractions.Fraction` when it is a plain number.

Choices made here (documented because graders differ on them):

- ``$`` / ``\$`` are dropped; ``1,000`` and ``1{,}000`` are thousands separators (only when every group after the
  first has three digits, so the tuple ``1,2`` stays a tuple).
- Units are dropped: a trailing ``\text{ cm}^2`` / ``\mbox{...}`` after a value, trailing plain words after a
  number (``18 dollars``), degrees (``^\circ``) and the percent sign. A unit is letters only and never contains
  "or"/"and", so ``5 \text{ or 6}`` is not read as ``5``. The percent sign is a unit: ``10\%`` equals ``10``,
  not ``0.1`` (math-verify would accept both; a question asking for a percent wants the percent).
- ``x = 5`` -> ``5`` when there is a single ``=`` and its left side has at most two characters (the Hendrycks MATH
  rule), so ``y = 2x + 3`` also equals ``2x+3``.
- A lone choice letter in parentheses or ``\text{}`` is the letter: ``\text{(C)}`` -> ``C`` (case kept).

Not covered: mixed numbers (``2\frac{1}{2}`` is left to math-verify), scientific notation, unit conversion.
"""

from __future__ import annotations

import re
from fractions import Fraction

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_BOX_START = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")  # \boxedfoo is another command
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.S)  # an escape pair is one token, so \{ is never a brace
_SHORTHAND_TOKEN = re.compile(r"[^\s$]+")

# A number as written in prose: sign, optional thousands separators, optional decimals or a/b fraction.
_NUMBER_IN_TEXT = re.compile(
    r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?"
    r"|(?<![\w.])[-+]?\.\d+"
)
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_PLAIN_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)$")
_SIMPLE_FRACTION = re.compile(r"^([-+]?)(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)$")
_LATEX_FRACTION = re.compile(r"^([-+]?)\\frac\{([-+]?\d+(?:\.\d+)?)\}\{([-+]?\d+(?:\.\d+)?)\}$")
# \frac43, \frac4{3}, \frac{4}3: TeX lets a single token stand for an argument.
_FRAC_SHORTHAND = re.compile(r"\\frac\s*(\{[^{}]*\}|[0-9a-zA-Z])\s*(\{[^{}]*\}|[0-9a-zA-Z])")
_SQRT_SHORTHAND = re.compile(r"\\sqrt\s*([0-9a-zA-Z])")
_TEXT_GROUP = re.compile(r"\\(?:text|textbf|textrm|mbox|mathrm|mathbf|textit)\s*\{([^{}]*)\}")
_TRAILING_UNIT_GROUP = re.compile(
    r"^(?P<value>.*?\S)\s*\\(?:text|mbox|mathrm)\s*\{(?P<unit>[^{}]*)\}\s*(?:\^\s*\{?\d\}?)?\s*\.?$", re.S
)
_TRAILING_UNIT_WORDS = re.compile(r"^(?P<value>[-+]?[\d.,/]+)\s+(?:[A-Za-z]{2,}\.?)(?:\s+[A-Za-z]+\.?)*$")
# A unit is words only; "or"/"and" would turn "5 \\text{ or 6}" into a hedge that reads as 5.
_UNIT_TEXT = re.compile(r"^[A-Za-z.\s]*$")
_CONNECTIVES = frozenset({"or", "and", "to"})
# A `\\` row break is matched first so that its second backslash is never read as the start of `\ `.
_SPACING = re.compile(r"\\\\|\\[,;:! ]|~|\\q?quad(?![a-zA-Z])")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|°")
_LEFT_RIGHT = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])")
_MAX_NUMBER_CHARS = 1000
_CHOICE = re.compile(r"^\(?([A-Za-z])\)?$")


def _brace_partners(text: str) -> dict[int, int]:
    """Map each ``{`` index to the index of its closing ``}`` (escaped ``\\{ \\}`` skipped). One linear pass."""
    partners: dict[int, int] = {}
    stack: list[int] = []
    for token in _BRACE_TOKEN.finditer(text):
        brace = token.group(0)
        if brace == "{":
            stack.append(token.start())
        elif brace == "}" and stack:
            partners[stack.pop()] = token.start()
    return partners


def _skip_blanks(text: str, i: int, end: int) -> int:
    while i < end and text[i] in " \t\n":
        i += 1
    return i


def _last_nonblank(text: str, start: int, end: int) -> int:
    i = end - 1
    while i > start and text[i] in " \t\n":
        i -= 1
    return i


def extract_boxed_answers(text: str) -> list[str]:
    r"""Contents of every ``\boxed{...}`` and ``\fbox{...}`` in ``text``, in order of appearance.

    Nested braces are matched; a box with no closing brace is skipped (it is not an answer). A box nested in
    another box is not reported twice: ``\boxed{\boxed{5}}`` gives ``["5"]``. ``\boxed 5`` (TeX shorthand) gives
    the token after the space, up to the next whitespace or ``$``. Linear in the length of ``text``.
    """
    answers: list[str] = []
    partners: dict[int, int] | None = None
    pos = 0
    while True:
        found = _BOX_START.search(text, pos)
        if found is None:
            return answers
        j = _skip_blanks(text, found.end(), len(text))
        if j < len(text) and text[j] == "{":
            partners = _brace_partners(text) if partners is None else partners
            if j not in partners:
                pos = j + 1  # unbalanced: not an answer
                continue
            start, close = j + 1, partners[j]
            while True:  # \boxed{\boxed{5}} -> 5
                inner = _BOX_START.match(text, _skip_blanks(text, start, close))
                k = _skip_blanks(text, inner.end(), close) if inner else close
                if not inner or k >= close or text[k] != "{" or partners.get(k) != _last_nonblank(text, k, close):
                    break
                start, close = k + 1, partners[k]
            answers.append(text[start:close].strip())
            pos = partners[j] + 1
        elif j > found.end():
            token = _SHORTHAND_TOKEN.match(text, j)
            if token:
                answers.append(token.group(0).rstrip(".,;"))
                pos = token.end()
            else:
                pos = j
        else:
            pos = found.end()


def extract_last_number(text: str) -> str | None:
    """The last number in ``text`` as written (``1,000``, ``-3.5``, ``7/2``), or None when there is none.

    A sentence-final period is not part of the number. Thousands separators are kept; normalisation drops them.
    """
    matches = _NUMBER_IN_TEXT.findall(text)
    return matches[-1] if matches else None


def final_answer_from_gold(gold: str) -> str:
    r"""The final answer inside a dataset's gold field.

    GSM8K's raw ``answer`` column is a worked solution ending in ``#### <number>``: the text after the last
    ``####`` is returned. MATH's ``solution`` column (or a gold written as ``\boxed{...}``) gives its last box.
    A plain answer (``72``, ``\frac{1}{2}``) is returned stripped.
    """
    if "####" in gold:
        return gold.rsplit("####", 1)[1].strip()
    boxes = extract_boxed_answers(gold)
    return boxes[-1] if boxes else gold.strip()


def _drop_units(s: str) -> str:
    """Drop a trailing unit (``\\text{ cm}^2``, ``dollars``) that follows a value; keep connectives."""
    m = _TRAILING_UNIT_GROUP.match(s)
    if m and _is_unit(m.group("unit")) and m.group("value").strip() not in ("-", "+"):
        s = m.group("value")
    m = _TRAILING_UNIT_WORDS.match(s.strip())
    if m and _is_unit(s.strip()[len(m.group("value")) :]):
        s = m.group("value")
    return s


def _is_unit(text: str) -> bool:
    words = text.replace(".", " ").lower().split()
    return bool(_UNIT_TEXT.match(text)) and bool(words) and not _CONNECTIVES.intersection(words)


def _strip_assignment(s: str) -> str:
    """``x = 5`` -> ``5`` when the left side is a short name (at most two characters)."""
    if s.count("=") == 1 and not re.search(r"[<>]|\\[lg]eq?|\\neq", s):
        lhs, rhs = s.split("=")
        if 0 < len(lhs.strip()) <= 2 and rhs.strip():
            return rhs
    return s


def clean_answer(answer: str) -> str:
    r"""Remove presentation from an answer while keeping it valid LaTeX (spaces kept).

    This is what the symbolic checker sees. See the module docstring for the list of rules.
    """
    s = answer.strip()
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"\\(?:dfrac|tfrac)(?![a-zA-Z])", r"\\frac", s)
    s = s.replace("\\displaystyle", "")
    s = _LEFT_RIGHT.sub("", s)
    s = s.replace("{,}", ",")
    s = re.sub(r"(?<=\d)\\,(?=\d{3}(?!\d))", "", s)  # 1\,000 thin-space thousands separator
    s = _SPACING.sub(lambda m: m.group(0) if m.group(0) == "\\\\" else " ", s)
    s = _DEGREES.sub("", s)
    s = s.replace("\\%", "").replace("%", "")
    s = _drop_units(s).strip()
    s = _FRAC_SHORTHAND.sub(lambda m: "\\frac" + "".join(_braced(g) for g in m.groups()), s)
    s = _SQRT_SHORTHAND.sub(lambda m: "\\sqrt{" + m.group(1) + "}", s)
    s = _drop_units(_TEXT_GROUP.sub(lambda m: m.group(1), s)).strip()  # units inside \text{5 dollars}
    s = _strip_assignment(s).strip()
    s = s.rstrip(".").strip()
    choice = _CHOICE.match(s)
    if choice:
        s = choice.group(1)
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    return s


def _braced(group: str) -> str:
    return group if group.startswith("{") else "{" + group + "}"


def answer_number(answer: str) -> Fraction | None:
    r"""The exact value of an answer that is a plain number (``5``, ``-0.50``, ``7/2``, ``\frac{1}{2}``), else None.

    ``answer`` should already be cleaned (:func:`clean_answer`); this function does not strip units.
    """
    s = re.sub(r"\s+", "", answer)
    if len(s) > _MAX_NUMBER_CHARS:
        return None  # int() refuses > 4300 digits; such "answers" are left to the length cap and math-verify
    if _PLAIN_NUMBER.match(s):
        return Fraction(s)
    for pattern in (_SIMPLE_FRACTION, _LATEX_FRACTION):
        m = pattern.match(s)
        if m:
            sign, num, den = m.groups()
            if Fraction(den) == 0:
                return None
            value = Fraction(num) / Fraction(den)
            return -value if sign == "-" else value
    return None


def _collapse_spaces(s: str) -> str:
    # Keep one space only where dropping it would glue two words or a command to a letter ("\pi r").
    s = re.sub(r"\s+", " ", s).strip()
    return re.sub(r"(?<![A-Za-z]) | (?![A-Za-z])", "", s)


def normalize_answer(answer: str) -> str:
    """A canonical key for ``answer``: equal keys mean equal answers (unequal keys prove nothing).

    Usable as a majority-vote key. Plain numbers become their exact value (``"5.00"`` -> ``"5"``, ``"0.5"`` ->
    ``"1/2"``), everything else is :func:`clean_answer` with insignificant spaces removed.
    """
    return key_of_cleaned(clean_answer(answer))


def key_of_cleaned(cleaned: str) -> str:
    """:func:`normalize_answer` for an answer already passed through :func:`clean_answer`."""
    value = answer_number(cleaned)
    if value is not None:
        return str(value)
    return _collapse_spaces(cleaned)
