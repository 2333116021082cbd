"""The decoding loop that drops finished rows (``backends/decode_loop.py``): the same ids as ``generate`` (sampled with
the same seed, or greedy; with a shared prompt cache, padding, several sequences per prompt), rows really leaving the
batch, transformers' own loop for what it does not cover, and every generation path decoding through it."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from posttrain_llm.online_rl_trainer.core.backends import decode_loop
from posttrain_llm.online_rl_trainer.core.backends.cpu_sampling import MIN_VOCAB, fast_cpu_sampling
from posttrain_llm.online_rl_trainer.core.backends.decode_loop import (
    RowBudgets,
    drop_finished_rows,
    sample_dropping_finished,
)
from posttrain_llm.online_rl_trainer.core.backends.shared_prompt import shared_prompt_cache

torch.set_num_threads(1)
EOS = [3, 5]
PAD = 0


def _model(vocab: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256))
    with torch.no_grad():
        model.lm_head.weight[3] += 0.6 if vocab < 1000 else 1.5  # EOS likely enough that rows end at different steps
    return model.eval()


def _prompts(vocab: int, rows: int = 6, width: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(10, vocab, (rows, width), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding of different widths
    mask[1, :1] = 0
    return ids.masked_fill(mask == 0, PAD), mask


def _config(sample: bool, **extra) -> GenerationConfig:
    settings = dict(temperature=1.3, top_p=0.95, top_k=0) if sample else dict(temperature=None, top_p=None, top_k=None)
    return GenerationConfig(**{"max_new_tokens": 30, "do_sample": sample, "pad_token_id": PAD, "eos_token_id": EOS,
                               **settings, **extra})


class _Rows:
    """Records the batch size of every forward call of a model."""

    def __init__(self, model):
        self.sizes: list[int] = []
        self._hook = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        self.sizes.append(int(kwargs["input_ids"].shape[0]))

    def close(self):
        self._hook.remove()


def _generate(model, dropping: bool, seed: int, **kwargs) -> tuple[torch.Tensor, list[int]]:
    rows = _Rows(model)
    torch.manual_seed(seed)
    try:
        with fast_cpu_sampling(), drop_finished_rows(model, enabled=dropping):
            out = model.generate(**kwargs)
    finally:
        rows.close()
    return out, rows.sizes


@pytest.mark.parametrize("vocab", [64, MIN_VOCAB + 8], ids=["torch-multinomial", "inverse-cdf"])
@pytest.mark.parametrize("sample", [True, False], ids=["sampled", "greedy"])
def test_same_ids_as_generate_and_finished_rows_leave_the_batch(vocab, sample):
    model = _model(vocab)
    ids, mask = _prompts(vocab)
    plain, plain_rows = _generate(model, False, 7, input_ids=ids, attention_mask=mask, generation_config=_config(sample))
    ours, our_rows = _generate(model, True, 7, input_ids=ids, attention_mask=mask, generation_config=_config(sample))
    assert torch.equal(ours, plain)  # same width (steps until the last row ended), same tokens, pad after EOS
    steps = plain.shape[1] - ids.shape[1]
    assert len(our_rows) == len(plain_rows) == steps  # one prefill + one call per further token
    assert set(plain_rows) == {6}
    lengths = [_length(row, ids.shape[1]) for row in plain]
    still_running = [sum(n > step for n in lengths) for step in range(steps)]  # rows in the batch of each call
    assert our_rows == still_running and our_rows[-1] < 6, (our_rows, lengths)


def _length(row: torch.Tensor, prompt: int, eos: list[int] = EOS) -> int:
    tokens = row[prompt:].tolist()
    return next((i + 1 for i, t in enumerate(tokens) if t in eos), len(tokens))


@pytest.mark.parametrize("sample", [True, False], ids=["sampled", "greedy"])
def test_same_ids_with_a_shared_prompt_cache(sample):
    vocab = MIN_VOCAB + 8
    model = _model(vocab)
    ids, mask = _prompts(vocab, rows=3)
    ids, mask = ids.repeat_interleave(4, 0), mask.repeat_interleave(4, 0)  # G = 4 completions per prompt
    outputs = []
    for dropping in (False, True):
        cache = shared_prompt_cache(model, ids, mask, "cache", model.config)
        outputs.append(_generate(model, dropping, 3, input_ids=ids, attention_mask=mask,
                                 generation_config=_config(sample), cache=cache))
    (plain, _), (ours, our_rows) = outputs
    assert torch.equal(ours, plain)
    assert our_rows[0] == 12 and our_rows[-1] < 12


def test_several_sequences_per_prompt_and_no_padding():
    vocab = MIN_VOCAB + 8
    model = _model(vocab)
    ids = torch.randint(10, vocab, (3, 7), generator=torch.Generator().manual_seed(2))
    kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, do_sample=True,
                  num_return_sequences=3, pad_token_id=PAD, eos_token_id=EOS, top_k=0)
    plain, _ = _generate(model, False, 5, **kwargs)
    ours, our_rows = _generate(model, True, 5, **kwargs)
    assert plain.shape[0] == 9 and torch.equal(ours, plain)
    assert our_rows[0] == 9 and min(our_rows) < 9


def test_length_limit_and_all_rows_ending_at_once():
    model = _model(64)
    ids, mask = _prompts(64)
    config = _config(False, max_new_tokens=4)
    config.eos_token_id = [99]  # never written: every row runs to the limit
    ours, rows = _generate(model, True, 0, input_ids=ids, attention_mask=mask, generation_config=config)
    assert ours.shape == (6, ids.shape[1] + 4) and rows == [6, 6, 6, 6]
    first = ours[:, ids.shape[1]].unique().tolist()  # every row's first greedy token ends it
    config = _config(False, eos_token_id=first)
    ours, rows = _generate(model, True, 0, input_ids=ids, attention_mask=mask, generation_config=config)
    assert ours.shape == (6, ids.shape[1] + 1) and rows == [6]


@pytest.mark.parametrize("sample", [True, False], ids=["sampled", "greedy"])
def test_return_dict_with_logits_and_scores(sample):
    model = _model(64)
    ids, mask = _prompts(64)
    config = _config(sample, return_dict_in_generate=True, output_logits=True, output_scores=True)
    plain, plain_rows = _generate(model, False, 4, input_ids=ids, attention_mask=mask, generation_config=config)
    ours, our_rows = _generate(model, True, 4, input_ids=ids, attention_mask=mask, generation_config=config)
    assert torch.equal(ours.sequences, plain.sequences) and our_rows[-1] < plain_rows[-1] == 6
    assert ours.past_key_values is None and ours.attentions is None
    lengths = [_length(row, ids.shape[1]) for row in plain.sequences]
    for name in ("logits", "scores"):
        mine, theirs = getattr(ours, name), getattr(plain, name)
        assert len(mine) == len(theirs) == plain.sequences.shape[1] - ids.shape[1]
        for step, (a, b) in enumerate(zip(mine, theirs)):
            assert a.shape == b.shape == (6, 64) and a.dtype == b.dtype == torch.float32
            for row, n in enumerate(lengths):
                if step < n:  # the row was running: the same values (matmuls over fewer rows round differently)
                    torch.testing.assert_close(a[row], b[row], rtol=1e-5, atol=1e-5)
                else:
                    assert not a[row].any(), (name, step, row)


@pytest.mark.parametrize("sample", [True, False], ids=["sampled", "greedy"])
def test_row_budgets_end_rows_early_with_the_same_tokens_within_them(sample):
    from transformers.generation.stopping_criteria import StoppingCriteriaList

    model = _model(64)
    ids, mask = _prompts(64)
    prompt, budgets = ids.shape[1], [3, 30, 1, 12, 30, 7]

    def run(dropping: bool, with_budgets: bool):
        extra = {"stopping_criteria": StoppingCriteriaList([RowBudgets(prompt, budgets)])} if with_budgets else {}
        config = _config(sample, eos_token_id=[5])  # not the likely EOS: most rows end at their budget
        return _generate(model, dropping, 9, input_ids=ids, attention_mask=mask, generation_config=config, **extra)

    free, _ = run(False, False)
    plain, plain_rows = run(False, True)
    ours, our_rows = run(True, True)
    assert torch.equal(ours, plain) and set(plain_rows) == {6}
    lengths = [min(_length(free[row], prompt, [5]), budget) for row, budget in enumerate(budgets)]
    assert lengths[2] == 1 and lengths[0] <= 3 and max(lengths) > 7, lengths
    for row, n in enumerate(lengths):  # within its budget a row is what the call without budgets sampled; pad after
        assert torch.equal(plain[row, prompt:prompt + n], free[row, prompt:prompt + n]), row
        assert (plain[row, prompt + n:] == PAD).all(), row
    assert our_rows == [sum(n > step for n in lengths) for step in range(plain.shape[1] - prompt)], (our_rows, lengths)


def test_row_budgets_reject_bad_values():
    with pytest.raises(ValueError, match="budgets=\\[3, 0\\]"):
        RowBudgets(5, [3, 0])
    with pytest.raises(ValueError, match="2 budgets for a batch of 3"):
        RowBudgets(1, [2, 2])(torch.zeros(3, 2, dtype=torch.long), None)


@pytest.mark.parametrize("case", ["repetition_penalty", "hidden_states", "beams"])
def test_what_it_does_not_cover_runs_transformers_loop(case):
    model = _model(64)
    ids, mask = _prompts(64)
    extra = {"repetition_penalty": dict(repetition_penalty=1.2), "beams": dict(num_beams=2),
             "hidden_states": dict(return_dict_in_generate=True, output_hidden_states=True)}[case]
    config = _config(case != "beams", **extra)
    plain, plain_rows = _generate(model, False, 4, input_ids=ids, attention_mask=mask, generation_config=config)
    ours, our_rows = _generate(model, True, 4, input_ids=ids, attention_mask=mask, generation_config=config)
    if case == "hidden_states":
        assert torch.equal(ours.sequences, plain.sequences) and len(ours.hidden_states) == len(plain.hidden_states)
    else:
        assert torch.equal(ours, plain)
    assert our_rows == plain_rows  # no row left the batch early


def test_unsupported_reason_names_the_cause():
    from transformers import DynamicCache
    from transformers.generation.logits_process import LogitsProcessorList, RepetitionPenaltyLogitsProcessor
    from transformers.generation.stopping_criteria import MaxLengthCriteria, StoppingCriteriaList, StopStringCriteria

    model = _model(64)
    config = _config(True)
    config._pad_token_tensor = torch.tensor(PAD)
    fine = dict(attention_mask=torch.ones(1, 2), position_ids=torch.zeros(1, 2), use_cache=True,
                cache=DynamicCache(config=model.config))
    stop = StoppingCriteriaList([MaxLengthCriteria(10)])
    assert decode_loop.unsupported_reason(model, LogitsProcessorList(), stop, config, **fine) is None
    penalty = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.2)])
    assert "RepetitionPenaltyLogitsProcessor" in decode_loop.unsupported_reason(model, penalty, stop, config, **fine)
    strings = StoppingCriteriaList([MaxLengthCriteria(10), StopStringCriteria.__new__(StopStringCriteria)])
    assert "StopStringCriteria" in decode_loop.unsupported_reason(model, LogitsProcessorList(), strings, config, **fine)
    images = dict(fine, pixel_values=torch.zeros(1))
    assert "pixel_values" in decode_loop.unsupported_reason(model, LogitsProcessorList(), stop, config, **images)
    assert "synced" in decode_loop.unsupported_reason(model, LogitsProcessorList(), stop, config, True, **fine)


def test_other_modes_are_refused_and_the_patch_is_undone():
    model = _model(64)
    ids, mask = _prompts(64)
    with pytest.raises(ValueError, match="beam_search"):
        model.generate(input_ids=ids, attention_mask=mask, generation_config=_config(False, num_beams=2),
                       custom_generate=sample_dropping_finished)
    assert "generate" not in model.__dict__
    with pytest.raises(KeyError), drop_finished_rows(model):
        assert "generate" in model.__dict__
        raise KeyError("boom")
    assert "generate" not in model.__dict__
    with drop_finished_rows(model, enabled=False):
        assert "generate" not in model.__dict__


@pytest.mark.parametrize("path", ["grpo", "rloo", "ppo", "evaluator"])
def test_every_generation_path_decodes_through_it(path, tmp_path, tiny_model_dir, monkeypatch):
    from tests.builders import generate_through

    calls = []
    real = decode_loop.sample_dropping_finished

    def spy(model, input_ids, *args, **kwargs):
        out = real(model, input_ids, *args, **kwargs)
        calls.append(decode_loop.unsupported_reason(model, *args, **kwargs))
        return out

    monkeypatch.setattr(decode_loop, "sample_dropping_finished", spy)
    generate_through(path, tmp_path, tiny_model_dir, temperature=0.0)
    assert calls and all(reason is None for reason in calls), calls  # ran, and ran its own loop
