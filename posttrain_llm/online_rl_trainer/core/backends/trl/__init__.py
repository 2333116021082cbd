"""GRPO and RLOO on TRL's trainers, with atomic checkpoints, exact resume and LoRA save modes."""
