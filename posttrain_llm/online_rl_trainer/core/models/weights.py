"""Restoring saved weights into a live model, exactly: a ``save_pretrained`` folder or a LoRA adapter.

``from_pretrained`` builds a new model; resuming a run needs the saved numbers put back into the model the optimizer
already holds. Tied parameters saved once (``lm_head.weight`` tied to the embeddings) are accepted as missing;
anything else missing or unexpected is an error naming the folder.

Not covered: sharded (DeepSpeed/FSDP) states, ``pytorch_model.bin`` folders.
"""

from __future__ import annotations

from pathlib import Path

import torch


def _safetensors_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    files = [f for f in files if f.name != "value_head.safetensors"]
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {str(folder)!r}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def load_weights_into(model: torch.nn.Module, folder: str | Path) -> None:
    """Load the ``save_pretrained`` weights in ``folder`` into ``model`` in place, exactly.

    Missing keys are accepted only for parameters tied to a loaded one (e.g. ``lm_head.weight`` tied to the
    embeddings, which ``save_pretrained`` writes once); anything else missing or unexpected raises.
    """
    folder = Path(folder)
    state = _safetensors_state(folder)
    result = model.load_state_dict(state, strict=False)
    loaded_ids = {id(p) for name, p in model.named_parameters(remove_duplicate=False) if name in state}
    params = dict(model.named_parameters(remove_duplicate=False))
    untied_missing = [k for k in result.missing_keys if k not in params or id(params[k]) not in loaded_ids]
    untied_missing = [k for k in untied_missing if k in params]  # buffers (rotary caches) are rebuilt by the model
    if untied_missing or result.unexpected_keys:
        raise RuntimeError(
            f"weights in {str(folder)!r} do not match {type(model).__name__}: missing {untied_missing[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}"
        )


def load_adapter_into(peft_model: torch.nn.Module, folder: str | Path) -> None:
    """Load a saved LoRA adapter (``adapter_model.safetensors``) into a peft model in place."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(folder) / "adapter_model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{str(folder)!r} holds no adapter_model.safetensors; was the run saved without LoRA?")
    result = set_peft_model_state_dict(peft_model, load_file(str(path)))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise RuntimeError(f"adapter in {str(folder)!r} has keys the model lacks: {unexpected[:5]}")
