"""Tests of ``core/config.py``, ``core/presets.py`` and ``core/trl_arguments.py``."""
