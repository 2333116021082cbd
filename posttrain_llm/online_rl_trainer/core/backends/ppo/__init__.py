"""Our PPO: setup (components), rollout, update loop (trainer), checkpoints, reporting."""
