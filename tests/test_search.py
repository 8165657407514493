"""Search strategies on simulated spaces: plans, paired rounds, budgets, noise-aware cuts, ties."""

from __future__ import annotations

import itertools
import random

import pytest

from promptsweep.optimize.design import balanced_design, main_effects, model_matrix
from promptsweep.optimize.selection import select, simulate
from promptsweep.optimize.strategies import (
    Decision,
    Dimension,
    GridSearch,
    Objective,
    Observations,
    RandomSearch,
    ScreenThenRace,
    SpaceShape,
    SuccessiveHalving,
    halving_round_ends,
    make_strategy,
    paired_order,
)


def flat_shape(n: int) -> SpaceShape:
    """One dimension with ``n`` values: every candidate is its own level."""
    return SpaceShape(
        (Dimension("prompt", tuple(f"c{i:03d}" for i in range(n))),), {f"c{i:03d}": (i,) for i in range(n)}
    )


def grid(n_candidates: int, n_items: int, seed: int = 0) -> dict[str, list[float]]:
    rng = random.Random(seed)
    return {
        f"c{i:03d}": [min(1.0, max(0.0, 0.3 + 0.004 * i + rng.gauss(0, 0.1))) for _ in range(n_items)]
        for i in range(n_candidates)
    }


def product_space(
    sizes: tuple[int, ...], n_items: int, seed: int
) -> tuple[SpaceShape, dict[str, list[float]], str]:
    """A space with additive effects, one interaction and per-item noise; returns the true best."""
    rng = random.Random(seed)
    effects = [[rng.gauss(0, 0.08) for _ in range(size)] for size in sizes]
    interaction = [[rng.gauss(0, 0.05) for _ in range(sizes[1])] for _ in range(sizes[0])]
    difficulty = [rng.gauss(0, 0.1) for _ in range(n_items)]
    dims = tuple(Dimension(f"d{d}", tuple(f"v{i}" for i in range(size))) for d, size in enumerate(sizes))
    candidates: dict[str, tuple[int, ...]] = {}
    matrix: dict[str, list[float]] = {}
    truth: dict[str, float] = {}
    for combo in itertools.product(*(range(s) for s in sizes)):
        name = "-".join(f"d{d}v{v}" for d, v in enumerate(combo))
        candidates[name] = combo
        truth[name] = 0.5 + sum(effects[d][v] for d, v in enumerate(combo)) + interaction[combo[0]][combo[1]]
        matrix[name] = [
            min(1.0, max(0.0, truth[name] - difficulty[i] + rng.gauss(0, 0.05))) for i in range(n_items)
        ]
    return SpaceShape(dims, candidates), matrix, max(truth, key=truth.__getitem__)


def test_round_ends_grow_to_all_samples() -> None:
    assert halving_round_ends(144, 60, eta=3, min_samples=4) == (4, 7, 20, 60)
    assert halving_round_ends(12, 12, eta=3, min_samples=2) == (2, 4, 12)
    assert halving_round_ends(1, 10, eta=3, min_samples=4) == (10,)


def test_halving_keeps_the_best_with_a_fraction_of_the_calls() -> None:
    matrix = grid(144, 60)
    result = simulate(SuccessiveHalving(eta=3, min_samples=4), flat_shape(144), matrix)
    assert result.calls < 0.3 * 144 * 60
    finalists = [r.candidate for r in result.selection.ranking if r.finalist]
    assert len(finalists) <= 6
    assert all(result.observations.seen(c) == 60 for c in finalists)
    means = {c: sum(v) / len(v) for c, v in matrix.items()}
    assert max(means, key=means.__getitem__) in finalists


def test_rounds_are_paired_prefixes_and_numbered_from_one() -> None:
    matrix = grid(27, 30)
    result = simulate(SuccessiveHalving(eta=3, min_samples=3), flat_shape(27), matrix)
    for c in matrix:
        seen = result.observations.prefix(c)
        assert seen == matrix[c][: len(seen)]
    assert [d.round for d in result.decisions] == [1, 2, 3]
    pruned_at = {result.observations.seen(c) for d in result.decisions for c in d.pruned}
    assert pruned_at <= {3, 10}


