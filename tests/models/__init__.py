"""Tests of ``core/models``: resolution, the tiny model, LoRA, QLoRA."""
