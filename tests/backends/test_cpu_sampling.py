"""Inverse-CDF token sampling on CPU (``backends/cpu_sampling.py``): the same distribution as ``torch.multinomial``,
zero weights never drawn, torch's errors for invalid rows, small vocabularies and other calls left to torch, and every
generation path (GRPO/RLOO, PPO, the evaluator, agents) sampling through it."""

from __future__ import annotations

import pytest
import torch

from posttrain_llm.online_rl_trainer.core.backends import cpu_sampling
from posttrain_llm.online_rl_trainer.core.backends.cpu_sampling import fast_cpu_sampling, inverse_cdf_sample

torch.set_num_threads(1)


def test_inverse_cdf_by_hand():
    weights = torch.tensor([[0.0, 1.0, 0.0, 3.0, 0.0], [2.0, 0.0, 0.0, 0.0, 2.0]])
    # cumulative: row 0 [0, 1, 1, 4, 4] of 4; row 1 [2, 2, 2, 2, 4] of 4
    cases = {0.0: [1, 0], 0.2: [1, 0], 0.25: [3, 0], 0.49: [3, 0], 0.5: [3, 4], 0.99: [3, 4], 1.0: [3, 4]}
    for u, expected in cases.items():
        picked = inverse_cdf_sample(weights, torch.full((2, 1), u))
        assert picked.squeeze(1).tolist() == expected, u  # 1.0 (or rounding up to the total): last index with weight


def test_same_distribution_as_the_weights_and_zero_weights_never_drawn():
    vocab = cpu_sampling.MIN_VOCAB
    weights = torch.zeros(vocab)
    weights[[0, 7, 100, vocab - 2]] = torch.tensor([0.5, 2.0, 1.0, 0.5])
    weights[200:1200] = 0.001  # 1.0 spread thinly over a thousand entries
    rows = weights.expand(2000, vocab).contiguous()
    torch.manual_seed(0)
    with fast_cpu_sampling():
        draws = torch.cat([torch.multinomial(rows, 1).squeeze(1) for _ in range(10)])
    assert bool(weights[draws].gt(0).all())  # a zero-weight entry was never drawn
    buckets = [draws == 0, draws == 7, draws == 100, draws == vocab - 2, (draws >= 200) & (draws < 1200)]
    observed = torch.stack([b.sum() for b in buckets]).double()
    expected = torch.tensor([0.5, 2.0, 1.0, 0.5, 1.0], dtype=torch.float64) / 5.0 * len(draws)
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 18.5, (observed.tolist(), expected.tolist())  # chi-square, 4 d.o.f.: p = 0.001


def test_unnormalised_weights_and_the_global_seed():
    rows = torch.rand(4, cpu_sampling.MIN_VOCAB) * 7.0
    with fast_cpu_sampling():
        torch.manual_seed(3)
        first = torch.multinomial(rows, 1)
        torch.manual_seed(3)
        again = torch.multinomial(rows, 1)
    assert first.shape == (4, 1) and first.dtype == torch.int64 and torch.equal(first, again)


@pytest.mark.parametrize("bad", ["negative", "nan", "inf", "zero_row"])
def test_invalid_rows_get_torch_s_own_error(bad):
    rows = torch.rand(2, cpu_sampling.MIN_VOCAB)
    rows[1, 5] = {"negative": -1.0, "nan": float("nan"), "inf": float("inf"), "zero_row": 0.0}[bad]
    if bad == "zero_row":
        rows[1] = 0.0
    with pytest.raises(RuntimeError) as inside, fast_cpu_sampling():
        torch.multinomial(rows, 1)
    with pytest.raises(RuntimeError) as plain:
        torch.multinomial(rows, 1)
    assert str(inside.value) == str(plain.value)


def test_other_calls_go_to_torch_and_the_swap_is_undone(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_sampling, "inverse_cdf_sample", lambda *a: calls.append(a) or torch.zeros(1, 1))
    original = torch.multinomial
    small = torch.rand(3, cpu_sampling.MIN_VOCAB - 1)
    large = torch.rand(3, cpu_sampling.MIN_VOCAB)
    with fast_cpu_sampling():
        with fast_cpu_sampling():  # nested: still on, undone only by the outer block
            pass
        assert torch.multinomial is not original
        assert torch.multinomial(small, 1).shape == (3, 1)
        assert torch.multinomial(large, 2).shape == (3, 2)
        assert torch.multinomial(large[0], 1).shape == (1,)
        torch.multinomial(large, 1, generator=torch.Generator().manual_seed(0))
        assert not calls
        torch.multinomial(large, 1)
        assert len(calls) == 1
    assert torch.multinomial is original
    with pytest.raises(KeyError), fast_cpu_sampling():
        raise KeyError("boom")
    assert torch.multinomial is original
    with fast_cpu_sampling(enabled=False):
        assert torch.multinomial is original


@pytest.mark.parametrize("path", ["grpo", "rloo", "ppo", "evaluator"])
def test_every_generation_path_samples_through_it(path, tmp_path, tiny_model_dir, monkeypatch):
    """The tiny model's vocabulary is below MIN_VOCAB; lowering the bar routes its sampling through the fast path."""
    from tests.builders import generate_through

    calls = []
    real = cpu_sampling.inverse_cdf_sample
    monkeypatch.setattr(cpu_sampling, "MIN_VOCAB", 2)
    monkeypatch.setattr(cpu_sampling, "inverse_cdf_sample", lambda *a: calls.append(1) or real(*a))
    generate_through(path, tmp_path, tiny_model_dir, temperature=1.0)
    assert calls, f"{path}: no token was sampled by inverse CDF"
    assert torch.multinomial is cpu_sampling._TORCH_MULTINOMIAL
