"""Tests of ``core/rewards``: math, format, composite and code rewards."""
