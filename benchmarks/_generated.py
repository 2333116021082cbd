r"""Small generated stand-ins for the upstream datasets, written in their layout, for benchmarks run on a bare clone.

- :func:`write_gsm8k`: ``gsm8k/test.jsonl`` word problems like GSM8K's (a few sentences, ``<<a*b=c>>`` steps,
  ``#### N``; some answers >= 1000, some with cents), so prompt lengths and gold forms are of the same kind.
- :func:`write_math500`: ``math/math500_test.jsonl`` rows (``problem``, ``solution`` ending in ``\boxed{}``,
  ``answer``, ``subject``, ``level``, ``unique_id``) whose answers take MATH-500's common forms: integers,
  negatives, fractions (terminating or not), radicals, multiples of pi, tuples, intervals, polynomials, degrees,
  lettered choices.
- :func:`write_humaneval`: ``humaneval/HumanEval.jsonl.gz`` tasks (``prompt`` = signature + docstring,
  ``canonical_solution``, ``test`` defining ``check(candidate)``, ``entry_point``), each solution correct.

Seeded, so two runs see the same rows. Not covered: the difficulty or the variety of the real sets; numbers
measured on these are of the machinery (speed, agreement on the forms written here), not of the datasets.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

_NAMES = ["Janet", "Marco", "Aisha", "Tom", "Priya", "Lena", "Omar", "Sofia"]


def _gsm8k_row(rng: random.Random) -> dict:
    name = rng.choice(_NAMES)
    kind = rng.randrange(4)
    if kind == 0:
        a, b, c = rng.randint(10, 60), rng.randint(2, 9), rng.randint(2, 12)
        left = a - b
        q = (f"{name}'s hens lay {a} eggs per day. {name} eats {b} for breakfast every morning and sells the "
             f"remainder at the farmers' market for ${c} per egg. How much in dollars does {name} make every day?")
        steps = [f"{name} sells {a} - {b} = <<{a}-{b}={left}>>{left} eggs a day.",
                 f"That makes {left} * {c} = $<<{left}*{c}={left * c}>>{left * c} every day."]
        return {"question": q, "answer": "\n".join(steps) + f"\n#### {left * c}"}
    if kind == 1:  # large totals: the gold has thousands separators in some spellings
        a, b, c = rng.randint(120, 900), rng.randint(3, 12), rng.randint(2, 6)
        total = a * b * c
        q = (f"A factory packs {a} bottles into each crate. It fills {b} crates an hour and runs for {c} hours "
             "a day. How many bottles does it pack in a day?")
        steps = [f"Each hour it packs {a} * {b} = <<{a}*{b}={a * b}>>{a * b} bottles.",
                 f"In a day that is {a * b} * {c} = <<{a * b}*{c}={total}>>{total} bottles."]
        return {"question": q, "answer": "\n".join(steps) + f"\n#### {total:,}"}
    if kind == 2:  # money with cents
        price, n = rng.randint(101, 999) / 100, rng.randint(2, 9)
        total = round(price * n, 2)
        q = (f"{name} buys {n} notebooks that cost ${price:.2f} each for the new school year. How much does "
             f"{name} spend on notebooks in dollars?")
        return {"question": q,
                "answer": f"{n} * {price:.2f} = <<{n}*{price:.2f}={total:g}>>{total:g}\n#### {total:g}"}
    a, b = rng.randint(20, 90), rng.randint(2, 5)
    q = (f"{name} reads {a} pages on Monday and {b} times as many pages on Tuesday. On Wednesday {name} reads "
         f"half as many pages as on Monday and Tuesday together. How many pages does {name} read on Wednesday?")
    both = a + a * b
    steps = [f"On Tuesday {name} reads {a} * {b} = <<{a}*{b}={a * b}>>{a * b} pages.",
             f"Together that is {a} + {a * b} = <<{a}+{a * b}={both}>>{both} pages.",
             f"On Wednesday: {both} / 2 = <<{both}/2={both / 2:g}>>{both / 2:g} pages."]
    return {"question": q, "answer": "\n".join(steps) + f"\n#### {both / 2:g}"}


def write_gsm8k(folder: Path, n: int = 120, seed: int = 0) -> str:
    rng = random.Random(seed)
    path = folder / "gsm8k" / "test.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(_gsm8k_row(rng)) + "\n" for _ in range(n)), encoding="utf-8")
    return f"{n} GSM8K-style word problems"


def _math_answer(rng: random.Random, i: int) -> tuple[str, str, str]:
    """(problem, gold answer in LaTeX, subject) of one of MATH-500's common answer forms, picked by ``i``."""
    a, b = rng.randint(2, 40), rng.randint(2, 40)
    sides = rng.choice([3, 4, 5, 6, 8, 9, 10, 12, 15, 18, 20, 24])  # divisors of 360: whole-degree answers
    forms = [
        (f"Compute ${a} \\cdot {b} - {a}$.", str(a * b - a), "Prealgebra"),
        (f"Solve $x + {a + b} = {b}$ for $x$.", str(-a), "Algebra"),
        (f"What is $\\frac{{{a}}}{{{a * 4}}} + \\frac{{1}}{{8}}$?", "\\frac{3}{8}", "Prealgebra"),
        (f"Write ${2 * a} \\div {6 * a + 3}$ as a fraction.", f"\\frac{{{2 * a}}}{{{6 * a + 3}}}", "Algebra"),
        (f"Simplify $\\sqrt{{{4 * (2 * b + 1)}}}$.", f"2\\sqrt{{{2 * b + 1}}}", "Algebra"),
        (f"Find the smallest positive angle $\\theta$ with $\\tan \\theta = \\tan \\frac{{\\pi}}{{{a + 2}}}$.",
         f"\\frac{{\\pi}}{{{a + 2}}}", "Precalculus"),
        (f"Convert $(0,{a})$ to polar coordinates.", f"\\left( {a}, \\frac{{\\pi}}{{2}} \\right)", "Precalculus"),
        (f"Solve $|x - {a}| < {b}$.", f"({a - b}, {a + b})", "Intermediate Algebra"),
        (f"Expand $(x + {a})^2$.", f"x^2 + {2 * a}x + {a * a}", "Algebra"),
        (f"How many degrees is each exterior angle of a regular polygon with {sides} sides?",
         f"{360 // sides}^\\circ", "Geometry"),
        (f"Which is largest? (A) {a} (B) {a + b} (C) {a - 1}", "\\text{(B)}", "Counting & Probability"),
        (f"What is $\\frac{{{a}}}{{{a * 8}}}$ as a fraction in lowest terms?", "\\frac{1}{8}", "Number Theory"),
    ]
    return forms[i % len(forms)]


