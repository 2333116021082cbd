r"""Hand-written HumanEval- and MBPP-style tasks for the fixture data folder (see ``fixture_datasets.py``).

Every reference solution here passes its own tests, in a plain interpreter and in the sandbox; a do-nothing body
(``pass``) fails every HumanEval task and every MBPP task, passing only MBPP's one test that expects nothing
(``assert not is_Even(9)``). Written as upstream serialises them: ``HumanEval.jsonl.gz`` gzip-compressed JSON Lines;
``mbpp.jsonl`` with ``\r\n`` line ends in ``code`` and ``test_setup_code``; ``sanitized-mbpp.json`` one JSON array.

Not covered: tasks that need more than the standard library, or stdin/stdout programs.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

_METADATA = "\n\nMETADATA = {\n    'author': 'fixture',\n    'dataset': 'test'\n}\n\n\n"


def _humaneval(n: int, prompt: str, entry_point: str, solution: str, checks: str) -> dict:
    return {"task_id": f"HumanEval/{n}", "prompt": prompt, "entry_point": entry_point,
            "canonical_solution": solution, "test": _METADATA + "def check(candidate):\n" + checks}


HUMANEVAL = [
    _humaneval(0, '''from typing import List


def running_max(numbers: List[int]) -> List[int]:
    """ From a list of integers, return the list of the largest element seen so far at each position.
    >>> running_max([1, 3, 2, 5, 4])
    [1, 3, 3, 5, 5]
    """
''', "running_max", '''    result = []
    current = None
    for n in numbers:
        current = n if current is None else max(current, n)
        result.append(current)
    return result
''', '''    assert candidate([]) == []
    assert candidate([1, 3, 2, 5, 4]) == [1, 3, 3, 5, 5]
    assert candidate([-2, -5, -1]) == [-2, -2, -1]
    assert candidate([7]) == [7]
'''),
    _humaneval(1, '''

def count_vowels(s: str) -> int:
    """ Return how many vowels (a, e, i, o, u, in either case) the string contains.
    >>> count_vowels('Hello World')
    3
    >>> count_vowels('xyz')
    0
    """
''', "count_vowels", "    return sum(1 for ch in s.lower() if ch in 'aeiou')\n", '''    assert candidate('') == 0
    assert candidate('Hello World') == 3
    assert candidate('AEIOUaeiou') == 10
    assert candidate('rhythm') == 0
'''),
    _humaneval(2, '''

def is_palindrome(text: str) -> bool:
    """ Test if the given string is a palindrome """
    return text == text[::-1]


def longest_palindromic_prefix(text: str) -> str:
    """ Return the longest prefix of the text that is a palindrome.
    >>> longest_palindromic_prefix('')
    ''
    >>> longest_palindromic_prefix('abacus')
    'aba'
    >>> longest_palindromic_prefix('xyz')
    'x'
    """
''', "longest_palindromic_prefix", '''    for end in range(len(text), 0, -1):
        if is_palindrome(text[:end]):
            return text[:end]
    return ''
''', '''    assert candidate('') == ''
    assert candidate('abacus') == 'aba'
    assert candidate('xyz') == 'x'
    assert candidate('racecar') == 'racecar'
    assert candidate('aab') == 'aa'
'''),
    _humaneval(3, '''

def celsius_to_fahrenheit(celsius: float) -> float:
    """ Convert a temperature from degrees Celsius to degrees Fahrenheit.
    >>> celsius_to_fahrenheit(100.0)
    212.0
    """
''', "celsius_to_fahrenheit", "    return celsius * 9 / 5 + 32\n", '''    assert abs(candidate(100.0) - 212.0) < 1e-6
    assert abs(candidate(-40.0) + 40.0) < 1e-6
    assert abs(candidate(36.6) - 97.88) < 1e-6
'''),
    _humaneval(4, '''

def gcd(a: int, b: int) -> int:
    """ Return the greatest common divisor of two non-negative integers, not both zero.
    >>> gcd(12, 18)
    6
    >>> gcd(7, 0)
    7
    """
''', "gcd", '''    while b:
        a, b = b, a % b
    return a
''', '''    import math
    import random

    assert candidate(12, 18) == 6
    assert candidate(7, 0) == 7
    assert candidate(17, 5) == 1

    for _ in range(100):
        a, b = random.randint(1, 10000), random.randint(0, 10000)
        assert candidate(a, b) == math.gcd(a, b)
'''),
]


def _mbpp(task_id: int, text: str, code: str, tests: list[str], setup: str = "", challenge: list | None = None):
    # Upstream's mbpp.jsonl has Windows line ends in code and setup; the loader turns them into "\n".
    return {"text": text, "code": code.replace("\n", "\r\n"), "task_id": task_id,
            "test_setup_code": setup.replace("\n", "\r\n"), "test_list": tests, "challenge_test_list": challenge or []}


_TREE_SETUP = """root = Node(1)
root.left = Node(2)
root.right = Node(3)
root.left.left = Node(4)
root1 = Node(1)
root2 = Node(5)
root2.left = Node(6)
root2.right = Node(7)
root2.right.left = Node(8)
root2.right.right = Node(9)"""

_TRIANGULAR_TESTS = ["assert triangular_number(1) == 1", "assert triangular_number(4) == 10",
                     "assert triangular_number(10) == 55"]

MBPP = [
    _mbpp(3, "Write a python function to check whether the given number is even or not.",
          "def is_Even(n) : \n    return n % 2 == 0",
          ["assert is_Even(4) == True", "assert is_Even(7) == False", "assert not is_Even(9)"]),
    _mbpp(7, "Write a function to find the words starting with a capital letter in a string by using regex.",
          "import re\ndef capital_words(text):\n  return re.findall(r'\\b[A-Z]\\w*', text)",
          ["assert capital_words('Alice met Bob in Paris') == ['Alice', 'Bob', 'Paris']",
           "assert capital_words('no capitals here') == []", "assert capital_words('The End') == ['The', 'End']"]),
    _mbpp(14, "Write a function to find the sum of the digits of a non-negative integer.",
          "def sum_digits(n):\n    total = 0\n    while n > 0:\n        total += n % 10\n        n //= 10\n"
          "    return total",
          ["assert sum_digits(345) == 12", "assert sum_digits(12) == 3", "assert sum_digits(97) == 16"]),
    _mbpp(58, "Write a function to find the area of a circle.",
          "import math\ndef circle_area(r):\n  area = math.pi * r * r\n  return area",
          ["assert circle_area(10)==314.1592653589793", "assert circle_area(1)==3.141592653589793",
           "assert circle_area(0)==0.0"]),
    _mbpp(133, "Write a python function to find the maximum of two numbers.",
          "def max(a, b): \n    if a > b: \n        return a \n    return b ",
          ["assert max(5, 10) == 10", "assert max(-1, -2) == -1", "assert max(9, 7) == 9"]),
    _mbpp(420, "Write a function to count the leaf nodes of a binary tree.",
          "class Node: \n\tdef __init__(self, data): \n\t\tself.data = data \n\t\tself.left = None\n"
          "\t\tself.right = None\ndef count_leaves(root): \n\tif root is None: \n\t\treturn 0\n"
          "\tif root.left is None and root.right is None: \n\t\treturn 1\n"
          "\treturn count_leaves(root.left) + count_leaves(root.right)",
          ["assert count_leaves(root) == 2", "assert count_leaves(root1) == 1", "assert count_leaves(root2) == 3"],
          setup=_TREE_SETUP),
    _mbpp(530, "Write a function to find the area of a rectangle.",
          "def rectangle_area(l,b):\n  area=l*b\n  return area",
          ["assert rectangle_area(10,20)==200", "assert rectangle_area(10,5)==50", "assert rectangle_area(4,2)==8"],
          challenge=["assert rectangle_area(0,5)==0", "assert rectangle_area(3,3)==9"]),
    _mbpp(577, "Write a function to check whether the given list is sorted in non-decreasing order.",
          "def is_sorted(nums):\n    return all(nums[i] <= nums[i + 1] for i in range(len(nums) - 1))",
          ["assert is_sorted([1,2,2,5])==True", "assert is_sorted([3,1,2])==False", "assert is_sorted([])==True"]),
    _mbpp(604, "Write a function to reverse the order of the words in a given string.",
          "def reverse_words(s):\n    return ' '.join(reversed(s.split()))",
          ["assert reverse_words('python program')==('program python')",
           "assert reverse_words('java language')==('language java')",
           "assert reverse_words('indian man')==('man indian')"]),
    _mbpp(641, "Write a function to count the number of uppercase letters in a string.",
          "def count_upper(s):\n  count = 0\n  for ch in s:\n    if ch.isupper():\n      count += 1\n  return count",
          ["assert count_upper('PYthon') == 2", "assert count_upper('BigData') == 2",
           "assert count_upper('lower') == 0"]),
    _mbpp(701, "Write a function to find the nth triangular number.",
          "def triangular_number(n):\n  return n * (n + 1) // 2", _TRIANGULAR_TESTS),
    _mbpp(812, "Write a function to merge two dictionaries into a single expression.",
          "def merge_dicts(d1, d2):\n  result = dict(d1)\n  result.update(d2)\n  return result",
          ["assert merge_dicts({'a': 1}, {'b': 2}) == {'a': 1, 'b': 2}",
           "assert merge_dicts({'a': 1}, {'a': 3}) == {'a': 3}", "assert merge_dicts({}, {}) == {}"]),
    _mbpp(903, "Write a python function to count the number of set bits in a given number.",
          "def count_Set_Bits(n): \n    count = 0\n    while (n): \n        count += n & 1\n        n >>= 1\n"
          "    return count ",
          ["assert count_Set_Bits(2) == 1", "assert count_Set_Bits(4) == 1", "assert count_Set_Bits(6) == 2"]),
]

_SOURCE = "Benchmark Questions Verification V2.ipynb"
#: task_id -> (prompt, test_imports, test_list); code is the full row's with "\n" line ends.
_SANITIZED = {
    3: ("Write a python function to check whether the given number is even or not.", [],
        ["assert is_Even(4) == True", "assert is_Even(7) == False", "assert not is_Even(9)",
         "assert is_Even(0) == True"]),
    7: ("Write a function to find all words starting with a capital letter in a string.", [],
        ["assert capital_words('Alice met Bob in Paris') == ['Alice', 'Bob', 'Paris']",
         "assert capital_words('no capitals here') == []", "assert capital_words('The End') == ['The', 'End']"]),
    14: ("Write a function to find the sum of the digits of a non-negative integer.", [],
         ["assert sum_digits(345) == 12", "assert sum_digits(12) == 3", "assert sum_digits(97) == 16"]),
    58: ("Write a function to find the area of a circle given its radius.", ["import math"],
         ["assert math.isclose(circle_area(10), 314.1592653589793, rel_tol=0.001)",
          "assert math.isclose(circle_area(1), 3.141592653589793, rel_tol=0.001)",
          "assert math.isclose(circle_area(0), 0.0, abs_tol=0.001)"]),
    530: ("Write a function to find the area of a rectangle.", [],
          ["assert rectangle_area(10,20)==200", "assert rectangle_area(10,5)==50", "assert rectangle_area(4,2)==8"]),
    604: ("Write a function to reverse the order of the words in a given string.", [],
          ["assert reverse_words('python program')==('program python')",
           "assert reverse_words('java language')==('language java')"]),
    701: ("Write a function to find the nth triangular number.", [], _TRIANGULAR_TESTS),
    903: ("Write a python function to count the number of set bits in a given number.", [],
          ["assert count_Set_Bits(2) == 1", "assert count_Set_Bits(4) == 1", "assert count_Set_Bits(6) == 2"]),
}


def sanitized_rows() -> list[dict]:
    code = {row["task_id"]: row["code"].replace("\r\n", "\n") for row in MBPP}
    return [{"source_file": _SOURCE, "task_id": task_id, "prompt": prompt, "code": code[task_id],
             "test_imports": imports, "test_list": tests} for task_id, (prompt, imports, tests) in _SANITIZED.items()]


def write_code_datasets(root: Path) -> None:
    """Write ``humaneval/HumanEval.jsonl.gz``, ``mbpp/mbpp.jsonl`` and ``mbpp/sanitized-mbpp.json`` under ``root``."""
    (root / "humaneval").mkdir(parents=True, exist_ok=True)
    with gzip.open(root / "humaneval" / "HumanEval.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(row) + "\n" for row in HUMANEVAL))
    (root / "mbpp").mkdir(parents=True, exist_ok=True)
    (root / "mbpp" / "mbpp.jsonl").write_text("".join(json.dumps(row) + "\n" for row in MBPP), encoding="utf-8")
    (root / "mbpp" / "sanitized-mbpp.json").write_text(json.dumps(sanitized_rows()), encoding="utf-8")
