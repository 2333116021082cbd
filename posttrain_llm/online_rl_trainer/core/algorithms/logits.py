"""Per-token log-probabilities and entropies from logits, without materialising a full log-softmax.

float32/float64 logits are used in their dtype; bf16/fp16 logits are computed in float32 chunks of rows (bf16
log-softmax is too coarse for PPO's ratios, and a float32 copy of all (B, T, V) logits would double peak memory).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor
# Rows of (rows, V) logits processed at once in the low-precision path: bounds the float32 copy.
LOGIT_CHUNK_ROWS = 1024


def _rowwise(fn, logits: Tensor, *others: Tensor) -> Tensor:
    """Apply ``fn`` on float32 chunks of flattened rows: bf16/fp16 log-softmax is too coarse for PPO ratios, and a
    full float32 copy of (B, T, V) logits would double the peak memory."""
    vocab = logits.shape[-1]
    flat = logits.reshape(-1, vocab)
    flat_others = [o.reshape(-1) for o in others]
    parts = [
        fn(flat[i : i + LOGIT_CHUNK_ROWS].float(), *(o[i : i + LOGIT_CHUNK_ROWS] for o in flat_others))
        for i in range(0, flat.shape[0], LOGIT_CHUNK_ROWS)
    ]
    out = torch.cat(parts) if parts else flat.new_zeros(0, dtype=torch.float32)
    return out.reshape(logits.shape[:-1])


def logprobs_from_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """log softmax(logits)[label] without materialising the full log-softmax.

    logits: (..., V); labels: (...) int in [0, V) -> (...). float32/float64 logits: gather minus logsumexp, in
    their dtype. bf16/fp16 logits: computed in float32 chunk by chunk and returned as float32.
    """
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels shape {tuple(labels.shape)} must equal logits shape {tuple(logits.shape)} minus V")
    vocab = logits.shape[-1]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= vocab):
        raise ValueError(
            f"labels must be token ids in [0, {vocab}); got range [{int(labels.min())}, {int(labels.max())}] "
            "(ignore-index -100 must be replaced and masked before this call)"
        )

    def gather_minus_lse(lg: Tensor, lab: Tensor) -> Tensor:
        return lg.gather(-1, lab.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(lg, dim=-1)

    if logits.dtype in (torch.float32, torch.float64):
        return gather_minus_lse(logits, labels)
    return _rowwise(gather_minus_lse, logits, labels)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) in nats: logsumexp(l) - sum softmax(l) * l. (..., V) -> (...).

    float32/float64 in their dtype; bf16/fp16 in float32 chunks, returned as float32.
    """

    def entropy(lg: Tensor) -> Tensor:
        return torch.logsumexp(lg, dim=-1) - (torch.softmax(lg, dim=-1) * lg).sum(dim=-1)

    if logits.dtype in (torch.float32, torch.float64):
        return entropy(logits)
    return _rowwise(entropy, logits)
