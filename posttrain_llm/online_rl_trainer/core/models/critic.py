"""PPO's critic: a scalar value per token, as a separate model or as a head on the policy, and its save/load.

Three layouts (``TrainerConfig.critic_type`` / ``critic_model_name_or_path``):

- ``separate`` (default): a deep copy of the policy's backbone (``policy.base_model``, e.g. ``LlamaModel``) with a
  ``Linear(hidden, 1)`` head. This is the classic RLHF layout (Ziegler et al. 2019; InstructGPT), except that the
  critic starts from the *policy* rather than from a reward model: our rewards are functions, there is no reward
  model to copy (Huang et al. 2024, "The N+ implementation details of RLHF with PPO", detail 'value model init').
- ``separate`` with ``critic_model_name_or_path``: ``AutoModel.from_pretrained`` of another (smaller) model plus a
  head. It reads the *policy's* token ids, so it must share the policy's tokenizer; a different vocabulary is an
  error at construction.
- ``shared``: the head sits on the policy's last hidden state (:class:`PolicyWithValueHead`); one forward pass
  gives logits and values, and the value loss also trains the policy's backbone (weighted by ``vf_coef``).

The head starts small (weights ~ N(0, (0.1/sqrt(hidden))^2), bias 0), so first values are ~0 rather than a
random offset the critic must unlearn. Values are returned in float32.

On disk (``save_critic``): ``critic_config.json`` (layout), ``value_head.safetensors`` (keys ``weight``, ``bias``)
and, for ``separate``, the backbone as a ``from_pretrained`` folder in the same directory. Reload with
:func:`load_critic` (a shared head is re-attached to the policy saved in the parent folder).

Not covered: critics with their own tokenizer (text re-tokenisation), reward-model initialisation, LoRA on the critic.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..common.errors import ConfigError
from .weights import load_weights_into

CRITIC_CONFIG = "critic_config.json"
HEAD_FILE = "value_head.safetensors"


def hidden_size_of(model: Any) -> int:
    """The width of ``model``'s last hidden state, read from its config (hidden_size / n_embd / d_model)."""
    config = model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    for name in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ConfigError(f"cannot read the hidden size of {type(model).__name__}: its config has no hidden_size/n_embd/d_model")


