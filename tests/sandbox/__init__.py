"""Tests of ``core/sandbox``: isolation of untrusted programs, adversarial programs."""
