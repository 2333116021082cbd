"""The reward-function protocol, its result type, and the guard that every trainer puts around rewards.

A reward function takes a batch of completions plus the dataset columns of their rows, the way TRL's
`GRPOTrainer` calls reward callables::

    reward_fn(completions=[[{"role": "assistant", "content": "..."}], ...], answer=["12", ...], **other_columns)

and returns one float per completion, or ``None`` where the judge itself could not decide (a sandbox that did not
start, a verifier that timed out). ``None`` is never a wrong answer: TRL skips such samples, and the guard in
this module counts them so that a broken judge shows up in the metrics instead of looking like a bad model.

Built-in rewards implement :meth:`RewardFunction.score` (one completion, one row) returning a frozen
:class:`RewardResult` with an explicit status; the batch ``__call__`` is derived from it. Custom rewards may
instead override ``__call__`` directly, as in the SEED example.

:class:`GuardedReward` wraps any reward callable for training: an exception, a wrong number of values, a NaN or
an infinity stops the run with :class:`RewardFunctionError` naming the reward and the sample, never a silent 0.
With a deadline (``timeout_s``; the trainer passes ``TrainerConfig.reward_timeout_s``) the reward runs in a helper
thread and a call that has not returned in time stops the run too, instead of hanging it. Python cannot kill a
thread, so the stuck one is abandoned (a daemon thread: it does not keep the process alive); that is acceptable
only because the run stops. A reward that must be interruptible *and* keep going (a verifier, a sandbox) needs its
own deadline and should return ``None`` for that sample, as ``MathRewardFunction`` and ``CodeRewardFunction`` do.

This module imports no torch: rewards must be usable (and testable) without the training stack.
"""

from __future__ import annotations

import logging
import math
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..common.errors import short_repr

logger = logging.getLogger(__name__)

#: Verdicts a judge can give. ``error`` means the judge could not decide (score is then ``None``).
STATUSES = ("passed", "failed", "no_answer", "error")

#: Keyword arguments a trainer passes to reward functions that are not dataset columns (TRL's names; PPO passes
#: the same).
TRAINER_KWARGS = frozenset(
    {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
)
#: Dataset columns a trainer does not pass on to rewards as columns: the prompt and the completion arrive as
#: ``prompts``/``completions`` instead (TRL's rule, which PPO follows).
WITHHELD_COLUMNS = frozenset({"prompt", "completion", "completion_ids"})


class RewardFunctionError(RuntimeError):
    """A reward function misbehaved (raised, wrong count, NaN/inf). Names the reward and the sample."""


@dataclass(frozen=True)
class RewardResult:
    """The verdict on one completion.

    Attributes:
        score: the reward, or ``None`` exactly when ``status == "error"``.
        status: one of ``passed`` (full credit), ``failed`` (wrong or partial), ``no_answer`` (nothing to grade,
            e.g. no ``\\boxed{}``), ``error`` (the judge could not decide; not the model's fault).
        reason: a short human-readable explanation.
        extracted: what the judge read from the completion (the answer string, the code), if anything.
        details: optional per-component or per-test breakdown.
    """

    score: float | None
    status: str
    reason: str = ""
    extracted: str | None = None
    details: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"RewardResult.status={self.status!r}; expected one of {STATUSES}")
        if self.status == "error":
            if self.score is not None:
                raise ValueError(f"RewardResult with status 'error' must have score None, got {self.score!r}")
        else:
            if self.score is None or not isinstance(self.score, (int, float)) or not math.isfinite(self.score):
                raise ValueError(f"RewardResult.score={self.score!r} must be a finite number for status {self.status!r}")


