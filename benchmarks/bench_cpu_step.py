"""Where a SmolLM2-135M GRPO step spends its time on a CPU, and what each speed-up setting buys: s/step, phase split,
threads really used per phase, padding, tokens/s and peak RSS, for our trainer and raw TRL 1.16 side by side.

Each row of the table is a *variant*: a base and ``+``-joined modifiers (``--variants``):

- bases: ``ours`` (``OnlineRLTrainer`` with the ``smollm2-cpu`` preset as it ships: 4 prompts x G=4, <= 64 new
  tokens, micro-batches of 4 completions x 4 accumulation steps, all cores, no gradient checkpointing, fp32, the
  compact log-prob head); ``trl`` (raw TRL ``GRPOTrainer`` at the settings of
  the preset before issue 12: 1 thread, fp32, gradient checkpointing, micro-batches of 4; our trainer with those
  settings measured 0.98-1.02x of it); ``trl-defaults`` (raw TRL at its own defaults for the same work: all cores,
  gradient checkpointing on, one micro-batch of 16 completions; fp32, as TRL's bf16 default is a GPU default);
- modifiers: ``tN`` torch threads; ``cpubf16`` / ``fp32`` (ours) ``cpu_bf16_autocast="auto"`` / ``False`` (without
  either, the preset's setting);
  ``gc``/``nogc`` gradient checkpointing; ``mbN`` N completions per micro-batch
  (accumulation = 16 / N); ``bf16`` the config's bf16 flag (accelerate's autocast around every forward, generation
  included; fp32 master weights); ``genbf16`` / ``trainbf16`` ``torch.autocast("cpu", bfloat16)`` around generation
  only / around the training loss only (monkeypatched on the trainer instance); ``genbf16w`` generation with a bf16
  copy of the policy's weights, refreshed from the fp32 weights before each generation; ``compact`` TRL's fused
  LM head projects only the scored (completion) positions, as it does on Triton devices (on CPU it projects every
  prompt, completion and pad position); ``static`` a static KV cache (``cache_implementation="static"``);
  ``multinomial`` (ours) tokens sampled by ``torch.multinomial`` as before issue 12, not by the inverse-CDF sampler
  of ``backends/cpu_sampling.py`` (raw TRL always uses ``torch.multinomial``); ``noshare`` (ours) every row's
  prompt computed with it in the log-prob passes (``share_prompt_prefix=False``, as before issue 12's last change);
  ``nocommon`` (ours) each prompt shared by its own completions only, not the prompts' common first tokens (the
  sharing before the common prefix; ``shared_prompt.batch_common_prefix`` patched to find none); ``noskip`` (ours)
  micro-batches whose advantages are all zero run their forward and backward too (``skip_zero_advantage=False``);
  ``noprune`` (ours) every row stays in the decode batch until the last row ends (transformers' own decoding loop,
  not ``backends/decode_loop.py``'s; the same tokens).
  Example: ``ours+t2+nogc+mb8+bf16``.

Method: every run is a fresh ``python`` subprocess; runs are interleaved (variant order reversed on odd repeats) so
drift from other work hits all variants alike; per run the median of the steps after the first (warm-up); per
variant the median over runs, and the spread (min-max of every measured step). Phases are timed by wrapping methods
of the TRL trainer instance in the child: ``_generate_single_turn`` (generation; its first model call is the
prefill, the rest the decode loop), ``_calculate_rewards``, ``_get_per_token_logps_and_entropies`` without grad
(old/reference log-prob passes) and with grad (training forward), ``accelerator.backward``, ``_clip_grad_norm`` plus
the optimizer step (``on_pre_optimizer_step`` -> ``on_optimizer_step``); ``other`` is the rest of the step.
``cpu/wall`` per phase (process CPU time / wall time) is how many cores the phase kept busy; ``decode ms/token
step`` is the decode time over the number of decode calls (one new token for every row), which does not depend on
how long the sampled completions ran, unlike the step time. ``--logprob-check``
also measures, on the same sampled tokens, how far bf16-autocast log-probs are from fp32 ones.

Not covered: GPUs, PPO and RLOO, evaluation, learning quality (the README's run measures that).

Run:  python benchmarks/bench_cpu_step.py [--variants ours,trl-defaults,trl,ours+t2] [--repeats 1] [--steps 4]
      [--model HuggingFaceTB/SmolLM2-135M-Instruct] [--logprob-check] [--smoke] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import _common  # benchmarks/ is on sys.path: this file's folder

SMOKE_FIELDS = ["settings", "per_variant.ours.step_s", "per_variant.ours.decode_ms_per_token_step",
                "per_variant.ours+fp32.step_s", "per_variant.trl.step_s",
                "per_variant.trl-defaults.step_s",
                "per_variant.ours.phases_s.generate", "per_variant.ours.ratio_vs_ours", "logprob_check.max_abs_diff"]
PHASES = ("generate", "prefill", "decode", "reward", "logp_nograd", "fwd", "bwd", "opt", "other")
BASES = ("ours", "trl", "trl-defaults")
PROMPTS, NUM_GENERATIONS, MAX_NEW = 4, 4, 64  # the smollm2-cpu preset's work per step


# ---------------------------------------------------------------------------------------------- variants
def parse_variant(name: str, completions: int) -> dict:
    """``base+mod+mod`` -> settings dict; ValueError naming the bad part and what is accepted."""
    base, *mods = name.split("+")
    if base not in BASES:
        raise ValueError(f"variant {name!r}: base {base!r} is not one of {list(BASES)}")
    defaults = base == "trl-defaults"
    ours = base == "ours"
    spec = dict(name=name, side="ours" if ours else "raw", threads=os.cpu_count() if defaults or ours else 1,
                gc=not ours, micro_batch=completions if defaults else NUM_GENERATIONS, bf16=False, genbf16=False,
                trainbf16=False, static=False, genbf16w=False, compact=False, cpu_bf16=None, multinomial=not ours,
                share=ours, common=ours, skip=ours, prune=ours)
    for mod in mods:
        if mod[:1] == "t" and mod[1:].isdigit() and int(mod[1:]) >= 1:
            spec["threads"] = int(mod[1:])
        elif mod[:2] == "mb" and mod[2:].isdigit() and int(mod[2:]) >= 1:
            spec["micro_batch"] = int(mod[2:])
        elif mod in ("cpubf16", "fp32") and ours:
            spec["cpu_bf16"] = "auto" if mod == "cpubf16" else False
        elif mod == "multinomial" and ours:
            spec["multinomial"] = True
        elif mod == "noshare" and ours:
            spec["share"] = False
        elif mod == "nocommon" and ours:
            spec["common"] = False
        elif mod == "noskip" and ours:
            spec["skip"] = False
        elif mod == "noprune" and ours:
            spec["prune"] = False
        elif mod in ("gc", "nogc"):
            spec["gc"] = mod == "gc"
        elif mod in ("bf16", "genbf16", "genbf16w", "trainbf16", "static", "compact"):
            spec[mod] = True
        else:
            raise ValueError(f"variant {name!r}: modifier {mod!r} is not one of tN, mbN, gc, nogc, bf16, genbf16, "
                             "genbf16w, trainbf16, static, compact, cpubf16, fp32, multinomial, noshare, nocommon, noskip and "
                             "noprune "
                             "(ours only)")
    if completions % spec["micro_batch"] or spec["micro_batch"] % NUM_GENERATIONS:
        raise ValueError(f"variant {name!r}: mb{spec['micro_batch']} must divide the {completions} completions per "
                         f"step and hold whole groups of {NUM_GENERATIONS}")
    spec["grad_accum"] = completions // spec["micro_batch"]
    return spec


# ---------------------------------------------------------------------------------------------- child side
class PhaseClock:
    """Per step: wall and CPU seconds of each phase, generation shape facts, completion tokens."""

    def __init__(self):
        self.step = 0
        self.begin = None
        self.step_ends: list[float] = []
        self.cpu_begin = 0.0
        self.cpu_ends: list[float] = []  # process CPU time: less sensitive than wall time to other jobs
        self.wall = defaultdict(lambda: defaultdict(float))
        self.cpu = defaultdict(lambda: defaultdict(float))
        self.facts = defaultdict(dict)

    def add(self, phase: str, wall: float, cpu: float) -> None:
        self.wall[self.step][phase] += wall
        self.cpu[self.step][phase] += cpu

    def wrap(self, obj, attr: str, phase_of):
        """Replace ``obj.attr`` by a timed call; ``phase_of(args, kwargs)`` names the phase (None: not timed)."""
        original = getattr(obj, attr)

        def timed(*args, **kwargs):
            phase = phase_of(args, kwargs)
            t, c = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                if phase:
                    self.add(phase, time.perf_counter() - t, time.process_time() - c)

        setattr(obj, attr, timed)


class BF16Copy:
    """While active, TRL generates with a bf16 copy of the policy (parameters bf16, buffers such as RoPE's inv_freq
    kept fp32), refreshed from the fp32 weights on each entry. Prototype of "generate in bf16, train in fp32"."""

    def __init__(self, trainer):
        self.trainer, self.copy, self.saved = trainer, None, None

    def __enter__(self):
        import copy

        import torch

        model = self.trainer.model
        if self.copy is None:
            self.copy = copy.deepcopy(model)
            self.copy.__dict__.pop("forward", None)  # TRL's fused-LM-head forward closes over the fp32 model
            for p in self.copy.parameters():
                p.requires_grad_(False)
                p.data = p.data.to(torch.bfloat16)
        else:
            with torch.no_grad():
                for dst, src in zip(self.copy.parameters(), model.parameters()):
                    dst.copy_(src)
        self.saved, self.trainer.model_wrapped = self.trainer.model_wrapped, self.copy
        return self.copy

    def __exit__(self, *exc):
        self.trainer.model_wrapped = self.saved


def instrument(trainer, clock: PhaseClock, spec: dict) -> None:
    """Wrap the TRL trainer instance's methods (see the module docstring) and add the step/optimizer callback."""
    import torch
    from transformers import TrainerCallback

    gen_calls: list[tuple[float, int, object]] = []  # (time, input length, use_cache) of each model call in generate
    in_generate = [False]
    model = trainer.model

    def pre_hook(module, args, kwargs):
        if in_generate[0]:
            ids = kwargs.get("input_ids", args[0] if args else None)
            gen_calls.append((time.perf_counter(), int(ids.shape[1]) if ids is not None else -1,
                              kwargs.get("use_cache")))

    model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    original_generate = trainer._generate_single_turn

    bf16_copy = BF16Copy(trainer) if spec["genbf16w"] else None

    def generate(prompt_ids, *args, **kwargs):
        gen_calls.clear()
        in_generate[0] = True
        t, c = time.perf_counter(), time.process_time()
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec["genbf16"]):
                if bf16_copy is None:
                    completion_ids, logprobs = original_generate(prompt_ids, *args, **kwargs)
                else:
                    with bf16_copy:
                        completion_ids, logprobs = original_generate(prompt_ids, *args, **kwargs)
        finally:
            in_generate[0] = False
        end = time.perf_counter()
        clock.add("generate", end - t, time.process_time() - c)
        prefill_end = gen_calls[1][0] if len(gen_calls) > 1 else end
        clock.add("prefill", prefill_end - t, 0.0)
        clock.add("decode", end - prefill_end, 0.0)
        lengths = [len(c) for c in completion_ids]
        prompt_lengths = [len(p) for p in prompt_ids]
        clock.facts[clock.step].update(
            completion_tokens=sum(lengths), model_calls=len(gen_calls),
            kv_cache=all(n == 1 for _, n, _ in gen_calls[1:]) if len(gen_calls) > 1 else None,
            use_cache_kwarg=str(gen_calls[-1][2]) if gen_calls else None,
            prompt_pad_frac=1 - sum(prompt_lengths) / (len(prompt_lengths) * max(prompt_lengths)),
            decode_pad_frac=1 - sum(lengths) / (len(lengths) * max(len(gen_calls), 1)))
        return completion_ids, logprobs

    trainer._generate_single_turn = generate
    clock.wrap(trainer, "_calculate_rewards", lambda a, k: "reward")

    def logp_phase(args, kwargs):
        mask = kwargs.get("attention_mask", args[2] if len(args) > 2 else None)
        if mask is not None and torch.is_grad_enabled():
            facts = clock.facts[clock.step]
            facts["train_tokens"] = facts.get("train_tokens", 0) + int(mask.sum())
            facts["train_slots"] = facts.get("train_slots", 0) + mask.numel()
        return "fwd" if torch.is_grad_enabled() else "logp_nograd"

    clock.wrap(trainer, "_get_per_token_logps_and_entropies", logp_phase)
    if spec["compact"]:  # TRL scores only the completion positions through the LM head on Triton devices only
        import trl.trainer.utils as trl_utils

        trl_utils._use_triton = lambda device: True  # only the compact-or-not choice in utils; kernels keep their own
    if spec["trainbf16"]:
        original_loss = trainer._compute_loss

        def bf16_loss(*args, **kwargs):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return original_loss(*args, **kwargs)

        trainer._compute_loss = bf16_loss
    clock.wrap(trainer.accelerator, "backward", lambda a, k: "bwd")
    clock.wrap(trainer, "_clip_grad_norm", lambda a, k: "opt")

    class StepCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            # transformers turns checkpointing on inside train(), before this
            clock.begin, clock.cpu_begin = time.perf_counter(), time.process_time()
            clock.facts["gradient_checkpointing"] = bool(trainer.model.is_gradient_checkpointing)

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self.t, self.c = time.perf_counter(), time.process_time()

        def on_optimizer_step(self, args, state, control, **kwargs):
            clock.add("opt", time.perf_counter() - self.t, time.process_time() - self.c)

        def on_step_end(self, args, state, control, **kwargs):
            clock.step_ends.append(time.perf_counter())
            clock.cpu_ends.append(time.process_time())
            clock.step += 1

    trainer.add_callback(StepCallback())