def test_grid_and_random() -> None:
    matrix = grid(20, 5)
    result = simulate(GridSearch(), flat_shape(20), matrix)
    assert result.calls == 100 and not any(d.pruned for d in result.decisions)
    picked = simulate(RandomSearch(5, seed=1), flat_shape(20), matrix)
    again = simulate(RandomSearch(5, seed=1), flat_shape(20), matrix)
    assert picked.calls == 25 and set(picked.observations.scores) == set(again.observations.scores)


def test_screen_costs_the_sum_of_the_dimensions_not_their_product() -> None:
    shape, matrix, best = product_space((3, 3, 3, 7, 3), 40, seed=4)
    result = simulate(ScreenThenRace(seed=4), shape, matrix)
    assert result.calls < 0.06 * len(matrix) * 40
    stages = [d.stage for d in result.decisions]
    assert stages[0] == "screen" and "race" in stages
    truth_gap = sum(matrix[best]) / 40 - sum(matrix[result.selection.winner]) / 40
    assert truth_gap <= 0.03


def test_screen_fits_its_plan_into_a_call_budget() -> None:
    shape, matrix, _ = product_space((3, 3, 3, 7, 3), 32, seed=2)
    for budget in (300, 450, 900):
        strategy = ScreenThenRace(seed=2)
        stages = strategy.start(shape, 32, budget)
        assert sum(s.max_calls for s in stages) <= budget
        result = simulate(ScreenThenRace(seed=2), shape, matrix, max_calls=budget)
        assert result.calls <= budget


def test_small_spaces_are_simply_raced() -> None:
    shape, matrix, _ = product_space((2, 2), 12, seed=1)
    result = simulate(ScreenThenRace(seed=1), shape, matrix)
    assert {d.stage for d in result.decisions} == {"halving"}


def test_no_cut_on_a_difference_smaller_than_the_server_noise() -> None:
    obs = Observations(noise_sd=0.2)
    for position in range(8):
        obs.add("a", position, 0.80)
        obs.add("b", position, 0.78)
        obs.add("c", position, 0.10)
    shape = SpaceShape((Dimension("p", ("a", "b", "c")),), {"a": (0,), "b": (1,), "c": (2,)})

    def first_cut(max_calls: int | None) -> Decision:
        halving = SuccessiveHalving(eta=3)
        # 3 candidates on 8 samples, then 1 on 16 more: 40 calls (as screen starts its race).
        stages = halving.start_with(["a", "b", "c"], 24, ends=(8, 24))
        halving._shape = shape
        halving.max_calls = max_calls if max_calls is not None else sum(s.max_calls for s in stages)
        rnd = halving.next_round(obs)
        assert rnd is not None and rnd.samples == 8
        return halving.decide(rnd, obs)

    roomy = first_cut(56)
    assert set(roomy.survivors) == {"a", "b"}, "0.02 apart is within the noise of 8 samples"
    assert roomy.pruned == {"c": pytest.approx(0.10)}
    assert "1 kept: within the noise margin" in roomy.note
    # Without a budget the plan (40 calls) is the bound: b would cost 16 more, so it goes, and the note says why.
    tight = first_cut(None)
    assert set(tight.survivors) == {"a"}
    assert "1 within the noise margin dropped: the plan has no calls left" in tight.note


