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
    beats_lookup,
    lookup_answers,
    lookup_difference,
    lookup_floor,
    suite_lookup_floor,
)
from promptsweep.core.neighbours.nearest import Neighbour, Pool, examples_from_samples, similarity

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


def pool_of(suite: Suite, train: list[Sample], *, grouped: bool = True) -> Pool | None:
    """The train samples as the suite's pool, grouped by its split key (as a grouped split is)."""
    if not train:
        return None
    group_by = suite.spec.split.group_by if grouped else None
    examples = examples_from_samples(train, suite.spec.inputs, list(suite.fields), group_by=group_by)
    return Pool(examples, ["logs"], group_by=group_by)


def nearest(suite: Suite, train: list[Sample], sample: Sample, k: int) -> list[Neighbour]:
    pool = pool_of(suite, train)
    return pool.nearest(suite.template_values(sample), k, sample_id=sample.id) if pool is not None else []


def test_nearest_train_sample_first_and_never_itself_or_its_group(tmp_path: Path) -> None:
    suite = make_suite(tmp_path)
    train, by_id = sides(suite)
    # v1 has exactly t1's words; t2 has them plus one (BM25's length norm puts it second); t5 shares two.
    assert [n.example.id for n in nearest(suite, train, by_id["v1"], 3)] == ["t1", "t2", "t5"]
    assert nearest(suite, train, by_id["v2"], 3)[0].example.id == "t3"
    # Scored in a plain run, t1 may copy neither itself nor t2 (its group, sig A): t5 is next.
    found = [n.example.id for n in nearest(suite, train, by_id["t1"], 3)]
    assert found[:1] == ["t5"] and not {"t1", "t2"} & set(found)
    assert nearest(suite, train, by_id["v1"], 1)[0].example.answer == {
        "label": "Disk Full",
        "summary": "disk is full",
    }, "every field, as labelled"


def test_without_group_by_only_the_sample_itself_is_left_out(tmp_path: Path) -> None:
    suite = make_suite(tmp_path, group_by=False)
    train, by_id = sides(suite)
    pool = pool_of(suite, train, grouped=False)
    assert pool is not None
    found = pool.nearest(suite.template_values(by_id["t1"]), 1, sample_id="t1")
    assert [n.example.id for n in found] == ["t2"]


def test_similarity_is_word_overlap_in_unit_interval(tmp_path: Path) -> None:
    suite = make_suite(tmp_path)
    train, by_id = sides(suite)
    found = nearest(suite, train, by_id["v1"], 3)
    # v1 = {disk, full, on, node, alpha}; t2 adds "retry"; t5 = {disk, quota, exceeded, on, volume}.
    assert [n.similarity for n in found] == pytest.approx([1.0, 5 / 6, 2 / 8])
    assert similarity([], []) == 0.0
    assert similarity(["a", "a", "b"], ["b"]) == pytest.approx(0.5)


def test_floor_scores_the_copied_answers_with_the_suites_metrics(tmp_path: Path) -> None:
    suite = make_suite(tmp_path)
    train, by_id = sides(suite)
    samples = [by_id["v1"], by_id["v2"], by_id["t1"]]
    floor = lookup_floor(Scorer(suite, MetricRegistry()), suite, pool_of(suite, train), samples)
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
    only_its_group = pool_of(suite, [by_id["t2"]])
    assert only_its_group is not None
    assert lookup_answers(only_its_group, suite, [by_id["t1"]]) == {}
    assert lookup_floor(scorer, suite, None, [by_id["t1"]]) is None
    floor = lookup_floor(scorer, suite, only_its_group, [by_id["t1"], by_id["v1"]])
    assert floor is not None and floor.per_sample["t1"] == 0.0 and set(floor.answers) == {"v1"}


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
    floor = lookup_floor(Scorer(suite, MetricRegistry()), suite, pool_of(suite, train), samples)
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
