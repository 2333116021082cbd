"""Training a reward model on preference pairs (Bradley-Terry), with held-out pairwise accuracy before and after.

``train_reward_model(pairs, output_dir="outputs/rm")`` starts from any causal-LM folder (default: the built-in tiny
model), loaded as ``AutoModelForSequenceClassification`` with one output (a new score head on the last real token)
and a pad token, and minimises ``-log sigmoid(r(prompt, chosen) - r(prompt, rejected))`` with TRL 1.16's
``RewardTrainer``. The folder it saves loads in :class:`~..models.reward_model.RewardModelFunction`.

Departures from calling ``RewardTrainer`` on raw text:

- the pairs are tokenized here, by the same :func:`~..models.reward_model.encode_for_reward_model` the reward uses
  when scoring, and handed to TRL pre-tokenized (``chosen_ids``/``rejected_ids``), so training and scoring can never
  disagree on the rendering (chat template or plain ``prompt + completion + EOS``);
- sequences longer than ``max_length`` lose their oldest tokens, counted, instead of TRL's silent filtering;
- TRL's CPU-hostile defaults (bf16, gradient checkpointing) are off; no checkpoints, no model-card push.

Held-out pairwise accuracy = the share of held-out pairs whose chosen answer scores strictly higher than the
rejected one (a tie counts as wrong); it is measured before training (random head: near chance, or systematically
off) and after, overall and per ``rejected_kind`` when rows carry one. With no ``eval_data`` a seeded
``eval_share`` of the pairs is held out. Written to ``reward_model_info.json`` in the folder, with the training
scores' mean/std (``normalize="fixed"`` reads them) and the loss curve.

Not covered: margins, LoRA, several GPUs (TRL's trainer supports them; this function does not expose them).
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..common.errors import ConfigError
from ..common.names import TINY_MODEL_NAME
from ..config_input import is_number, non_negative, positive
from ..data.preference_pairs import read_preference_rows
from ..files.atomic import write_json_atomic
from ..files.output_folders import staged_folder
from ..models.reward_model import (
    INFO_FILENAME,
    encode_for_reward_model,
    load_sequence_classifier,
    score_token_ids,
    wants_chat_template,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RewardModelTrainingConfig:
    """Settings of :func:`train_reward_model`. Validated on construction; errors name the field and the value."""

    model: str = TINY_MODEL_NAME
    """The starting point: a causal-LM folder, a Hub id, the built-in tiny model, or a reward model to train on."""
    output_dir: str = "outputs/reward_model"
    """Where the trained reward model is saved (written atomically)."""
    max_steps: int = 300
    """Optimizer steps."""
    batch_size: int = 16
    """Pairs per step."""
    learning_rate: float = 1e-3
    """AdamW learning rate (1e-3 suits the tiny model; ~1e-5 a 135M one)."""
    lr_scheduler_type: str = "constant"
    """A transformers scheduler name."""
    weight_decay: float = 0.0
    center_rewards_coefficient: float | None = None
    """TRL's penalty on (r_chosen + r_rejected)^2 keeping scores near 0 (0.01 is TRL's suggestion); None: off."""
    max_length: int = 512
    """Tokens per sequence; longer ones lose their oldest tokens."""
    eval_share: float = 0.2
    """Share of the pairs held out when no ``eval_data`` is given."""
    use_chat_template: bool | None = None
    """None: render as conversations when the tokenizer has a chat template (the reward reads them the same way)."""
    seed: int = 0
    logging_steps: int = 10
    eval_batch_size: int = 32
    """Sequences per forward pass when measuring accuracy."""

    def __post_init__(self) -> None:
        for field in ("max_steps", "batch_size", "max_length", "logging_steps", "eval_batch_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"RewardModelTrainingConfig.{field}={value!r}; expected an integer >= 1")
        positive("RewardModelTrainingConfig.learning_rate", self.learning_rate)
        non_negative("RewardModelTrainingConfig.weight_decay", self.weight_decay)
        c = self.center_rewards_coefficient
        if c is not None and (not is_number(c) or c <= 0):
            raise ConfigError(f"RewardModelTrainingConfig.center_rewards_coefficient={c!r}; expected a number > 0 or None")
        if isinstance(self.eval_share, bool) or not isinstance(self.eval_share, (int, float)) or not (
                0 < self.eval_share < 1):
            raise ConfigError(f"RewardModelTrainingConfig.eval_share={self.eval_share!r}; expected a share in (0, 1)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"RewardModelTrainingConfig.seed={self.seed!r}; expected an integer")
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"RewardModelTrainingConfig.model={self.model!r}; give a folder, a Hub id or "
                              f"{TINY_MODEL_NAME!r}")


# ------------------------------------------------------------------------------------------- data
def split_pairs(rows: list[dict[str, Any]], eval_data: Any, eval_share: float,
                seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held-out) rows: ``eval_data`` when given, else a seeded ``eval_share`` of ``rows`` (at least one of
    each)."""
    if eval_data is not None:
        return rows, read_preference_rows(eval_data)
    if len(rows) < 2:
        raise ConfigError(f"{len(rows)} preference pair(s): at least 2 are needed to hold one out (or pass eval_data)")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(rows) - 1, max(1, round(eval_share * len(rows))))
    return [rows[i] for i in order[n_eval:]], [rows[i] for i in order[:n_eval]]


