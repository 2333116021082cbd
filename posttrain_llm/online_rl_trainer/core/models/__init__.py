"""Models: name resolution (offline), loading, the built-in tiny model, LoRA adapters, 4-bit quantization, PPO's critic,
reward models used as rewards (``reward_model.py``).

``core.models`` keeps the names it had as a module (``resolve_model``, ``load_model_and_tokenizer``, ...); the
package's own code imports the submodules directly.
"""

from ..common.errors import ModelResolutionError
from ..common.names import SMOLLM2_ID
from ..files.cache import cache_dir
from .loading import load_model_and_tokenizer, prepare_tokenizer
from .resolution import hub_reachable, resolve_model

__all__ = ["SMOLLM2_ID", "ModelResolutionError", "cache_dir", "hub_reachable", "load_model_and_tokenizer",
           "prepare_tokenizer", "resolve_model"]
