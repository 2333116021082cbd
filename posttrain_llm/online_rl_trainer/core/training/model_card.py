"""The ``README.md`` model card of a saved model folder, rendered from facts about the run.

Pure: :func:`render_model_card` takes a :class:`ModelCardFacts` and returns markdown (YAML front matter with the
Hugging Face Hub metadata, then the card); nothing here reads files, the clock or the trainer. Gathering the facts
from a trainer and writing the file is ``training/model_card_facts.py``'s job.

The card says what a reader of the folder (or of its Hub page) needs: the model training started from (and a
warm-up in between, when there was one), the algorithm and its main settings, the rewards and their weights, the
data, the steps and time, held-out accuracy before/after when it was measured, how to reproduce the run and how to
load and evaluate the model. Hub metadata: ``library_name`` (``transformers``, or ``peft`` for an adapter folder),
``base_model`` only when it is a Hub id (a built-in model or a local folder has none the Hub would accept),
``pipeline_tag`` and ``tags``.

Not covered: ``model-index`` evaluation metadata (the Hub validates it against its own dataset/metric ids) and
licences (the card cannot know the base model's; a ``license`` fact, when given, is passed through).
"""

from __future__ import annotations

import math
import pprint
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

#: Settings shown for every algorithm, then per algorithm, in this order (``TrainerConfig`` field names).
_COMMON_SETTINGS = ("learning_rate", "lr_scheduler_type", "warmup_ratio", "max_steps", "per_device_train_batch_size",
                    "gradient_accumulation_steps", "num_generations", "max_prompt_length", "max_completion_length",
                    "temperature", "top_p", "kl_coef", "seed", "bf16")
_ALGORITHM_SETTINGS = {
    "grpo": ("loss_type", "scale_rewards", "clip_range", "clip_range_high", "num_iterations"),
    "rloo": ("clip_range", "clip_range_high", "num_iterations"),
    "ppo": ("ppo_epochs", "num_mini_batches", "gamma", "lam", "vf_coef", "vf_clip", "kl_estimator", "adaptive_kl",
            "whiten_advantages", "critic_type"),
}
_LORA_SETTINGS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_save", "load_in_4bit")
_ALGORITHM_NAMES = {"grpo": "GRPO", "rloo": "RLOO", "ppo": "PPO"}
#: A Hub repository id: ``name`` or ``owner/name`` (letters, digits, ``-``, ``_``, ``.``; no ``--`` or ``..``).
_HUB_ID = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][\w.\-]{0,95}(/[A-Za-z0-9][\w.\-]{0,95})?$")
_LAYOUTS = ("full", "merged", "adapter")
_MAX_EXAMPLE_CHARS = 600


@dataclass
class ModelCardFacts:
    """What is known about a saved model and the run that produced it. Only ``algorithm``, ``base_model`` and
    ``folder`` are required; every other fact is shown when known and left out (or said to be unknown) when not."""

    algorithm: str
    """``grpo``, ``rloo`` or ``ppo``."""
    base_model: str
    """The model training started from, as it was named (a Hub id, ``builtin:...``, or a folder)."""
    folder: str
    """Where the model was saved (used in the loading snippets)."""
    hub_base_model: str | None = None
    """``base_model`` for the Hub metadata: a Hub id, or None for a built-in model or a local folder."""
    base_model_note: str | None = None
    """A sentence about the base, e.g. what a local folder was trained from."""
    warmup: dict[str, Any] | None = None
    """A supervised warm-up between ``base_model`` and RL: its numbers (steps, seconds, ...) and ``folder``."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Main settings by ``TrainerConfig`` name (see :func:`settings_from_config`)."""
    lora: dict[str, Any] | None = None
    layout: str = "full"
    """``full`` (a from_pretrained folder), ``merged`` (LoRA merged in, adapter in ``adapter/``) or ``adapter``."""
    tokenizer_folder: str | None = None
    """Where the tokenizer is, when not in ``folder`` (the ``adapter/`` part of a merged save)."""
    rewards: list[tuple[str, float]] = field(default_factory=list)
    eval_reward: str | None = None
    dataset: dict[str, Any] = field(default_factory=dict)
    """Training data: ``name``, ``size``, ``fingerprint`` (each optional)."""
    eval_dataset: dict[str, Any] = field(default_factory=dict)
    example_prompt: Any = None
    """One training prompt (a string or chat messages), to show the input format."""
    steps: int | None = None
    train_seconds: float | None = None
    num_processes: int = 1
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    """Held-out accuracy by step: dicts with ``step``, ``accuracy``, ``n`` (and optionally ``accuracy_ci``)."""
    comparison: dict[str, Any] | None = None
    """The paired before/after comparison (``compare_results``): ``accuracy_a``/``_b``, ``n_paired``, ``mcnemar_p``,
    ``difference_b_minus_a``, ``difference_ci95``."""
    config_file: str | None = "online_rl_config.yaml"
    command: str | None = None
    """The command line that ran the training, when it came from one of the package's CLIs."""
    files: list[tuple[str, str]] = field(default_factory=list)
    """(name, what it is) for the files and folders beside the weights."""
    versions: dict[str, str] = field(default_factory=dict)
    title: str | None = None
    license: str | None = None

    def __post_init__(self) -> None:
        if self.algorithm not in _ALGORITHM_NAMES:
            raise ValueError(f"algorithm={self.algorithm!r}; accepted: {', '.join(_ALGORITHM_NAMES)}")
        if self.layout not in _LAYOUTS:
            raise ValueError(f"layout={self.layout!r}; accepted: {', '.join(_LAYOUTS)}")
        if self.hub_base_model is not None and not is_hub_id(self.hub_base_model):
            raise ValueError(f"hub_base_model={self.hub_base_model!r} is not a Hub repository id ('owner/name'); "
                             "pass None for a built-in model or a local folder")


