"""Loading a resolved model and its tokenizer: plain folders, Hub ids, and LoRA adapter folders (merged or not).

``load_model_and_tokenizer`` is what the trainer, the evaluator and the examples call; the tokenizer it returns
always has a pad token and pads on the left (generation). Resolution (name -> folder) is ``models/resolution.py``.
"""

from __future__ import annotations

from pathlib import Path

from ..common.errors import ConfigError
from .lora import adapter_base_name, is_adapter_folder, load_adapter_onto
from .resolution import local_files_only, resolve_model


def load_model_and_tokenizer(name: str, *, dtype=None, device: str | None = None, merge_lora: bool = True,
                             **model_kwargs):
    """Resolve ``name`` and load ``(model, tokenizer)``; the tokenizer gets a pad token and left padding.

    A LoRA adapter folder (``adapter_config.json``, no model weights) is loaded onto its base model (its
    ``base_model_name_or_path``, resolved like any name) and merged into a plain model; ``merge_lora=False`` keeps
    the ``PeftModel`` (its logits are the trained policy's exactly; merged ones agree to float rounding). The
    tokenizer comes from the adapter folder when it holds one (``save_model`` writes it), else from the base.

    ``model_kwargs`` go to the model's ``from_pretrained`` (e.g. ``quantization.policy_load_kwargs``; their
    ``dtype`` wins over ``dtype``). An adapter folder cannot be loaded onto a quantised base: merging into 4-bit
    weights is lossy.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    adapter = path if is_adapter_folder(path) else None
    if adapter is not None:
        if model_kwargs.get("quantization_config") is not None:
            raise ConfigError(f"{str(adapter)!r} is a LoRA adapter; merging it into a quantised (4-bit) base would be "
                              "lossy. Merge it in full precision first (load_model_and_tokenizer(folder) and "
                              "save_pretrained) and quantise that folder")
        path = resolve_model(adapter_base_name(adapter))
    local = local_files_only(path)
    has_own_tokenizer = adapter is not None and (Path(adapter) / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(adapter if has_own_tokenizer else path, local_files_only=local)
    prepare_tokenizer(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(
        path, **{"dtype": dtype or torch.float32, "local_files_only": local, **model_kwargs})
    if adapter is not None:
        model = load_adapter_onto(model, adapter, merge=merge_lora)
    if device:
        model.to(device)
    return model, tokenizer


def prepare_tokenizer(tokenizer) -> None:
    """Left padding for generation and a pad token (falls back to EOS, as TRL does)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