def build_trainer(spec: dict, out_dir: str):
    """Our trainer (its TRL backend is what gets instrumented) or raw TRL's, for ``spec``; returns (runner, trl)."""
    import torch
    from transformers import set_seed

    from posttrain_llm.online_rl_trainer import MathRewardFunction, SyntheticArithmeticLoader

    rows = PROMPTS * spec["steps"]
    style = "bare" if spec["tiny"] else "chat"
    dataset = SyntheticArithmeticLoader(prompt_style=style).load("train", num_samples=rows, seed=0)
    common = dict(per_device_train_batch_size=spec["micro_batch"], gradient_accumulation_steps=spec["grad_accum"],
                  gradient_checkpointing=spec["gc"], bf16=spec["bf16"], max_steps=spec["steps"], output_dir=out_dir,
                  max_completion_length=spec["max_new"], save_steps=10_000, seed=0)
    trl_extra = {"cache_implementation": "static"} if spec["static"] else {}
    if spec["side"] == "ours":
        from posttrain_llm.online_rl_trainer import OnlineRLTrainer, TrainerConfig
        from posttrain_llm.online_rl_trainer.core.backends import cpu_sampling

        if spec["multinomial"]:  # no vocabulary is large enough: every draw goes to torch.multinomial
            cpu_sampling.MIN_VOCAB = 2**62
        if not spec["common"]:  # no common prefix found: prompts shared within their own group only
            from posttrain_llm.online_rl_trainer.core.backends import shared_prompt
            from posttrain_llm.online_rl_trainer.core.backends.trl import deferred_prefix

            shared_prompt.batch_common_prefix = deferred_prefix.batch_common_prefix = lambda *a, **k: ()
        if not spec["prune"]:  # every row decodes until the last one ends (transformers' own loop)
            from posttrain_llm.online_rl_trainer.core.backends import decode_loop

            decode_loop.ENABLED = False

        config = TrainerConfig.from_preset("smollm2-cpu", model_name_or_path=spec["model_path"], report_to=["none"],
                                           torch_num_threads=spec["threads"], trl_kwargs=trl_extra,
                                           share_prompt_prefix=spec["share"], skip_zero_advantage=spec["skip"],
                                           **({} if spec["cpu_bf16"] is None else {"cpu_bf16_autocast": spec["cpu_bf16"]}),
                                           **common)
        runner = OnlineRLTrainer(config, MathRewardFunction(), dataset)
        return runner, runner.backend
    from trl import GRPOConfig, GRPOTrainer

    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    torch.set_num_threads(spec["threads"])
    set_seed(0)
    model, tokenizer = load_model_and_tokenizer(spec["model_path"])
    args = GRPOConfig(use_cpu=True, num_generations=NUM_GENERATIONS, learning_rate=2e-5, logging_steps=1,
                      report_to="none", temperature=1.0, **common, **trl_extra)
    trainer = GRPOTrainer(model=model, reward_funcs=[MathRewardFunction()], args=args, train_dataset=dataset,
                          processing_class=tokenizer)
    return trainer, trainer