def is_hub_id(name: str) -> bool:
    """True for a string shaped like a Hub repository id (``gpt2``, ``owner/name``); says nothing of existence."""
    return isinstance(name, str) and not name.startswith("builtin:") and bool(_HUB_ID.match(name))


def settings_from_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(main settings, LoRA settings or None) picked from a ``TrainerConfig.to_dict()`` for the card."""
    names = (*_COMMON_SETTINGS, *_ALGORITHM_SETTINGS.get(config.get("trainer_type"), ()))
    settings = {name: config[name] for name in names if name in config}
    if settings.get("clip_range_high", 0) is None:  # None means "same as clip_range": nothing to show
        settings.pop("clip_range_high")
    if config.get("adaptive_kl"):
        settings["kl_target"] = config.get("kl_target")
    lora = {name: config[name] for name in _LORA_SETTINGS if name in config} if config.get("use_peft") else None
    return settings, lora


def card_metadata(facts: ModelCardFacts) -> dict[str, Any]:
    """The YAML front matter as a dict (Hub model-card metadata)."""
    meta: dict[str, Any] = {}
    if facts.license:
        meta["license"] = facts.license
    meta["library_name"] = "peft" if facts.layout == "adapter" else "transformers"
    if facts.hub_base_model:
        meta["base_model"] = facts.hub_base_model
    meta["pipeline_tag"] = "text-generation"
    tags = ["posttrain-llm", facts.algorithm, "reinforcement-learning"]
    if facts.algorithm in ("grpo", "rloo"):
        tags.append("trl")
    if facts.lora is not None:
        tags.append("lora")
    meta["tags"] = tags
    return meta


def render_model_card(facts: ModelCardFacts) -> str:
    """The whole ``README.md``: front matter, then the sections below, in order."""
    front = yaml.safe_dump(card_metadata(facts), sort_keys=False, allow_unicode=True)
    sections = [_intro(facts), _training(facts), _data(facts), _results(facts), _loading(facts),
                _reproduce(facts), _files(facts)]
    return f"---\n{front}---\n\n" + "\n\n".join(s for s in sections if s) + "\n"


# ------------------------------------------------------------------------------------------------- sections
def _algorithm(facts: ModelCardFacts) -> str:
    return _ALGORITHM_NAMES[facts.algorithm]


def _intro(facts: ModelCardFacts) -> str:
    title = facts.title or f"{_algorithm(facts)} on {facts.base_model.rstrip('/').split('/')[-1]}"
    kind = {"full": "a causal language model", "merged": "a causal language model (LoRA merged into the weights)",
            "adapter": "a LoRA adapter"}[facts.layout]
    lines = [f"# {title}", "",
             f"This folder holds {kind} trained with online reinforcement learning ({_algorithm(facts)}) by "
             "posttrain-llm's `OnlineRLTrainer`.", "",
             f"- **Base model:** `{facts.base_model}`" + (f" ({facts.base_model_note})" if facts.base_model_note else "")]
    if facts.warmup is not None:
        numbers = ", ".join(f"{k.replace('_', ' ')} {_fmt(v)}" for k, v in facts.warmup.items() if k != "folder")
        where = f" (saved in `{facts.warmup['folder']}`)" if facts.warmup.get("folder") else ""
        lines.append(f"- **Warm-up:** RL started from a supervised warm-up of the base model{where}"
                     + (f": {numbers}" if numbers else ""))
    lines.append(f"- **Algorithm:** {_algorithm(facts)}")
    if facts.rewards:
        lines.append("- **Rewards:** " + ", ".join(f"`{name}` (weight {_fmt(w)})" for name, w in facts.rewards))
    if facts.steps is not None:
        took = f" in {_duration(facts.train_seconds)}" if facts.train_seconds is not None else ""
        procs = f" on {facts.num_processes} processes" if facts.num_processes > 1 else ""
        plural = "" if facts.steps == 1 else "s"
        lines.append(f"- **Training:** {facts.steps} optimizer step{plural}{took}{procs}")
    return "\n".join(lines)


def _training(facts: ModelCardFacts) -> str:
    if not facts.settings and not facts.lora:
        return ""
    rows = ["## Training settings", "", "| setting | value |", "|---|---|"]
    rows += [f"| `{k}` | {_fmt(v)} |" for k, v in facts.settings.items()]
    if facts.lora:
        rows += [f"| `{k}` | {_fmt(v)} |" for k, v in facts.lora.items()]
    rows += ["", "`per_device_train_batch_size` counts completions (whole groups of `num_generations`)."]
    return "\n".join(rows)


def _describe_data(data: dict[str, Any]) -> str:
    parts = [f"`{data['name']}`" if data.get("name") else "unnamed"]
    if data.get("size") is not None:
        parts.append(f"{data['size']} rows")
    if data.get("fingerprint"):
        parts.append(f"`datasets` fingerprint `{data['fingerprint']}`")
    return ", ".join(parts)


def _data(facts: ModelCardFacts) -> str:
    if not facts.dataset and not facts.eval_dataset and facts.example_prompt is None:
        return ""
    lines = ["## Data", ""]
    if facts.dataset:
        lines.append(f"- Training prompts: {_describe_data(facts.dataset)}")
    if facts.eval_dataset:
        lines.append(f"- Held-out evaluation: {_describe_data(facts.eval_dataset)}")
    example = _example_literal(facts.example_prompt)
    if example is not None:
        lines += ["", "A training prompt (the input format the model was trained on):", "", "```python", example, "```"]
    return "\n".join(lines)


def _results(facts: ModelCardFacts) -> str:
    lines = ["## Results", ""]
    c = facts.comparison
    if c:
        lines += ["Held-out accuracy (greedy decoding), before and after RL, on the same problems:", "",
                  "| | accuracy |", "|---|---|", f"| before RL | {_acc(c.get('accuracy_a'))} |",
                  f"| after RL | {_acc(c.get('accuracy_b'))} |"]
        diff = c.get("difference_b_minus_a")
        if diff is not None:
            ci = c.get("difference_ci95") or []
            ci_text = f" (95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}])" if len(ci) == 2 else ""
            lines.append(f"| change | {diff:+.3f}{ci_text} |")
        if c.get("mcnemar_p") is not None:
            lines += ["", f"Paired over {c.get('n_paired')} problems: McNemar exact p = {c['mcnemar_p']:.3g} "
                          f"({c.get('only_b', '?')} solved only after RL, {c.get('only_a', '?')} only before)."]
    if facts.evaluations:
        if c:
            lines.append("")
        eval_reward = f", judged by {facts.eval_reward}" if facts.eval_reward else ""
        lines += [f"Held-out accuracy during training (greedy{eval_reward}):", "", "| step | accuracy | problems |",
                  "|---|---|---|"]
        lines += [f"| {e['step']} | {_acc(e['accuracy'])} | {e.get('n', '?')} |" for e in facts.evaluations]
    if not c and not facts.evaluations:
        lines.append("No held-out evaluation was recorded for this run (pass `eval_data` to `OnlineRLTrainer`, or "
                     "evaluate the folder as shown below).")
    return "\n".join(lines)


def _loading(facts: ModelCardFacts) -> str:
    folder, tok_folder = facts.folder, facts.tokenizer_folder or facts.folder
    tok_arg = "folder" if tok_folder == folder else repr(tok_folder)
    max_new = facts.settings.get("max_completion_length", 256)
    if facts.layout == "adapter":
        load = ["from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer", "",
                f"folder = {folder!r}  # this folder (or its Hub id once pushed)",
                "model = AutoPeftModelForCausalLM.from_pretrained(folder)  # the base named in adapter_config.json",
                *([] if tok_arg == "folder" else ["# the tokenizer is saved in the folder above this adapter"]),
                f"tokenizer = AutoTokenizer.from_pretrained({tok_arg})"]
    else:
        load = ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                f"folder = {folder!r}  # this folder (or its Hub id once pushed)",
                "model = AutoModelForCausalLM.from_pretrained(folder)",
                f"tokenizer = AutoTokenizer.from_pretrained({tok_arg})"]
    example = _example_literal(facts.example_prompt)
    if isinstance(facts.example_prompt, str):  # trained on plain text prompts, not chats
        prompt = example if example is not None else "'Your prompt'  # written like the training prompts"
        load += [f"prompt = {prompt}", "inputs = tokenizer(prompt, return_tensors='pt', add_special_tokens=False)"]
    else:
        messages = example if example is not None else "[{'role': 'user', 'content': 'What is 12 + 7?'}]"
        load += [f"messages = {messages}",
                 "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors='pt',",
                 "                                       return_dict=True)"]
    load += [f"output = model.generate(**inputs, max_new_tokens={max_new}, do_sample=False)",
             "print(tokenizer.decode(output[0, inputs['input_ids'].shape[1]:], skip_special_tokens=True))"]
    lines = ["## How to load it", "", "```python", *load, "```"]
    if facts.layout == "merged":
        lines += ["", "The LoRA adapter alone is in `adapter/` (load it onto the base model with peft)."]
    lines += ["", "Held-out accuracy with posttrain-llm's evaluator (greedy, the same grading as above):", "",
              "```python", _evaluator_snippet(facts, folder, max_new), "```"]
    if facts.dataset.get("name"):
        lines += ["", "or from the command line:", "", "```bash",
                  f"python -m posttrain_llm.online_rl_trainer.examples.evaluate_model --model {folder} "
                  f"--dataset {facts.dataset['name']}", "```"]
    return "\n".join(lines)


def _evaluator_snippet(facts: ModelCardFacts, folder: str, max_new: int) -> str:
    reward = facts.eval_reward or "the reward that judges a completion"
    return "\n".join([
        "from posttrain_llm.online_rl_trainer import ModelEvaluator",
        "",
        f"evaluator = ModelEvaluator({folder!r}, max_new_tokens={max_new})  # adapter folders load onto their base",
        f"# eval_rows: rows with a 'prompt' (and what the reward needs, e.g. 'answer'); reward_fn: {reward}",
        "result = evaluator.evaluate(eval_rows, reward_fn)",
        "print(result['accuracy'], result['accuracy_ci'])",
    ])


def _reproduce(facts: ModelCardFacts) -> str:
    lines = ["## Reproduce", ""]
    if facts.command:
        lines += ["The command that trained it:", "", "```bash", facts.command, "```", ""]
    if facts.config_file:
        rewards = ", ".join(f"{name} (weight {_fmt(w)})" for name, w in facts.rewards) or "the rewards above"
        data_note = _describe_data(facts.dataset).replace("`", "") if facts.dataset else "the training prompts"
        lines += [f"Every setting is in `{facts.config_file}` (a `TrainerConfig`):", "", "```python",
                  "from posttrain_llm.online_rl_trainer import OnlineRLTrainer, TrainerConfig", "",
                  f"config = TrainerConfig.from_yaml({facts.config_file!r})",
                  f"rewards = [...]  # {rewards}",
                  f"train_data = ...  # {data_note}",
                  "trainer = OnlineRLTrainer(config, rewards, train_data)",
                  "trainer.train()", "trainer.save_model()", "```"]
        if facts.warmup is not None:
            lines += ["", "Its `model_name_or_path` is the warm-up folder; "
                          + ("the command above" if facts.command else "the same warm-up") + " recreates it."]
    if facts.versions:
        lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in facts.versions.items()) + "."]
    return "\n".join(lines) if len(lines) > 2 else ""


def _files(facts: ModelCardFacts) -> str:
    if not facts.files:
        return ""
    return "\n".join(["## Files", "", *[f"- `{name}`: {what}" for name, what in facts.files]])


# ------------------------------------------------------------------------------------------------- formatting
def _example_literal(prompt: Any) -> str | None:
    """A Python literal of ``prompt`` for the snippets, or None when there is none or it is too long to show."""
    if prompt is None:
        return None
    text = repr(prompt) if isinstance(prompt, str) else pprint.pformat(prompt, width=100, sort_dicts=False)
    return text if len(text) <= _MAX_EXAMPLE_CHARS else None


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _acc(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
