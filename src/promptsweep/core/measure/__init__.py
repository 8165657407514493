"""Scores, totals, intervals and the gate: numbers from per-sample results."""
