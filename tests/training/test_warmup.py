"""The supervised warm-up (``training/warmup.py``): multi-turn completions train on the model's turns only."""

from __future__ import annotations

import pytest

from posttrain_llm.online_rl_trainer.core.training.warmup import completion_tokens, supervised_warmup


@pytest.fixture()
def tiny(tiny_model_dir):
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    return load_model_and_tokenizer(str(tiny_model_dir))


def test_segments_keep_the_environment_untrained(tiny):
    _, tok = tiny
    ids, trained = completion_tokens(tok, [("ab<|im_end|>", True), ("\n<|im_start|>tool\n7<|im_end|>\n", False),
                                           ("c<|im_end|>", True)])
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert ids[:3] == tok.encode("ab", add_special_tokens=False) + [end]  # the end-of-turn marker is one token
    assert trained == [True] * 3 + [False] * (len(ids) - 5) + [True] * 2
    plain_ids, plain_trained = completion_tokens(tok, "ab")
    assert plain_ids[-1] == tok.eos_token_id and all(plain_trained)
    with pytest.raises(ValueError, match="at least one trained segment"):
        completion_tokens(tok, [("x", False)])
    with pytest.raises(ValueError, match="segment 0"):
        completion_tokens(tok, ["x"])


def test_environment_text_gets_no_gradient(tiny, monkeypatch):
    """What the loss sees: labels -100 on the environment's tokens, so changing them changes no label."""
    model, tok = tiny
    seen = []
    original = model.forward

    def spy(*args, **kwargs):
        seen.append(kwargs["labels"].clone())
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    prompt = [{"role": "user", "content": "2*3="}]
    example = (prompt, [("call<|im_end|>", True), ("\n<|im_start|>tool\n6<|im_end|>\n<|im_start|>assistant\n", False),
                        ("6<|im_end|>", True)])
    supervised_warmup(model, tok, [example], max_steps=1, batch_size=1, warmup_steps=1)
    labels = seen[0][0]
    kept = tok.decode([t for t in labels.tolist() if t != -100], skip_special_tokens=False)
    assert kept == "call<|im_end|>6<|im_end|>"
