"""QLoRA (``TrainerConfig.load_in_4bit``): a frozen 4-bit NF4 base with LoRA adapters trained on top.

The recipe is QLoRA's (Dettmers et al. 2023, arXiv:2305.14314): NF4 weights, double quantisation of the
quantisation constants, matmuls in bf16 (fp32 where the GPU has no bf16), through bitsandbytes. The policy is
loaded with :func:`policy_load_kwargs` onto this process's GPU (accelerate's local process index, so under
``accelerate launch`` with DDP each process holds its own 4-bit replica), then :func:`prepare_for_kbit_training`
(peft's ``prepare_model_for_kbit_training``: freeze the base, upcast the non-quantised layers to fp32, enable
gradient checkpointing when asked) runs before TRL wraps it with the LoRA config. TRL stores the adapter weights
in bf16 for quantised bases, as the paper recommends.

The 4-bit weights are never merged into: ``lora_save="merged"`` reloads the base in its stored precision on the
CPU and merges the adapter into that (``lora.save_lora_policy``).

Not covered: PPO (its separate critic is a trainable copy of the policy backbone, which cannot train in 4 bits;
rejected by ``TrainerConfig``), DeepSpeed/FSDP launches (QLoRA there needs ``bnb_4bit_quant_storage`` and no
device map; refused with a ConfigError), 8-bit loading, quantisation methods other than bitsandbytes.
"""

from __future__ import annotations

from typing import Any

from ..common.errors import ConfigError


def qlora_settings(bf16_supported: bool) -> dict[str, Any]:
    """The ``BitsAndBytesConfig`` arguments of QLoRA: NF4, double quantisation, bf16 compute (else fp32)."""
    import torch

    return {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": torch.bfloat16 if bf16_supported else torch.float32,
    }


def qlora_load_kwargs(*, device_index: int, bf16_supported: bool) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for a 4-bit policy on GPU ``device_index``.

    ``dtype`` (the compute dtype) applies to the layers left unquantised (embeddings, norms, lm_head);
    :func:`prepare_for_kbit_training` upcasts them to fp32 afterwards.
    """
    from transformers import BitsAndBytesConfig

    settings = qlora_settings(bf16_supported)
    return {
        "quantization_config": BitsAndBytesConfig(**settings),
        "device_map": {"": device_index},
        "dtype": settings["bnb_4bit_compute_dtype"],
    }


def policy_load_kwargs(config: Any) -> dict[str, Any]:
    """Extra ``from_pretrained`` arguments for the policy of a ``TrainerConfig``: none unless ``load_in_4bit``."""
    if not config.load_in_4bit:
        return {}
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    for flag, name in (("ACCELERATE_USE_DEEPSPEED", "DeepSpeed"), ("ACCELERATE_USE_FSDP", "FSDP")):
        if parse_flag_from_env(flag):
            raise ConfigError(
                f"load_in_4bit=True under a {name} launch is not supported (4-bit shards need bnb_4bit_quant_storage "
                "and no device map); launch with configs/accelerate/ddp.yaml, or set load_in_4bit=False"
            )
    # Native bf16 only (Ampere+): torch's default also counts emulation, which would make pre-Ampere matmuls slow.
    return qlora_load_kwargs(device_index=PartialState().local_process_index,
                             bf16_supported=torch.cuda.is_bf16_supported(including_emulation=False))


def is_quantized(model: Any) -> bool:
    """True for a model (or a peft model around one) whose base was loaded in 4 or 8 bits."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def prepare_for_kbit_training(model: Any, gradient_checkpointing: bool,
                              gradient_checkpointing_kwargs: dict[str, Any] | None = None) -> Any:
    """peft's ``prepare_model_for_kbit_training`` with the trainer's gradient-checkpointing settings."""
    from peft import prepare_model_for_kbit_training

    from ..common.deprecations import quiet_library_checkpointing_aliases

    with quiet_library_checkpointing_aliases():  # peft calls transformers' deprecated gradient_checkpointing_enable
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                               gradient_checkpointing_kwargs=gradient_checkpointing_kwargs)
