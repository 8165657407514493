"""No test label reaches a candidate: the label lists a search shows (``values: dataset``) come from
the train and validation samples only, so renaming a label only the test split has changes no
validation request, no decision and no winner."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from promptsweep.core.answers.chat import ChatRequest, ChatResult
from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.data.suite import Suite, load_suite
from promptsweep.optimize.runner import Runner
from promptsweep.optimize.search import Search, SearchSettings
from promptsweep.optimize.space import SearchSpace, load_search_space
from promptsweep.optimize.strategies import GridSearch, paired_order

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "evals" / "k8s_triage.suite.yaml"
V1 = ROOT / "prompt_templates" / "k8s_log_analysis_v1.yaml"
# Retrieval, a gate and neighbour choice: every way a label list or a neighbour's label can
# reach a candidate's text, schema or enum.
SPACE = """\
base_template: {base}
tone: ["You triage Kubernetes log lines."]
output: [json_schema]
few_shot:
  strategies: [retrieved]
  k: 2
  retrieve_by: [logs, component]
  copy_if_similar: [off, 0.9]
choices: [off, 3]
search:
  strategy: grid
"""


def _test_only_label(suite: Suite) -> tuple[str, str]:
    """A label of a ``values: dataset`` field that only test samples have."""
    dataset = suite.load_dataset()
    split = suite.split(dataset)
    seen = set(split.train) | set(split.validation)
    for name, spec in suite.fields.items():
        if spec.values != "dataset":
            continue
        test = {s.expected[name] for s in dataset.samples if s.id in split.test}
        visible = {s.expected[name] for s in dataset.samples if s.id in seen}
        if test - visible:
            return name, sorted(test - visible)[0]
    raise AssertionError("the example split has no test-only label: this test would test nothing")


def _renamed(tmp_path: Path) -> tuple[Suite, Suite, str, str]:
    original = load_suite(SUITE).with_overrides(template=V1)  # v1 lists `values: dataset` labels
    field, label = _test_only_label(original)
    records = json.loads(original.dataset_path.read_text())
    for record in records:
        if record[field] == label:
            record[field] = "renamed_" + label
    data = tmp_path / "renamed.json"
    data.write_text(json.dumps(records))
    renamed = original.with_overrides(dataset=data)
    assert renamed.split(renamed.load_dataset()).test == original.split(original.load_dataset()).test
    return original, renamed, field, label


def _space(suite: Suite, tmp_path: Path, name: str) -> SearchSpace:
    path = tmp_path / f"{name}.space.yaml"
    path.write_text(SPACE.format(base=V1))
    return load_search_space(path, suite, suite.load_dataset())


def _send(request: ChatRequest) -> ChatResult:
    """A model whose answer is a function of the whole request: a different request (a label
    list, an example, an enum) gives a different answer, identical requests the same one."""
    digest = hashlib.sha256(json.dumps([request.messages, request.response_format], sort_keys=True).encode())
    pick = digest.digest()[0]
    schema = (request.response_format or {}).get("json_schema", {}).get("schema", {})
    answer: dict[str, Any] = {}
    for name, prop in schema.get("properties", {}).items():
        enum = prop.get("enum")
        answer[name] = enum[pick % len(enum)] if enum else "something happened"
    return ChatResult(text=json.dumps(answer), prompt_tokens=10, completion_tokens=5)


def _search(suite: Suite, space: SearchSpace) -> tuple[list[Any], str]:
    dataset = space.dataset
    split = suite.split(dataset)
    by_id = dataset.by_id()
    order = [
        by_id[i] for i in paired_order(split.validation, {i: by_id[i].category for i in split.validation}, 0)
    ]
    search = Search(
        suite, space, order, SearchSettings(GridSearch(), 0, None, deterministic=True), MetricRegistry(), [_send],
        record=lambda result: None, reporter=type("Quiet", (), {"line": lambda self, text: None})(),
    )  # fmt: skip
    runner = Runner(search.run_job, 1)
    try:
        outcome = search.run(runner)
    finally:
        runner.close()
    assert outcome.selection is not None
    decisions = [(d.round, d.evaluated, d.survivors) for d in outcome.decisions]
    scores = {c: outcome.observations.prefix(c) for c in outcome.observations.scores}
    return [decisions, scores], outcome.selection.winner


def test_a_test_only_label_reaches_no_validation_request(tmp_path: Path) -> None:
    original, renamed, field, label = _renamed(tmp_path)
    spaces = [_space(original, tmp_path, "a"), _space(renamed, tmp_path, "b")]
    assert label not in spaces[0].allowed_values[field], "the search's label lists hold no test label"
    validation = [s for s in spaces[0].dataset.samples if s.id in spaces[0].validation_ids]
    assert validation
    from promptsweep.optimize.ledger import Ledger

    ledgers = [
        Ledger(suite, space, validation, (), MetricRegistry(), [], model=None, record=lambda r: None)
        for suite, space in zip((original, renamed), spaces, strict=True)
    ]
    names = ["baseline", *ledgers[0].candidates]
    assert len(names) == 8, "the baseline, four prompts and three kNN votes"
    for name in names:
        for sample in validation:
            a, b = (ledger.evaluator(name).request(sample) for ledger in ledgers)
            assert a.messages == b.messages, f"{name} on {sample.id}: the prompt text moved with a test label"
            assert a.response_format == b.response_format, f"{name} on {sample.id}: the schema moved"
            assert a.copied == b.copied


@pytest.mark.timeout(300)
def test_renaming_a_test_only_label_changes_no_decision_and_no_winner(tmp_path: Path) -> None:
    original, renamed, _, _ = _renamed(tmp_path)
    first = _search(original, _space(original, tmp_path, "a"))
    second = _search(renamed, _space(renamed, tmp_path, "b"))
    assert first == second
