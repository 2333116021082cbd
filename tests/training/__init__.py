"""Tests of ``core/trainer.py`` and ``core/training``: training end to end, resume, several processes, faults."""
