"""hf_generate_fn on the tiny model: exact new ids cut at each sequence's end and budget, log-probs equal to a plain
forward pass (padded rows too), seeded reproducibility; and a real multi-turn run with the calculator."""

from __future__ import annotations

import pytest
import torch

from posttrain_llm.online_rl_trainer.core.agents import (
    MultiTurnConfig,
    ParsedCall,
    calculator,
    render_call,
    rollout_stats,
    run_rollouts,
)
from posttrain_llm.online_rl_trainer.core.backends.agent_generation import hf_generate_fn
from posttrain_llm.online_rl_trainer.core.models.tiny import build_char_tokenizer, build_tiny_model


@pytest.fixture(scope="module")
def tiny():
    tok = build_char_tokenizer()
    return build_tiny_model(tok, seed=0), tok


def _prompt(tok, text):
    return tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True,
                                   return_dict=False)


def _reference_logprobs(model, sequence, new_ids):
    with torch.no_grad():
        logits = model(torch.tensor([sequence + new_ids])).logits[0, len(sequence) - 1: -1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(new_ids)[:, None]).squeeze(-1)


def test_new_ids_respect_each_budget_and_logprobs_match_a_forward_pass(tiny):
    model, tok = tiny
    seqs = [_prompt(tok, "123*456="), tok.encode("ab", add_special_tokens=False)]  # the second is left-padded
    out = hf_generate_fn(model, tok, seed=3)(seqs, [12, 5])
    assert [len(ids) <= n for (ids, _), n in zip(out, [12, 5])] == [True, True]
    for seq, (ids, logprobs) in zip(seqs, out):
        assert len(logprobs) == len(ids) >= 1
        assert torch.allclose(torch.tensor(logprobs), _reference_logprobs(model, seq, ids), atol=1e-4)


def test_temperature_scales_the_reported_logprobs(tiny):
    model, tok = tiny
    seq = _prompt(tok, "1+1=")
    ids, logprobs = hf_generate_fn(model, tok, temperature=0.5, seed=0)([seq], [6])[0]
    with torch.no_grad():
        logits = model(torch.tensor([seq + ids])).logits[0, len(seq) - 1: -1].float() / 0.5
    expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(logprobs), expected, atol=1e-4)


def test_sequences_are_cut_at_their_first_end_of_turn_token(tiny, monkeypatch):
    model, tok = tiny
    eos = tok.eos_token_id
    forced = [eos] * 3

    class Out:  # generate's output when the model ends the turn at once and then pads
        def __init__(self, input_ids):
            self.sequences = torch.cat([input_ids, torch.tensor([forced] * input_ids.shape[0])], dim=1)
            self.logits = tuple(torch.zeros(input_ids.shape[0], len(tok)) for _ in forced)

    monkeypatch.setattr(model, "generate", lambda input_ids, **kw: Out(input_ids))
    assert hf_generate_fn(model, tok)([[5, 6]], [3]) == [([eos], [pytest.approx(-torch.log(torch.tensor(
        float(len(tok)))).item())])]


def test_seeded_sampling_is_reproducible_and_leaves_the_global_rng_alone(tiny):
    model, tok = tiny
    seq = [_prompt(tok, "7*8=")]
    state = torch.random.get_rng_state()
    first = hf_generate_fn(model, tok, seed=11)(seq, [10])
    assert torch.equal(state, torch.random.get_rng_state())
    assert hf_generate_fn(model, tok, seed=11)(seq, [10]) == first
    greedy = hf_generate_fn(model, tok, do_sample=False)
    assert greedy(seq, [10]) == greedy(seq, [10])


def test_multi_turn_run_with_the_real_tiny_model_and_the_calculator(tiny):
    """Turn 1 is scripted (a good call, a malformed one, garbage), later turns are the untrained model's own:
    whatever it writes is handled and counted, and its log-probs are those of the exact sequence it saw."""
    model, tok = tiny
    real = hf_generate_fn(model, tok, seed=5)
    firsts = [render_call(ParsedCall("calculator", {"expression": "12*34"}), "chatml"),
              "<tool_call>{not json</tool_call>", '<tool_call>{"name": "calculator", "arguments": {"x": 1}}</tool_call>',
              "408"]
    pending = {i: tok.encode(t, add_special_tokens=False) + [tok.eos_token_id] for i, t in enumerate(firsts)}
    prompts = [_prompt(tok, f"12*34= #{i}") for i in range(4)]

    def generate(sequences, budgets):
        out = []
        for seq, budget in zip(sequences, budgets):
            i = next(k for k, p in enumerate(prompts) if seq[: len(p)] == p)
            if i in pending and len(seq) == len(prompts[i]):
                ids = pending.pop(i)
                out.append((ids, [0.0] * len(ids)))
            else:
                out.extend(real([seq], [budget]))
        return out

    config = MultiTurnConfig(max_turns=3, max_new_tokens=100, max_total_tokens=200, max_observation_chars=60,
                             call_format="chatml")
    results = run_rollouts(prompts, [{"prompt": str(i)} for i in range(4)], generate, tok, None, config,
                           tools=[calculator])
    assert [r.num_turns > 1 for r in results] == [True, True, True, False]
    assert (results[0].num_tool_calls, results[1].num_malformed_calls, results[2].num_tool_errors) == (1, 1, 1)
    for r in results:
        assert len(r.completion_ids) == len(r.env_mask) == len(r.logprobs) <= 200
        assert all((lp is None) == (m == 0) for lp, m in zip(r.logprobs, r.env_mask))
        assert r.stop_reason in ("answered", "max_turns", "max_total_tokens", "truncated")
    # the model's second turn of rollout 0: its log-probs are those of prompt + turn 1 + observation + turn 2
    r = results[0]
    start = r.turn_end_positions[0] + 1 + r.env_mask[r.turn_end_positions[0] + 1:].index(1)
    end = r.turn_end_positions[1] + 1
    reference = _reference_logprobs(model, list(r.prompt_ids + r.completion_ids[:start]), list(r.completion_ids[start:end]))
    assert torch.allclose(torch.tensor(r.logprobs[start:end]), reference, atol=1e-4)
    assert rollout_stats(results)["malformed_calls_total"] == 1


