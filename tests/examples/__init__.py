"""Tests of ``examples/`` and ``cli.py``: the command-line drivers."""