def new_value_head(hidden_size: int) -> nn.Linear:
    """A ``Linear(hidden, 1)`` initialised small so the critic's first values are close to 0."""
    head = nn.Linear(hidden_size, 1)
    nn.init.normal_(head.weight, std=0.1 / math.sqrt(hidden_size))
    nn.init.zeros_(head.bias)
    return head


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as ``generate`` computes them: cumsum(mask) - 1, clamped at 0. (B, L) -> (B, L)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class ValueModel(nn.Module):
    """A backbone (a transformers base model returning hidden states) plus a scalar head: (B, L) ids -> (B, L) values."""

    def __init__(self, backbone: nn.Module, head: nn.Linear | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.value_head = head if head is not None else new_value_head(hidden_size_of(backbone))

    def forward(self, input_ids, attention_mask, position_ids=None, **cache: Any) -> torch.Tensor:
        """``cache``: at most one keyword, the backbone's KV cache (``cache=`` / ``past_key_values=``), which the
        forward extends: a prompt computed once for several completions (``backends/shared_prompt.py``)."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False, **cache)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return self.value_head(hidden).squeeze(-1).float()


class PolicyWithValueHead(nn.Module):
    """The ``shared`` layout: a causal LM and a value head on its last hidden state, one forward for both."""

    def __init__(self, policy: nn.Module, head: nn.Linear | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.value_head = head if head is not None else new_value_head(hidden_size_of(policy))

    def forward(self, input_ids, attention_mask, position_ids=None, logits_to_keep: int = 0):
        """-> (logits (B, K, V), values (B, K)) for the last K = ``logits_to_keep`` positions (all when 0)."""
        out = self.policy(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            output_hidden_states=True, logits_to_keep=logits_to_keep, use_cache=False,
        )
        hidden = out.hidden_states[-1]
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return out.logits, self.value_head(hidden).squeeze(-1).float()


# ------------------------------------------------------------------------------------------------ construction
def copy_policy_backbone(policy: nn.Module) -> nn.Module:
    """A deep copy of ``policy.base_model`` (the transformer without its LM head), all parameters trainable."""
    backbone = getattr(policy, "base_model", policy)
    if backbone is policy:
        raise ConfigError(
            f"cannot find the backbone of {type(policy).__name__} (no base_model); set critic_model_name_or_path "
            "to a model folder for the critic, or use critic_type='shared'"
        )
    backbone = copy.deepcopy(backbone)
    for p in backbone.parameters():
        p.requires_grad_(True)
    return backbone


def load_critic_backbone(name_or_path: str, tokenizer: Any) -> nn.Module:
    """``AutoModel`` at ``name_or_path`` (resolved like the policy); ConfigError naming the path when it does not
    load or when its vocabulary differs from the policy tokenizer's (the critic reads the policy's token ids)."""
    from transformers import AutoModel, AutoTokenizer

    from .resolution import resolve_model

    try:
        path = resolve_model(name_or_path)
        backbone = AutoModel.from_pretrained(path, dtype=torch.float32)
    except Exception as exc:
        raise ConfigError(
            f"critic_model_name_or_path={name_or_path!r} did not load as a model: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300] if str(exc) else ''}"
        ) from exc
    vocab_size = getattr(backbone.config.get_text_config() if hasattr(backbone.config, "get_text_config") else backbone.config,
                         "vocab_size", None)
    if isinstance(vocab_size, int) and vocab_size < len(tokenizer):
        raise ConfigError(
            f"critic_model_name_or_path={name_or_path!r} has vocab_size={vocab_size} but the policy tokenizer has "
            f"{len(tokenizer)} tokens; the critic must use the policy's tokenizer"
        )
    try:
        critic_tok = AutoTokenizer.from_pretrained(path)
    except Exception:  # noqa: BLE001 - a folder without a tokenizer: only the vocab size could be checked
        critic_tok = None
    if critic_tok is not None and critic_tok.get_vocab() != tokenizer.get_vocab():
        raise ConfigError(
            f"critic_model_name_or_path={name_or_path!r} uses a different tokenizer than the policy; the critic reads "
            "the policy's token ids, so pick a critic from the same model family (same vocabulary)"
        )
    for p in backbone.parameters():
        p.requires_grad_(True)
    return backbone


# ---------------------------------------------------------------------------------------------- save / load
def _write_head(head: nn.Linear, folder: Path) -> None:
    from safetensors.torch import save_file

    save_file({"weight": head.weight.detach().float().cpu().contiguous(),
               "bias": head.bias.detach().float().cpu().contiguous()}, str(folder / HEAD_FILE))


def _read_head(folder: Path) -> nn.Linear:
    from safetensors.torch import load_file

    tensors = load_file(str(folder / HEAD_FILE))
    head = nn.Linear(tensors["weight"].shape[1], 1)
    head.load_state_dict(tensors)
    return head


def save_critic(critic: nn.Module, folder: str | Path) -> Path:
    """Write a :class:`ValueModel` or :class:`PolicyWithValueHead`'s critic part into ``folder`` (see module doc)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(critic, ValueModel):
        critic.backbone.save_pretrained(str(folder))
        layout = {"critic_type": "separate", "backbone": "this folder (AutoModel.from_pretrained)"}
    elif isinstance(critic, PolicyWithValueHead):
        layout = {"critic_type": "shared", "backbone": "the policy in the parent folder"}
    else:
        raise TypeError(f"save_critic expects a ValueModel or PolicyWithValueHead, got {type(critic).__name__}")
    _write_head(critic.value_head, folder)
    (folder / CRITIC_CONFIG).write_text(json.dumps({**layout, "head_file": HEAD_FILE}, indent=2))
    return folder


def load_critic(folder: str | Path, policy_path: str | Path | None = None) -> nn.Module:
    """Reload a critic written by :func:`save_critic` (e.g. ``<save_model dir>/critic``).

    ``separate`` -> :class:`ValueModel` (call ``critic(input_ids, attention_mask)`` -> (B, L) values).
    ``shared`` -> :class:`PolicyWithValueHead` on the causal LM at ``policy_path`` (default: the parent folder).
    """
    from transformers import AutoModel, AutoModelForCausalLM

    folder = Path(folder)
    config_file = folder / CRITIC_CONFIG
    if not config_file.is_file():
        raise FileNotFoundError(f"{str(folder)!r} has no {CRITIC_CONFIG}; it is not a critic written by save_critic")
    layout = json.loads(config_file.read_text())
    head = _read_head(folder)
    if layout.get("critic_type") == "separate":
        return ValueModel(AutoModel.from_pretrained(str(folder), dtype=torch.float32), head)
    if layout.get("critic_type") == "shared":
        policy = AutoModelForCausalLM.from_pretrained(str(policy_path or folder.parent), dtype=torch.float32)
        return PolicyWithValueHead(policy, head)
    raise ValueError(f"{str(config_file)!r} has critic_type={layout.get('critic_type')!r}; expected 'separate' or 'shared'")


def load_critic_weights_into(critic: nn.Module, folder: str | Path) -> None:
    """Restore a checkpointed critic in place (same layout): backbone weights (separate only) and the head."""
    folder = Path(folder)
    if isinstance(critic, ValueModel):
        load_weights_into(critic.backbone, folder)
    critic.value_head.load_state_dict(_read_head(folder).state_dict())
