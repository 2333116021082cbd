"""Masked statistics over completion tokens, for one process or pooled over every process of a launch.

The shape and mask checks here serve every module of ``core/algorithms``. Masks are ``(B, T)`` bool or 0/1 float
tensors; values at masked positions are ignored, even NaN, and means over an empty mask are 0, not NaN. The
``*_pooled`` functions take ``all_reduce_sum`` (``accelerator.reduce(t, "sum")``) so a statistic over a batch split
across processes equals the statistic of the whole batch; with ``None`` they are the one-process versions.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


# ----------------------------------------------------------------------------------------------- validation
def as_bool_mask(mask: Tensor, name: str = "mask") -> Tensor:
    if mask.dtype == torch.bool:
        return mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name} must hold only 0 and 1 (or be bool); got values {mask.unique()[:8].tolist()}")
    return mask != 0


def bool_mask_like(x: Tensor, mask: Tensor, name: str = "mask") -> Tensor:
    if mask.shape != x.shape:
        raise ValueError(f"{name} has shape {tuple(mask.shape)} but the values have shape {tuple(x.shape)}")
    return as_bool_mask(mask, name)


def check_same_shape(**tensors: Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shapes must match, got {shapes}")


def check_contiguous(mask: Tensor) -> None:
    """Reject rows like [1, 0, 1]: a hole would make 'the next token' ambiguous for GAE and reward placement."""
    if mask.shape[1] == 0:
        return
    m = mask.long()
    starts = m[:, 0] + (m[:, 1:] - m[:, :-1] == 1).sum(dim=1)
    bad = (starts > 1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"mask rows {bad[:5]} have holes (real tokens after padding after real tokens); each row's real tokens "
            "must be contiguous (right padding like [1, 1, 0] or left padding like [0, 1, 1])"
        )


# ----------------------------------------------------------------------------------------- masked statistics
def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``x`` where ``mask`` is 1. x, mask: same shape -> a scalar (dim=None) or x reduced along ``dim``."""
    m = bool_mask_like(x, mask)
    kept = torch.where(m, x, torch.zeros_like(x))
    return kept.sum() if dim is None else kept.sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over masked-in positions; 0 where nothing is masked in (no NaN).

    x, mask: same shape. dim=None gives a scalar; otherwise x reduced along ``dim`` (e.g. (B, T) -> (B,)).
    """
    m = bool_mask_like(x, mask)
    count = m.sum() if dim is None else m.sum(dim=dim)
    return masked_sum(x, m, dim) / count.clamp(min=1).to(x.dtype)


def pooled_moments(x: Tensor, mask: Tensor, all_reduce_sum=None) -> tuple[Tensor, Tensor, Tensor]:
    """(count, mean, biased variance) of the masked-in entries of ``x``, pooled over every process.

    x, mask: same shape (each process its own, any sizes) -> three float64 scalars, identical on every process.
    ``all_reduce_sum(t)`` returns ``t`` summed over the processes (``accelerator.reduce(t, "sum")``); None for one
    process. Two passes (sum and count, then squared deviations from the pooled mean), so the result equals the
    statistic of the concatenated batches. Every process must call it, even one with nothing masked in.
    """
    m = bool_mask_like(x, mask)
    reduce = all_reduce_sum or (lambda t: t)
    xd = x.detach().double()
    first = reduce(torch.stack([m.sum().double(), masked_sum(xd, m)]))
    n = first[0]
    mean = first[1] / n.clamp(min=1)
    second = reduce(masked_sum((xd - mean) ** 2, m).reshape(1))[0]
    return n, mean, second / n.clamp(min=1)


def masked_whiten_pooled(x: Tensor, mask: Tensor, all_reduce_sum=None, eps: float = 1e-8) -> Tensor:
    """(x - mean) / sqrt(var + eps) with the mean and (unbiased) variance of the masked-in entries of *every* process.

    With it, whitened advantages depend on the global batch only, not on how it is split over processes. x, mask:
    same shape -> same shape (x's dtype), 0 where masked out; all zeros when no process has a masked-in entry.
    ``all_reduce_sum`` as in :func:`pooled_moments` (None: one process).
    """
    n, mean, var = pooled_moments(x, mask, all_reduce_sum)
    m = bool_mask_like(x, mask)
    if int(n) == 0:
        return torch.zeros_like(x)
    unbiased = var * n / (n - 1) if int(n) > 1 else torch.zeros_like(var)
    whitened = (x.double() - mean) * torch.rsqrt(unbiased + eps)
    return torch.where(m, whitened, torch.zeros_like(whitened)).to(x.dtype)