def completion_text(completion: Any) -> str:
    """Return the text of one completion in any of the forms trainers pass.

    Accepts a plain string, TRL's conversational form (a list of message dicts; the assistant messages'
    contents are joined), or a single message dict.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        content = completion.get("content")
        if not isinstance(content, str):
            raise TypeError(f"completion message has no string 'content': {completion!r:.200}")
        return content
    if isinstance(completion, Sequence):
        messages = [m for m in completion if isinstance(m, Mapping)]
        if len(messages) != len(completion):
            raise TypeError(f"conversational completion must be a list of message dicts, got {completion!r:.200}")
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"] or messages
        return "".join(completion_text(m) for m in assistant)
    raise TypeError(
        f"completion of type {type(completion).__name__} is not supported; pass a string or a list of "
        f"{{'role': ..., 'content': ...}} messages"
    )


def row_kwargs(kwargs: Mapping[str, Any], index: int, batch_size: int) -> dict[str, Any]:
    """The dataset columns of row ``index`` out of the column lists TRL passes as keyword arguments."""
    row: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in TRAINER_KWARGS:
            continue
        if isinstance(value, (list, tuple)) and len(value) == batch_size:
            row[key] = value[index]
        elif isinstance(value, (list, tuple)):
            raise RewardFunctionError(
                f"column {key!r} has {len(value)} values but there are {batch_size} completions; "
                "each dataset column must have one value per completion"
            )
        else:
            row[key] = value
    return row


class RewardFunction(ABC):
    """Base class of all rewards. Subclasses give a ``name`` and either ``score`` or ``__call__``."""

    @property
    @abstractmethod
    def name(self) -> str:
        """A short identifier, used for metric names (``rewards/<name>/mean``)."""

    # TRL names reward callables by ``__name__``; an instance attribute lookup finds this property.
    @property
    def __name__(self) -> str:  # type: ignore[override]
        return self.name

    def score(self, completion: str, **row: Any) -> RewardResult:
        """Judge one completion (already plain text) against its row. Built-in rewards implement this."""
        raise NotImplementedError(f"{type(self).__name__} implements __call__ only, not score()")

    def score_batch(self, completions: Sequence[Any], **kwargs: Any) -> list[RewardResult]:
        """Judge a batch; the default calls :meth:`score` for each completion with its row's columns."""
        n = len(completions)
        return [self.score(completion_text(c), **row_kwargs(kwargs, i, n)) for i, c in enumerate(completions)]

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return [r.score for r in self.score_batch(completions, **kwargs)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def reward_name(fn: Callable[..., Any]) -> str:
    """The display name of any reward callable (RewardFunction, function, partial, callable object)."""
    if isinstance(fn, RewardFunction):
        return fn.name
    inner = getattr(fn, "func", fn)  # functools.partial
    return getattr(inner, "__name__", type(inner).__name__)


class GuardedReward:
    """Wraps a reward callable so that misbehaviour stops training with a clear error.

    - an exception from the reward -> :class:`RewardFunctionError` naming the reward (and the sample, when the
      reward judges one completion at a time via ``score``);
    - a result whose length differs from the number of completions, a NaN, an infinity, or a non-number ->
      :class:`RewardFunctionError` naming the reward and the sample index and its completion;
    - ``None`` (judge could not decide) is passed through and counted in ``none_count``; when the trainer
      provides ``log_metric`` the per-batch count is logged as ``rewards/<name>/judge_errors``, and the first
      batch with such samples logs one warning per reward;
    - with ``timeout_s``, a call that has not returned after that many seconds -> :class:`RewardFunctionError`
      naming the reward and the deadline (the call runs in a helper thread, which is abandoned; see the module
      docstring). ``None`` calls the reward in the caller's thread with no deadline.
    """

    def __init__(self, fn: Callable[..., Any], timeout_s: float | None = None):
        if not callable(fn):
            raise TypeError(f"reward {fn!r} is not callable; pass a RewardFunction or a function")
        if timeout_s is not None and (
            isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not math.isfinite(timeout_s)
            or timeout_s <= 0
        ):
            raise ValueError(f"timeout_s={timeout_s!r}; expected a finite number of seconds > 0, or None for no deadline")
        self.fn = fn
        self.name = reward_name(fn)
        self.__name__ = self.name
        self.timeout_s = timeout_s
        self.calls = 0
        self.none_count = 0
        self.total_count = 0
        self._warned_judge_errors = False

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        n = len(completions)
        try:
            values = self._call(completions, kwargs)
        except RewardFunctionError:
            raise
        except Exception as exc:
            hint = ""
            if self.timeout_s is not None and "main thread" in str(exc):
                hint = (" [with reward_timeout_s set, rewards run in a helper thread, where signal-based timeouts "
                        "(e.g. math-verify's defaults) fail: turn those off in the reward (parsing_timeout=None, "
                        "timeout_seconds=None) or set reward_timeout_s=None]")
            raise RewardFunctionError(
                f"reward {self.name!r} raised {type(exc).__name__}: {exc} (batch of {n} completions; "
                f"first completion: {_preview(completions[0]) if n else '<none>'}){hint}"
            ) from exc
        values = as_value_list(values, self.name, n)
        if len(values) != n:
            raise RewardFunctionError(
                f"reward {self.name!r} returned {len(values)} values for {n} completions; it must return exactly "
                "one value (a float, or None when the judge cannot decide) per completion"
            )
        batch_none = 0
        for i, v in enumerate(values):
            if v is None:
                batch_none += 1
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                try:
                    v = float(v)  # numpy / torch scalars
                except (TypeError, ValueError):
                    raise RewardFunctionError(
                        f"reward {self.name!r} returned {v!r} (type {type(v).__name__}) for sample {i} "
                        f"({_preview(completions[i])}); expected a float or None"
                    ) from None
                values[i] = v
            if not math.isfinite(v):
                raise RewardFunctionError(
                    f"reward {self.name!r} returned {v} for sample {i} ({_preview(completions[i])}); rewards must "
                    "be finite (return None if the judge could not decide)"
                )
        self.calls += 1
        self.total_count += n
        self.none_count += batch_none
        if batch_none and not self._warned_judge_errors:
            self._warned_judge_errors = True
            logger.warning(
                "reward %r could not judge %d of %d completions (returned None: a judge error, not a wrong answer); "
                "such samples are left out of the update and counted in rewards/%s/judge_errors (this warning is "
                "shown once per reward)", self.name, batch_none, n, self.name,
            )
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric(f"rewards/{self.name}/judge_errors", float(batch_none))
        return values

    def _call(self, completions: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """The reward's raw result; with ``timeout_s``, from a helper thread waited on for at most that long."""
        if self.timeout_s is None:
            return self.fn(completions=completions, **kwargs)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["values"] = self.fn(completions=completions, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                outcome["error"] = exc

        worker = threading.Thread(target=run, name=f"reward-{self.name}", daemon=True)
        worker.start()
        worker.join(self.timeout_s)
        if worker.is_alive():
            n = len(completions)
            raise RewardFunctionError(
                f"reward {self.name!r} did not return within reward_timeout_s={self.timeout_s:g} s (batch of {n} "
                f"completions; first completion: {_preview(completions[0]) if n else '<none>'}). It may be stuck (an "
                "endless loop, a lock, a network call without a timeout); its thread is abandoned, not stopped. Fix "
                "the reward, or raise reward_timeout_s (None: no deadline) if it is just slow"
            )
        if "error" in outcome:
            raise outcome["error"]
        return outcome["values"]


def as_value_list(values: Any, name: str, n: int) -> list[Any]:
    """The reward's result as a list; RewardFunctionError naming the reward when it is no sequence of values
    (``None`` from a forgotten ``return``, a single float, a string, a dict)."""
    if isinstance(values, list):
        return values
    if values is None or isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise RewardFunctionError(
            f"reward {name!r} returned {short_repr(values)} (type {type(values).__name__}) for a batch of {n} completions; "
            "it must return a list with one value per completion (a float, or None where the judge cannot decide)"
            + (" - is a `return` missing?" if values is None else "")
        )
    return list(values)


def _preview(completion: Any, limit: int = 120) -> str:
    try:
        text = completion_text(completion)
    except TypeError:
        return short_repr(completion, limit)
    return short_repr(text, limit)
