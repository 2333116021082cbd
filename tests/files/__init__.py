"""Tests of ``core/files``: atomic writes, the cache lock, checkpoint folders, staged saves."""