def run_child(spec: dict) -> dict:
    import resource

    import torch

    torch.set_num_threads(spec["threads"])
    clock = PhaseClock()
    with tempfile.TemporaryDirectory(prefix="bench-cpu-step-") as out_dir:
        runner, trl_trainer = build_trainer(spec, out_dir)
        instrument(trl_trainer, clock, spec)
        args = trl_trainer.args
        applied = {"torch_threads": torch.get_num_threads(), "mixed_precision": str(trl_trainer.accelerator.mixed_precision),
                   "micro_batch": args.per_device_train_batch_size, "grad_accum": args.gradient_accumulation_steps,
                   "steps_per_generation": args.steps_per_generation, "num_iterations": args.num_iterations,
                   "cache_implementation": trl_trainer.generation_config.cache_implementation}
        runner.train()
    applied["gradient_checkpointing"] = clock.facts.pop("gradient_checkpointing")
    steps = []
    for i, end in enumerate(clock.step_ends):
        start = clock.begin if i == 0 else clock.step_ends[i - 1]
        wall, cpu = dict(clock.wall[i]), dict(clock.cpu[i])
        timed = sum(wall.get(p, 0.0) for p in ("generate", "reward", "logp_nograd", "bwd", "opt")) + wall.get("fwd", 0)
        wall["other"] = (end - start) - timed
        cpu_s = clock.cpu_ends[i] - (clock.cpu_begin if i == 0 else clock.cpu_ends[i - 1])
        steps.append({"step_s": end - start, "cpu_step_s": cpu_s, "wall": wall, "cpu": cpu, **clock.facts[i]})
    return {"spec": spec, "steps": steps, "applied": applied,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def logprob_check(spec: dict) -> dict:
    """Sample completions in fp32, then score the same tokens in fp32 and under bf16 autocast: per-token |diff|."""
    import torch

    from posttrain_llm.online_rl_trainer import SyntheticArithmeticLoader
    from posttrain_llm.online_rl_trainer.core.models import load_model_and_tokenizer

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(spec["model_path"])
    model.eval()
    rows = SyntheticArithmeticLoader(prompt_style="bare" if spec["tiny"] else "chat").load("train", num_samples=PROMPTS)
    texts = [p if isinstance(p, str) else tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
             for p in rows["prompt"] for _ in range(NUM_GENERATIONS)]
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=True, temperature=1.0, max_new_tokens=spec["max_new"],
                             pad_token_id=tok.pad_token_id)
    completion = out[:, enc["input_ids"].shape[1]:]
    mask = torch.cat([enc["attention_mask"], (completion != tok.pad_token_id).long()], dim=1)
    scores = {}
    for name, autocast in (("fp32", False), ("bf16", True)):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=out, attention_mask=mask).logits[:, enc["input_ids"].shape[1] - 1:-1]
        scores[name] = torch.log_softmax(logits.float(), -1).gather(-1, completion.unsqueeze(-1)).squeeze(-1)
    keep = mask[:, enc["input_ids"].shape[1]:].bool()
    diff = (scores["bf16"] - scores["fp32"]).abs()[keep]
    seq = ((scores["bf16"] - scores["fp32"]) * keep).sum(1).abs()
    return {"tokens": int(keep.sum()), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "p99_abs_diff": float(diff.quantile(0.99)), "max_seq_sum_abs_diff": float(seq.max()),
            "frac_ratio_outside_clip_0.2": float(((scores["bf16"] - scores["fp32"])[keep].exp() - 1).abs()
                                                 .gt(0.2).float().mean())}


