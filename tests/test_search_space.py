"""Search-space files: validation messages, candidate ids and rendering, and no validation leak."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptsweep.core.errors import ConfigError
from promptsweep.core.suite import Suite, load_suite
from promptsweep.optimize.space import load_search_space

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "evals" / "k8s_triage.suite.yaml"
SPACE = ROOT / "evals" / "k8s_triage.space.yaml"

MINIMAL = """\
base_template: {base}
tone: ["You triage logs."]
"""


@pytest.fixture(scope="module")
def suite() -> Suite:
    return load_suite(SUITE)


def write_space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.space.yaml"
    base = ROOT / "prompt_templates" / "k8s_log_analysis_v1.yaml"
    path.write_text(text.replace("{base}", str(base)))
    return path


def load(tmp_path: Path, suite: Suite, text: str):  # type: ignore[no-untyped-def]
    return load_search_space(write_space(tmp_path, text), suite, suite.load_dataset())


def test_seed_space_has_324_candidates_with_stable_short_ids(suite: Suite) -> None:
    space = load_search_space(SPACE, suite, suite.load_dataset())
    ids = [c.id for c in space.candidates()]
    assert len(ids) == len(set(ids)) == 324
    assert "t1-c0-json_schema-mixed2-direct" in ids
    assert "t0-c2-lines-none-structured_cot" in ids


def test_no_validation_sample_appears_in_any_prompt(suite: Suite) -> None:
    dataset = suite.load_dataset()
    space = load_search_space(SPACE, suite, dataset)
    split = suite.split(dataset)
    by_id = dataset.by_id()
    validation_logs = [str(by_id[i].data["log_line"]) for i in split.validation]
    train = [by_id[i] for i in split.train]
    some_train_log_shown = False
    for candidate in space.candidates():
        system = candidate.to_mapping(space, suite, train)["system"]
        for log in validation_logs:
            assert log not in system, f"{candidate.id} shows validation sample {log[:40]!r}"
        some_train_log_shown |= any(str(s.data["log_line"]) in system for s in train)
    assert some_train_log_shown


def test_candidate_renders_shared_text_first_and_sample_last(suite: Suite) -> None:
    dataset = suite.load_dataset()
    space = load_search_space(SPACE, suite, dataset)
    cand = next(c for c in space.candidates() if c.id == "t1-c0-json_schema-mixed2-direct")
    template = cand.to_template(space, suite, space.train)
    messages = template.render(suite.template_values(dataset.samples[0]))
    assert messages[0]["content"].startswith(space.spec.tone[1])
    assert "Examples:" in messages[0]["content"]
    assert str(dataset.samples[0].data["log_line"]) in messages[1]["content"]
    assert template.spec.output.format == "json_schema"
    examples = space.examples(cand, suite, space.train)
    assert sum(space.is_benign(s) for s in examples) == 1 and len(examples) == 2
    # Reasoning never runs under constrained decoding, and gets the larger budget.
    cot = next(c for c in space.candidates() if c.id == "t0-c0-json_schema-none-cot")
    assert cot.to_template(space, suite, space.train).spec.output.format == "text"
    assert cot.params(space)["max_tokens"] == 320


def test_hard_negatives_are_benign_and_look_suspicious(suite: Suite) -> None:
    space = load_search_space(SPACE, suite, suite.load_dataset())
    cand = next(c for c in space.candidates() if c.few_shot == "hard_negatives")
    examples = space.examples(cand, suite, space.train)
    hard = [s for s in examples if space.is_benign(s)]
    assert hard and all(space.looks_suspicious(s) for s in hard)


def test_unknown_key_names_file_and_key(tmp_path: Path, suite: Suite) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, suite, MINIMAL + "tonez: [a]\n")
    assert (
        str(exc.value)
        == f"{tmp_path / 'x.space.yaml'}:{MINIMAL.count(chr(10)) + 1}: tonez: unknown key 'tonez'; did you mean 'tone'?"
    )


def test_empty_dimension(tmp_path: Path, suite: Suite) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, suite, MINIMAL + "output: []\n")
    assert str(exc.value) == (
        f"{tmp_path / 'x.space.yaml'}:{MINIMAL.count(chr(10)) + 1}: output: empty dimension: give at least one value"
    )


def test_k_larger_than_train_split(tmp_path: Path, suite: Suite) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, suite, MINIMAL + "few_shot: {strategies: [positive_only], k: 500}\n")
    assert str(exc.value) == (
        f"{tmp_path / 'x.space.yaml'}: few_shot.k: k=500 is larger than the train split of "
        "k8s_triage.suite.yaml (32 samples)"
    )


def test_missing_base_template(tmp_path: Path, suite: Suite) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, suite, "base_template: nope.yaml\ntone: [a]\n")
    assert str(exc.value) == (
        f"{tmp_path / 'x.space.yaml'}: base_template: prompt template not found: {tmp_path / 'nope.yaml'}"
    )


def test_mixed_needs_a_benign_definition(tmp_path: Path, suite: Suite) -> None:
    with pytest.raises(ConfigError, match=r"few_shot: strategies mixed need few_shot.benign"):
        load(tmp_path, suite, MINIMAL + "few_shot: {strategies: [mixed]}\n")
