"""A learned reward model (a sequence classifier with one output) used as a reward function.

``RewardModelFunction("outputs/rm")`` scores each (prompt, completion) with a model saved by
``train_reward_model`` (``core/training/reward_model.py``) or any ``AutoModelForSequenceClassification`` folder with
``num_labels=1``. It is a :class:`~..rewards.base.RewardFunction`: TRL's GRPO/RLOO call it as
``fn(prompts=..., completions=..., **columns)``, our PPO the same way, and it can sit inside a
``CompositeRewardFunction`` next to rule rewards (the composite calls its ``score_batch`` with the same keywords).

How a pair is read (:func:`encode_for_reward_model`, shared with training so both see the same tokens):

- with a chat template (the tokenizer's, unless ``use_chat_template=False``): the prompt (a conversation, or a string
  as one user message) and the completion (assistant messages, or a string as one) rendered as one conversation;
- without one: plain text, ``prompt + completion + EOS`` (the message contents joined when the prompt is a chat);
- longer than ``max_length`` tokens: the oldest tokens are dropped (the start of the prompt goes first); each such
  cut is counted in ``truncated_count`` and logged as ``rewards/<name>/truncated`` when the trainer gives
  ``log_metric``, and the first one logs a warning.

Scoring runs in eval mode without gradients, ``batch_size`` sequences at a time, right-padded: a causal model's real
tokens never see the padding and the classifier reads the last real token, so a score does not depend on its batch
(to float rounding). Scores are raw logits unless ``normalize`` says otherwise (see :class:`RewardModelConfig`).

Verdicts: ``passed`` when the normalised score is above the model's neutral point (0; 0.5 after the sigmoid),
else ``failed``; never ``no_answer``. Evaluation accuracy with this reward is therefore "share of completions the
reward model likes", not task accuracy: pass a rule reward as ``eval_reward_fn`` for that.

Not covered: LoRA adapter folders and quantised reward models, process (per-step) rewards, several heads.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..common.errors import ConfigError
from ..rewards.base import RewardFunction, RewardResult
from .resolution import local_files_only, resolve_model

__all__ = ["INFO_FILENAME", "NORMALIZATIONS", "RewardModelConfig", "RewardModelFunction", "encode_for_reward_model",
           "load_sequence_classifier", "normalized", "score_token_ids"]

logger = logging.getLogger(__name__)

NORMALIZATIONS = ("none", "sigmoid", "batch_z", "fixed")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: The JSON ``train_reward_model`` writes into the folder: accuracies and the score statistics ``normalize="fixed"``
#: reads.
INFO_FILENAME = "reward_model_info.json"


@dataclass(frozen=True, kw_only=True)
class RewardModelConfig:
    """How to load and apply a reward model. Validated on construction; errors name the field and the value."""

    model: str
    """A folder saved by ``train_reward_model`` (or any sequence-classification folder, ``num_labels=1``), or a
    Hub id (needs the Hub or the local HF cache)."""
    device: str = "cpu"
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``..., or ``"auto"``: the trainer's device (accelerate's, once the trainer has
    set it up), else CUDA when there is one, else the CPU. Resolved at the first call."""
    batch_size: int = 16
    """Sequences per forward pass."""
    max_length: int = 1024
    """Tokens per sequence; longer ones lose their oldest tokens (the start of the prompt)."""
    normalize: str = "none"
    """``"none"`` (raw logit), ``"sigmoid"`` (P(preferred) in (0, 1)), ``"batch_z"`` (z-score within each call: mean 0,
    std 1 over the batch; a one-sample batch scores 0), ``"fixed"`` ((raw - mean) / std with ``mean``/``std``)."""
    mean: float | None = None
    """For ``"fixed"``; ``None`` -> the training scores' mean recorded in the folder's ``reward_model_info.json``."""
    std: float | None = None
    """For ``"fixed"``; ``None`` -> the recorded standard deviation."""
    use_chat_template: bool | None = None
    """``None``: render as a conversation when the tokenizer has a chat template; ``False``: plain text always."""
    dtype: str = "float32"
    """``"float32"``, ``"bfloat16"`` or ``"float16"``."""
    name: str = "reward_model"
    """The reward's name (metrics ``rewards/<name>/mean``); give two reward models different names."""

    def __post_init__(self) -> None:
        if not isinstance(self.model, (str, os.PathLike)) or not str(self.model).strip():
            raise ConfigError(f"RewardModelConfig.model={self.model!r}; give a folder or a Hub id")
        object.__setattr__(self, "model", str(self.model))
        if not isinstance(self.device, str) or not (
                self.device in ("cpu", "auto", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ConfigError(f"RewardModelConfig.device={self.device!r}; accepted: 'cpu', 'auto', 'cuda', 'cuda:N', 'mps'")
        for field, value in (("batch_size", self.batch_size), ("max_length", self.max_length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"RewardModelConfig.{field}={value!r}; expected an integer >= 1")
        if self.max_length < 2:
            raise ConfigError(f"RewardModelConfig.max_length={self.max_length!r}; expected at least 2 tokens")
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError(f"RewardModelConfig.normalize={self.normalize!r}; accepted: {list(NORMALIZATIONS)}")
        for field, value in (("mean", self.mean), ("std", self.std)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise ConfigError(f"RewardModelConfig.{field}={value!r}; expected a finite number or None")
        if self.std is not None and self.std <= 0:
            raise ConfigError(f"RewardModelConfig.std={self.std!r}; expected a number > 0")
        if self.normalize != "fixed" and (self.mean is not None or self.std is not None):
            raise ConfigError(f"RewardModelConfig mean={self.mean!r}/std={self.std!r} are only used with "
                              f"normalize='fixed', not normalize={self.normalize!r}")
        if self.use_chat_template not in (None, True, False):
            raise ConfigError(f"RewardModelConfig.use_chat_template={self.use_chat_template!r}; expected None, True "
                              "or False")
        if self.dtype not in DTYPES:
            raise ConfigError(f"RewardModelConfig.dtype={self.dtype!r}; accepted: {list(DTYPES)}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"RewardModelConfig.name={self.name!r}; expected a non-empty string")


# ------------------------------------------------------------------------------------------- encoding
def as_messages(value: Any, role: str) -> list[dict[str, Any]]:
    """A prompt or completion as a list of messages: a string becomes one message with ``role``."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, dict):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(m, dict) for m in value):
        return list(value)
    raise TypeError(f"expected a string or a list of {{'role', 'content'}} messages, got {value!r:.200}")


def plain_text(value: Any) -> str:
    """A prompt or completion as plain text (the contents of a conversation's messages joined by newlines)."""
    if isinstance(value, str):
        return value
    return "\n".join(str(m.get("content", "")) for m in as_messages(value, "user"))


def encode_for_reward_model(tokenizer: Any, prompt: Any, completion: Any, max_length: int,
                            use_chat_template: bool) -> tuple[list[int], bool]:
    """The token ids a reward model reads for (prompt, completion), and whether they were cut to ``max_length``
    (the oldest tokens dropped). See the module docstring for the rendering."""
    if use_chat_template:
        messages = as_messages(prompt, "user") + as_messages(completion, "assistant")
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        text = plain_text(prompt) + plain_text(completion)
        eos = tokenizer.eos_token or ""
        ids = tokenizer(text if text.endswith(eos) else text + eos)["input_ids"]
    if len(ids) > max_length:
        return list(ids[-max_length:]), True
    return list(ids), False


def wants_chat_template(tokenizer: Any, use_chat_template: bool | None) -> bool:
    """Whether pairs are rendered as conversations: the setting, else whether the tokenizer has a chat template."""
    has = bool(getattr(tokenizer, "chat_template", None))
    if use_chat_template and not has:
        raise ConfigError("use_chat_template=True but the reward model's tokenizer has no chat template; set it "
                          "to None or False (plain text)")
    return has if use_chat_template is None else bool(use_chat_template)


# ------------------------------------------------------------------------------------------- loading and scoring
def load_sequence_classifier(name: str, dtype: torch.dtype = torch.float32, require_trained_head: bool = True):
    """``(model, tokenizer)`` of a one-output sequence classifier, in eval mode, with a pad token.

    ``require_trained_head=False`` accepts a causal-LM folder (a new, random score head: the start of training).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model(name)  # ModelResolutionError naming each attempt (e.g. a Hub id while offline)
    if (Path(path) / "adapter_config.json").is_file():
        raise ConfigError(f"{path!r} is a LoRA adapter folder; reward models must be full folders (merge it first)")
    local = local_files_only(path)
    config = AutoConfig.from_pretrained(path, local_files_only=local)
    architectures = list(getattr(config, "architectures", None) or [])
    is_classifier = any(a.endswith("ForSequenceClassification") for a in architectures)
    if require_trained_head and not is_classifier:
        raise ConfigError(f"{path!r} holds {architectures or 'no architecture'}, not a trained reward model (a "
                          "...ForSequenceClassification with num_labels=1); train one with train_reward_model")
    if is_classifier and getattr(config, "num_labels", 1) != 1:
        raise ConfigError(f"{path!r} is a classifier with num_labels={config.num_labels}; a reward model has exactly 1")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    if is_classifier:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype, local_files_only=local)
    else:
        from trl.trainer.reward_trainer import suppress_seqcls_warning

        with suppress_seqcls_warning():  # the new score head (and the unused LM head) are expected, not a fault
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype,
                                                                       local_files_only=local)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


@torch.no_grad()
def score_token_ids(model: torch.nn.Module, sequences: Sequence[Sequence[int]], pad_token_id: int,
                    batch_size: int) -> list[float]:
    """One raw score per sequence: right-padded batches of ``batch_size``, no gradients, fp32 results."""
    device = next(model.parameters()).device
    scores: list[float] = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, seq in enumerate(chunk):
            ids[i, :len(seq)] = torch.tensor(list(seq), dtype=torch.long)
            mask[i, :len(seq)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
        scores.extend(logits[:, 0].float().cpu().tolist())
    return scores


def resolve_device(device: str) -> torch.device:
    """``"auto"``: accelerate's device once a trainer has set it up, else CUDA when present, else the CPU."""
    if device != "auto":
        return torch.device(device)
    from accelerate.state import AcceleratorState, is_initialized

    if is_initialized():  # a trainer (TRL's, or our PPO's) has built its Accelerator: use its device
        return AcceleratorState().device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def normalized(raw: list[float], method: str, mean: float, std: float) -> list[float]:
    """Scores after ``method`` (see :class:`RewardModelConfig`); ``mean``/``std`` are used by ``"fixed"`` only."""
    if method == "sigmoid":
        return [1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x)) for x in raw]
    if method == "batch_z":
        m = sum(raw) / len(raw)
        s = math.sqrt(sum((x - m) ** 2 for x in raw) / len(raw))
        return [(x - m) / s if s > 1e-8 else 0.0 for x in raw]
    if method == "fixed":
        return [(x - mean) / std for x in raw]
    return list(raw)


class RewardModelFunction(RewardFunction):
    """A reward model as a reward: ``RewardModelFunction("outputs/rm")`` or ``RewardModelFunction(RewardModelConfig(
    model=..., normalize="sigmoid"))``; keyword arguments are config fields. See the module docstring."""

    def __init__(self, model: str | os.PathLike | RewardModelConfig, **fields: Any):
        if isinstance(model, RewardModelConfig):
            if fields:
                raise ConfigError(f"pass either a RewardModelConfig or keyword fields, not both (got {sorted(fields)})")
            self.config = model
        else:
            self.config = RewardModelConfig(model=model, **fields)
        cfg = self.config
        self.model, self.tokenizer = load_sequence_classifier(cfg.model, DTYPES[cfg.dtype])
        self.use_chat_template = wants_chat_template(self.tokenizer, cfg.use_chat_template)
        self.mean, self.std = self._fixed_stats()
        self.device: torch.device | None = None
        self.truncated_count = 0
        self.scored_count = 0

    @property
    def name(self) -> str:
        return self.config.name

    def _fixed_stats(self) -> tuple[float, float]:
        cfg = self.config
        if cfg.normalize != "fixed" or (cfg.mean is not None and cfg.std is not None):
            return (cfg.mean if cfg.mean is not None else 0.0), (cfg.std if cfg.std is not None else 1.0)
        info_path = Path(resolve_model(cfg.model)) / INFO_FILENAME
        try:
            stats = json.loads(info_path.read_text())["score_stats"]
            mean, std = float(stats["mean"]), float(stats["std"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"normalize='fixed' without mean/std needs the score statistics in {str(info_path)!r} "
                              f"(written by train_reward_model), which could not be read ({type(exc).__name__}: {exc}); "
                              "pass mean= and std=") from None
        return (cfg.mean if cfg.mean is not None else mean), (cfg.std if cfg.std is not None and cfg.std > 0 else
                                                             max(std, 1e-6))

    def raw_scores(self, prompts: Sequence[Any], completions: Sequence[Any]) -> tuple[list[float], list[bool]]:
        """Raw scores of (prompt, completion) pairs, and which of them were truncated."""
        if self.device is None:
            self.device = resolve_device(self.config.device)
            self.model.to(self.device)
        encoded = [encode_for_reward_model(self.tokenizer, p, c, self.config.max_length, self.use_chat_template)
                   for p, c in zip(prompts, completions)]
        ids = [e[0] for e in encoded]
        return score_token_ids(self.model, ids, self.tokenizer.pad_token_id, self.config.batch_size), [e[1] for e in encoded]

    def score_batch(self, completions: Sequence[Any], **kwargs: Any) -> list[RewardResult]:
        n = len(completions)
        prompts = kwargs.get("prompts")
        if prompts is None or len(prompts) != n:
            raise ValueError(f"reward model {self.name!r} needs the prompts of the {n} completions as prompts=[...] "
                             f"(got {None if prompts is None else len(prompts)}); trainers pass them")
        if n == 0:
            return []
        raw, truncated = self.raw_scores(prompts, completions)
        self._count(truncated, kwargs.get("log_metric"))
        values = normalized(raw, self.config.normalize, self.mean, self.std)
        neutral = 0.5 if self.config.normalize == "sigmoid" else 0.0
        return [RewardResult(v, "passed" if v > neutral else "failed",
                             f"reward model score {v:.4g} (raw {r:.4g}){' [truncated]' if t else ''}",
                             details={"raw": r, "truncated": t})
                for v, r, t in zip(values, raw, truncated)]

    def score(self, completion: str, **row: Any) -> RewardResult:
        prompt = row.pop("prompts", None) or row.pop("prompt", None)
        if prompt is None:
            raise ValueError(f"reward model {self.name!r} needs the prompt: score(completion, prompt=...)")
        return self.score_batch([completion], prompts=[prompt])[0]

    def _count(self, truncated: list[bool], log_metric: Any) -> None:
        cut = sum(truncated)
        if cut and not self.truncated_count:
            logger.warning("reward model %r: %d of %d sequences were longer than max_length=%d tokens and lost their "
                           "oldest tokens (counted in rewards/%s/truncated; this warning is shown once)", self.name,
                           cut, len(truncated), self.config.max_length, self.name)
        self.truncated_count += cut
        self.scored_count += len(truncated)
        if callable(log_metric):
            log_metric(f"rewards/{self.name}/truncated", float(cut))

    def __repr__(self) -> str:
        return f"RewardModelFunction(name={self.name!r}, model={self.config.model!r}, normalize={self.config.normalize!r})"
