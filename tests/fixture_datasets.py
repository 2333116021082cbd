r"""Small hand-written stand-ins for GSM8K, MATH / MATH-500, HumanEval and MBPP, written in the upstream layouts.

:func:`write_fixture_datasets` writes, under one folder, what ``../shared/data`` holds (same paths, fields,
serialisation), with a handful of rows each, so the loader and grader tests run on a bare clone:

- ``gsm8k/{train,test}.jsonl``: word problems with ``<<a*b=c>>`` steps and a ``#### N`` line; golds written
  ``1,610`` (separators), ``-7``, ``2.5`` and plain; one question with a non-ASCII apostrophe (escaped, as upstream).
- ``math/{train,test}.jsonl`` (compact JSON, as upstream): ``problem``, ``level``, ``type``, ``solution``. Train rows
  4 and 6 have an empty ``\boxed{}`` (like rows 5341 and 5343 of the real file), row 1 the brace-less
  ``\boxed 3``, row 2 ``"Level ?"``, row 3 a ``\boxed {10}`` before the final ``\boxed{10}``; test row 0 a nested
  ``\frac{\sqrt{3}}{2}``.
- ``math/math500_test.jsonl``: ``problem``, ``solution``, ``answer``, ``subject``, ``level`` (int), ``unique_id``;
  answers as tuple, interval, fractions (terminating or not), negative, integers.
- ``humaneval/HumanEval.jsonl.gz`` (gzip): five tasks whose canonical solutions pass their ``check``; task 0 imports
  ``List``, task 2 defines a helper in its prompt (as HumanEval/10 does), task 4's test draws random inputs.
- ``mbpp/mbpp.jsonl``: 13 tasks over the four task-id splits (prompt 2, test 4, validation 2, train 5); ``code``
  and ``test_setup_code`` with ``\r\n`` line ends; a binary-tree task with setup code, a function named like a
  builtin (``max``), a challenge test list, a test that expects nothing (``assert not ...``).
- ``mbpp/sanitized-mbpp.json``: one JSON array (no trailing newline) of 8 of those tasks, cleaned up as upstream:
  ``prompt`` instead of ``text``, ``test_imports`` (``import math`` for a float task), ``math.isclose`` tests.

The HumanEval and MBPP rows are in ``fixture_code_datasets.py``.

Not covered: the size, difficulty or variety of the real sets; tests of counts, known rows or whole-corpus sweeps
use the real files (the ``real_data_dir`` fixture in ``conftest.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

from .fixture_code_datasets import write_code_datasets  # tests/ is on sys.path (pytest's rootdir-relative import)


def _gsm8k(question: str, steps: list[str], gold: str) -> dict:
    return {"question": question, "answer": "\n".join(steps) + f"\n#### {gold}"}


GSM8K_TRAIN = [
    _gsm8k("Olivia has 3 times as many marbles as Ben. Ben has 14 marbles. How many marbles do they have together?",
           ["Olivia has 14 * 3 = <<14*3=42>>42 marbles.", "Together they have 42 + 14 = <<42+14=56>>56 marbles."],
           "56"),
    _gsm8k("A store sells pencils in packs of 12. A teacher needs 150 pencils for her class. How many packs does she "
           "have to buy?", ["150 / 12 = <<150/12=12.5>>12.5 packs would be needed.",
                            "She cannot buy half a pack, so she buys 12 + 1 = <<12+1=13>>13 packs."], "13"),
    _gsm8k("A company pays each of its 85 workers $1,200 a month. How much does it pay its workers in a year?",
           ["Each month it pays 85 * 1200 = $<<85*1200=102000>>102000.",
            "In a year it pays 102000 * 12 = $<<102000*12=1224000>>1224000."], "1,224,000"),
    _gsm8k("Jake had $120 in his bank account. He paid a $175 phone bill from it. What is his balance now?",
           ["His balance is 120 - 175 = $<<120-175=-55>>-55."], "-55"),
    _gsm8k("Emma bought 4 shirts at $15.75 each. How much did she spend?",
           ["She spent 4 * 15.75 = $<<4*15.75=63>>63."], "63"),
]

GSM8K_TEST = [
    _gsm8k("A bakery sells muffins for $3 each. On Monday it sold 24 muffins, and on Tuesday it sold twice as many. "
           "How much money did the bakery make from muffins on those two days?",
           ["On Tuesday it sold 24 * 2 = <<24*2=48>>48 muffins.", "In total it sold 24 + 48 = <<24+48=72>>72 muffins.",
            "It made 72 * 3 = $<<72*3=216>>216."], "216"),
    _gsm8k("A school library has 1,250 books. It buys 15 boxes of new books with 24 books in each box. How many books "
           "does the library have now?", ["The boxes hold 15 * 24 = <<15*24=360>>360 books.",
                                           "The library now has 1250 + 360 = <<1250+360=1610>>1610 books."], "1,610"),
    _gsm8k("At 6 a.m. the temperature was 5 degrees. It dropped 3 degrees every hour for 4 hours. What was the "
           "temperature at 10 a.m.?", ["It dropped 3 * 4 = <<3*4=12>>12 degrees.",
                                       "The temperature was 5 - 12 = <<5-12=-7>>-7 degrees."], "-7"),
    _gsm8k("Tom buys 3 notebooks at $2.50 each and pays with a $10 bill. How much change does he get?",
           ["The notebooks cost 3 * 2.50 = $<<3*2.5=7.5>>7.5.", "His change is 10 - 7.5 = $<<10-7.5=2.5>>2.5."], "2.5"),
    _gsm8k("Lena\u2019s book has 300 pages. She has already read 60 pages and reads 15 pages a day. How many more days "
           "does she need to finish the book?", ["She has 300 - 60 = <<300-60=240>>240 pages left.",
                                                 "She needs 240 / 15 = <<240/15=16>>16 days."], "16"),
    _gsm8k("A farmer has 12 rows of apple trees with 9 trees in each row. Each tree gives 40 apples. How many apples "
           "does the farmer pick?", ["There are 12 * 9 = <<12*9=108>>108 trees.",
                                     "They give 108 * 40 = <<108*40=4320>>4320 apples."], "4320"),
    _gsm8k("Sam had 45 stickers. He gave a third of them to his sister and 8 to his friend. How many stickers does "
           "Sam have left?", ["He gave 45 / 3 = <<45/3=15>>15 stickers to his sister.",
                              "He has 45 - 15 - 8 = <<45-15-8=22>>22 stickers left."], "22"),
    _gsm8k("A train travels at 60 miles per hour for 2.5 hours and then at 40 miles per hour for 1.5 hours. How many "
           "miles does it travel?", ["First it travels 60 * 2.5 = <<60*2.5=150>>150 miles.",
                                     "Then it travels 40 * 1.5 = <<40*1.5=60>>60 miles.",
                                     "In total it travels 150 + 60 = <<150+60=210>>210 miles."], "210"),
]


def _math(problem: str, level: str, subject: str, solution: str) -> dict:
    return {"problem": problem, "level": level, "type": subject, "solution": solution}


MATH_TRAIN = [
    _math("The sum of two numbers is $22$ and their difference is $4$. What is the larger number?", "Level 1",
          "Algebra", "Let the numbers be $x$ and $y$ with $x + y = 22$ and $x - y = 4$. Adding the equations gives "
          "$2x = 26$, so the larger number is $\\boxed{13}$."),
    _math("What is the largest value of $x$ such that $x^2 - 5x + 6 = 0$?", "Level 3", "Algebra",
          "We factor: $x^2 - 5x + 6 = (x - 2)(x - 3) = 0$, so $x = 2$ or $x = 3$. The largest value is $\\boxed 3$."),
    _math("What is the remainder when $2^{10}$ is divided by $7$?", "Level ?", "Number Theory",
          "Since $2^3 = 8 \\equiv 1 \\pmod 7$, we have $2^{10} = (2^3)^3 \\cdot 2 \\equiv 2 \\pmod 7$. "
          "The remainder is $\\boxed{2}$."),
    _math("Find the distance between the points $(1, 2)$ and $(7, 10)$.", "Level 2", "Algebra",
          "We use the distance formula: $$\\sqrt{(7 - 1)^2 + (10 - 2)^2} = \\sqrt{36 + 64} = \\boxed {10}.$$- OR -\n\n"
          "The legs of the right triangle are $6$ and $8$, twice the $3$-$4$-$5$ triple, so the distance is "
          "$\\boxed{10}$."),
    _math("For any integer $n > 2$, how many of the numbers $n! + 2, n! + 3, \\ldots, n! + n$ are prime?",
          "Level 5", "Number Theory", "For $2 \\le k \\le n$, $k$ divides both $n!$ and $k$, so it divides $n! + k$, "
          "which is therefore composite. There are $\\boxed{}$ primes among them."),
    _math("Simplify $\\frac{3}{4} + \\frac{1}{6}$.", "Level 2", "Prealgebra",
          "The common denominator is $12$, so $\\frac{9}{12} + \\frac{2}{12} = \\boxed{\\frac{11}{12}}$."),
    _math("In how many ways can $4$ people stand in a line if two of them refuse to stand next to each other?",
          "Level 5", "Counting & Probability", "There are $4! = 24$ lines in all and $2 \\cdot 3! = 12$ in which the "
          "two stand together, so the answer is $\\boxed{}$."),
]

MATH_TEST = [
    _math("Compute $\\sin 60^\\circ$.", "Level 1", "Precalculus",
          "The point at $60^\\circ$ on the unit circle is $\\left(\\frac{1}{2}, \\frac{\\sqrt{3}}{2}\\right)$, so "
          "$\\sin 60^\\circ = \\boxed{\\frac{\\sqrt{3}}{2}}$."),
    _math("What is the units digit of $7^4$?", "Level 2", "Number Theory",
          "We have $7^2 = 49$ and $7^4 = 49^2 = 2401$, so the units digit is $\\boxed{1}$."),
    _math("The area of a circle is $49\\pi$ square units. What is its radius, in units?", "Level 1", "Geometry",
          "From $\\pi r^2 = 49\\pi$ we get $r^2 = 49$, so $r = \\boxed{7}$."),
    _math("In how many ways can $3$ books be chosen from $7$ different books?", "Level 2", "Counting & Probability",
          "The order does not matter, so the answer is "
          "$\\binom{7}{3} = \\frac{7 \\cdot 6 \\cdot 5}{3 \\cdot 2 \\cdot 1} = \\boxed{35}$."),
    _math("Find all real solutions of $x^3 - 6x^2 + 11x - 6 = 0$. Enter all the solutions, separated by commas.",
          "Level 3", "Intermediate Algebra", "Since $x = 1$ is a root, the cubic factors as $(x - 1)(x^2 - 5x + 6) = "
          "(x - 1)(x - 2)(x - 3)$. The solutions are $\\boxed{1,2,3}$."),
]


def _math500(problem: str, solution: str, answer: str, subject: str, level: int, uid: str) -> dict:
    return {"problem": problem, "solution": solution, "answer": answer, "subject": subject, "level": level,
            "unique_id": f"test/{uid}.json"}


MATH500_TEST = [
    _math500("Convert the point $(-2,0)$ in rectangular coordinates to polar coordinates.  Enter your answer in the "
             "form $(r,\\theta),$ where $r > 0$ and $0 \\le \\theta < 2 \\pi.$",
             "We have that $r = \\sqrt{(-2)^2 + 0^2} = 2.$  The point lies on the negative $x$-axis, so "
             "$\\theta = \\pi.$  Therefore, the polar coordinates are $\\boxed{(2,\\pi)}.$", "(2,\\pi)",
             "Precalculus", 2, "precalculus/512"),
    _math500("What is the sum of all values of $y$ for which $y^2 - 7y + 10 = 0$?",
             "Factoring gives $(y - 2)(y - 5) = 0$, so $y = 2$ or $y = 5$, and the sum is $2 + 5 = \\boxed{7}$.", "7",
             "Algebra", 1, "algebra/1203"),
    _math500("What is $\\frac{2}{5}$ divided by $4$?",
             "Dividing by $4$ is multiplying by $\\frac{1}{4}$: $\\frac{2}{5} \\cdot \\frac{1}{4} = \\frac{2}{20} = "
             "\\boxed{\\frac{1}{10}}$.", "\\frac{1}{10}", "Prealgebra", 2, "prealgebra/930"),
    _math500("What is the domain of the function $f(x) = \\sqrt{x - 3} + \\frac{1}{x - 5}$? Express your answer in "
             "interval notation.", "The square root needs $x \\ge 3$ and the fraction needs $x \\neq 5$, so the domain "
             "is $\\boxed{[3,5) \\cup (5,\\infty)}$.", "[3,5) \\cup (5,\\infty)", "Intermediate Algebra", 3,
             "intermediate_algebra/1517"),
    _math500("What is the greatest common divisor of $84$ and $126$?",
             "We have $84 = 2^2 \\cdot 3 \\cdot 7$ and $126 = 2 \\cdot 3^2 \\cdot 7$, so the greatest common divisor "
             "is $2 \\cdot 3 \\cdot 7 = \\boxed{42}$.", "42", "Number Theory", 1, "number_theory/307"),
    _math500("A right triangle has legs of length $5$ and $12$. What is the length of its hypotenuse?",
             "By the Pythagorean Theorem, the hypotenuse is $\\sqrt{5^2 + 12^2} = \\sqrt{169} = \\boxed{13}$.", "13",
             "Geometry", 1, "geometry/44"),
    _math500("Two fair 6-sided dice are rolled. What is the probability that the sum of the numbers rolled is $7$? "
             "Express your answer as a common fraction.", "Of the $36$ equally likely outcomes, $6$ have sum $7$: "
             "$(1,6), (2,5), \\ldots, (6,1)$. The probability is $\\frac{6}{36} = \\boxed{\\frac{1}{6}}$.",
             "\\frac{1}{6}", "Counting & Probability", 2, "counting_and_probability/119"),
    _math500("Solve for $x$: $2(x + 4) = 3x + 15$.",
             "Expanding gives $2x + 8 = 3x + 15$, so $x = 8 - 15 = \\boxed{-7}$.", "-7", "Algebra", 2,
             "algebra/2036"),
]


def _write_jsonl(path: Path, rows: list[dict], **dumps) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, **dumps) + "\n" for row in rows), encoding="utf-8")


def write_fixture_datasets(root: Path) -> Path:
    """Write every fixture file under ``root`` (laid out like ``../shared/data``) and return ``root``."""
    _write_jsonl(root / "gsm8k" / "train.jsonl", GSM8K_TRAIN)
    _write_jsonl(root / "gsm8k" / "test.jsonl", GSM8K_TEST)
    _write_jsonl(root / "math" / "train.jsonl", MATH_TRAIN, separators=(",", ":"))
    _write_jsonl(root / "math" / "test.jsonl", MATH_TEST, separators=(",", ":"))
    _write_jsonl(root / "math" / "math500_test.jsonl", MATH500_TEST)
    write_code_datasets(root)
    return root
