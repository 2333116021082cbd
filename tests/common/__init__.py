"""Tests of ``core/common``: errors, names, machine checks, token helpers."""
