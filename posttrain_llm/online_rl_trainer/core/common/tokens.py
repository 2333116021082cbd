"""Token helpers shared by generation, evaluation and PPO: prompt encoding, left padding, EOS ids, completion length.

One place decides how a prompt (a chat or a plain string) becomes token ids, so the prompt-length check, the
evaluator, the warm-up and PPO's rollout all see the same tokens.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

Tensor = torch.Tensor


def encode_prompt(tokenizer: Any, prompt: Any) -> list[int]:
    """Token ids of one prompt: a chat (list of messages) through the chat template, a string as is."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    enc = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(enc["input_ids"])


def max_chars_per_token(tokenizer: Any) -> int | None:
    """The most characters of text one token can stand for (its longest vocabulary entry), or None when the
    tokenizer does not list its vocabulary. Byte-level BPE writes one character per byte and SentencePiece one per
    character (byte-fallback entries like ``<0xE9>`` are longer than the byte they stand for), so a text of C
    characters needs at least C / this many tokens."""
    try:
        vocab = tokenizer.get_vocab()
    except (AttributeError, NotImplementedError):
        return None
    lengths = [len(t) for t in vocab if isinstance(t, str)]
    return max(lengths) if lengths else None


def question_chars(prompt: Any) -> int:
    """Characters of a prompt that any chat template keeps: a string prompt whole, else the last message's
    content without surrounding whitespace (templates may drop or trim earlier turns, never the question)."""
    if isinstance(prompt, str):
        return len(prompt)
    last = prompt[-1] if isinstance(prompt, list) and prompt else {}
    content = last.get("content") if isinstance(last, dict) else None
    return len(content.strip()) if isinstance(content, str) else 0


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Left-pad lists of ids -> (ids (B, P) long, attention_mask (B, P) long)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids, mask


def eos_token_ids(tokenizer: Any, model: Any) -> list[int]:
    """The tokenizer's EOS plus any EOS ids of the model's generation config (chat models often add one)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += gen_eos if isinstance(gen_eos, (list, tuple)) else ([gen_eos] if gen_eos is not None else [])
    unique = list(dict.fromkeys(int(i) for i in ids))
    if not unique:
        raise ValueError("the tokenizer has no eos_token and the model's generation config names none; generation "
                         "needs one to know where a completion ends")
    return unique


def length_until_eos(tokens: Sequence[int], eos_ids: Sequence[int]) -> int:
    """Tokens of a generated completion up to and including its first EOS; all of them when it has none (it ran to
    ``max_new_tokens``: ``generate`` pads a finished row only after its EOS)."""
    for k, t in enumerate(tokens):
        if t in eos_ids:
            return k + 1
    return len(tokens)
