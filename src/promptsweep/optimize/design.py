"""Screening designs and main effects: which dimension values matter, from few candidates.

A prompt space is a product of dimensions (tone x few-shot x reasoning …), so its size grows
with the product of their sizes while what we need to learn first grows with their *sum*:
the effect of each value. A balanced design picks a few candidates in which every value of
every dimension appears about equally often, with the columns as uncorrelated as a seeded
search over random balanced designs finds (largest log-determinant of the information
matrix). An additive model fitted to their scores by least squares gives each value's main
effect; a bootstrap over the validation samples gives its interval.

numpy does the linear algebra; the model is small enough (one column per dimension value)
that nothing heavier is needed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Levels = tuple[int, ...]
"""A candidate as the index of its value in each dimension."""

RIDGE = 1e-3
"""A touch of ridge regularisation keeps the fit defined when a design is barely determined."""


def parameter_count(sizes: Sequence[int]) -> int:
    """Columns of the additive model: an intercept plus (values - 1) per dimension."""
    return 1 + sum(size - 1 for size in sizes)


def model_matrix(points: Sequence[Levels], sizes: Sequence[int]) -> np.ndarray:
    """Treatment coding: the first value of each dimension is the reference (column of zeros)."""
    columns = parameter_count(sizes)
    matrix = np.zeros((len(points), columns))
    matrix[:, 0] = 1.0
    for row, point in enumerate(points):
        offset = 1
        for size, level in zip(sizes, point, strict=True):
            if level > 0:
                matrix[row, offset + level - 1] = 1.0
            offset += size - 1
    return matrix


def _balanced_column(size: int, rows: int, rng: random.Random) -> list[int]:
    column = [i % size for i in range(rows)]
    rng.shuffle(column)
    return column


def balanced_design(
    sizes: Sequence[int],
    rows: int,
    *,
    seed: int,
    allowed: set[Levels] | None = None,
    tries: int = 200,
) -> list[Levels]:
    """``rows`` distinct candidates in which each value of each dimension appears ``rows/size``
    times (±1), chosen among ``tries`` seeded random balanced designs for the best-conditioned
    model matrix (D-optimality). ``allowed`` restricts the candidates to those that exist."""
    rng = random.Random(f"design:{seed}")
    total = math.prod(sizes)
    rows = min(rows, total if allowed is None else len(allowed))
    best: list[Levels] = []
    best_score = -math.inf
    for _ in range(tries):
        columns = [_balanced_column(size, rows, rng) for size in sizes]
        points = list(dict.fromkeys(tuple(col[r] for col in columns) for r in range(rows)))
        if allowed is not None:
            points = [p for p in points if p in allowed]
        # Top up duplicates or missing combinations with random distinct ones.
        pool = sorted(allowed) if allowed is not None else None
        guard = 0
        while len(points) < rows and guard < 10 * rows:
            guard += 1
            extra = rng.choice(pool) if pool else tuple(rng.randrange(size) for size in sizes)
            if extra not in points:
                points.append(extra)
        matrix = model_matrix(points, sizes)
        info = matrix.T @ matrix + RIDGE * np.eye(matrix.shape[1])
        sign, logdet = np.linalg.slogdet(info)
        score = logdet if sign > 0 else -math.inf
        if score > best_score:
            best, best_score = points, score
    return sorted(best)


@dataclass(frozen=True)
class Effect:
    """A dimension value's effect on the mean score against the dimension's reference value."""

    dimension: int
    level: int
    mean: float
    low: float
    high: float
    n: int = 0
    """The validation samples the effect rests on (every candidate scored on the same ones)."""


def fit_additive(points: Sequence[Levels], means: Sequence[float], sizes: Sequence[int]) -> np.ndarray:
    """Least-squares coefficients of the additive model (intercept, then treatment effects)."""
    matrix = model_matrix(points, sizes)
    y = np.asarray(means, dtype=float)
    info = matrix.T @ matrix + RIDGE * np.eye(matrix.shape[1])
    coef: np.ndarray = np.linalg.solve(info, matrix.T @ y)
    return coef


def predict(coef: np.ndarray, points: Sequence[Levels], sizes: Sequence[int]) -> np.ndarray:
    prediction: np.ndarray = model_matrix(points, sizes) @ coef
    return prediction


def main_effects(
    points: Sequence[Levels],
    per_sample: Sequence[Sequence[float]],
    sizes: Sequence[int],
    *,
    seed: int = 0,
    resamples: int | None = None,
    confidence: float = 0.95,
) -> list[Effect]:
    """Each non-reference value's effect with a percentile interval.

    ``per_sample[i]`` are candidate ``points[i]``'s scores on the same validation samples in
    the same order; the bootstrap resamples those samples (the same draw for every candidate,
    keeping the comparison paired) and refits.
    """
    scores = np.asarray(per_sample, dtype=float)
    n = scores.shape[1] if scores.ndim == 2 else 0
    if not len(points) or n == 0:
        return []
    coef = fit_additive(points, scores.mean(axis=1), sizes)
    alpha = (1.0 - confidence) / 2
    if resamples is None:
        # Enough draws that the tail quantile rests on ~20 of them (a Bonferroni tail is thin).
        resamples = min(20_000, max(500, math.ceil(20 / alpha)))
    rng = np.random.default_rng(seed)
    draws = np.empty((resamples, coef.shape[0]))
    for b in range(resamples):
        picks = rng.integers(0, n, size=n)
        draws[b] = fit_additive(points, scores[:, picks].mean(axis=1), sizes)
    low = np.quantile(draws, alpha, axis=0)
    high = np.quantile(draws, 1 - alpha, axis=0)
    effects: list[Effect] = []
    offset = 1
    for d, size in enumerate(sizes):
        for level in range(1, size):
            col = offset + level - 1
            effects.append(Effect(d, level, float(coef[col]), float(low[col]), float(high[col]), n))
        offset += size - 1
    return effects


def neighbours(point: Levels, sizes: Sequence[int]) -> list[Levels]:
    """Every candidate that differs from ``point`` in exactly one dimension."""
    out: list[Levels] = []
    for d, size in enumerate(sizes):
        for level in range(size):
            if level != point[d]:
                out.append((*point[:d], level, *point[d + 1 :]))
    return out


def effects_by_name(
    effects: Sequence[Effect], names: Sequence[str], labels: Sequence[Sequence[str]]
) -> Mapping[str, Effect]:
    """``"few_shot=retrieved4"`` → its effect, for reports."""
    return {f"{names[e.dimension]}={labels[e.dimension][e.level]}": e for e in effects}
