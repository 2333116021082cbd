"""`ModelEvaluator`: batched generation and reward-based scoring of a model on a dataset.

Generation (``backend="hf"``) sorts prompts by length (so a batch pads little), pads on the left, uses the KV
cache and stops when every sequence in the batch has ended; greedy by default. ``cpu_bf16_autocast`` (True, False,
``"auto"``) runs it under bfloat16 autocast on CPUs with native bf16, as the trainers can (``backends/cpu_bf16.py``);
the result's ``generation`` settings say whether it was on. Off by default: measured on SmolLM2 it was only ~1.06x
faster, and only 14 of 32 greedy 64-token completions matched fp32's, so compare accuracies within one precision.
``backend="vllm"`` hands the same prompt tokens to vLLM (GPU only, see ``vllm_generation``); the result API is the same.

Each completion is judged by the reward function; a sample counts as correct when the judge's status is
``passed`` (built-in rewards) or, for plain reward callables, when its reward reaches ``success_threshold``. Judge
errors (reward ``None``) are counted apart, never as wrong. The numbers (intervals, pass@k, maj@k, breakdowns,
strict vs lenient) are computed in ``eval/scoring.py``; Markdown/PNG reports are written by ``eval/reports.py``.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

from .common.tokens import encode_prompt, eos_token_ids, left_pad, length_until_eos
from .config import ConfigError
from .data.rows import as_rows
from .eval.scoring import (
    breakdown,
    check_rows,
    dataset_fingerprint,
    extraction_variants,
    gold_answer,
    judge,
    package_versions,
    reward_settings,
    summarize,
)
from .rewards.base import RewardFunction, RewardResult, completion_text, reward_name

BACKENDS = ("hf", "vllm")


def check_generation_settings(*, backend: str, batch_size: Any, max_new_tokens: Any, temperature: Any, top_p: Any,
                              seed: Any) -> None:
    """ConfigError naming the first evaluator setting out of range (before any model is loaded)."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r}; expected one of {BACKENDS}")
    for name, value in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "seed" else 1):
            raise ConfigError(f"{name}={value!r} must be an integer >= {0 if name == 'seed' else 1}")
    if not _finite(temperature) or temperature < 0:
        raise ConfigError(f"temperature={temperature!r} must be a finite number >= 0 (0 = greedy)")
    if not _finite(top_p) or not 0 < top_p <= 1:
        raise ConfigError(f"top_p={top_p!r} must be in (0, 1] (1 = no nucleus truncation; --top-p on the command "
                          "line)")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
        backend: str = "hf",
        vllm_gpu_memory_utilization: float = 0.8,
        cpu_bf16_autocast: bool | str = False,
        share_prompt_prefix: bool = True,
        tools: Sequence[Callable] | None = None,
        environment_factory: Callable[[], Any] | None = None,
        agent_settings: dict[str, Any] | None = None,
    ) -> None:
        import torch


        check_generation_settings(backend=backend, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                  temperature=temperature, top_p=top_p, seed=seed)
        if torch_num_threads:
            torch.set_num_threads(torch_num_threads)
        self.cpu_bf16 = _evaluator_cpu_bf16(cpu_bf16_autocast, use_gpu, backend)
        self.backend = backend
        self._vllm = None
        if backend == "vllm":
            # vLLM loads the weights itself, from a folder: only the tokenizer is loaded here.
            from .eval.vllm_generation import VLLMGenerator

            if not isinstance(model, str):
                raise ConfigError("backend='vllm' loads weights from a folder: pass the model as a name or path")
            from transformers import AutoTokenizer

            from .models import resolve_model

            self.model_name, path = model, resolve_model(model)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
            self._vllm = VLLMGenerator(path, tokenizer, seed=seed, gpu_memory_utilization=vllm_gpu_memory_utilization)
            model = None
        elif isinstance(model, str):
            from .models import load_model_and_tokenizer

            self.model_name = model
            model, loaded_tok = load_model_and_tokenizer(model)
            tokenizer = tokenizer or loaded_tok
        else:
            if tokenizer is None:
                raise ConfigError("pass the tokenizer together with a model object")
            self.model_name = getattr(getattr(model, "config", None), "_name_or_path", type(model).__name__)
        if use_gpu and model is not None:
            if not torch.cuda.is_available():
                raise ConfigError("use_gpu=True (--use-gpu) but no CUDA device is visible; drop it to evaluate on CPU")
            model.to("cuda")
        from .models import prepare_tokenizer

        prepare_tokenizer(tokenizer)
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        self.show_progress = show_progress
        if not isinstance(share_prompt_prefix, bool):
            raise ConfigError(f"share_prompt_prefix={share_prompt_prefix!r} must be True or False")
        self.share_prompt_prefix = share_prompt_prefix
        # Agents (eval/agents.py): the trainers' multi-turn rollouts; max_new_tokens budgets model + tool tokens.
        self.agent_setup = _evaluator_agent_setup(tokenizer, tools, environment_factory, agent_settings, backend,
                                                  max_new_tokens)

    # ------------------------------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Any], num_return_sequences: int = 1) -> tuple[list[list[str]], list[list[int]]]:
        """Completions for each prompt: (texts[prompt][sample], token_lengths[prompt][sample]). With tools, the final
        assistant message of each multi-turn rollout and its model tokens."""
        if self.agent_setup is not None:
            texts, lengths, _ = self._agent_rollouts([{"prompt": p} for p in prompts], num_return_sequences)
            return texts, lengths
        if self._vllm is not None:
            return self._vllm.generate(prompts, num_return_sequences=num_return_sequences,
                                       max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                       top_p=self.top_p, seed=self.seed)
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
        from .backends.cpu_bf16 import bf16_autocast
        from .backends.cpu_sampling import fast_cpu_sampling
        from .backends.decode_loop import drop_finished_rows
        from .backends.shared_prompt import cache_argument_name, common_prefix_cache, common_prefix_inputs, inner_model

        inner = inner_model(self.model)
        cache_kw = cache_argument_name(inner) if self.share_prompt_prefix else None
        with (torch.inference_mode(), bf16_autocast(self.cpu_bf16), fast_cpu_sampling(),
              drop_finished_rows(self.model)):
            for batch in tqdm(batches, desc="generating", disable=not self.show_progress, leave=False):
                extra: dict[str, Any] = {}
                if cache_kw is None:
                    ids, mask = left_pad([encoded[i] for i in batch], pad_id)
                else:  # the batch's common prefix (system prompt, few-shot examples) computed once
                    ids, mask, prefix = common_prefix_inputs([encoded[i] for i in batch], pad_id)
                    ids = ids.to(device)
                    cache = common_prefix_cache(self.model, ids, prefix, cache_kw, inner.config,
                                                rows=len(batch) * num_return_sequences)
                    if cache is not None:
                        extra[cache_kw] = cache
                width = ids.shape[1]
                out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **gen_kwargs,
                                          **extra)
                new = out[:, width:].cpu()
                for j in range(new.shape[0]):
                    i = batch[j // num_return_sequences]
                    tokens = new[j].tolist()
                    n = length_until_eos(tokens, eos_ids)
                    texts[i].append(self.tokenizer.decode(tokens[:n], skip_special_tokens=True))
                    lengths[i].append(n)
        if was_training:
            self.model.train()
        return texts, lengths

    def _agent_rollouts(self, rows: list[dict], n: int):
        from .eval.agents import agent_generate

        was_training = self.model.training
        self.model.eval()
        try:
            return agent_generate(self.model, self.tokenizer, self.agent_setup, rows, n, batch_size=self.batch_size,
                                  temperature=self.temperature, top_p=self.top_p, seed=self.seed,
                                  cpu_bf16=self.cpu_bf16)
        finally:
            self.model.train(was_training)

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
        ``mean_completion_length`` (tokens), ``seconds``, ``generation`` settings, ``dataset_fingerprint``,
        ``versions`` and ``records`` (one per problem: prompt, completion, gold, extracted, reward, status, reason;
        with n > 1 also the lists ``completions``, ``rewards``, ``statuses``, ``extracted_answers``).
        With n > 1: ``pass_at_k`` (Chen et al. 2021 unbiased estimator) and, when the reward can extract answers
        (math), ``maj_at_k`` (majority vote over normalized answers), for k = 1, 2, 4, ... and n.
        For a ``MathRewardFunction``: ``by_extraction`` = {"strict": {...}, "lenient": {...}}, the same numbers
        under both extraction rules (the top-level ones follow the reward's own mode).
        ``breakdown_by`` (row fields, e.g. ``["level", "subject"]``) adds ``breakdowns[field][value]`` with ``n``,
        ``accuracy`` and its Wilson ``accuracy_ci`` per group.
        """
        n_samples = num_samples_per_problem
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ConfigError(f"num_samples_per_problem={num_samples_per_problem!r} must be an integer >= 1 "
                              "(completions per problem; --samples-per-problem on the command line)")
        if n_samples > 1 and self.temperature == 0:
            raise ConfigError("num_samples_per_problem > 1 needs sampling: create the evaluator with temperature > 0 "
                              "(greedy decoding would repeat the same completion)")
        rows = as_rows(test_data)
        check_rows(rows, breakdown_by)
        start = time.perf_counter()
        rollouts = None
        if self.agent_setup is not None:
            texts, lengths, rollouts = self._agent_rollouts(rows, n_samples)
        else:
            texts, lengths = self.generate([r["prompt"] for r in rows], num_return_sequences=n_samples)
        generation_seconds = time.perf_counter() - start
        flat_rows = [r for r in rows for _ in range(n_samples)]
        flat_texts = [t for ts in texts for t in ts]

        def per_problem_verdicts(grader) -> list[list[RewardResult]]:
            flat = judge(grader, flat_texts, flat_rows, success_threshold)
            return [flat[i * n_samples:(i + 1) * n_samples] for i in range(len(rows))]

        per_problem = per_problem_verdicts(reward_fn)
        with_maj = callable(getattr(reward_fn, "extract", None))
        variants = extraction_variants(reward_fn)
        by_extraction = {mode: per_problem if grader == reward_fn else per_problem_verdicts(grader)
                         for mode, grader in variants.items()}
        records = _records(rows, texts, lengths, per_problem, by_extraction, reward_fn)
        result: dict[str, Any] = {
            "model": self.model_name,
            "reward": reward_name(reward_fn),
            "reward_settings": reward_settings(reward_fn),
            "success_threshold": success_threshold,
            "n": len(rows),
            "num_samples_per_problem": n_samples,
            **summarize(per_problem, with_maj=with_maj),
            "mean_completion_length": sum(sum(n) for n in lengths) / len(flat_texts),
            "completion_tokens": sum(sum(n) for n in lengths),
            "generation_seconds": generation_seconds,
            "seconds": time.perf_counter() - start,
            "generation": {"backend": self.backend, "temperature": self.temperature, "top_p": self.top_p,
                           "max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size, "seed": self.seed,
                           "cpu_bf16_autocast": self.cpu_bf16, "share_prompt_prefix": self.share_prompt_prefix},
            "dataset_fingerprint": dataset_fingerprint(rows),
            "versions": package_versions(),
            "records": records,
        }
        if by_extraction:
            result["by_extraction"] = {mode: summarize(v, with_maj=with_maj) for mode, v in by_extraction.items()}
        if rollouts is not None:
            result["agent"] = _agent_results(records, rollouts, self.agent_setup)
        if breakdown_by:
            result["breakdowns"] = {f: breakdown(rows, per_problem, f) for f in breakdown_by}
        return result


def _evaluator_cpu_bf16(setting: Any, use_gpu: bool, backend: str) -> bool:
    """Whether the evaluator generates under CPU bf16 autocast; ConfigError for a bad or impossible setting."""
    from .common.machine import cpu_bf16_autocast_on, cpu_has_native_bf16

    if not (setting is True or setting is False or setting == "auto"):
        raise ConfigError(f"cpu_bf16_autocast={setting!r}: use True, False or 'auto' (--cpu-bf16 on/off/auto)")
    if setting is True and not use_gpu and not cpu_has_native_bf16():
        raise ConfigError("cpu_bf16_autocast=True (--cpu-bf16 on) but this CPU has no native bfloat16 instructions "
                          "(AVX512-BF16 or AMX): it would be slower than fp32; use 'auto' or False")
    # CPU generation under bf16 autocast (weights stay fp32): ~1.06x faster on SmolLM2 here, so off by default.
    return backend == "hf" and cpu_bf16_autocast_on(setting, use_gpu)


def _evaluator_agent_setup(tokenizer: Any, tools: Any, environment_factory: Any, settings: Any, backend: str,
                           max_new_tokens: int) -> Any:
    if not tools and environment_factory is None:
        if settings:
            raise ConfigError(f"agent_settings={settings!r} given without tools or environment_factory")
        return None
    if backend != "hf":
        raise ConfigError(f"tools/environment_factory need backend='hf' (got {backend!r}): multi-turn rollouts run on "
                          "the transformers model")
    from .eval.agents import evaluator_agent_setup

    return evaluator_agent_setup(tokenizer, tools, environment_factory, max_new_tokens, settings)


def _agent_results(records: list[dict[str, Any]], rollouts: Any, setup: Any) -> dict[str, Any]:
    from .eval.agents import add_transcripts, agent_summary

    add_transcripts(records, rollouts)
    return {**agent_summary(rollouts), "call_format": setup.multi_turn.call_format}


def _records(rows: list[dict], texts: list[list[str]], lengths: list[list[int]], per_problem: list[list[RewardResult]],
             by_extraction: dict[str, list[list[RewardResult]]], reward_fn: Any) -> list[dict[str, Any]]:
    """One record per problem: prompt, first completion and its verdict; with n samples also the lists."""
    records = []
    for i, (row, completions, lens, results) in enumerate(zip(rows, texts, lengths, per_problem)):
        rec = {"prompt": row["prompt"], "completion": completions[0], "answer": row.get("answer"),
               "gold": gold_answer(reward_fn, row), "extracted": results[0].extracted,
               "reward": results[0].score, "status": results[0].status, "reason": results[0].reason,
               "completion_tokens": lens[0]}
        if len(results) > 1:
            rec.update(completions=completions, rewards=[r.score for r in results],
                       statuses=[r.status for r in results], extracted_answers=[r.extracted for r in results],
                       num_correct=sum(r.status == "passed" for r in results))
        if by_extraction:
            rec["status_by_extraction"] = {mode: [r.status for r in v[i]] if len(results) > 1 else v[i][0].status
                                           for mode, v in by_extraction.items()}
        records.append(rec)
    return records


__all__ = ["ModelEvaluator", "judge", "completion_text", "BACKENDS"]
