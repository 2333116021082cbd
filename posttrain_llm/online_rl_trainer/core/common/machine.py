"""What this machine can do for a run: CUDA, bfloat16, bitsandbytes, vLLM, checked where work starts.

``TrainerConfig`` holds values only; :func:`check_machine` is called when training starts (``OnlineRLTrainer`` and
``PPOTrainer``) and raises ``ConfigError`` naming what the config asks for and this machine lacks. A
:class:`Machine` is a plain record, so tests describe a machine instead of patching probes:
``check_machine(config, Machine(cuda=True, bitsandbytes=False, ...))``.

Not covered: GPU memory, compute capability beyond bf16, multi-GPU topology (the launcher's business).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError


def package_installed(name: str) -> bool:
    """True when ``name`` can be imported here (found without importing it)."""
    return importlib.util.find_spec(name) is not None


def cuda_visible() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@functools.lru_cache(maxsize=1)  # a CPU flag: probed once per process, not per trainer and evaluator
def _cpu_supports_bf16() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True, kw_only=True)
class Machine:
    """What a machine offers: a visible CUDA device (with bf16), bf16 CPU instructions, bitsandbytes, vLLM."""

    cuda: bool = False
    cuda_bf16: bool = False
    cpu_bf16: bool = False
    bitsandbytes: bool = False
    vllm: bool = False

    @classmethod
    def probe(cls) -> "Machine":
        """This machine, as it is now."""
        cuda = cuda_visible()
        cuda_bf16 = False
        if cuda:
            import torch

            cuda_bf16 = bool(torch.cuda.is_bf16_supported())
        return cls(cuda=cuda, cuda_bf16=cuda_bf16, cpu_bf16=_cpu_supports_bf16(),
                   bitsandbytes=package_installed("bitsandbytes"), vllm=package_installed("vllm"))


def cpu_has_native_bf16() -> bool:
    """True when this CPU has native bfloat16 matmul instructions (AVX512-BF16 or AMX), as oneDNN reports them."""
    return _cpu_supports_bf16()


def cpu_bf16_autocast_on(setting: bool | str, use_gpu: bool, machine: Machine | None = None) -> bool:
    """Whether the CPU bf16 autocast path (``cpu_bf16_autocast``) runs: ``True`` as asked (:func:`check_machine`
    rejects it on a CPU without native bf16), ``"auto"`` where this CPU has native bf16, ``False`` never; never on
    a GPU run (use ``bf16`` there)."""
    if use_gpu or setting is False:
        return False
    if setting == "auto":
        return (machine.cpu_bf16 if machine is not None else _cpu_supports_bf16())
    return bool(setting)


def check_machine(config: Any, machine: Machine | None = None) -> None:
    """ConfigError when a ``TrainerConfig`` asks for hardware or packages ``machine`` (default: this one) lacks."""
    machine = machine if machine is not None else Machine.probe()
    if config.load_in_4bit:
        missing = [what for what, present in (("a visible CUDA device", machine.cuda),
                                              ("the bitsandbytes package", machine.bitsandbytes)) if not present]
        if missing:
            raise ConfigError(f"load_in_4bit=True (QLoRA) needs a visible CUDA device and bitsandbytes; missing here: "
                              f"{' and '.join(missing)}. Install bitsandbytes with pip install 'bitsandbytes>=0.46.1' "
                              "on a CUDA machine, or set load_in_4bit=False")
    if config.use_gpu and not machine.cuda:
        raise ConfigError("use_gpu=True but no CUDA device is visible; set use_gpu=False to train on CPU")
    if config.bf16:
        if config.use_gpu:
            if not machine.cuda_bf16:
                raise ConfigError("bf16=True but this GPU has no bfloat16 support; set bf16=False (fp32)")
        elif not machine.cpu_bf16:
            raise ConfigError("bf16=True but this CPU has no bfloat16 instructions; set bf16=False (fp32)")
    if getattr(config, "cpu_bf16_autocast", False) is True and not config.use_gpu and not machine.cpu_bf16:
        raise ConfigError("cpu_bf16_autocast=True but this CPU has no native bfloat16 instructions (AVX512-BF16 or "
                          "AMX): bf16 would be emulated and slower than fp32; set it to 'auto' or False")
    if config.use_vllm and not machine.vllm:
        # Both modes: in "server" mode TRL's client still needs vLLM locally (it syncs weights over its NCCL).
        raise ConfigError(f"use_vllm=True but vLLM is not installed here (vllm_mode={config.vllm_mode!r} needs it too); "
                          "pip install 'trl[vllm]' (TRL 1.16 supports vLLM 0.22-0.31) or set use_vllm=False")
