"""Faster token sampling for CPU generation: inverse-CDF draws in place of ``torch.multinomial``.

A profile of SmolLM2-135M generation on a 2-core CPU (16 rows, a 49,152-token vocabulary; ``bench_cpu_step.py``)
found ``torch.multinomial`` -- which transformers' sampling loop calls once per new token -- taking 16 ms per call on
2 idle threads (37 ms under load): it draws one exponential variate per vocabulary entry per row (786k per token step),
next to a decode step of ~100 ms. Inverse-CDF sampling draws one uniform per row and searches the float64 cumulative
sum of the row: the same distribution in ~5 ms (generation with lengths held fixed: 0.88x the time).

:func:`fast_cpu_sampling` swaps it in for the duration of a ``with`` block, only for what transformers' sampler asks:
a 2-D float tensor on the CPU, one sample per row, no generator, at least :data:`MIN_VOCAB` entries per row (below
that ``torch.multinomial`` is already cheap and stays, so small models keep their random streams). Anything else, and
any call whose rows are not valid weights (negative, NaN, infinite, or all zero), goes to ``torch.multinomial``
unchanged, so its errors are torch's own.

Departs from ``torch.multinomial`` in the random stream only: a seed gives other, equally distributed tokens than
before (and the same ones on every run; draws come from the global generator, so seeding and checkpointed RNG states
work as before). Not covered: GPUs (multinomial is fast there), ``num_samples > 1``, explicit generators, vLLM.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ..common.patching import patched

__all__ = ["MIN_VOCAB", "fast_cpu_sampling", "inverse_cdf_sample"]

#: Rows shorter than this keep ``torch.multinomial`` (a char-level or toy vocabulary: nothing to gain).
MIN_VOCAB = 4096

_TORCH_MULTINOMIAL = torch.multinomial


def inverse_cdf_sample(weights: torch.Tensor, uniforms: torch.Tensor, cdf: torch.Tensor | None = None) -> torch.Tensor:
    """(rows, vocab) non-negative weights (any positive total), (rows, 1) uniforms in [0, 1] -> (rows, 1) int64.

    Row ``r`` gets the first index whose float64 cumulative weight exceeds ``uniforms[r] * total[r]``: index ``i``
    with probability ``weights[r, i] / total[r]``. An index with zero weight is never returned; a uniform that reaches
    the total (1.0, or rounding) returns the row's last index with weight. ``cdf``: the float64 cumulative sum of
    ``weights`` along the last dimension, when the caller already has it.
    """
    if cdf is None:
        cdf = torch.cumsum(weights, -1, dtype=torch.float64)
    picked = torch.searchsorted(cdf, uniforms.double() * cdf[:, -1:], right=True)
    over = picked >= weights.shape[-1]
    if bool(over.any()):
        last_with_weight = weights.shape[-1] - 1 - (weights.flip(-1) > 0).to(torch.int8).argmax(-1, keepdim=True)
        picked = torch.where(over, last_with_weight, picked)
    return picked


def _multinomial(input: torch.Tensor, num_samples: int, replacement: bool = False, *, generator=None, out=None):
    def torch_s_own():
        return _TORCH_MULTINOMIAL(input, num_samples, replacement, generator=generator, out=out)

    if (num_samples != 1 or generator is not None or out is not None or input.dim() != 2
            or input.device.type != "cpu" or not input.is_floating_point() or input.shape[-1] < MIN_VOCAB):
        return torch_s_own()
    cdf = torch.cumsum(input, -1, dtype=torch.float64)
    total = cdf[:, -1]
    # Valid rows: no negative entry (a NaN fails this too), and a finite, positive total (no inf, no all-zero row).
    if not (bool(input.min() >= 0) and bool(torch.isfinite(total).all()) and bool((total > 0).all())):
        return torch_s_own()
    return inverse_cdf_sample(input, torch.rand(input.shape[0], 1, dtype=torch.float64), cdf)


@contextlib.contextmanager
def fast_cpu_sampling(enabled: bool = True) -> Iterator[None]:
    """Within the block, ``torch.multinomial`` samples large-vocabulary CPU rows by inverse CDF (see the module
    docstring); restored on exit. Nested blocks are fine; ``enabled=False`` changes nothing."""
    if not enabled or torch.multinomial is _multinomial:
        yield
        return
    with patched(torch, "multinomial", _multinomial):
        yield