def write_math500(folder: Path, n: int = 60, seed: int = 0) -> str:
    rng = random.Random(seed)
    path = folder / "math" / "math500_test.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            problem, gold, subject = _math_answer(rng, i)
            solution = f"Working it through step by step, the result is $\\boxed{{{gold}}}$."
            f.write(json.dumps({"problem": problem, "solution": solution, "answer": gold, "subject": subject,
                                "level": 1 + i % 5, "unique_id": f"generated/{i}.json"}) + "\n")
    return f"{n} MATH-500-style problems"


# One HumanEval-style task per template: (name, signature args, docstring, body, test inputs); ``k`` varies per task.
_TEMPLATES = [
    ("add_k", "xs: list", "Return xs with {k} added to every element.", "    return [x + {k} for x in xs]\n",
     ["[1, 2, 3]", "[]", "[-5, 0, 5]"]),
    ("count_multiples", "xs: list", "Count the elements of xs divisible by {k}.",
     "    return sum(1 for x in xs if x % {k} == 0)\n", ["[1, 2, 3, 4, 6, 8, 9, 12]", "[]", "[7, 14, 21]"]),
    ("rotate", "s: str", "Rotate s left by {k} characters.",
     "    if not s:\n        return s\n    n = {k} % len(s)\n    return s[n:] + s[:n]\n",
     ["'abcdef'", "''", "'xy'"]),
    ("nth_fib", "n: int", "Return the n-th Fibonacci number plus {k} (fib(0) = 0).",
     "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a + {k}\n", ["0", "1", "10"]),
    ("is_prime_after", "n: int", "Whether n + {k} is a prime number.",
     "    m = n + {k}\n    if m < 2:\n        return False\n    i = 2\n    while i * i <= m:\n"
     "        if m % i == 0:\n            return False\n        i += 1\n    return True\n", ["0", "4", "10", "97"]),
    ("longest_word", "text: str", "Return the longest word of text with at least {k} letters, or ''.",
     "    words = [w for w in text.split() if len(w) >= {k}]\n    return max(words, key=len) if words else ''\n",
     ["'a quick brown fox'", "''", "'extraordinary things happen'"]),
]


def write_humaneval(folder: Path, n: int = 24) -> str:
    rows = []
    for i in range(n):
        name, params, doc, body, inputs = _TEMPLATES[i % len(_TEMPLATES)]
        k, entry = 1 + i // len(_TEMPLATES), f"{name}_{i}"
        prompt = f'def {entry}({params}):\n    """{doc.format(k=k)}"""\n'
        solution = body.format(k=k)
        namespace: dict = {}
        exec(prompt + solution, namespace)  # our own template code: compute the expected values to test against
        asserts = "".join(f"    assert candidate({x}) == {namespace[entry](eval(x))!r}\n" for x in inputs)
        rows.append({"task_id": f"Generated/{i}", "prompt": prompt, "canonical_solution": solution,
                     "test": f"\n\ndef check(candidate):\n{asserts}\n", "entry_point": entry})
    path = folder / "humaneval" / "HumanEval.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return f"{n} HumanEval-style tasks with correct solutions"
