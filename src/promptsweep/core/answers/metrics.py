"""Per-field scoring functions ``(expected, got) -> [0, 1]`` and a registry to name them.

Built-in metrics are pure standard library.  Suites refer to metrics by name or by an
import path ``package.module:function``; custom metrics are wrapped by :func:`checked` so
a bad return value fails with the metric's name instead of corrupting a score.
"""

from __future__ import annotations

import importlib
import math
import numbers
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import cast

__all__ = [
    "Metric",
    "MetricRegistry",
    "UnknownMetricError",
    "checked",
    "exact_match",
    "rouge_l",
    "token_f1",
    "token_jaccard",
    "tokenize",
]

Metric = Callable[[str, str], float]
"""``(expected, got) -> score`` with the score in ``[0, 1]``; 1 is a perfect answer."""

# ``\w`` without ``_``: unicode letters and digits, so snake_case labels split into words.
_WORD = re.compile(r"[^\W_]+")
# Scores a float error away from the bounds are clipped, not rejected.
_TOLERANCE = 1e-9


def tokenize(text: str) -> list[str]:
    """Case-folded word tokens (unicode letters/digits).

    ``_`` separates tokens, so ``apiserver_not_ready`` scores like "apiserver not ready"
    and a label compared to free text gets partial credit instead of zero.
    """
    return _WORD.findall(text.casefold())


def _clip(score: float) -> float:
    return min(1.0, max(0.0, score))


def exact_match(expected: str, got: str) -> float:
    """1.0 when equal after ``strip`` and ``casefold``, else 0.0."""
    return 1.0 if expected.strip().casefold() == got.strip().casefold() else 0.0


def token_jaccard(expected: str, got: str) -> float:
    """Size of the intersection over the union of the token sets."""
    left, right = set(tokenize(expected)), set(tokenize(got))
    if not left and not right:
        return 1.0
    if not left or not right:
        return 0.0
    return _clip(len(left & right) / len(left | right))


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence length; one DP row over the shorter sequence."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            if token == other:
                current.append(previous[j - 1] + 1)
            else:
                current.append(max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(expected: str, got: str) -> float:
    """ROUGE-L F1 (beta = 1): LCS-based precision and recall over tokens, order-aware."""
    reference, candidate = tokenize(expected), tokenize(got)
    if not reference and not candidate:
        return 1.0
    if not reference or not candidate:
        return 0.0
    lcs = _lcs_length(reference, candidate)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(candidate), lcs / len(reference)
    return _clip(2 * precision * recall / (precision + recall))


def token_f1(expected: str, got: str) -> float:
    """SQuAD-style F1 over bags of tokens (repeated tokens count as often as they overlap)."""
    reference, candidate = tokenize(expected), tokenize(got)
    if not reference and not candidate:
        return 1.0
    if not reference or not candidate:
        return 0.0
    common = sum((Counter(reference) & Counter(candidate)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(candidate), common / len(reference)
    return _clip(2 * precision * recall / (precision + recall))


def _where(name: str, field: str | None) -> str:
    return f"metric {name!r}" + (f" for field {field!r}" if field is not None else "")


def checked(name: str, fn: Metric, *, field: str | None = None) -> Metric:
    """Wrap a custom metric so a non-number or out-of-range score raises ``ValueError``.

    Scores within 1e-9 of the bounds are clipped (float error); exceptions raised by the
    metric itself propagate unchanged.
    """

    def metric(expected: str, got: str) -> float:
        result: object = fn(expected, got)
        if not isinstance(result, numbers.Real):
            raise ValueError(
                f"{_where(name, field)} returned {result!r} ({type(result).__name__}); "
                "a metric must return a number in [0, 1]"
            )
        score = float(result)
        if math.isnan(score) or not -_TOLERANCE <= score <= 1.0 + _TOLERANCE:
            raise ValueError(f"{_where(name, field)} returned {score!r}, outside [0, 1]")
        return _clip(score)

    metric.__name__ = getattr(fn, "__name__", name)
    metric.__doc__ = getattr(fn, "__doc__", None)
    return metric


class UnknownMetricError(ValueError):
    """A metric spec that is neither a registered name nor an importable callable."""


_BUILTINS: tuple[tuple[str, Metric, tuple[str, ...]], ...] = (
    ("exact", exact_match, ("exact_match",)),
    ("jaccard", token_jaccard, ("token_jaccard",)),
    ("rouge_l", rouge_l, ("rougeL",)),
    ("token_f1", token_f1, ("f1",)),
)


class MetricRegistry:
    """Metric names (and aliases) to functions; pre-filled with the built-ins.

    Names are matched case-insensitively; a name may not contain ``:``, which marks an
    import path.
    """

    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}
        self._canonical: dict[str, str] = {}  # casefolded name or alias -> canonical name
        self._builtin: set[str] = set()
        for name, fn, aliases in _BUILTINS:
            self._add(name, fn, aliases)
            self._builtin.add(name)

    def _add(self, name: str, fn: Metric, aliases: Sequence[str] = ()) -> None:
        spellings = [name, *aliases]
        for spelling in spellings:
            if not spelling or ":" in spelling or spelling != spelling.strip():
                raise ValueError(f"invalid metric name {spelling!r}")
            if spelling.casefold() in self._canonical:
                raise ValueError(f"metric {spelling!r} is already registered")
        if not callable(fn):
            raise ValueError(f"metric {name!r} is not callable")
        self._metrics[name] = fn
        for spelling in spellings:
            self._canonical[spelling.casefold()] = name

    def register(self, name: str, fn: Metric) -> None:
        """Add a metric under ``name``; a duplicate name or alias raises ``ValueError``."""
        self._add(name, fn)

    def names(self) -> list[str]:
        """Canonical names, sorted (aliases are not listed)."""
        return sorted(self._metrics)

    def _unknown(self, spec: str, field: str | None, reason: str | None = None) -> str:
        known = ", ".join(self.names())
        head = f"unknown metric {spec!r}" + (f" for field {field!r}" if field else "")
        if reason:
            head = f"{head}: {reason}"
        return f"{head}; known: {known} (or an import path 'package.module:function')"

    def resolve(self, spec: str, *, field: str | None = None) -> Metric:
        """A registered name or alias, else an import path ``pkg.mod:func``.

        Built-ins are returned as is; registered and imported metrics are wrapped by
        :func:`checked`.  Anything else raises :class:`UnknownMetricError`.
        """
        key = spec.strip()
        name = self._canonical.get(key.casefold())
        if name is not None:
            fn = self._metrics[name]
            return fn if name in self._builtin else checked(name, fn, field=field)
        if ":" not in key:
            raise UnknownMetricError(self._unknown(spec, field))
        return checked(key, self._import(key, field), field=field)

    def _import(self, spec: str, field: str | None) -> Metric:
        module_name, _, attr_path = spec.partition(":")
        if not module_name or not attr_path:
            raise UnknownMetricError(self._unknown(spec, field, "malformed import path"))
        try:
            target: object = importlib.import_module(module_name)
        except Exception as exc:  # a broken module must read as a config error, not a crash
            raise UnknownMetricError(
                self._unknown(spec, field, f"cannot import {module_name!r}: {exc}")
            ) from exc
        for part in attr_path.split("."):
            try:
                target = getattr(target, part)
            except AttributeError as exc:
                raise UnknownMetricError(
                    self._unknown(spec, field, f"{module_name!r} has no attribute {attr_path!r}")
                ) from exc
        if not callable(target):
            raise UnknownMetricError(self._unknown(spec, field, f"{attr_path!r} is not callable"))
        return cast(Metric, target)
