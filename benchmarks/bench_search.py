"""Benchmark: successive halving (and random search) against a simulated grid with known scores.

Not a timed test. Each seed draws a 144-candidate grid (3 tones x 3 constraint phrasings x
4 output/reasoning variants x 4 few-shot strategies, additive effects plus an interaction term)
scored on 60 paired validation items with per-item difficulty and per-(candidate, item) noise,
as a real eval would see it. The "grid best" is the candidate the exhaustive grid would pick
(highest observed mean over all 60 items). Run: ``python benchmarks/bench_search.py [--seeds N]``.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from collections.abc import Sequence

from tabulate import tabulate

from promptsweep.optimize.strategies import RandomSearch, Strategy, SuccessiveHalving, select, simulate

N_ITEMS = 60
DIMENSIONS = (3, 3, 4, 4)  # 144 candidates
GOALS = {"calls": 0.30, "picks_best": 0.80, "within_2pts": 0.90}


def simulated_grid(seed: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Candidate -> 60 per-item scores in [0, 1], and candidate -> tokens per call."""
    rng = random.Random(seed)
    effects = [[rng.gauss(0.0, 0.06) for _ in range(size)] for size in DIMENSIONS]
    difficulty = [rng.gauss(0.0, 0.15) for _ in range(N_ITEMS)]
    matrix: dict[str, list[float]] = {}
    costs: dict[str, float] = {}
    for combo in itertools.product(*(range(size) for size in DIMENSIONS)):
        name = "-".join(f"{d}{v}" for d, v in zip("tcof", combo, strict=True))
        quality = 0.55 + sum(effects[d][v] for d, v in enumerate(combo)) + rng.gauss(0.0, 0.03)
        row = []
        for item in range(N_ITEMS):
            value = quality - difficulty[item] + rng.gauss(0.0, 0.12)
            row.append(min(1.0, max(0.0, value)))
        matrix[name] = row
        costs[name] = 300.0 + 150.0 * combo[3] + rng.uniform(0.0, 40.0)
    return matrix, costs


def run(strategy_for_seed: object, seeds: Sequence[int], *, use_tie_rule: bool) -> dict[str, float]:
    calls_share = picks = within = 0.0
    for seed in seeds:
        matrix, costs = simulated_grid(seed)
        grid_means = {c: sum(v) / len(v) for c, v in matrix.items()}
        grid_best = max(grid_means, key=lambda c: (grid_means[c], c))
        strategy: Strategy = strategy_for_seed(seed)  # type: ignore[operator]
        _, seen, pruned, calls = simulate(strategy, matrix, costs)
        if use_tie_rule:
            chosen = select(seen, costs, pruned, seed=seed, exclude=()).winner
        else:
            longest = max(len(v) for v in seen.values())
            chosen = max(
                (c for c, v in seen.items() if len(v) == longest), key=lambda c: (sum(seen[c]) / longest, c)
            )
        calls_share += calls / (len(matrix) * N_ITEMS)
        picks += chosen == grid_best
        within += grid_means[grid_best] - grid_means[chosen] <= 0.02 + 1e-12
    n = len(seeds)
    return {"calls": calls_share / n, "picks_best": picks / n, "within_2pts": within / n}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    args = parser.parse_args(argv)
    seeds = list(range(args.seeds))
    rows = []
    configs = [
        ("halving eta=3 min=4 (default)", lambda s: SuccessiveHalving(eta=3, min_samples=4, seed=s), False),
        (
            "halving eta=3 min=4, ties to cheaper",
            lambda s: SuccessiveHalving(eta=3, min_samples=4, seed=s),
            True,
        ),
        ("halving eta=2 min=4", lambda s: SuccessiveHalving(eta=2, min_samples=4, seed=s), False),
        ("halving eta=3 min=8", lambda s: SuccessiveHalving(eta=3, min_samples=8, seed=s), False),
        ("random 43 (30% of grid)", lambda s: RandomSearch(43, seed=s), False),
    ]
    for label, factory, tie in configs:
        figures = run(factory, seeds, use_tie_rule=tie)
        rows.append(
            [
                label,
                f"{figures['calls']:.1%}",
                f"{figures['picks_best']:.1%}",
                f"{figures['within_2pts']:.1%}",
            ]
        )
    print(
        f"{len(seeds)} seeds, 144 candidates x {N_ITEMS} items; goals: calls <= 30%, "
        "picks grid best >= 80%, within 2 points >= 90%"
    )
    print(tabulate(rows, headers=["strategy", "grid calls used", "picks grid best", "within 2 pts"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
