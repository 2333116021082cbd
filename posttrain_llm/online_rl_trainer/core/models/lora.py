"""LoRA policies (peft): saving a trained one for use, and loading an adapter folder back onto its base model.

``lora_save`` (``TrainerConfig``) picks what ``OnlineRLTrainer.save_model`` writes for every algorithm:

- ``merged``: the LoRA update merged into a copy of the base weights, written as a plain ``from_pretrained``
  folder that needs neither peft nor the base model; the adapter alone goes to ``adapter/`` beside it;
- ``adapter``: only the adapter (``adapter_config.json`` + ``adapter_model.safetensors``), a few MB; load it with
  ``PeftModel.from_pretrained(base, folder)``, or give the folder to ``load_model_and_tokenizer`` /
  ``ModelEvaluator`` / ``evaluate_model --model``, which find the base from ``base_model_name_or_path``.

Precision: the adapter computes ``W x + s B(A x)``, the merged model ``(W + s BA) x``: equal up to float rounding,
not bit for bit in general (on the tiny model in float32 the logits happen to come out identical). Reloading the
adapter with peft reproduces the trained policy's logits exactly.

QLoRA (``load_in_4bit``, ``models/quantization.py``): merging into the 4-bit weights would round the merged weights to
NF4 again, so ``merged`` instead saves the adapter, reloads the base from ``base_model_name_or_path`` in its stored
precision (bf16/fp32) on the CPU, and merges into that -- the usual QLoRA deployment. That model computes with the
original weights, not the NF4 ones the adapter was trained against, so its logits differ from the training policy's
by the quantisation error; the adapter loaded onto the same 4-bit base reproduces the training policy.

Not covered: several adapters on one base.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from ..common.deprecations import quiet_library_checkpointing_aliases
from .quantization import is_quantized

ADAPTER_CONFIG = "adapter_config.json"
#: What ``save_model`` writes for a LoRA policy (``TrainerConfig.lora_save``).
LORA_SAVE_MODES = ("merged", "adapter")


def build_peft_config(config: Any) -> Any:
    """peft's ``LoraConfig`` for a causal LM from a ``TrainerConfig``'s ``lora_*`` fields."""
    try:
        from peft import LoraConfig
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("use_peft=True needs the 'peft' package: pip install 'posttrain-llm[peft]'") from exc
    return LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules, task_type="CAUSAL_LM",
    )


def save_lora_policy(policy: Any, folder: str | Path, mode: str) -> Path:
    """Write a peft ``policy`` into ``folder`` as ``mode`` (``merged`` or ``adapter``); see the module doc."""
    if mode not in LORA_SAVE_MODES:
        raise ValueError(f"lora_save={mode!r} is not supported; accepted values: {', '.join(LORA_SAVE_MODES)}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if mode == "adapter":
        policy.save_pretrained(str(out))
        return out
    policy.save_pretrained(str(out / "adapter"))
    if is_quantized(policy):
        merged = merge_into_full_precision_base(out / "adapter")
    else:
        merged = copy.deepcopy(policy).merge_and_unload()
    merged.save_pretrained(str(out))
    return out


def merge_into_full_precision_base(adapter_folder: str | Path) -> Any:
    """The adapter in ``adapter_folder`` merged into its base loaded in the base's stored precision, on the CPU."""
    from transformers import AutoModelForCausalLM

    from .resolution import local_files_only, resolve_model

    base_path = resolve_model(adapter_base_name(adapter_folder))
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype="auto", local_files_only=local_files_only(base_path))
    return load_adapter_onto(base, adapter_folder, merge=True)


def is_adapter_folder(path: str | Path) -> bool:
    """A folder holding a peft adapter and no full model weights of its own."""
    path = Path(path)
    full_weights = [*path.glob("model*.safetensors"), *path.glob("pytorch_model*.bin")]
    return (path / ADAPTER_CONFIG).is_file() and not full_weights


def adapter_base_name(folder: str | Path) -> str:
    """The base model an adapter folder was trained on (its ``base_model_name_or_path``)."""
    config_file = Path(folder) / ADAPTER_CONFIG
    base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{str(config_file)!r} names no base_model_name_or_path; load the base yourself and use "
                         "peft.PeftModel.from_pretrained(base, folder)")
    return base


def load_adapter_onto(base_model: Any, folder: str | Path, merge: bool = True) -> Any:
    """``base_model`` with the adapter in ``folder``: merged into a plain model (default) or as a ``PeftModel``."""
    try:
        from peft import PeftModel
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{str(folder)!r} is a LoRA adapter; loading it needs peft: "
                          "pip install 'posttrain-llm[peft]'") from exc
    with quiet_library_checkpointing_aliases():  # peft reads a deprecated transformers alias
        model = PeftModel.from_pretrained(base_model, str(folder))
    model.eval()
    return model.merge_and_unload() if merge else model
