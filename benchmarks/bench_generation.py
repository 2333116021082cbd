"""Generation throughput of ``ModelEvaluator`` against a naive loop and plain batched ``generate``.

Same model, same prompts, same greedy settings and ``max_new_tokens``, all in one process, interleaved:

- ``naive``: one prompt at a time, ``model.generate`` on a batch of one (what an eval script often does);
- ``plain_batched``: the prompts in dataset order, ``--batch-size`` at a time, templated and left-padded by the
  tokenizer, one ``model.generate`` per batch (KV cache on, stops when every row has hit EOS);
- ``evaluator``: ``ModelEvaluator.generate`` at the same batch size (prompts sorted by length first, each batch's
  common prompt prefix -- system prompt, few-shot example -- computed once);
- ``evaluator_noshare``: the same with ``share_prompt_prefix=False`` (every row prefills its whole prompt);
- ``evaluator_bf16`` (only on a CPU with native bf16): the same with ``cpu_bf16_autocast=True``; its agreement
  with the fp32 naive loop shows how many greedy answers bf16 changes.

Throughput is *useful* tokens per second: the completion tokens up to and including EOS, summed over prompts,
divided by the wall time of the whole pass (padding and the steps a finished row idles through cost time but
count nothing). The agreement column is the share of completions identical to the naive loop's (greedy; batch
padding can flip a near-tie, so it need not be 1.0). Targets from issue #5: evaluator >= 5x naive, >= 0.9x plain.

Prompts: GSM8K test questions (``--data-dir``, ``$ONLINE_RL_DATA_DIR`` or ``../shared/data``), else generated
GSM8K-style word problems (``benchmarks/_generated.py``); ``--task arithmetic``: the README SmolLM2 run's held-out
prompts (``train_math``'s one-shot chat arithmetic: ~80 of their ~97 tokens are the same in every prompt); for the
built-in tiny model, whose context is 256 characters, chat arithmetic prompts. The table and JSON say which. Not
covered: sampling, vLLM, GPU.

Run:  python benchmarks/bench_generation.py [--model HuggingFaceTB/SmolLM2-135M-Instruct | builtin:tiny-char-llama]
          [--prompts 32] [--batch-size 16] [--max-new-tokens 64] [--repeats 1] [--threads N] [--task gsm8k|arithmetic]
          [--data-dir DIR | --generated-data]
          [--smoke] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import _common
import _generated

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from posttrain_llm.online_rl_trainer import ModelEvaluator
from posttrain_llm.online_rl_trainer.core.common.machine import cpu_has_native_bf16
from posttrain_llm.online_rl_trainer.core.common.tokens import encode_prompt, eos_token_ids, length_until_eos
from posttrain_llm.online_rl_trainer.core.models import SMOLLM2_ID, load_model_and_tokenizer

SMOKE_FIELDS = ["prompts", "methods.naive.tokens_per_s", "methods.plain_batched.tokens_per_s",
                "methods.evaluator.tokens_per_s", "methods.evaluator.agreement_with_naive", "evaluator_vs_naive",
                "evaluator_vs_plain_batched"]


def load_prompts(args) -> tuple[list, str]:
    """The prompts and where they came from (``real: <dir>`` / ``generated: <what>``)."""
    from posttrain_llm.online_rl_trainer import GSM8KLoader, SyntheticArithmeticLoader

    if args.model.startswith("builtin:"):  # 256-token context: GSM8K questions do not fit, arithmetic does
        rows = SyntheticArithmeticLoader(difficulty=3, prompt_style="chat").load("test", num_samples=args.prompts,
                                                                                 seed=args.seed)
        return list(rows["prompt"]), "generated: synthetic arithmetic chat prompts (the tiny model's context)"
    if args.task == "arithmetic":
        from posttrain_llm.online_rl_trainer.examples.train_math import load_math_dataset

        _, test = load_math_dataset("arithmetic", tiny=False, data_dir=None, num_train=700, num_test=args.prompts,
                                    seed=42, skip_invalid=False)
        return list(test["prompt"]), "generated: train_math's one-shot chat arithmetic (the README SmolLM2 run's held-out set)"
    folder, data = _common.resolve_data(args, ("gsm8k/test.jsonl",),
                                        lambda d: _generated.write_gsm8k(d, n=max(args.prompts, 120)))
    rows = GSM8KLoader(data_dir=folder).load("test", num_samples=args.prompts, seed=args.seed)
    return list(rows["prompt"]), data


def run_naive(model, tok, prompts, max_new, eos) -> tuple[list[list[int]], float]:
    outs, start = [], time.perf_counter()
    with torch.inference_mode():
        for p in prompts:
            ids = torch.tensor([encode_prompt(tok, p)])
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                                 do_sample=False, eos_token_id=eos, pad_token_id=tok.pad_token_id,
                                 temperature=None, top_p=None, top_k=None)
            new = out[0, ids.shape[1]:].tolist()
            outs.append(new[:length_until_eos(new, eos)])
    return outs, time.perf_counter() - start


def run_plain_batched(model, tok, prompts, max_new, eos, batch_size) -> tuple[list[list[int]], float]:
    outs, start = [], time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(prompts), batch_size):
            texts = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts[i:i + batch_size]]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, eos_token_id=eos,
                                 pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
            for row in out[:, enc["input_ids"].shape[1]:].tolist():
                outs.append(row[:length_until_eos(row, eos)])
    return outs, time.perf_counter() - start


def run_evaluator(model, tok, prompts, max_new, batch_size, cpu_bf16=False, share=True) -> tuple[list[list[int]], float]:
    ev = ModelEvaluator(model, tok, batch_size=batch_size, max_new_tokens=max_new, show_progress=False,
                        cpu_bf16_autocast=cpu_bf16, share_prompt_prefix=share)
    start = time.perf_counter()
    texts, lengths = ev.generate(prompts)
    seconds = time.perf_counter() - start
    # The evaluator returns texts and token lengths (no ids): texts for the agreement check, lengths for throughput.
    return [(t[0], n[0]) for t, n in zip(texts, lengths)], seconds


def measure(model, tok, prompts: list, args) -> dict:
    """Interleaved passes of the methods; per method the median seconds, useful tokens, agreement."""
    eos = eos_token_ids(tok, model)
    times: dict[str, list[float]] = {"naive": [], "plain_batched": [], "evaluator": [], "evaluator_noshare": []}
    if cpu_has_native_bf16():
        times["evaluator_bf16"] = []
    outputs = {}
    for _ in range(args.repeats):
        naive, t = run_naive(model, tok, prompts, args.max_new_tokens, eos)
        times["naive"].append(t)
        plain, t = run_plain_batched(model, tok, prompts, args.max_new_tokens, eos, args.batch_size)
        times["plain_batched"].append(t)
        ours, t = run_evaluator(model, tok, prompts, args.max_new_tokens, args.batch_size)
        times["evaluator"].append(t)
        outputs["evaluator"] = ours
        outputs["evaluator_noshare"], t = run_evaluator(model, tok, prompts, args.max_new_tokens, args.batch_size,
                                                        share=False)
        times["evaluator_noshare"].append(t)
        if "evaluator_bf16" in times:
            outputs["evaluator_bf16"], t = run_evaluator(model, tok, prompts, args.max_new_tokens, args.batch_size, True)
            times["evaluator_bf16"].append(t)
    naive_text = [tok.decode(x, skip_special_tokens=True) for x in naive]
    plain_text = [tok.decode(x, skip_special_tokens=True) for x in plain]
    tokens = {"naive": sum(map(len, naive)), "plain_batched": sum(map(len, plain))}
    agree = {"naive": 1.0, "plain_batched": sum(a == b for a, b in zip(plain_text, naive_text)) / len(prompts)}
    for name, out in outputs.items():
        tokens[name] = sum(n for _, n in out)
        agree[name] = sum(a == b for (a, _), b in zip(out, naive_text)) / len(prompts)
    rows = {}
    for name in times:
        sec = statistics.median(times[name])
        rows[name] = {"seconds": sec, "tokens": tokens[name], "tokens_per_s": tokens[name] / sec,
                      "agreement_with_naive": agree[name], "seconds_runs": [round(t, 3) for t in times[name]]}
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=SMOLLM2_ID)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    p.add_argument("--task", choices=("gsm8k", "arithmetic"), default="gsm8k",
                   help="prompts: GSM8K test questions, or the README SmolLM2 run's one-shot arithmetic")
    smoke = {"model": _common.TINY_MODEL, "prompts": 4, "batch_size": 2, "max_new_tokens": 4, "repeats": 1,
             "threads": 1}
    args = _common.parse_args(p, argv, smoke, data=True)
    for flag in ("prompts", "batch_size", "max_new_tokens", "repeats"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    model, tok = load_model_and_tokenizer(args.model)
    model.eval()
    prompts, data = load_prompts(args)
    prompt_lengths = [len(encode_prompt(tok, q)) for q in prompts]
    rows = measure(model, tok, prompts, args)
    ratio_naive = rows["evaluator"]["tokens_per_s"] / rows["naive"]["tokens_per_s"]
    ratio_plain = rows["evaluator"]["tokens_per_s"] / rows["plain_batched"]["tokens_per_s"]
    result = {
        "model": args.model, "prompts": len(prompts),
        "prompt_tokens_min_max": [min(prompt_lengths), max(prompt_lengths)], "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens, "task": args.task, "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "methods": rows, "evaluator_vs_naive": ratio_naive, "evaluator_vs_plain_batched": ratio_plain,
        "meets_target_vs_naive_5x": ratio_naive >= 5.0, "meets_target_vs_plain_0p9x": ratio_plain >= 0.9,
    }
    print(f"\n{args.model}: {len(prompts)} prompts ({min(prompt_lengths)}-{max(prompt_lengths)} tokens), greedy, "
          f"max {args.max_new_tokens} new tokens, batch {args.batch_size}, median of {args.repeats}, "
          f"{torch.get_num_threads()} torch threads")
    _common.print_table([{"method": name, **r} for name, r in rows.items()],
                        [("method", "method", ""), ("seconds", "seconds", ".2f"), ("tokens", "tokens", "d"),
                         ("tokens/s", "tokens_per_s", ".1f"), ("agree", "agreement_with_naive", ".2f"),
                         ("seconds per repeat", "seconds_runs", "")])
    print(f"evaluator / naive = {ratio_naive:.2f}x (target >= 5x); evaluator / plain batched = {ratio_plain:.2f}x "
          f"(target >= 0.9x)")
    if "evaluator_bf16" in rows:
        result["evaluator_bf16_vs_evaluator"] = rows["evaluator_bf16"]["tokens_per_s"] / rows["evaluator"]["tokens_per_s"]
        print(f"evaluator with bf16 autocast / evaluator (fp32) = {result['evaluator_bf16_vs_evaluator']:.2f}x")
    result["evaluator_vs_evaluator_noshare_seconds"] = rows["evaluator"]["seconds"] / rows["evaluator_noshare"]["seconds"]
    print(f"evaluator seconds / evaluator without the shared prefix = {result['evaluator_vs_evaluator_noshare_seconds']:.2f}x")
    headline = {k: round(result[k], 3) for k in ("evaluator_vs_naive", "evaluator_vs_plain_batched",
                                                 "evaluator_vs_evaluator_noshare_seconds")}
    _common.write_result(args, __file__, result, data, headline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
