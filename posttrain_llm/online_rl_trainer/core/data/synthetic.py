"""A seeded synthetic arithmetic task for the offline demo with a tiny character-level model.

Each prompt is the bare problem, e.g. ``"12+7="`` (one character is one token for the tiny model, so no
instruction text and no system prompt by default), and the answer is the result as a string (``"19"``).

Difficulties:
- 1: ``a+b`` with ``a`` in 0..99 and ``b`` in 0..9 (1,000 problems). This is the task measured to be learnable
  by a ~1M-parameter model; the default 700/300 split uses every problem.
- 2: ``a+b`` and ``a-b`` with ``a``, ``b`` in 0..99 (20,000 problems; differences can be negative).
- 3: difficulty 2 plus one-digit multiplication ``a*b``, ``a`` in 0..99, ``b`` in 0..9 (21,000 problems).
- 4: the tool task: three-digit multiplication ``a*b``, ``a`` and ``b`` in 100..999 (810,000 problems, products of
  five or six digits). A small model answering from memory is nearly always wrong; with a calculator call
  (``core.agents``) it is a copy of the tool's output.

The train and test splits are disjoint sets of distinct problems, fixed by ``seed``: for difficulties 1-3 each
operator's problems are shuffled with ``seed`` and dealt round-robin (so every operator gets an equal share while it
lasts), the first ``num_train`` go to train and the next ``num_test`` to test. Difficulty 4 is too large to list:
``num_train + num_test`` distinct indices into its problem space (:class:`ProblemSpace`) are drawn with
``random.Random(seed).sample``, the first ``num_train`` for train and the rest for test.
``load(split, num_samples, seed)`` then takes a seeded subset of that split, like every loader.

Prompt styles: ``"bare"`` (default) is the problem alone, for the tiny character model; ``"chat"`` asks a chat model
"What is 12 + 7?" with a one-shot example of the ``\\boxed{}`` answer format (SmolLM2-135M almost never boxes its
answer zero-shot, and reaches ~0.4 with one example). For the tool task (difficulty 4) the chat prompt also says the
``calculator`` tool may be used (``TOOL_CHAT_TEMPLATE``; the tool itself reaches the model through the trainer's
``tools=``). The ``answer`` column is the bare number in both styles.

Not covered: division, long sums of many operands, carries-only curricula.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .base import DatasetLoader, PromptFormat, RowRef
from .math import DEFAULT_MATH_ONE_SHOT

DIFFICULTIES = (1, 2, 3, 4)
#: Difficulties too large to list, as (operator, range of a, range of b); their problems are drawn by index.
SAMPLED_DIFFICULTIES = {4: ("*", range(100, 1000), range(100, 1000))}
PROMPT_STYLES = ("bare", "chat")
CHAT_TEMPLATE = "{question} Put the final answer in \\boxed{}."
#: The tool task's difficulties and their chat prompt: the same question and answer format, plus leave to call the
#: calculator.
TOOL_TASK_DIFFICULTIES = (4,)
TOOL_CHAT_TEMPLATE = "{question} You may use the calculator tool. Put the final answer in \\boxed{}."


@dataclass(frozen=True)
class ArithmeticProblem:
    """One problem ``a <op> b``; ``question`` is the prompt text, ``answer`` the result as a string."""

    a: int
    op: str
    b: int

    @property
    def question(self) -> str:
        return f"{self.a}{self.op}{self.b}="

    @property
    def chat_question(self) -> str:
        return f"What is {self.a} {self.op} {self.b}?"

    @property
    def answer(self) -> str:
        if self.op == "+":
            return str(self.a + self.b)
        if self.op == "-":
            return str(self.a - self.b)
        return str(self.a * self.b)


class ProblemSpace(Sequence[ArithmeticProblem]):
    """Every problem ``a <op> b`` over two ranges, in ``a``-major order, without listing them (index -> problem)."""

    def __init__(self, op: str, a_values: range, b_values: range):
        self.op, self.a_values, self.b_values = op, a_values, b_values

    def __len__(self) -> int:
        return len(self.a_values) * len(self.b_values)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        a, b = divmod(range(len(self))[index], len(self.b_values))  # range() checks and wraps the index
        return ArithmeticProblem(self.a_values[a], self.op, self.b_values[b])


def problem_space(difficulty: int) -> ProblemSpace:
    """The problems of a sampled difficulty (4), as a lazy sequence."""
    if difficulty not in SAMPLED_DIFFICULTIES:
        raise ValueError(f"difficulty={difficulty!r} is listed, not sampled; sampled difficulties: "
                         f"{list(SAMPLED_DIFFICULTIES)}")
    return ProblemSpace(*SAMPLED_DIFFICULTIES[difficulty])


def arithmetic_problems(difficulty: int) -> dict[str, list[ArithmeticProblem]]:
    """Every distinct problem of a difficulty, grouped by operator (in a fixed, sorted order); difficulty 4 is too
    large to list (see :func:`problem_space`)."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty={difficulty!r}; accepted: {list(DIFFICULTIES)}")
    if difficulty in SAMPLED_DIFFICULTIES:
        raise ValueError(f"difficulty {difficulty} has {len(problem_space(difficulty))} problems, too many to list; "
                         "use problem_space()")
    if difficulty == 1:
        return {"+": [ArithmeticProblem(a, "+", b) for a in range(100) for b in range(10)]}
    groups = {op: [ArithmeticProblem(a, op, b) for a in range(100) for b in range(100)] for op in "+-"}
    if difficulty == 3:
        groups["*"] = [ArithmeticProblem(a, "*", b) for a in range(100) for b in range(10)]
    return groups


