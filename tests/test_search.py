"""Search strategies on simulated grids: plans, paired rounds, pruning, ties to the cheaper prompt."""

from __future__ import annotations

import random

import pytest

from promptsweep.optimize.strategies import (
    GridSearch,
    RandomSearch,
    SuccessiveHalving,
    halving_round_ends,
    make_strategy,
    paired_order,
    select,
    simulate,
)


def grid(n_candidates: int, n_items: int, seed: int = 0) -> dict[str, list[float]]:
    rng = random.Random(seed)
    return {
        f"c{i:03d}": [min(1.0, max(0.0, 0.3 + 0.004 * i + rng.gauss(0, 0.1))) for _ in range(n_items)]
        for i in range(n_candidates)
    }


def test_round_ends_grow_to_all_samples() -> None:
    assert halving_round_ends(144, 60, eta=3, min_samples=4) == (4, 7, 20, 60)
    assert halving_round_ends(12, 12, eta=3, min_samples=2) == (2, 4, 12)
    assert halving_round_ends(1, 10, eta=3, min_samples=4) == (10,)


def test_halving_finds_the_best_with_a_fraction_of_the_calls() -> None:
    matrix = grid(144, 60)
    _, seen, pruned, calls = simulate(SuccessiveHalving(eta=3, min_samples=4), matrix)
    assert calls < 0.3 * 144 * 60
    survivors = [c for c in seen if c not in pruned]
    assert len(survivors) <= 6
    assert all(len(seen[c]) == 60 for c in survivors)
    means = {c: sum(v) / len(v) for c, v in matrix.items()}
    best = max(means, key=means.__getitem__)
    assert best in survivors


def test_rounds_are_paired_prefixes() -> None:
    matrix = grid(27, 30)
    _, seen, pruned, _ = simulate(SuccessiveHalving(eta=3, min_samples=3), matrix)
    for c, values in seen.items():
        assert values == matrix[c][: len(values)]
    assert {len(seen[c]) for c in pruned} <= {3, 10}


def test_grid_and_random() -> None:
    matrix = grid(20, 5)
    _, _, pruned, calls = simulate(GridSearch(), matrix)
    assert calls == 100 and not pruned
    plan = RandomSearch(5, seed=1).plan(list(matrix), 5)
    assert len(plan.candidates) == 5 and plan == RandomSearch(5, seed=1).plan(list(matrix), 5)


def test_tie_goes_to_the_cheaper_prompt() -> None:
    scores = {"rich": [1.0, 1.0, 0.0, 1.0], "lean": [1.0, 0.0, 1.0, 1.0], "bad": [0.0] * 4}
    costs = {"rich": 900.0, "lean": 300.0, "bad": 100.0}
    selection = select(scores, costs, {})
    assert selection.winner == "lean"
    assert set(selection.tied) == {"rich", "lean"}


def test_clear_best_wins_even_if_dearer() -> None:
    scores = {"good": [1.0] * 30, "cheap": [0.0] * 30}
    assert select(scores, {"good": 900.0, "cheap": 10.0}, {}).winner == "good"


def test_paired_order_is_seeded_and_interleaves_categories() -> None:
    ids = [f"{c}{i}" for c in "abc" for i in range(4)]
    cats = {i: i[0] for i in ids}
    order = paired_order(ids, cats, seed=5)
    assert order == paired_order(list(reversed(ids)), cats, seed=5)
    assert sorted(order) == sorted(ids)
    assert len({i[0] for i in order[:3]}) == 3


def test_make_strategy_errors() -> None:
    with pytest.raises(ValueError, match="--search-budget"):
        make_strategy("random")
    with pytest.raises(ValueError, match="eta must be greater than 1"):
        make_strategy("halving", eta=1)