def encode_pairs(tokenizer: Any, rows: Sequence[dict[str, Any]], max_length: int,
                 use_chat_template: bool) -> tuple[list[list[int]], list[list[int]], int]:
    """Token ids of each row's (prompt + chosen) and (prompt + rejected), and how many sequences were cut."""
    chosen, rejected, cut = [], [], 0
    for row in rows:
        prompt = row.get("prompt", [] if not isinstance(row["chosen"], str) else "")
        for completion, out in ((row["chosen"], chosen), (row["rejected"], rejected)):
            ids, truncated = encode_for_reward_model(tokenizer, prompt, completion, max_length, use_chat_template)
            out.append(ids)
            cut += truncated
    return chosen, rejected, cut


def pairwise_accuracy(model: Any, pad_token_id: int, chosen: list[list[int]], rejected: list[list[int]],
                      kinds: Sequence[Any] | None, batch_size: int) -> dict[str, Any]:
    """Share of pairs with score(chosen) > score(rejected), overall and per kind; plus the mean margin."""
    model.eval()
    scores = score_token_ids(model, chosen + rejected, pad_token_id, batch_size)
    good, bad = scores[:len(chosen)], scores[len(chosen):]
    wins = [g > b for g, b in zip(good, bad)]
    out: dict[str, Any] = {"accuracy": sum(wins) / len(wins), "n": len(wins),
                           "mean_margin": sum(g - b for g, b in zip(good, bad)) / len(wins)}
    if kinds is not None and any(k is not None for k in kinds):
        out["by_kind"] = {str(k): sum(w for w, kk in zip(wins, kinds) if kk == k) / sum(1 for kk in kinds if kk == k)
                          for k in sorted({str(k) for k in kinds})}
    return out


def score_stats(model: Any, pad_token_id: int, sequences: list[list[int]], batch_size: int) -> dict[str, float]:
    """Mean and standard deviation of the scores of ``sequences`` (what ``normalize="fixed"`` divides by)."""
    model.eval()
    scores = score_token_ids(model, sequences, pad_token_id, batch_size)
    mean = sum(scores) / len(scores)
    return {"mean": mean, "std": math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores)), "n": len(scores)}


# ------------------------------------------------------------------------------------------- training
def run_reward_trainer(model: Any, tokenizer: Any, chosen: list[list[int]], rejected: list[list[int]],
                       cfg: RewardModelTrainingConfig) -> list[dict[str, Any]]:
    """TRL's ``RewardTrainer`` on pre-tokenized pairs; returns its log history (loss, accuracy, margin)."""
    import datasets
    from transformers import PrinterCallback, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    class LogLine(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                logger.info("step %d/%d: loss %.4f, pair accuracy %.3f, margin %.3f", state.global_step, state.max_steps,
                            logs["loss"], logs.get("accuracy", math.nan), logs.get("margin", math.nan))

    train = datasets.Dataset.from_dict({"chosen_ids": chosen, "rejected_ids": rejected})
    with tempfile.TemporaryDirectory(prefix="rm-trainer-") as scratch:
        args = RewardConfig(
            output_dir=scratch, max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler_type, weight_decay=cfg.weight_decay,
            center_rewards_coefficient=cfg.center_rewards_coefficient, logging_steps=cfg.logging_steps,
            save_strategy="no", report_to=[], bf16=False, activation_checkpointing=False, max_length=None,
            pad_to_multiple_of=None, seed=cfg.seed, data_seed=cfg.seed, disable_tqdm=True,
            dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(),
        )
        model.train()
        trainer = RewardTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                                callbacks=[LogLine()])
        trainer.remove_callback(PrinterCallback)  # it prints raw dicts; LogLine writes one readable line instead
        trainer.train()
        return list(trainer.state.log_history)


