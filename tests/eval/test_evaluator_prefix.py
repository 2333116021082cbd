"""The evaluator's common prompt prefix (``share_prompt_prefix``): the prompts' shared first tokens (system prompt,
few-shot examples) computed once per batch, with the same completions as plain left-padded generation."""

from __future__ import annotations

import pytest
import torch

from posttrain_llm.online_rl_trainer import ModelEvaluator
from posttrain_llm.online_rl_trainer.core.backends.shared_prompt import (
    cache_argument_name,
    common_prefix_cache,
    common_prefix_inputs,
)
from posttrain_llm.online_rl_trainer.core.common.tokens import encode_prompt, left_pad

torch.set_num_threads(1)

SYSTEM = "Add the numbers. Answer with digits only."


def _rows(n: int = 7) -> list[dict]:
    # A shared system message and a one-shot example, then questions of different lengths (left padding in a batch).
    return [{"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "2+2="},
                        {"role": "assistant", "content": "4"}, {"role": "user", "content": f"{a * 37}+{a}="}],
             "answer": str(a * 38)} for a in range(n)]


def _digits(completions, answer, **kw):
    return [1.0 if c.strip().startswith(a) else 0.0 for c, a in zip(completions, answer)]


def test_common_prefix_inputs_by_hand():
    ids, mask, length = common_prefix_inputs([[1, 2, 3, 4], [1, 2, 5]], pad_id=0)
    assert length == 2
    assert ids.tolist() == [[1, 2, 3, 4], [1, 2, 0, 5]] and mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 1]]
    # identical rows keep their last token out of the prefix (generate needs one token to prefill)
    ids, mask, length = common_prefix_inputs([[7, 8, 9], [7, 8, 9]], pad_id=0)
    assert length == 2 and ids.tolist() == [[7, 8, 9], [7, 8, 9]]
    # nothing shared, or one row: plain left padding
    ids, mask, length = common_prefix_inputs([[5, 6], [7]], pad_id=0)
    assert length == 0 and ids.tolist() == [[5, 6], [0, 7]] and mask.tolist() == [[1, 1], [0, 1]]
    assert common_prefix_inputs([[3, 4, 5]], pad_id=0)[2] == 0
    with pytest.raises(ValueError, match="at least one token"):
        common_prefix_inputs([[1, 2], []], pad_id=0)


def test_prefix_cache_gives_the_left_padded_logits(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)
    seqs = [encode_prompt(tok, r["prompt"]) for r in _rows(5)]
    assert len({len(s) for s in seqs}) > 1  # rows of different lengths: padding between prefix and rest

    def positions(mask):  # what generate gives: cumsum of the mask - 1
        return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)

    with torch.no_grad():
        ids, mask, length = common_prefix_inputs(seqs, tok.pad_token_id)
        assert length >= len(tok.apply_chat_template(_rows(1)[0]["prompt"][:3], tokenize=True)) - 2
        name = cache_argument_name(model)
        cache = common_prefix_cache(model, ids, length, name, model.config)
        shared = model(input_ids=ids[:, length:], attention_mask=mask, position_ids=positions(mask)[:, length:],
                       use_cache=True, **{name: cache}).logits
        plain_ids, plain_mask = left_pad(seqs, tok.pad_token_id)
        plain = model(input_ids=plain_ids, attention_mask=plain_mask, position_ids=positions(plain_mask)).logits
    width = ids.shape[1] - length
    for row, seq in enumerate(seqs):  # every real token of each row's rest: same next-token logits
        rest = len(seq) - length
        torch.testing.assert_close(shared[row, width - rest:], plain[row, -rest:], atol=1e-5, rtol=1e-5)


def _embedded_tokens(model) -> tuple[list[int], object]:
    counts: list[int] = []
    handle = model.get_input_embeddings().register_forward_hook(lambda m, args, out: counts.append(args[0].numel()))
    return counts, handle


@pytest.mark.parametrize("batch_size", [3, 16])
def test_greedy_completions_match_left_padded_generation(tiny_model_dir, batch_size):
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(tiny_model_dir))
    rows = _rows()
    results, tokens = {}, {}
    for share in (False, True):
        counts, handle = _embedded_tokens(model)
        ev = ModelEvaluator(model, tok, max_new_tokens=6, batch_size=batch_size, show_progress=False,
                            share_prompt_prefix=share)
        results[share] = ev.evaluate(rows, _digits)
        handle.remove()
        tokens[share] = sum(counts)
        assert results[share]["generation"]["share_prompt_prefix"] is share
    plain, shared = ([r["completion"] for r in results[s]["records"]] for s in (False, True))
    assert shared == plain and results[True]["accuracy"] == results[False]["accuracy"]
    # the shared run embedded far fewer tokens: the system prompt and the example once per batch, not once per row
    prefix = len(tok.apply_chat_template(rows[0]["prompt"][:3], tokenize=True, add_generation_prompt=False))
    assert tokens[True] < tokens[False] - prefix * (len(rows) - 3), tokens


def test_sampled_completions_match_with_several_per_problem(tiny_model_dir):
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(tiny_model_dir))
    runs = {}
    for share in (False, True):
        ev = ModelEvaluator(model, tok, max_new_tokens=5, batch_size=4, temperature=1.0, seed=3, show_progress=False,
                            share_prompt_prefix=share)
        runs[share] = [r["completions"] for r in ev.evaluate(_rows(5), _digits, num_samples_per_problem=3)["records"]]
    assert runs[True] == runs[False]
    assert len({c for row in runs[True] for c in row}) > 3  # really sampled: not one completion repeated


def test_share_prompt_prefix_must_be_a_bool(tiny_model_dir):
    from posttrain_llm.online_rl_trainer.core.config import ConfigError
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(tiny_model_dir))
    with pytest.raises(ConfigError, match="share_prompt_prefix='yes'"):
        ModelEvaluator(model, tok, share_prompt_prefix="yes")
