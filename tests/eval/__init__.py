"""Tests of ``core/inference.py`` and ``core/eval``: generation, scoring, statistics, comparison, reports."""