def train_reward_model(train_data: Any, config: RewardModelTrainingConfig | None = None, *, eval_data: Any = None,
                       **fields: Any) -> dict[str, Any]:
    """Train a reward model on preference pairs and save it; returns the summary also written to the folder's
    ``reward_model_info.json`` (see the module docstring).

    ``train_data``/``eval_data``: a JSONL/JSON/CSV/Parquet path, a ``datasets.Dataset`` or a list of dicts with
    ``chosen``, ``rejected`` and usually ``prompt`` (strings or conversations). Keyword ``fields`` are
    :class:`RewardModelTrainingConfig` fields (not with ``config``).
    """
    if config is not None and fields:
        raise ConfigError(f"pass either a RewardModelTrainingConfig or keyword fields, not both (got {sorted(fields)})")
    cfg = config or RewardModelTrainingConfig(**fields)
    start = time.perf_counter()
    train_rows, eval_rows = split_pairs(read_preference_rows(train_data), eval_data, cfg.eval_share, cfg.seed)
    with torch.random.fork_rng():  # the new score head's initial weights follow the seed, not the caller's RNG
        torch.manual_seed(cfg.seed)
        model, tokenizer = load_sequence_classifier(cfg.model, require_trained_head=False)
    chat = wants_chat_template(tokenizer, cfg.use_chat_template)
    train_chosen, train_rejected, cut_train = encode_pairs(tokenizer, train_rows, cfg.max_length, chat)
    eval_chosen, eval_rejected, cut_eval = encode_pairs(tokenizer, eval_rows, cfg.max_length, chat)
    kinds = [r.get("rejected_kind") for r in eval_rows]
    pad = tokenizer.pad_token_id
    before = pairwise_accuracy(model, pad, eval_chosen, eval_rejected, kinds, cfg.eval_batch_size)
    logger.info("reward model before training: held-out pairwise accuracy %.3f (%d pairs)", before["accuracy"],
                before["n"])
    train_start = time.perf_counter()
    history = run_reward_trainer(model, tokenizer, train_chosen, train_rejected, cfg)
    train_seconds = time.perf_counter() - train_start
    after = pairwise_accuracy(model, pad, eval_chosen, eval_rejected, kinds, cfg.eval_batch_size)
    logger.info("reward model after %d steps: held-out pairwise accuracy %.3f -> %.3f", cfg.max_steps,
                before["accuracy"], after["accuracy"])
    summary = {
        "config": asdict(cfg), "base_model": cfg.model, "chat_template": chat,
        "pairs": {"train": len(train_rows), "held_out": len(eval_rows)},
        "truncated_sequences": {"train": cut_train, "held_out": cut_eval},
        "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
        "held_out_before": before, "held_out_after": after,
        "score_stats": score_stats(model, pad, train_chosen + train_rejected, cfg.eval_batch_size),
        "loss_history": [{k: h[k] for k in ("step", "loss", "accuracy", "margin") if k in h}
                         for h in history if "loss" in h],
        "train_seconds": train_seconds,
    }
    out = save_reward_model(model, tokenizer, cfg.output_dir, summary)
    summary["output_dir"] = str(out)
    summary["total_seconds"] = time.perf_counter() - start
    write_json_atomic(out / INFO_FILENAME, summary)
    return summary


def save_reward_model(model: Any, tokenizer: Any, output_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write the model, its tokenizer and the summary into ``output_dir`` atomically (a staging folder moved into
    place)."""
    target = Path(output_dir)
    with staged_folder(target, what="reward model folder") as stage:
        model.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        write_json_atomic(stage / INFO_FILENAME, summary)
    return target
