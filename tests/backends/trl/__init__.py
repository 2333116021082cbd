"""Tests of ``core/backends/trl``: GRPO and RLOO on TRL's trainers."""
