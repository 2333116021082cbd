"""Gathering the model card's facts from an `OnlineRLTrainer` and writing ``README.md`` into a saved folder.

``OnlineRLTrainer.save_model`` calls :func:`write_trainer_card` for every algorithm and layout, so every saved model
folder gets our card (``training/model_card.py``) instead of TRL's generic template (TRL's own card, which it writes into
``output_dir`` at every checkpoint, is switched off in ``backends/trl/trainers.py``; peft's template in an adapter folder is
overwritten). ``OnlineRLTrainer.write_model_card`` re-writes the card later with facts only the caller knows: the
dataset's name, the model a warm-up started from, the warm-up's numbers, a paired before/after comparison; those
facts are kept on the trainer, so a later ``save_model`` writes them again.

What the trainer knows by itself: the config, the rewards and weights, the data (size and ``datasets``
fingerprint, one prompt), the steps and training time, every held-out evaluation it ran (``evaluate()`` results
are cached per step; with one at step 0 and one at the last step it adds the paired before/after comparison), the
command line when the process is one of the package's CLIs, the library versions.
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from .model_card import ModelCardFacts, is_hub_id, render_model_card, settings_from_config

logger = logging.getLogger(__name__)

CARD_FILENAME = "README.md"
#: The facts a caller may add (``OnlineRLTrainer.write_model_card``); anything else is an error naming the key.
KNOWN_FACTS = ("dataset_name", "base_model", "warmup", "comparison", "command", "title", "license")
_PACKAGE_DIR = Path(__file__).resolve().parents[2]  # .../posttrain_llm
_FILES = {  # what save_model writes, in the order the card lists them
    "model.safetensors": "the weights", "config.json": "the model configuration",
    "generation_config.json": "generation defaults", "adapter_model.safetensors": "the LoRA adapter weights",
    "adapter_config.json": "the LoRA configuration (names the base model)",
    "tokenizer.json": "the tokenizer (with tokenizer_config.json, chat_template.jinja when there is one)",
    "online_rl_config.yaml": "the full training configuration (`TrainerConfig.from_yaml`)",
    "training_metrics.json": "every logged step's metrics (reward per component, KL, lengths, eval accuracy)",
    "reward_curve.png": "reward and held-out accuracy over the steps",
    "adapter": "the LoRA adapter alone, with its own card",
    "critic": "PPO's value model (`value_model.load_critic`)",
}


def write_trainer_card(trainer: Any, folder: str | Path, *, shown_as: str | Path | None = None,
                       best_effort: bool = False, **known: Any) -> Path | None:
    """Write ``README.md`` into ``folder`` (and into ``folder/adapter`` for a merged LoRA save) from ``trainer``.

    ``shown_as``: the folder's final path when ``folder`` is a staging folder (the snippets name the final one).
    ``known``: facts only the caller knows (``KNOWN_FACTS``); they are kept on the trainer for later saves.
    ``best_effort`` (``save_model``): a fact that cannot be gathered logs a warning and skips the card instead of
    failing the save of a trained model; writing the file still fails loudly (a full disk is the save's concern).
    """
    unknown = sorted(set(known) - set(KNOWN_FACTS))
    if unknown:
        raise TypeError(f"unknown model card fact(s) {unknown}; accepted: {', '.join(KNOWN_FACTS)}")
    kept = {**getattr(trainer, "_model_card_known", {}), **{k: v for k, v in known.items() if v is not None}}
    trainer._model_card_known = kept
    folder = Path(folder)
    try:
        facts = trainer_card_facts(trainer, str(shown_as or folder), **kept)
    except Exception as exc:
        if not best_effort:
            raise
        logger.warning("no model card written to %s: its facts could not be gathered (%s: %s)", shown_as or folder,
                       type(exc).__name__, exc)
        return None
    facts.files = present_files(folder)
    (folder / CARD_FILENAME).write_text(render_model_card(facts), encoding="utf-8")
    adapter = folder / "adapter"
    if facts.layout == "merged" and adapter.is_dir():
        facts.layout, facts.tokenizer_folder = "adapter", facts.folder
        facts.folder = str(Path(facts.folder) / "adapter")
        facts.files = present_files(adapter)
        (adapter / CARD_FILENAME).write_text(render_model_card(facts), encoding="utf-8")
    return folder / CARD_FILENAME


def trainer_card_facts(trainer: Any, folder: str, *, dataset_name: str | None = None, base_model: str | None = None,
                       warmup: dict[str, Any] | None = None, comparison: dict[str, Any] | None = None,
                       command: str | None = None, title: str | None = None,
                       license: str | None = None) -> ModelCardFacts:
    """The card's facts for a model saved in ``folder`` by ``trainer`` (see the module doc)."""
    from ..rewards.base import reward_name

    config = trainer.config
    cfg = config.to_dict()
    start = config.model_name_or_path
    base = base_model or start
    hub_id, note = describe_base(base)
    warm = None
    if warmup is not None or base != start:
        warm = {**(warmup or {}), "folder": start}
    settings, lora = settings_from_config(cfg)
    evaluations = _evaluations(trainer)
    steps = (getattr(trainer, "summary", None) or {}).get("global_step", int(trainer.backend.state.global_step))
    accelerator = getattr(trainer.backend, "accelerator", None)
    eval_fn = trainer.eval_reward_fn
    return ModelCardFacts(
        algorithm=config.trainer_type, base_model=base, folder=folder, hub_base_model=hub_id, base_model_note=note,
        warmup=warm, settings=settings, lora=lora,
        layout=config.lora_save if config.use_peft else "full",
        rewards=[(reward_name(f), float(w)) for f, w in zip(trainer.reward_funcs, trainer.reward_weights)],
        eval_reward=f"{reward_name(eval_fn)} ({type(eval_fn).__name__})",
        dataset=_dataset_facts(trainer.train_dataset, dataset_name),
        eval_dataset=_dataset_facts(trainer.eval_dataset, dataset_name and f"{dataset_name} (held-out split)"),
        example_prompt=trainer.train_dataset[0]["prompt"],
        steps=steps, train_seconds=(getattr(trainer, "summary", None) or {}).get("train_runtime"),
        num_processes=int(getattr(accelerator, "num_processes", 1) or 1),
        evaluations=evaluations, comparison=comparison or _before_after(trainer, steps),
        command=command or cli_command(), versions=_versions(config), title=title or config.run_name,
        license=license,
    )


def describe_base(name: str) -> tuple[str | None, str | None]:
    """(Hub id for the metadata or None, a note for the reader) for the model a run started from."""
    if name.startswith("builtin:"):
        return None, "built by posttrain-llm itself from a fixed seed; not on the Hub"
    path = Path(name)
    if path.exists():
        parent = _trained_from(path)
        if parent is None:
            return None, "a local folder"
        return (parent if is_hub_id(parent) and not Path(parent).exists() else None,
                f"a local folder saved by posttrain-llm from `{parent}`")
    return (name, None) if is_hub_id(name) else (None, None)


def cli_command(argv: list[str] | None = None, orig_argv: list[str] | None = None) -> str | None:
    """The command line, when this process is one of the package's CLIs (``online-rl``, ``python -m
    posttrain_llm...``); None for anything else (a user's script, a notebook, a test runner)."""
    argv = list(sys.argv if argv is None else argv)
    orig = list(getattr(sys, "orig_argv", argv) if orig_argv is None else orig_argv)
    if not argv or not argv[0]:
        return None
    script = Path(argv[0])
    if script.name == "online-rl":
        return shlex.join(["online-rl", *argv[1:]])
    try:
        ours = script.resolve().is_relative_to(_PACKAGE_DIR)
    except OSError:
        ours = False
    if not ours:
        return None
    if "-m" in orig[1:]:  # python [flags] -m module args: show it as "python -m module args"
        return shlex.join(["python", *orig[orig.index("-m", 1):]])
    return shlex.join(["python", *argv])


def present_files(folder: Path) -> list[tuple[str, str]]:
    return [(name + ("/" if (folder / name).is_dir() else ""), what) for name, what in _FILES.items()
            if (folder / name).exists()]


# ------------------------------------------------------------------------------------------------- helpers
def _trained_from(folder: Path) -> str | None:
    """The model a folder saved by this package was trained from (its ``online_rl_config.yaml``), else None."""
    config_file = folder / "online_rl_config.yaml"
    if not config_file.is_file():
        return None
    try:
        data = yaml.safe_load(config_file.read_text())
    except (OSError, yaml.YAMLError):
        return None
    name = data.get("model_name_or_path") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None


def _dataset_facts(dataset: Any, name: str | None) -> dict[str, Any]:
    if dataset is None:
        return {}
    return {"name": name, "size": len(dataset), "fingerprint": getattr(dataset, "_fingerprint", None)}


def _evaluations(trainer: Any) -> list[dict[str, Any]]:
    results = getattr(trainer, "_eval_results", {}) or {}
    return [{"step": step, "accuracy": r["accuracy"], "n": r.get("n"), "accuracy_ci": r.get("accuracy_ci")}
            for step, r in sorted(results.items()) if r is not None]


def _before_after(trainer: Any, last_step: int) -> dict[str, Any] | None:
    """The paired comparison of the step-0 and last-step evaluations, when the trainer ran both."""
    results = getattr(trainer, "_eval_results", {}) or {}
    before, after = results.get(0), results.get(last_step)
    if before is None or after is None or last_step == 0 or "records" not in before:
        return None
    from ..eval.compare import compare_results

    try:
        return compare_results(before, after, seed=trainer.config.seed)
    except ValueError:  # not comparable (different rows or settings): show the accuracies only
        return None


def _versions(config: Any) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = ["posttrain-llm", "torch", "transformers"]
    names += ["trl"] if config.trainer_type in ("grpo", "rloo") else []
    names += ["peft"] if config.use_peft else []
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