@pytest.mark.parametrize("budget", [None, 60, 229, 600])
@pytest.mark.parametrize("make", [ScreenThenRace, SuccessiveHalving])
def test_a_strategy_never_makes_more_calls_than_its_plan_says(make: type, budget: int | None) -> None:
    """On a server whose noise keeps every candidate within the margin of every cut, the rounds
    still make at most the plan's calls: its budget, else the stages it printed."""
    sizes = (3, 3, 2, 2)
    dims = tuple(Dimension(f"d{i}", tuple(f"v{j}" for j in range(s))) for i, s in enumerate(sizes))
    levels = {"-".join(map(str, p)): p for p in itertools.product(*(range(s) for s in sizes))}
    shape = SpaceShape(dims, levels)
    rng = random.Random(1)
    matrix = {c: [0.5 + 0.01 * rng.random() for _ in range(40)] for c in levels}
    strategy = make()
    stages = strategy.start(shape, 40, budget)
    bound = budget if budget is not None else sum(s.max_calls for s in stages)
    obs = Observations(noise_sd=0.5)
    calls = 0
    while (rnd := strategy.next_round(obs)) is not None:
        for candidate in rnd.candidates:
            for position in range(rnd.samples):
                if not obs.has(candidate, position):
                    obs.add(candidate, position, matrix[candidate][position])
                    calls += 1
        strategy.decide(rnd, obs)
    assert calls <= bound, f"{calls} calls against a plan of {bound}"


def test_tie_within_noise_goes_to_the_cheaper_prompt_and_a_clear_best_wins_anyway() -> None:
    obs = Observations(noise_sd=0.1)
    for p, (rich, lean) in enumerate([(1.0, 1.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]):
        obs.add("rich", p, rich, tokens=900)
        obs.add("lean", p, lean, tokens=300)
    selection = select(obs, Objective(), [])
    assert selection.winner == "lean" and set(selection.tied) == {"rich", "lean"}
    clear = Observations(noise_sd=0.1)
    for p in range(30):
        clear.add("good", p, 1.0, tokens=900)
        clear.add("cheap", p, 0.0, tokens=10)
    assert select(clear, Objective(), []).winner == "good"


def test_token_weight_changes_the_ranking() -> None:
    obs = Observations()
    for p in range(20):
        obs.add("long", p, 0.80, tokens=2000)
        obs.add("short", p, 0.75, tokens=200)
    assert select(obs, Objective(0.0), []).winner == "long"
    assert select(obs, Objective(0.05), []).winner == "short", "0.80 - 0.10 < 0.75 - 0.01"


def test_pruned_candidates_rank_after_finalists_whatever_their_mean() -> None:
    obs = Observations()
    for p in range(4):
        obs.add("early_star", p, 1.0)
    for p in range(12):
        obs.add("finalist", p, 0.6)
    decisions = [
        Decision(1, "halving", ("early_star", "finalist"), ("finalist",), {"early_star": 1.0}, 0.6, 4)
    ]
    selection = select(obs, Objective(), decisions)
    assert [r.candidate for r in selection.ranking] == ["finalist", "early_star"]
    assert selection.ranking[1].pruned_round == 1 and selection.ranking[1].samples_seen == 4


def test_balanced_design_and_main_effects() -> None:
    sizes = (3, 2, 4)
    design = balanced_design(sizes, 12, seed=0)
    assert len(set(design)) == 12
    for d, size in enumerate(sizes):
        counts = [sum(1 for p in design if p[d] == level) for level in range(size)]
        assert max(counts) - min(counts) <= 1
    assert model_matrix(design, sizes).shape == (12, 1 + 2 + 1 + 3)
    # Dimension 0's value 2 adds 0.3; nothing else matters.
    scores = [[0.3 * (p[0] == 2) + 0.1 * (i % 2) for i in range(10)] for p in design]
    effects = {(e.dimension, e.level): e for e in main_effects(design, scores, sizes)}
    assert effects[(0, 2)].mean == pytest.approx(0.3, abs=1e-3)
    assert effects[(0, 2)].low - 1e-3 <= 0.3 <= effects[(0, 2)].high + 1e-3
    assert abs(effects[(1, 1)].mean) < 1e-3


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
    with pytest.raises(ValueError, match="use screen, halving, grid or random"):
        make_strategy("bayes")
