"""Samples, suites and experiments: what is evaluated, and how it is split."""
