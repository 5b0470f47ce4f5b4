"""Evaluation: perplexity and bits-per-byte, multiple-choice benchmarks, held-out demo tasks."""
