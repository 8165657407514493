"""Retrieved few-shot examples: ranking and ties, never the sample itself, and a winner file that
renders byte for byte what the optimizer scored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.data.dataset import samples_sha256
from promptsweep.core.data.suite import Suite, load_suite
from promptsweep.core.evaluate import Evaluator
from promptsweep.core.io.errors import ConfigError
from promptsweep.core.neighbours.nearest import Example, Pool
from promptsweep.core.neighbours.retrieval import format_answer
from promptsweep.core.templates.template import load_template
from promptsweep.optimize.space import load_search_space

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "evals" / "k8s_triage.suite.yaml"
SPACE = ROOT / "evals" / "k8s_triage.space.yaml"


def ex(i: str, text: str) -> Example:
    return Example(id=i, inputs={"logs": text}, answer={"label": i})


def test_most_similar_first_and_ties_by_id() -> None:
    pool = Pool(
        [
            ex("b", "disk full on node"),
            ex("a", "disk full on node"),
            ex("c", "oom killed pod"),
            ex("d", "nothing"),
        ],
        ["logs"],
    )
    chosen = pool.nearest({"logs": "disk full"}, 3)
    assert [n.example.id for n in chosen][:2] == ["a", "b"], "equal scores: the smaller id is the nearer"
    assert len(pool.nearest({"logs": "zzz unknown words"}, 2)) == 2, "no overlap still gives k neighbours"


def test_never_the_sample_itself_nor_its_group() -> None:
    examples = [
        Example("a", {"logs": "disk full"}, {}, group="g1"),
        Example("b", {"logs": "disk full on node"}, {}, group="g1"),
        Example("c", {"logs": "disk full again"}, {}, group="g2"),
    ]
    pool = Pool(examples, ["logs"], group_by="sig")
    ids = [n.example.id for n in pool.nearest({"logs": "disk full", "sig": "g1"}, 3, sample_id="a")]
    assert ids == ["c"], "the sample and every pool sample of its group are left out"
    production = [n.example.id for n in pool.nearest({"logs": "disk full", "sig": "g1"}, 3)]
    assert production == ["a", "c", "b"], "an input that is no known sample excludes nothing"
    exact = pool.nearest({"logs": "disk full"}, 1)[0]
    assert exact.example.id == "a" and exact.similarity == 1.0, "an exact duplicate is the nearest, at 1.0"


def test_answers_are_written_like_the_model_is_asked_to() -> None:
    answer = {"severity": "warn", "label": "x"}
    assert format_answer(answer, ["label", "severity"], "json") == '{"label": "x", "severity": "warn"}'
    assert format_answer(answer, ["label", "severity"], "lines") == "label: x\nseverity: warn"


@pytest.fixture(scope="module")
def suite() -> Suite:
    return load_suite(SUITE)


def write_winner(
    tmp_path: Path, suite: Suite, dataset_copy: Path | None = None
) -> tuple[Path, Evaluator, Suite]:
    """A retrieved candidate written as a winner file would be, next to a prompt_templates folder."""
    if dataset_copy is not None:
        suite = suite.with_overrides(dataset=dataset_copy)
    dataset = suite.load_dataset()
    space = load_search_space(SPACE, suite, dataset)
    candidate = next(c for c in space.candidates() if c.id == "t1-c0-json_schema-retrieved4-direct")
    folder = tmp_path / "prompt_templates"
    folder.mkdir(exist_ok=True)
    path = folder / "k8s_log_analysis_v2.yaml"
    mapping = space.to_mapping(candidate, pool_spec=space.pool_spec(folder))
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    optimizer = Evaluator(
        suite,
        space.to_template(candidate),
        MetricRegistry(),
        dataset=dataset,
        params=candidate.params(space),
        retrieval=space.retrieval(candidate),
    )
    return path, optimizer, suite


def test_winner_file_renders_exactly_what_the_optimizer_scored(tmp_path: Path, suite: Suite) -> None:
    path, optimizer, suite = write_winner(tmp_path, suite)
    data = yaml.safe_load(path.read_text())
    pool = data["examples"]["pool"]
    assert not pool["dataset"].startswith("/"), "the pool is named relative to the winner file"
    split = suite.split(suite.load_dataset())
    train = [s for s in suite.load_dataset().samples if s.id in set(split.train)]
    assert pool["train_sha256"] == samples_sha256(train) and "sha256" not in pool
    assert pool["split"] == {"train": 0.5, "seed": 13, "group_by": "signature_hash"}
    assert data["examples"]["retrieve"] == {"k": 4, "by": ["logs", "component"]}
    production = Evaluator(suite, load_template(path), MetricRegistry(), dataset=suite.load_dataset())
    for sample in suite.load_dataset().samples:
        assert production.request(sample).body() == optimizer.request(sample).body(), sample.id
    # The documented Python call, from a plain record (no pytest, no Sample): for every sample
    # that is not itself in the pool, the same bytes the optimizer scored.
    import promptsweep

    public = promptsweep.load_prompt(suite, path)
    pool_ids = {e.id for e in optimizer.retrieval.pool.examples} if optimizer.retrieval else set()
    outside = [s for s in suite.load_dataset().samples if s.id not in pool_ids]
    assert outside, "the split leaves validation samples"
    for sample in outside:
        record = dict(sample.data)
        assert public.render(record).body() == optimizer.request(sample).body(), sample.id


def test_a_changed_pool_is_an_error_but_a_corrected_test_label_is_not(tmp_path: Path, suite: Suite) -> None:
    """The pin is the train part's ids and content: correcting a label of a sample the pool never
    shows keeps the winner loadable (the whole file's hash broke it); editing a train sample does not."""
    copy = tmp_path / "data.json"
    shutil.copy(suite.dataset_path, copy)
    path, optimizer, suite = write_winner(tmp_path, suite, dataset_copy=copy)
    records = json.loads(copy.read_text())
    train = set(suite.split(suite.load_dataset()).train)
    ids = [s.id for s in suite.load_dataset().samples]
    held_out = next(i for i, sid in enumerate(ids) if sid not in train)
    records[held_out]["summary"] = records[held_out]["summary"] + " (corrected)"
    copy.write_text(json.dumps(records))
    sample = next(s for s in suite.load_dataset().samples if s.id not in train)
    assert (
        Evaluator(suite, load_template(path), MetricRegistry()).request(sample).body()
        == optimizer.request(sample).body()
    )
    in_train = next(i for i, sid in enumerate(ids) if sid in train)
    records[in_train]["summary"] = records[in_train]["summary"] + " (edited)"
    copy.write_text(json.dumps(records))
    from promptsweep.core.neighbours import retrieval

    retrieval._POOLS.clear()  # pools load once per process
    with pytest.raises(ConfigError) as exc:
        Evaluator(suite, load_template(path), MetricRegistry())
    assert "examples.pool.train_sha256" in str(exc.value) and "changed since this prompt was written" in str(
        exc.value
    )
