"""Benchmark: search strategies against simulated grids with known scores.

Not a timed test. Each seed draws a space shaped like the seed space plus retrieval
(tone 3 x constraints 3 x output 3 x few_shot 7 x reasoning 3 = 567 candidates) with a
ground truth that has main effects (one dimension dominant, as few-shot is on real suites),
pairwise interactions between three random pairs of dimensions, per-sample difficulty and
per-call noise, scored on 55 paired validation samples, as a real eval would see them. The
"grid best" is the candidate the exhaustive grid would pick (highest observed mean over all
samples); a strategy is judged by the grid's means of what it picks.

Run: ``python benchmarks/bench_search.py [--seeds N]``; figures go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from collections.abc import Callable, Sequence

from results_md import update_section
from tabulate import tabulate

from promptsweep.optimize.selection import grid_best, simulate
from promptsweep.optimize.strategies import (
    Dimension,
    RandomSearch,
    ScreenThenRace,
    SpaceShape,
    Strategy,
    SuccessiveHalving,
)

N_ITEMS = 55
SIZES = (3, 3, 3, 7, 3)
NAMES = ("tone", "constraints", "output", "few_shot", "reasoning")
CELL_SD = 0.08
"""How much one candidate's score on one sample strays from its quality and the sample's difficulty."""
REPEAT_SD = 0.05
"""The server's own noise (spread of repeated answers), which the search is told about."""
GOALS = {"calls": 0.10, "within_2pts": 0.90}


def shape() -> SpaceShape:
    dims = tuple(
        Dimension(name, tuple(f"{name[0]}{i}" for i in range(size)))
        for name, size in zip(NAMES, SIZES, strict=True)
    )
    candidates = {
        "-".join(f"{d.name[0]}{v}" for d, v in zip(dims, combo, strict=True)): combo
        for combo in itertools.product(*(range(s) for s in SIZES))
    }
    return SpaceShape(dims, candidates)


def simulated_grid(
    seed: int, space: SpaceShape
) -> tuple[dict[str, list[float]], dict[str, float], dict[str, float]]:
    """Candidate → per-item scores in [0, 1], candidate → tokens per call, candidate → true quality."""
    rng = random.Random(seed)
    dominant = rng.randrange(len(SIZES))
    scales = [0.15 if d == dominant else rng.choice((0.02, 0.04, 0.06)) for d in range(len(SIZES))]
    effects = [[rng.gauss(0.0, scales[d]) for _ in range(size)] for d, size in enumerate(SIZES)]
    pairs = rng.sample(list(itertools.combinations(range(len(SIZES)), 2)), 3)
    interactions = {
        (a, b): [[rng.gauss(0.0, 0.05) for _ in range(SIZES[b])] for _ in range(SIZES[a])] for a, b in pairs
    }
    difficulty = [rng.gauss(0.0, 0.15) for _ in range(N_ITEMS)]
    matrix: dict[str, list[float]] = {}
    costs: dict[str, float] = {}
    truth: dict[str, float] = {}
    for name, combo in space.candidates.items():
        quality = 0.45 + sum(effects[d][v] for d, v in enumerate(combo))
        quality += sum(table[combo[a]][combo[b]] for (a, b), table in interactions.items())
        truth[name] = quality
        matrix[name] = [
            min(1.0, max(0.0, quality - difficulty[i] + rng.gauss(0.0, CELL_SD))) for i in range(N_ITEMS)
        ]
        costs[name] = 400.0 + 120.0 * combo[3] + 200.0 * combo[4] + rng.uniform(0.0, 40.0)
    return matrix, costs, truth


def run(
    factory: Callable[[int], Strategy], seeds: Sequence[int], *, noise_aware: bool, budget: float | None
) -> dict[str, float]:
    """Share of grid calls, and how often the pick is the true best / within 2 points of it
    (judged by the ground truth, not by the grid's own noisy means), plus the grid's record."""
    space = shape()
    share = picks = within = grid_within = 0.0
    for seed in seeds:
        matrix, costs, truth = simulated_grid(seed, space)
        best = max(truth, key=lambda c: (truth[c], c))
        observed_best, _ = grid_best(matrix)
        max_calls = None if budget is None else int(budget * len(matrix) * N_ITEMS)
        result = simulate(
            factory(seed),
            space,
            matrix,
            costs=costs,
            noise_sd=REPEAT_SD if noise_aware else 0.0,
            max_calls=max_calls,
            seed=seed,
        )
        chosen = result.selection.winner
        share += result.calls / (len(matrix) * N_ITEMS)
        picks += chosen == best
        within += truth[best] - truth[chosen] <= 0.02 + 1e-12
        grid_within += truth[best] - truth[observed_best] <= 0.02 + 1e-12
    n = len(seeds)
    return {
        "calls": share / n,
        "picks_best": picks / n,
        "within_2pts": within / n,
        "grid_within": grid_within / n,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    seeds = list(range(args.seeds))
    grid_calls = len(shape().candidates) * N_ITEMS
    configs: list[tuple[str, Callable[[int], Strategy], bool, float | None]] = [
        ("screen, quality only (no noise told)", lambda s: ScreenThenRace(seed=s), False, None),
        ("screen, budget 10% of the grid", lambda s: ScreenThenRace(seed=s), False, 0.10),
        (
            "screen (default): ties within server noise to the cheaper",
            lambda s: ScreenThenRace(seed=s),
            True,
            None,
        ),
        (
            "halving eta=3 min=4 over all 567",
            lambda s: SuccessiveHalving(eta=3, min_samples=4, seed=s),
            False,
            None,
        ),
        ("random 57 (10% of the grid)", lambda s: RandomSearch(57, seed=s), False, None),
    ]
    rows = []
    grid_within = 0.0
    for label, factory, noise, budget in configs:
        figures = run(factory, seeds, noise_aware=noise, budget=budget)
        grid_within = figures["grid_within"]
        rows.append(
            [
                label,
                f"{figures['calls']:.1%}",
                f"{figures['picks_best']:.1%}",
                f"{figures['within_2pts']:.1%}",
            ]
        )
    rows.append(["grid (every candidate on every sample)", "100.0%", "", f"{grid_within:.1%}"])
    setup = (
        f"{len(seeds)} seeds; {len(shape().candidates)} candidates x {N_ITEMS} samples = {grid_calls} grid calls; "
        f"main effects (one dominant) + 3 pairwise interactions; per-sample sd {CELL_SD}, server noise sd {REPEAT_SD}"
    )
    goals = (
        f"goals: <= {GOALS['calls']:.0%} of grid calls, within 2 points of the true best in >= "
        f"{GOALS['within_2pts']:.0%} of seeds"
    )
    headers = ["strategy", "grid calls used", "picks the true best", "within 2 pts of it"]
    print(setup)
    print(goals)
    print(tabulate(rows, headers=headers))
    if not args.no_write:
        update_section(
            "optimize-simulated",
            "\n".join(
                [
                    "## Search strategies on simulated grids (no server)",
                    "",
                    f"`python benchmarks/bench_search.py --seeds {args.seeds}`: {setup}. {goals}.",
                    "",
                    tabulate(rows, headers=headers, tablefmt="github"),
                ]
            ),
        )
        print("wrote benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
