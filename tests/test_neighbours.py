"""One nearest train sample: the lookup floor, the kNN vote, a gate's copy, neighbour choice and the
first retrieved example all come from one ranking, so a candidate and the floor printed beside it
mean the same neighbour even where the template's inputs and the space's ``retrieve_by`` differ."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.data.suite import Suite, load_suite
from promptsweep.core.measure.scoring import Scorer
from promptsweep.core.neighbours.lookup import lookup_answers, suite_pool
from promptsweep.core.prompt import Prompt
from promptsweep.optimize.confirm import floors_for
from promptsweep.optimize.ledger import Ledger
from promptsweep.optimize.space import SearchSpace, load_search_space

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "evals" / "k8s_triage.suite.yaml"
BASE = ROOT / "prompt_templates" / "k8s_log_analysis_v1.yaml"
# The base template declares logs, namespace, component and pod; the space compares on logs alone.
SPACE = """\
base_template: {base}
output: [json_schema]
few_shot:
  strategies: [retrieved]
  k: 2
  retrieve_by: [logs]
  copy_if_similar: [0.0]
choices: [3]
search:
  strategy: grid
"""


@pytest.fixture(scope="module")
def suite() -> Suite:
    return load_suite(SUITE)


@pytest.fixture(scope="module")
def space(suite: Suite, tmp_path_factory: pytest.TempPathFactory) -> SearchSpace:
    path = tmp_path_factory.mktemp("space") / "logs-only.space.yaml"
    path.write_text(SPACE.format(base=BASE))
    return load_search_space(path, suite, suite.load_dataset())


def test_the_case_is_one_where_the_two_inputs_disagree(suite: Suite, space: SearchSpace) -> None:
    """Without this the test below could not tell one ranking from two."""
    dataset = suite.load_dataset()
    train_ids = {s.id for s in space.train}
    held_out = [s for s in dataset.samples if s.id not in train_ids]
    declared = suite_pool(suite, dataset, space.base)
    assert declared is not None and space.pool is not None
    assert declared.by != space.pool.by
    differ = [
        s.id
        for s in held_out
        if declared.nearest(suite.template_values(s), 1, sample_id=s.id)[0].example.id
        != space.pool.nearest(suite.template_values(s), 1, sample_id=s.id)[0].example.id
    ]
    assert differ, "the template's inputs and retrieve_by pick the same neighbours here: no test"


def test_floor_knn_gate_choices_and_first_example_are_one_train_sample(
    suite: Suite, space: SearchSpace
) -> None:
    dataset = suite.load_dataset()
    train_ids = {s.id for s in space.train}
    held_out = [s for s in dataset.samples if s.id not in train_ids]
    scorer = Scorer(suite, MetricRegistry())
    floors = floors_for(scorer, suite, space.pool, held_out)
    assert floors.lookup is not None
    # The kNN votes the search ranks: candidates answered by copying, scored like any answer.
    ledger = Ledger(suite, space, held_out, (), MetricRegistry(), [], model=None, record=lambda r: None)
    assert ledger.knn == ["knn1", "knn3", "knn5"]
    never = lambda request: pytest.fail("a kNN vote made a call")  # noqa: E731
    knn1 = tuple(ledger.evaluator("knn1").evaluate(s, never).score for s in held_out)
    knn3 = tuple(ledger.evaluator("knn3").evaluate(s, never).score for s in held_out)
    assert knn1 == pytest.approx(floors.lookup), (
        "the one-nearest vote scores exactly the floor, sample by sample"
    )
    assert knn3 != pytest.approx(floors.lookup)
    assert space.pool is not None
    floor_source = {sid: a.source_id for sid, a in lookup_answers(space.pool, suite, held_out).items()}
    (candidate,) = space.candidates()
    prompt = Prompt(
        suite,
        space.to_template(candidate),
        dataset=dataset,
        params=candidate.params(space),
        retrieval=space.retrieval(candidate),
    )
    for sample in held_out:
        request = prompt.render(sample)
        assert request.copied is not None, "a gate at 0 copies every sample"
        examples = [m["content"] for m in request.messages if m["role"] == "user"][:-1]
        nearest = space.pool.nearest(suite.template_values(sample), 1, sample_id=sample.id)[0].example
        first_example = prompt.template.render_user(nearest.inputs, sample_id=nearest.id)
        assert floor_source[sample.id] == nearest.id
        assert request.copied.source_ids[0] == nearest.id
        assert examples[-1] == first_example, "the nearest example sits next to the question"
        assert request.response_format is not None
        enum = request.response_format["json_schema"]["schema"]["properties"]["root_cause"]["enum"]
        assert enum[0] == nearest.answer["root_cause"], "neighbour choice lists the nearest's label first"
