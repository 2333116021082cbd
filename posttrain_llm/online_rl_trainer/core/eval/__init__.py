"""Evaluation beyond generation: scoring and statistics, paired comparison, reports, the vLLM backend.

``core/inference.py`` (``ModelEvaluator``) generates; the modules here score and report."""
