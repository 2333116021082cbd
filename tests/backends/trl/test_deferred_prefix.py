"""``DeferredPrefix``: the common prefix's keys and values computed without autograd, their gradients collected on
leaves and back-propagated by a second pass under the first pass's autocast state."""

from __future__ import annotations

import pytest
import torch

from posttrain_llm.online_rl_trainer.core.backends.shared_prompt import cache_argument_name
from posttrain_llm.online_rl_trainer.core.backends.trl.deferred_prefix import DeferredPrefix


def _model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).train()


def _prefix_loss(keys_values, weights):
    """A loss of the prefix's keys and values alone: sum_i <w_i, kv_i>."""
    return sum((kv.float() * w).sum() for kv, w in zip(keys_values, weights))


@pytest.mark.parametrize("bf16", [False, True])
def test_flush_gives_the_gradient_of_the_prefix_under_the_autocast_it_ran_in(tiny_model_dir, bf16):
    model = _model(tiny_model_dir)
    kw = cache_argument_name(model)
    deferred = DeferredPrefix()
    deferred.set_prompts([[5, 6, 7, 8, 9, 10], [5, 6, 7, 11, 12]])
    assert deferred.tokens == (5, 6, 7)

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        common = deferred.common_prefix(model, kw, model.config)
        caches = [common.cache(), common.cache()]  # two micro-batches: one pass, shared leaves
    assert deferred.passes == 1
    leaves = deferred._leaves
    assert len(leaves) == 2 * model.config.num_hidden_layers
    assert all(t.is_leaf and t.requires_grad and t.grad_fn is None for t in leaves)
    # under autocast the values come out of a bf16 projection (the keys go on through fp32 rotary)
    assert any(t.dtype == torch.bfloat16 for t in leaves) is bf16
    torch.manual_seed(1)
    weights = [torch.randn(t.shape) for t in leaves]
    for cache in caches:  # each micro-batch's backward stops at the leaves
        _prefix_loss([t for layer in cache.layers for t in (layer.keys, layer.values)], weights).backward()
    assert all(p.grad is None for p in model.parameters())

    deferred.flush()  # outside any autocast: the second pass must run under the first one's
    assert deferred.passes == 2
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert got

    model.zero_grad(set_to_none=True)
    from transformers import DynamicCache

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        cache = DynamicCache(config=model.config)
        ids = torch.tensor([[5, 6, 7]])
        model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=torch.arange(3)[None], use_cache=True,
              logits_to_keep=1, **{kw: cache})
        kv = [t for layer in cache.layers for t in (layer.keys, layer.values)]
    (2 * _prefix_loss(kv, weights)).backward()  # both micro-batches' gradients
    want = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert want.keys() == got.keys()
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-6, rtol=1e-5), name


def test_flush_without_gradients_runs_nothing(tiny_model_dir):
    model = _model(tiny_model_dir)
    deferred = DeferredPrefix()
    deferred.set_prompts([[5, 6, 7, 8, 9], [5, 6, 7, 11, 12]])
    deferred.common_prefix(model, cache_argument_name(model), model.config).cache()
    deferred.flush()  # nothing back-propagated into the leaves: no second pass, no gradient
    assert deferred.passes == 1 and all(p.grad is None for p in model.parameters())
    deferred.flush()  # and a second flush is a no-op
    assert deferred.passes == 1