# ---------------------------------------------------------------------------------------------- parent side
def launch(spec: dict, timeout: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = f.name
    try:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec), "--child-out", result_path]
        proc = subprocess.run(cmd, env=dict(_common.child_env(spec["threads"]), PYTHONHASHSEED="0"),
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{spec['name']} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
        return json.loads(Path(result_path).read_text())
    finally:
        Path(result_path).unlink(missing_ok=True)


def run_summary(run: dict) -> dict:
    """Medians over the measured steps (the first step is the warm-up) of one run."""
    measured = run["steps"][1:]
    med = lambda values: statistics.median(values)  # noqa: E731
    phases = {p: med([s["wall"].get(p, 0.0) for s in measured]) for p in PHASES}
    cores = {p: med([s["cpu"].get(p, 0.0) / s["wall"][p] for s in measured if s["wall"].get(p)])
             for p in ("generate", "fwd", "bwd", "opt") if any(s["wall"].get(p) for s in measured)}
    tokens = sum(s.get("completion_tokens", 0) for s in measured)
    facts = {k: med([s[k] for s in measured if s.get(k) is not None])
             for k in ("prompt_pad_frac", "decode_pad_frac", "model_calls") if any(k in s for s in measured)}
    if measured and measured[0].get("train_slots"):
        facts["train_pad_frac"] = med([1 - s["train_tokens"] / s["train_slots"] for s in measured])
    decode_calls = [(s["wall"]["decode"], s["model_calls"] - 1) for s in measured
                    if s.get("model_calls", 0) > 1 and "decode" in s["wall"]]
    if decode_calls:  # one decode step of every row: comparable across runs whose completions differ in length
        facts["decode_ms_per_token_step"] = med([1000 * seconds / calls for seconds, calls in decode_calls])
    facts["kv_cache"] = all(s.get("kv_cache") for s in measured)
    facts["use_cache_kwarg"] = measured[0].get("use_cache_kwarg") if measured else None
    return {"step_s": med([s["step_s"] for s in measured]), "cpu_step_s": med([s["cpu_step_s"] for s in measured]),
            "all_step_s": [round(s["step_s"], 3) for s in measured],
            "phases_s": phases, "cores_used": cores, "tokens_per_s": tokens / sum(s["step_s"] for s in measured),
            "peak_rss_mb": run["peak_rss_mb"], "facts": facts, "applied": run["applied"]}


def _median_of(values) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(runs: list[dict], names: list[str]) -> dict:
    out = {}
    for name in names:
        per_run = [run_summary(r) for r in runs if r["spec"]["name"] == name]
        steps = [s for r in per_run for s in r["all_step_s"]]
        out[name] = {"step_s": statistics.median(r["step_s"] for r in per_run),
                     "cpu_step_s": statistics.median(r["cpu_step_s"] for r in per_run), "step_s_min": min(steps),
                     "step_s_max": max(steps), "runs_step_s": [round(r["step_s"], 3) for r in per_run],
                     "phases_s": {p: statistics.median(r["phases_s"][p] for r in per_run) for p in PHASES},
                     "cores_used": per_run[0]["cores_used"], "facts": per_run[0]["facts"],
                     "decode_ms_per_token_step": _median_of(r["facts"].get("decode_ms_per_token_step") for r in per_run),
                     "applied": per_run[0]["applied"],
                     "tokens_per_s": statistics.median(r["tokens_per_s"] for r in per_run),
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in per_run)}
    ref = out.get("ours", out[names[0]])["step_s"]
    for entry in out.values():
        entry["ratio_vs_ours"] = entry["step_s"] / ref
    return out


