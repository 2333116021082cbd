"""`ModelEvaluator`: batched generation and reward-based scoring of a model on a dataset.

Generation sorts prompts by length (so a batch pads little), pads on the left, uses the KV cache and stops when
every sequence in the batch has ended; greedy by default. Each completion is judged by the reward function; a
sample counts as correct when the judge's status is ``passed`` (built-in rewards) or, for plain reward callables,
when its reward reaches ``success_threshold``. Judge errors (reward ``None``) are counted apart, never as wrong.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

from .rewards.base import RewardFunction, RewardResult, completion_text
from .tokens import encode_prompt, eos_token_ids, left_pad


class ModelEvaluator:
    """Evaluate a model (a name/folder, or a loaded model with its tokenizer) on rows with a chat ``prompt``."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        batch_size: int = 16,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 42,
        use_gpu: bool = False,
        torch_num_threads: int | None = None,
        show_progress: bool = True,
    ) -> None:
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
        if temperature < 0:
            raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy)")
        if torch_num_threads:
            torch.set_num_threads(torch_num_threads)
        if isinstance(model, str):
            from .models import load_model_and_tokenizer

            self.model_name = model
            model, loaded_tok = load_model_and_tokenizer(model)
            tokenizer = tokenizer or loaded_tok
        else:
            if tokenizer is None:
                raise ValueError("pass the tokenizer together with a model object")
            self.model_name = getattr(getattr(model, "config", None), "_name_or_path", type(model).__name__)
        if use_gpu:
            if not torch.cuda.is_available():
                raise ValueError("use_gpu=True but no CUDA device is visible")
            model.to("cuda")
        from .models import prepare_tokenizer

        prepare_tokenizer(tokenizer)
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        self.show_progress = show_progress

    # ------------------------------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Any], num_return_sequences: int = 1) -> tuple[list[list[str]], list[list[int]]]:
        """Completions for each prompt: (texts[prompt][sample], token_lengths[prompt][sample])."""
        import torch
        from tqdm.auto import tqdm

        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        texts: list[list[str]] = [[] for _ in prompts]
        lengths: list[list[int]] = [[] for _ in prompts]
        device = next(self.model.parameters()).device
        pad_id = self.tokenizer.pad_token_id
        eos_ids = eos_token_ids(self.tokenizer, self.model)
        do_sample = self.temperature > 0
        gen_kwargs: dict[str, Any] = dict(
            max_new_tokens=self.max_new_tokens, do_sample=do_sample, pad_token_id=pad_id, eos_token_id=eos_ids,
            num_return_sequences=num_return_sequences, use_cache=True,
        )
        if do_sample:
            gen_kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=0)
        else:  # silence "generation flags are not valid" warnings from sampling defaults in generation_config
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        was_training = self.model.training
        self.model.eval()
        torch.manual_seed(self.seed)
        batches = [order[i: i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        with torch.inference_mode():
            for batch in tqdm(batches, desc="generating", disable=not self.show_progress, leave=False):
                ids, mask = left_pad([encoded[i] for i in batch], pad_id)
                width = ids.shape[1]
                out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **gen_kwargs)
                new = out[:, width:].cpu()
                for j in range(new.shape[0]):
                    i = batch[j // num_return_sequences]
                    tokens = new[j].tolist()
                    n = _length_until_eos(tokens, eos_ids)
                    texts[i].append(self.tokenizer.decode(tokens[:n], skip_special_tokens=True))
                    lengths[i].append(n)
        if was_training:
            self.model.train()
        return texts, lengths

    # ------------------------------------------------------------------------------------------------------
    def evaluate(
        self,
        test_data: Any,
        reward_fn: RewardFunction | Callable,
        *,
        num_samples_per_problem: int = 1,
        success_threshold: float = 1.0,
        breakdown_by: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Generate ``num_samples_per_problem`` completions per row and judge each.

        Returns a dict with ``accuracy`` (correct / judged samples; with one greedy sample per problem this is
        plain accuracy, with n samples it is the unbiased pass@1), ``accuracy_ci`` (95% Wilson interval over
        judged samples), ``n`` (problems), ``num_correct``, ``judge_errors``, ``mean_reward``,
        ``mean_completion_length`` (tokens), ``seconds``, ``generation`` settings, and ``records`` (one per problem:
        prompt, completion, answer, reward, status, extracted; with n > 1 also the lists ``completions``, ``rewards``,
        ``statuses``, ``extracted_answers``). With n > 1: ``pass_at_k`` (Chen et al. 2021 unbiased estimator) and, when
        the reward can extract answers (math), ``maj_at_k`` (majority vote over normalized answers), for k = 1, 2,
        4, ... and n. ``breakdown_by`` (row fields, e.g. ``["level", "subject"]``) adds ``breakdowns[field][value]``
        with ``n``, ``accuracy`` and its Wilson ``accuracy_ci`` per group.
        """
        from .metrics import mean_pass_at_k, wilson_interval

        n_samples = int(num_samples_per_problem)
        if n_samples < 1:
            raise ValueError(f"num_samples_per_problem={num_samples_per_problem} must be >= 1")
        if n_samples > 1 and self.temperature == 0:
            raise ValueError("num_samples_per_problem > 1 needs sampling: create the evaluator with temperature > 0 "
                             "(greedy decoding would repeat the same completion)")
        rows = _rows(test_data)
        if not rows:
            raise ValueError("test_data is empty: nothing to evaluate")
        missing = [i for i, r in enumerate(rows) if "prompt" not in r]
        if missing:
            raise ValueError(f"row {missing[0]} of test_data has no 'prompt' column")
        for field_name in breakdown_by:
            if field_name not in rows[0]:
                raise ValueError(f"breakdown_by field {field_name!r} is not a column of test_data "
                                 f"(columns: {sorted(rows[0])})")
        start = time.perf_counter()
        texts, lengths = self.generate([r["prompt"] for r in rows], num_return_sequences=n_samples)
        flat_rows = [r for r in rows for _ in range(n_samples)]
        flat = judge(reward_fn, [t for ts in texts for t in ts], flat_rows, success_threshold)
        per_problem = [flat[i * n_samples:(i + 1) * n_samples] for i in range(len(rows))]
        records = []
        for row, completions, lens, results in zip(rows, texts, lengths, per_problem):
            rec = {"prompt": row["prompt"], "completion": completions[0], "answer": row.get("answer"),
                   "reward": results[0].score, "status": results[0].status, "extracted": results[0].extracted,
                   "completion_tokens": lens[0]}
            if n_samples > 1:
                rec.update(completions=completions, rewards=[r.score for r in results],
                           statuses=[r.status for r in results], extracted_answers=[r.extracted for r in results],
                           num_correct=sum(r.status == "passed" for r in results))
            records.append(rec)
        judged = [r for r in flat if r.status != "error"]
        num_correct = sum(r.status == "passed" for r in flat)
        result: dict[str, Any] = {
            "model": self.model_name,
            "n": len(rows),
            "num_samples_per_problem": n_samples,
            "num_correct": num_correct,
            "judge_errors": len(flat) - len(judged),
            "accuracy": num_correct / len(judged) if judged else math.nan,
            "accuracy_ci": wilson_interval(num_correct, len(judged)) if judged else (math.nan, math.nan),
            "accuracy_ci_method": "wilson",
            "mean_reward": sum(r.score for r in judged) / len(judged) if judged else math.nan,
            "mean_completion_length": sum(sum(l) for l in lengths) / len(flat),
            "seconds": time.perf_counter() - start,
            "generation": {"temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens,
                           "batch_size": self.batch_size, "seed": self.seed},
            "dataset_fingerprint": dataset_fingerprint(rows),
            "versions": package_versions(),
            "records": records,
        }
        if breakdown_by:
            result["breakdowns"] = {f: _breakdown(rows, per_problem, f) for f in breakdown_by}
        if n_samples > 1:
            ks = _ks(n_samples)
            counts = [(n_samples, sum(r.status == "passed" for r in res)) for res in per_problem]
            result["pass_at_k"] = {k: mean_pass_at_k(counts, k) for k in ks}
            extract = getattr(reward_fn, "extract", None)
            if callable(extract):
                result["maj_at_k"] = {k: _maj_at_k(per_problem, k) for k in ks}
        return result


def dataset_fingerprint(rows: list[dict]) -> str:
    """SHA-256 (first 16 hex digits) of the rows' prompts and answers, in order: same problems, same fingerprint."""
    import hashlib
    import json

    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row.get("prompt"), row.get("answer")], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("posttrain-llm", "torch", "transformers", "trl", "math-verify"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _breakdown(rows: list[dict], per_problem: list[list[RewardResult]], field_name: str) -> dict[str, Any]:
    """Accuracy (over judged samples) and its Wilson interval for each value of ``field_name``."""
    from .metrics import wilson_interval

    groups: dict[str, list[RewardResult]] = {}
    counts: dict[str, int] = {}
    for row, results in zip(rows, per_problem):
        key = str(row.get(field_name))
        groups.setdefault(key, []).extend(results)
        counts[key] = counts.get(key, 0) + 1
    out = {}
    for key in sorted(groups):
        judged = [r for r in groups[key] if r.status != "error"]
        correct = sum(r.status == "passed" for r in judged)
        out[key] = {"n": counts[key], "accuracy": correct / len(judged) if judged else math.nan,
                    "accuracy_ci": wilson_interval(correct, len(judged)) if judged else (math.nan, math.nan)}
    return out


def _ks(n: int) -> list[int]:
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def _maj_at_k(per_problem: list[list[RewardResult]], k: int) -> float:
    """Fraction of problems whose most common normalized answer among the first k samples was graded correct.

    The vote is over the judge's own extraction and normalization of each answer; the winner is correct when a
    sample that gave it passed (same normalized answer, same gold). No answer never wins; ties go to the first seen.
    """
    from .metrics import majority_vote
    from .rewards.math_answers import normalize_answer

    wins = 0
    for results in per_problem:
        keys = [normalize_answer(r.extracted) if r.extracted is not None else None for r in results[:k]]
        winner, _ = majority_vote(keys)
        wins += winner is not None and any(key == winner and r.status == "passed" for key, r in zip(keys, results))
    return wins / len(per_problem)


def judge(reward_fn: RewardFunction | Callable, completions: list[str], rows: list[dict], success_threshold: float) -> list[RewardResult]:
    """RewardResults for each completion; plain callables are wrapped (status from ``success_threshold``)."""
    columns = {k: [r.get(k) for r in rows] for k in rows[0] if k != "prompt"}
    if isinstance(reward_fn, RewardFunction):
        try:
            return reward_fn.score_batch(completions, **columns)
        except NotImplementedError:
            pass  # a custom reward that implements __call__ only
    values = reward_fn(completions=completions, prompts=[r["prompt"] for r in rows], **columns)
    if len(values) != len(completions):
        raise ValueError(f"reward returned {len(values)} values for {len(completions)} completions")
    out = []
    for v in values:
        if v is None:
            out.append(RewardResult(None, "error", "reward returned None"))
        else:
            v = float(v)
            if not math.isfinite(v):
                raise ValueError(f"reward returned a non-finite value {v}")
            out.append(RewardResult(v, "passed" if v >= success_threshold else "failed"))
    return out


def _rows(data: Any) -> list[dict]:
    if isinstance(data, list):
        return data
    if hasattr(data, "to_list"):
        return data.to_list()
    return [dict(r) for r in data]


def _length_until_eos(tokens: list[int], eos_ids: list[int]) -> int:
    for k, t in enumerate(tokens):
        if t in eos_ids:
            return k + 1
    # No EOS: the completion ran to max_new_tokens (generate pads finished rows only after an EOS).
    return len(tokens)


__all__ = ["ModelEvaluator", "judge", "completion_text"]
