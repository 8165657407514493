"""The lookup floor: each sample answered with the labels of its nearest train sample (BM25, the
retrieved few-shot ranking), never itself or its own group, scored by the real Scorer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.data.dataset import Sample
from promptsweep.core.data.suite import Suite, load_suite
from promptsweep.core.measure.scoring import Scorer
from promptsweep.core.measure.stats import Estimate
from promptsweep.core.neighbours.lookup import (
    LookupAnswer,
    beats_lookup,
    lookup_difference,
    lookup_floor,
    nearest_answers,
    suite_lookup_floor,
    token_similarity,
)

TEMPLATE = """\
id: lk
user: "{{ logs }}"
inputs:
  required: [logs]
"""

SUITE = """\
name: lk
dataset: data.json
template: template.yaml
id_field: id
inputs:
  logs: line
fields:
  label: {{metric: exact, weight: 0.6, label: true}}
  summary: {{metric: rouge_l, weight: 0.4}}
split:
  train: {train}
{group_by}
"""

# t1..t5 are the train side; v1 and v2 are scored. t1 and t2 share a group (sig A).
RECORDS: list[dict[str, Any]] = [
    {
        "id": "t1",
        "sig": "A",
        "line": "disk full on node alpha",
        "label": "Disk Full",
        "summary": "disk is full",
    },
    {
        "id": "t2",
        "sig": "A",
        "line": "disk full on node alpha retry",
        "label": "disk_full",
        "summary": "volume out of space",
    },
    {
        "id": "t3",
        "sig": "B",
        "line": "oom killed container web",
        "label": "oom_killed",
        "summary": "container killed for memory",
    },
    {
        "id": "t4",
        "sig": "C",
        "line": "pod started and ready",
        "label": "started",
        "summary": "service started",
    },
    {
        "id": "t5",
        "sig": "D",
        "line": "disk quota exceeded on volume",
        "label": "disk_quota",
        "summary": "quota exceeded",
    },
    {
        "id": "v1",
        "sig": "E",
        "line": "disk full on node alpha",
        "label": "disk_full",
        "summary": "disk is full",
    },
    {
        "id": "v2",
        "sig": "F",
        "line": "oom killed container api",
        "label": "oom_killed",
        "summary": "killed for memory",
    },
]


def make_suite(
    tmp_path: Path, *, group_by: bool = True, train: float = 0.5, records: list[dict[str, Any]] = RECORDS
) -> Suite:
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    (tmp_path / "data.json").write_text(json.dumps(records))
    suite = tmp_path / "lk.suite.yaml"
    suite.write_text(SUITE.format(train=train, group_by="  group_by: sig" if group_by else ""))
    return load_suite(suite)


def sides(suite: Suite) -> tuple[list[Sample], dict[str, Sample]]:
    samples = suite.load_dataset().by_id()
    return [samples[f"t{i}"] for i in range(1, 6)], samples


def test_nearest_train_sample_first_and_never_itself_or_its_group(tmp_path: Path) -> None:
    suite = make_suite(tmp_path)
    train, by_id = sides(suite)
    found = nearest_answers(suite, train, [by_id["v1"], by_id["v2"], by_id["t1"]], k=3)
    # v1 has exactly t1's words; t2 has them plus one (BM25's length norm puts it second); t5 shares two.
    assert [a.source_id for a in found["v1"]] == ["t1", "t2", "t5"]
    assert found["v2"][0].source_id == "t3"
    # Scored in a plain run, t1 may copy neither itself nor t2 (its group, sig A): t5 is next.
    assert [a.source_id for a in found["t1"]][:1] == ["t5"]
    assert not {"t1", "t2"} & {a.source_id for a in found["t1"]}
    assert found["v1"][0].answer == {"label": "Disk Full", "summary": "disk is full"}, (
        "every field, as labelled"
    )


def test_without_group_by_only_the_sample_itself_is_left_out(tmp_path: Path) -> None:
    suite = make_suite(tmp_path, group_by=False)
    train, by_id = sides(suite)
    found = nearest_answers(suite, train, [by_id["t1"]], k=1)
    assert [a.source_id for a in found["t1"]] == ["t2"]


def test_similarity_is_word_overlap_in_unit_interval(tmp_path: Path) -> None:
    suite = make_suite(tmp_path)
    train, by_id = sides(suite)
    found = nearest_answers(suite, train, [by_id["v1"]], k=3)["v1"]
    # v1 = {disk, full, on, node, alpha}; t2 adds "retry"; t5 = {disk, quota, exceeded, on, volume}.
    assert [a.similarity for a in found] == pytest.approx([1.0, 5 / 6, 2 / 8])
    assert token_similarity([], []) == 0.0
    assert token_similarity(["a", "a", "b"], ["b"]) == pytest.approx(0.5)


def test_floor_scores_the_copied_answers_with_the_suites_metrics(tmp_path: Path) -> None:
    suite = make_suite(tmp_path)
    train, by_id = sides(suite)
    samples = [by_id["v1"], by_id["v2"], by_id["t1"]]
    nearest = nearest_answers(suite, train, samples)
    floor = lookup_floor(Scorer(suite, MetricRegistry()), samples, {k: v[0] for k, v in nearest.items()})
    assert floor is not None
    # v1 copies t1: "Disk Full" normalises to disk_full like a model's answer (1.0), summary exact (1.0).
    # Had it copied t2 it would score 0.6 (label right, summary 0), t5: 0.
    assert floor.per_sample["v1"] == pytest.approx(1.0)
    # v2 copies t3: label right; ROUGE-L of "killed for memory" vs "container killed for memory" is 6/7.
    assert floor.per_sample["v2"] == pytest.approx(0.6 + 0.4 * 6 / 7)
    # t1 copies t5 (its group left out): nothing right. Copying t2 would have given 0.6.
    assert floor.per_sample["t1"] == 0.0
    assert floor.score == pytest.approx((1.0 + 0.6 + 0.4 * 6 / 7) / 3)
    assert floor.fields == pytest.approx({"label": 2 / 3, "summary": (1.0 + 6 / 7) / 3})
    assert floor.answers["v2"].source_id == "t3"


def test_a_sample_with_nothing_to_copy_scores_zero_and_no_answers_is_no_floor(tmp_path: Path) -> None:
    suite = make_suite(tmp_path)
    _, by_id = sides(suite)
    scorer = Scorer(suite, MetricRegistry())
    only_its_group = [by_id["t2"]]
    assert nearest_answers(suite, only_its_group, [by_id["t1"]]) == {"t1": []}
    assert nearest_answers(suite, [], [by_id["t1"]]) == {"t1": []}
    assert lookup_floor(scorer, [by_id["t1"]], {}) is None
    copied = LookupAnswer(source_id="t3", answer={"label": "oom_killed", "summary": "x"}, similarity=0.0)
    floor = lookup_floor(scorer, [by_id["v2"], by_id["v1"]], {"v2": copied})
    assert floor is not None and floor.per_sample["v1"] == 0.0 and set(floor.answers) == {"v2"}


def test_suite_floor_uses_the_suites_split_and_none_without_train(tmp_path: Path) -> None:
    records = RECORDS[:5]
    assert suite_lookup_floor(*_suite_args(make_suite(tmp_path, train=0, records=records))) is None
    suite, dataset, samples, scorer = _suite_args(make_suite(tmp_path, train=1.0, records=records))
    floor = suite_lookup_floor(suite, dataset, samples, scorer)
    assert floor is not None and set(floor.per_sample) == {"t1", "t2", "t3", "t4", "t5"}
    # Every sample is train here: t1 and t2 (one group) never copy each other.
    assert floor.answers["t1"].source_id == "t5" and floor.answers["t2"].source_id == "t5"


def _suite_args(suite: Suite) -> tuple[Suite, Any, list[Sample], Scorer]:
    dataset = suite.load_dataset()
    return suite, dataset, list(dataset.samples), Scorer(suite, MetricRegistry())


def test_difference_is_prompt_minus_lookup_over_the_same_samples(tmp_path: Path) -> None:
    suite = make_suite(tmp_path)
    train, by_id = sides(suite)
    samples = [by_id["v1"], by_id["v2"], by_id["t1"]]
    nearest = nearest_answers(suite, train, samples)
    floor = lookup_floor(Scorer(suite, MetricRegistry()), samples, {k: v[0] for k, v in nearest.items()})
    assert floor is not None
    perfect = lookup_difference(floor, {"v1": 1.0, "v2": 1.0, "t1": 1.0})
    assert perfect.n == 3 and perfect.mean == pytest.approx(1.0 - floor.score)
    worse = lookup_difference(floor, {"v1": 0.0, "v2": 0.0, "t1": 0.0})
    assert worse.mean == pytest.approx(-floor.score) and not beats_lookup(worse)
    with pytest.raises(ValueError, match="no prompt score"):
        lookup_difference(floor, {"v1": 1.0})


def test_beats_only_when_the_interval_is_wholly_above_zero() -> None:
    assert beats_lookup(Estimate(mean=0.2, low=0.01, high=0.3, n=10))
    assert not beats_lookup(Estimate(mean=0.2, low=-0.01, high=0.3, n=10))
    assert not beats_lookup(Estimate(mean=0.2, low=0.2, high=0.2, n=1))