def print_table(per_variant: dict) -> None:
    rows = []
    for name, e in per_variant.items():
        row = {"variant": name, "step_s": e["step_s"], "spread": f"{e['step_s_min']:.1f}-{e['step_s_max']:.1f}",
               "ratio": e["ratio_vs_ours"], "cpu_s": e["cpu_step_s"], "tok_s": e["tokens_per_s"], "rss": e["peak_rss_mb"] / 1024,
               **{p: e["phases_s"][p] for p in PHASES},
               "cores": "/".join(f"{e['cores_used'].get(p, float('nan')):.1f}" for p in ("generate", "fwd", "bwd")),
               "pads": f"{e['facts'].get('decode_pad_frac', 0):.2f}/{e['facts'].get('train_pad_frac', 0):.2f}",
               "kv": e["facts"].get("kv_cache"), "dec_ms": e["decode_ms_per_token_step"]}
        rows.append(row)
    cols = [("variant", "variant", ""), ("s/step", "step_s", ".2f"), ("spread", "spread", ""),
            ("x ours", "ratio", ".2f"), ("CPU s/step", "cpu_s", ".1f"), *[(p, p, ".2f") for p in PHASES],
            ("decode ms/token step", "dec_ms", ".1f"),
            ("tok/s", "tok_s", ".1f"),
            ("RSS GiB", "rss", ".2f"), ("cores gen/fwd/bwd", "cores", ""), ("pad dec/train", "pads", ""),
            ("KV", "kv", "")]
    _common.print_table(rows, cols)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=_common.SMOLLM2)
    p.add_argument("--variants", default="ours,ours+noshare,ours+fp32,trl-defaults,trl",
                   help="comma-separated base[+modifier...] (see the module docstring)")
    p.add_argument("--repeats", type=int, default=1, help="fresh runs per variant (interleaved)")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per run; the first is the warm-up")
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW)
    p.add_argument("--logprob-check", action="store_true", help="also measure bf16-autocast vs fp32 log-probs")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per child run")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    smoke = {"model": _common.TINY_MODEL, "steps": 2, "max_new_tokens": 8, "logprob_check": True}
    args = _common.parse_args(p, argv, smoke)
    if args.child is None:
        if args.steps < 2:
            p.error(f"--steps {args.steps}: need at least 2 (the first step is dropped as warm-up)")
        if args.repeats < 1:
            p.error(f"--repeats {args.repeats}: need at least 1")
        try:
            args.specs = [parse_variant(v.strip(), PROMPTS * NUM_GENERATIONS) for v in args.variants.split(",")
                          if v.strip()]
        except ValueError as exc:
            p.error(f"--variants: {exc}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if _common.serve_child(args, lambda spec: logprob_check(spec) if spec["name"] == "logprob-check" else run_child(spec)):
        return 0
    os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    from posttrain_llm.online_rl_trainer import resolve_model

    base = dict(model_path=resolve_model(args.model), tiny=args.model == _common.TINY_MODEL, steps=args.steps,
                max_new=args.max_new_tokens)
    print(f"model {args.model} -> {base['model_path']}; load avg {os.getloadavg()[0]:.2f}", flush=True)
    runs, started = [], time.perf_counter()
    for rep in range(args.repeats):
        for spec in (args.specs if rep % 2 == 0 else args.specs[::-1]):
            run = launch({**base, **spec, "repeat": rep}, args.timeout)
            s = run_summary(run)
            print(f"  repeat {rep} {spec['name']:<28} {s['step_s']:7.2f} s/step  steps {s['all_step_s']}  "
                  f"RSS {s['peak_rss_mb'] / 1024:.2f} GiB  load {os.getloadavg()[0]:.2f}", flush=True)
            runs.append(run)
    names = [s["name"] for s in args.specs]
    per_variant = summarize(runs, names)
    check = None
    if args.logprob_check:
        check = launch({**base, "name": "logprob-check", "threads": 2}, args.timeout)
        print(f"bf16 autocast vs fp32 log-probs on {check['tokens']} sampled tokens: max |diff| "
              f"{check['max_abs_diff']:.4f}, mean {check['mean_abs_diff']:.5f}, p99 {check['p99_abs_diff']:.4f}")
    print(f"\n{args.model}: {PROMPTS} prompts x G={NUM_GENERATIONS}, <= {args.max_new_tokens} new tokens, "
          f"{args.steps} steps per run (first dropped), {args.repeats} repeat(s); phases in s (median step)")
    print_table(per_variant)
    result = {"model": args.model, "settings": {**base, "variants": names, "repeats": args.repeats},
              "wall_s": time.perf_counter() - started, "per_variant": per_variant, "logprob_check": check,
              "runs": runs}
    headline = {f"{n}_step_s": round(e["step_s"], 3) for n, e in per_variant.items()}
    headline.update({f"{n}_peak_rss_mb": round(e["peak_rss_mb"]) for n, e in per_variant.items()})
    data = f"generated: SyntheticArithmeticLoader ({'bare' if base['tiny'] else 'chat'} prompts)"
    _common.write_result(args, __file__, result, data, headline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
