"""Named starting points for `TrainerConfig.from_preset(name, **overrides)`.

Each preset is a plain dict of TrainerConfig fields, so it can be inspected, diffed and dumped to YAML.
The CPU numbers come from measurements on a 2-core machine (see the README's "What to expect on CPU").
"""

from __future__ import annotations

from typing import Any

from .common.names import SMOLLM2_ID, TINY_MODEL_NAME

PRESETS: dict[str, dict[str, Any]] = {
    # A few seconds: proves the wiring on any machine. Tiny built-in model, 2 steps.
    "cpu-smoke": dict(
        model_name_or_path=TINY_MODEL_NAME, trainer_type="grpo", num_generations=4, per_device_train_batch_size=8,
        max_steps=2, learning_rate=3e-4, kl_coef=0.0, max_completion_length=12, max_prompt_length=64,
        save_steps=10_000, logging_steps=1, torch_num_threads=1, output_dir="./outputs/cpu_smoke",
    ),
    # The offline demo (README's first command): tiny char-level Llama after a supervised warm-up (a sloppy teacher
    # that forgets most carries) learns a+b with GRPO. G=16 x 16 prompts, lr 1e-4 constant, beta=0, DAPO token-level
    # loss: tuned over seeds and thread counts (benchmarks/bench_demo_robustness.py). lr 3e-4 fixed the carries as
    # fast but then drifted (0.87 -> 0.73 held-out on one seed); 1e-4 rose steadily to ~0.97 by step 50-60.
    "offline-demo": dict(
        model_name_or_path=TINY_MODEL_NAME, trainer_type="grpo", num_generations=16, per_device_train_batch_size=256,
        max_steps=60, learning_rate=1e-4, lr_scheduler_type="constant", kl_coef=0.0, loss_type="dapo",
        temperature=1.0, max_completion_length=12, max_prompt_length=64, save_steps=10_000, logging_steps=10,
        torch_num_threads=1, output_dir="./outputs/offline_demo",
    ),
    # The offline demo with PPO: one sample per prompt, 256 prompts per step, a separate critic, 4 PPO epochs
    # (16 optimizer steps per PPO step). Each step is ~5x a GRPO step on CPU, but PPO needs far fewer: from the
    # warm-up, held-out accuracy reached ~0.98 within 5-10 steps at lr 1e-4 in the tuning runs.
    "offline-demo-ppo": dict(
        model_name_or_path=TINY_MODEL_NAME, trainer_type="ppo", num_generations=1, per_device_train_batch_size=256,
        ppo_epochs=4, num_mini_batches=4, max_steps=10, learning_rate=1e-4, lr_scheduler_type="constant", kl_coef=0.0,
        temperature=1.0, max_completion_length=12, max_prompt_length=64, save_steps=10_000, logging_steps=1,
        torch_num_threads=1, output_dir="./outputs/offline_demo_ppo",
    ),
    # SmolLM2-135M-Instruct on CPU: short prompts and completions are the cheapest speed-up. One group per
    # micro-batch (4 x 4 completions per step via accumulation) keeps peak RSS near 4 GB. Speed (issue 12,
    # benchmarks/bench_cpu_step.py): all cores, no gradient checkpointing (its recompute was a third of the step), the
    # compact log-prob head of backends/trl/cpu_speed.py, and bf16 autocast where the CPU has native bf16 ("auto";
    # fp32 elsewhere): faster, and over 7 seeds it learned as much as fp32 (README, "Training on a CPU").
    "smollm2-cpu": dict(
        model_name_or_path=SMOLLM2_ID, trainer_type="grpo", num_generations=4, per_device_train_batch_size=4,
        gradient_accumulation_steps=4, gradient_checkpointing=False, max_steps=10, learning_rate=2e-5, kl_coef=0.0,
        temperature=1.0, max_completion_length=64, max_prompt_length=256, save_steps=10_000, logging_steps=1,
        torch_num_threads=None, cpu_bf16_autocast="auto", output_dir="./outputs/smollm2_cpu",
    ),
    # A standard GSM8K recipe for a 0.5B instruct model on one GPU.
    "gsm8k-0.5b-gpu": dict(
        model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct", trainer_type="grpo", num_generations=8,
        per_device_train_batch_size=16, gradient_accumulation_steps=4, learning_rate=1e-6, kl_coef=0.04,
        loss_type="dapo", max_prompt_length=512, max_completion_length=512, temperature=1.0, num_train_epochs=1,
        use_gpu=True, bf16=True, gradient_checkpointing=True, logging_steps=5, save_steps=200, eval_steps=200,
        report_to=["tensorboard"], output_dir="./outputs/gsm8k_qwen05b",
    ),
    # Dr. GRPO (Liu et al. 2025, arXiv:2503.20783): no std scaling, no length normalisation, no KL.
    "dr-grpo": dict(
        trainer_type="grpo", loss_type="dr_grpo", scale_rewards="none", kl_coef=0.0, num_generations=8,
        per_device_train_batch_size=16,
    ),
    # DAPO (Yu et al. 2025, arXiv:2503.14476): token-level loss, clip-higher, no KL, overlong masking, dynamic sampling
    # (zero-variance groups dropped and refilled, backends/trl/dynamic_sampling.py).
    "dapo": dict(
        trainer_type="grpo", loss_type="dapo", kl_coef=0.0, clip_range=0.2, clip_range_high=0.28,
        mask_truncated_completions=True, dynamic_sampling=True, num_generations=8, per_device_train_batch_size=16,
    ),
    # RLOO (Ahmadian et al. 2024) with the leave-one-out baseline; KL in the reward like the paper.
    "rloo": dict(trainer_type="rloo", num_generations=4, per_device_train_batch_size=8, kl_coef=0.05),
}
