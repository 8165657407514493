"""pytest-promptsweep: LLM evals as pytest tests, scored, gated and optimized."""

from __future__ import annotations

__version__ = "0.1.0"
