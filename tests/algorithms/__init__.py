"""Tests of ``core/algorithms``: the RL tensor math against hand-computed values."""