def test_returned_ids_are_exactly_what_generate_sampled_under_the_same_seed(tiny):
    """A manual ``model.generate`` of the same left-padded batch under ``torch.manual_seed(seed)``, cut by hand at
    each row's first end-of-turn token and budget, gives the same ids; one row ends its turn, the other hits its
    budget (temperature 2 so the random model samples ``<|im_end|>`` early)."""
    model, tok = tiny
    seqs = [_prompt(tok, "1+1="), _prompt(tok, "123*456=")]
    budgets, seed = [80, 6], 0
    out = hf_generate_fn(model, tok, temperature=2.0, seed=seed)(seqs, budgets)

    width = max(map(len, seqs))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(s)) + s for s in seqs])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        sampled = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max(budgets), do_sample=True,
                                 temperature=2.0, top_p=1.0, top_k=0, eos_token_id=[tok.eos_token_id],
                                 pad_token_id=tok.pad_token_id)[:, width:].tolist()
    expected = []
    for row, budget in zip(sampled, budgets):
        row = row[:budget]
        expected.append(row[: row.index(tok.eos_token_id) + 1] if tok.eos_token_id in row else row)
    assert [new for new, _ in out] == expected
    assert expected[0][-1] == tok.eos_token_id and len(expected[0]) < budgets[0]  # ended its turn
    assert len(expected[1]) == budgets[1] and tok.eos_token_id not in expected[1]  # cut at its budget


def test_a_run_written_entirely_by_the_random_model_is_handled_and_counted(tiny):
    """No scripted turn: the untrained model writes every token (garbage, sometimes its end-of-turn token); every
    rollout ends with a counted stop reason inside its budgets, and its log-probs are those of the exact sequence."""
    model, tok = tiny
    prompts = [_prompt(tok, q) for q in ("347*829=", "12*34=", "1+1=", "999*999=")]
    config = MultiTurnConfig(max_turns=3, max_new_tokens=40, max_total_tokens=100, call_format="chatml")
    results = run_rollouts(prompts, [{"prompt": str(i)} for i in range(4)], hf_generate_fn(model, tok, temperature=2.0,
                           seed=1), tok, None, config, tools=[calculator])
    stats = rollout_stats(results)
    assert sum(stats[f"stop/{r}"] for r in ("answered", "max_turns", "max_total_tokens", "truncated")) == 4
    for r in results:
        assert 1 <= r.num_turns <= 3 and len(r.completion_ids) == len(r.env_mask) == len(r.logprobs) <= 100
        assert all((lp is None) == (m == 0) for lp, m in zip(r.logprobs, r.env_mask))
        sequence = list(r.prompt_ids) + list(r.completion_ids)
        with torch.no_grad():
            logits = model(torch.tensor([sequence])).logits[0, len(r.prompt_ids) - 1: -1].float() / 2.0
        reference = torch.log_softmax(logits, -1).gather(-1, torch.tensor(r.completion_ids)[:, None]).squeeze(-1)
        model_positions = [i for i, m in enumerate(r.env_mask) if m == 1]
        assert torch.allclose(torch.tensor([r.logprobs[i] for i in model_positions]), reference[model_positions],
                              atol=1e-4)
    assert stats["turns_total"] == sum(r.num_turns for r in results)


def test_sequences_that_end_their_turn_leave_the_decode_batch(monkeypatch):
    """The agent's generate runs the decode loop that drops finished rows (its logits included) at their end of turn
    or budget: the same ids and log-probs as transformers' loop, from fewer rows once some sequences have ended."""
    from posttrain_llm.online_rl_trainer.core.backends import decode_loop

    tok = build_char_tokenizer()
    model = build_tiny_model(tok, seed=0)
    with torch.no_grad():  # end of turn likely enough that sequences end at different steps
        model.lm_head.weight[tok.eos_token_id] += 2.0
    seqs = [_prompt(tok, f"{a}+{b}=") for a, b in [(1, 2), (13, 4), (7, 70), (99, 9), (5, 5), (60, 1)]]
    budgets = [24, 24, 4, 24, 10, 24]  # a sequence also leaves at its own budget
    sizes: list[int] = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: sizes.append(int(kw["input_ids"].shape[0])),
                                           with_kwargs=True)
    try:
        ours = hf_generate_fn(model, tok, seed=4)(seqs, budgets)
        our_sizes = list(sizes)
        sizes.clear()
        monkeypatch.setattr(decode_loop, "ENABLED", False)
        plain = hf_generate_fn(model, tok, seed=4)(seqs, budgets)
    finally:
        hook.remove()
    assert [ids for ids, _ in ours] == [ids for ids, _ in plain]
    assert all(len(ids) <= budget for (ids, _), budget in zip(ours, budgets))
    for (_, mine), (_, theirs) in zip(ours, plain):
        assert mine == pytest.approx(theirs, abs=1e-5)
    lengths = sorted(len(ids) for ids, _ in plain)
    assert lengths[0] < lengths[-1], lengths  # the case this test is about: sequences end at different steps
    assert set(sizes) == {6} and our_sizes[0] == 6 and our_sizes[-1] < 6, (our_sizes, lengths)
