"""The built-in tiny model: a character-level tokenizer and a ~1M-parameter Llama, built from a seed and cached.

Why it exists: on a 2-core CPU a real 135M model takes 20-45 s per GRPO step and does not gain accuracy within
minutes. Like nanoGPT's character-level Shakespeare, this model is small enough for a laptop and real enough to
learn: after a supervised warm-up on the arithmetic task (the demo's targets come from a sloppy teacher that forgets
most carries, see ``examples/common.warmup_examples``), RL measurably improves held-out accuracy in a few minutes.

- Tokenizer: one token per printable ASCII character plus ``\\n``, and special tokens ``<pad> <s> <unk>`` and the
  ChatML markers ``<|im_start|> <|im_end|>`` (EOS is ``<|im_end|>``), with a ChatML chat template. It is a
  ``PreTrainedTokenizerFast`` and saves/reloads exactly. Llama, not Qwen2: ``AutoTokenizer`` maps a Qwen2 config to
  ``Qwen2Tokenizer``, whose pre-tokenizer silently drops spaces.
- Model: ``LlamaForCausalLM``, hidden 128, 4 layers, 4 heads / 2 KV heads, MLP 512, tied embeddings.

Its supervised warm-up (the answer format, before RL) is ``training/warmup.py``. It does not cover general chat:
the model knows only what it was taught.
"""

from __future__ import annotations

import logging
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any

from ..files.cache import cache_dir

logger = logging.getLogger(__name__)

TINY_VERSION = "v1"
SPECIAL_TOKENS = ["<pad>", "<s>", "<unk>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_ARCH: dict[str, Any] = dict(
    hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=True, rope_theta=10000.0,
)


def build_char_tokenizer():
    """A character-level ``PreTrainedTokenizerFast`` with ChatML markers (left padding)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in "\t\r\x0b\x0c"]  # printable ASCII + space + newline
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", unk_token="<unk>", eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"], padding_side="left", model_max_length=TINY_ARCH["max_position_embeddings"],
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_model(tokenizer, seed: int = 0):
    """A randomly initialised ``LlamaForCausalLM`` sized by ``TINY_ARCH`` (deterministic for a seed)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, **TINY_ARCH,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def ensure_tiny_model(name: str = "builtin:tiny-char-llama", seed: int = 0) -> Path:
    """Build (once) and save the tiny model + tokenizer to the cache; return the folder."""
    if name != "builtin:tiny-char-llama":
        raise ValueError(f"unknown built-in model {name!r}; available: ['builtin:tiny-char-llama']")
    target = cache_dir() / "models" / f"tiny-char-llama-{TINY_VERSION}-seed{seed}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, seed=seed)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its folder is complete
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
