"""Generation with vLLM for ``ModelEvaluator(backend="vllm")``: same inputs and outputs as the transformers path.

The prompts are templated and tokenized by our tokenizer (``common/tokens.encode_prompt``) and handed to vLLM as token
ids, so both backends see exactly the same prompt tokens; vLLM returns the new tokens up to and including EOS,
which we decode the same way. Sampling uses ``SamplingParams(n=..., seed=...)``: reproducible for a fixed seed on
the same GPU and vLLM version, but not token-identical to transformers' sampling (different RNG streams and
kernels); greedy results normally match up to float ties.

Needs vLLM installed and a CUDA GPU; :func:`vllm_unavailable_reason` says why not otherwise. Not covered: tensor
parallelism settings beyond vLLM's defaults, LoRA adapters (merge them first), in-memory models (vLLM loads
weights from a folder, so pass a model name or path).
"""

from __future__ import annotations

from typing import Any, Sequence

from ..common.machine import cuda_visible, package_installed
from ..common.tokens import encode_prompt, eos_token_ids


def vllm_unavailable_reason() -> str | None:
    """None when the vLLM backend can run here, else why it cannot (for errors and test skips)."""
    if not package_installed("vllm"):
        return "vLLM is not installed (pip install 'posttrain-llm[vllm]')"
    if not cuda_visible():
        return "vLLM needs a CUDA GPU and none is visible"
    return None


class VLLMGenerator:
    """Holds one ``vllm.LLM`` for a model folder; ``generate`` mirrors ``ModelEvaluator.generate``."""

    def __init__(self, model_path: str, tokenizer: Any, *, seed: int, gpu_memory_utilization: float = 0.8,
                 max_model_len: int | None = None) -> None:
        reason = vllm_unavailable_reason()
        if reason:
            raise ValueError(f"backend='vllm' is not available: {reason}; use backend='hf'")
        from vllm import LLM

        self.tokenizer = tokenizer
        self.llm = LLM(model=model_path, tokenizer=model_path, seed=seed,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len)

    def generate(self, prompts: Sequence[Any], *, num_return_sequences: int, max_new_tokens: int, temperature: float,
                 top_p: float, seed: int) -> tuple[list[list[str]], list[list[int]]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        eos = eos_token_ids(self.tokenizer, None)
        params = SamplingParams(
            n=num_return_sequences, max_tokens=max_new_tokens, seed=seed,
            temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
            stop_token_ids=eos,
        )
        inputs = [TokensPrompt(prompt_token_ids=encode_prompt(self.tokenizer, p)) for p in prompts]
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        texts, lengths = [], []
        for out in outputs:
            ids = [list(o.token_ids) for o in out.outputs]
            texts.append([self.tokenizer.decode(t, skip_special_tokens=True) for t in ids])
            lengths.append([len(t) for t in ids])
        return texts, lengths
