"""Training backends behind ``OnlineRLTrainer``: TRL's GRPO/RLOO trainers (``trl/``) and our PPO (``ppo/``).

Each is built from a ``TrainerConfig``, a model, its tokenizer, guarded reward functions and a dataset, and
speaks transformers' Trainer protocol (``train``, ``save_model``, ``state``, callbacks)."""