def deal_round_robin(groups: dict[str, list[ArithmeticProblem]], seed: int) -> list[ArithmeticProblem]:
    """Shuffle each group with ``seed``, then interleave them one at a time until all are used."""
    rng = random.Random(seed)
    shuffled = []
    for op in sorted(groups):
        items = list(groups[op])
        rng.shuffle(items)
        shuffled.append(items)
    dealt = []
    for i in range(max(len(g) for g in shuffled)):
        dealt.extend(g[i] for g in shuffled if i < len(g))
    return dealt


class SyntheticArithmeticLoader(DatasetLoader):
    """Seeded arithmetic problems. Columns: ``prompt``, ``answer``, ``question``, ``operator``, ``a``, ``b``.

    Args:
        difficulty: 1, 2, 3 or 4 (the tool task; see the module docstring).
        seed: fixes which problems go to train and which to test.
        num_train: problems in the train split.
        num_test: problems in the test split (disjoint from train).
        system_prompt: a system message, or ``None`` (the default: the tiny model sees only the problem).
        prompt_style: ``"bare"`` (``"12+7="``) or ``"chat"`` (a question, a boxed-answer instruction, one-shot).
    """

    splits = ("train", "test")

    def __init__(self, difficulty: int = 1, seed: int = 0, num_train: int = 700, num_test: int = 300,
                 system_prompt: str | None = None, prompt_style: str = "bare"):
        super().__init__(skip_invalid=False)
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(f"prompt_style={prompt_style!r}; accepted: {list(PROMPT_STYLES)}")
        self.prompt_style = prompt_style
        for arg, value in (("seed", seed), ("num_train", num_train), ("num_test", num_test)):
            if isinstance(value, bool) or not isinstance(value, int) or (arg != "seed" and value < 1):
                raise ValueError(f"{arg}={value!r}; pass a {'' if arg == 'seed' else 'positive '}integer")
        self.difficulty = difficulty
        self.seed = seed
        self.num_train = num_train
        self.num_test = num_test
        if prompt_style == "chat":
            template = TOOL_CHAT_TEMPLATE if difficulty in TOOL_TASK_DIFFICULTIES else CHAT_TEMPLATE
            self.prompt_format = PromptFormat(system_prompt, template, (DEFAULT_MATH_ONE_SHOT,))
        else:
            self.prompt_format = PromptFormat(system_prompt)
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty={difficulty!r}; accepted: {list(DIFFICULTIES)}")
        self._space = problem_space(difficulty) if difficulty in SAMPLED_DIFFICULTIES else None
        groups = {} if self._space is not None else arithmetic_problems(difficulty)
        total = len(self._space) if self._space is not None else sum(len(g) for g in groups.values())
        if num_train + num_test > total:
            raise ValueError(
                f"num_train={num_train} + num_test={num_test} = {num_train + num_test} but difficulty {difficulty} has "
                f"only {total} distinct problems; lower them so the splits stay disjoint"
            )
        self._groups = groups
        if self._space is not None:  # distinct indices, so the splits are disjoint without listing the space
            dealt = [self._space[i] for i in random.Random(seed).sample(range(total), num_train + num_test)]
        else:
            dealt = deal_round_robin(groups, seed)
        self._splits = {"train": dealt[:num_train], "test": dealt[num_train : num_train + num_test]}

    @property
    def all_problems(self) -> Sequence[ArithmeticProblem]:
        """Every distinct problem of this difficulty (train, test and unused), in a fixed order (a list; for
        difficulty 4 a lazy :class:`ProblemSpace`)."""
        if self._space is not None:
            return self._space
        return [p for op in sorted(self._groups) for p in self._groups[op]]

    @property
    def num_distinct(self) -> int:
        """How many distinct problems this difficulty has."""
        if self._space is not None:
            return len(self._space)
        return sum(len(g) for g in self._groups.values())

    def problems(self, split: str) -> list[ArithmeticProblem]:
        """The problems of ``split`` ("train" or "test"), in dealt order."""
        if split not in self._splits:
            accepted = list(self._splits)
            raise ValueError(f"SyntheticArithmeticLoader: unknown split {split!r}; accepted splits: {accepted}")
        return list(self._splits[split])

    def _records(self, split: str) -> Iterable[tuple[RowRef, Mapping[str, Any]]]:
        source = f"synthetic(difficulty={self.difficulty}, seed={self.seed})[{split}]"
        return ((RowRef(source, i), {"problem": p}) for i, p in enumerate(self._splits[split]))

    def _convert(self, record: Mapping[str, Any], ref: RowRef) -> dict[str, Any]:
        p: ArithmeticProblem = record["problem"]
        question = p.chat_question if self.prompt_style == "chat" else p.question
        return {"prompt": self.prompt_format.build(question), "answer": p.answer, "question": question,
                "operator": p.op, "a": p.a, "b": p.b}
