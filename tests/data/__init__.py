"""Tests of ``core/data``: the dataset loaders."""
