"""Tests of ``core/backends/ppo``: our PPO."""
