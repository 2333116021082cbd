"""Tests of ``core/backends``: the training backends."""
