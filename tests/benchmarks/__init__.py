"""Tests of ``benchmarks/``: every benchmark runs in its smoke mode."""
