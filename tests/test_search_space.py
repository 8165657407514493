"""Search-space files: validation messages, candidate ids and rendering, and no validation leak."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptsweep.core.data.suite import Suite, load_suite
from promptsweep.core.io.errors import ConfigError
from promptsweep.core.prompt import Prompt
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


def test_seed_space_has_1620_candidates_with_stable_short_ids(suite: Suite) -> None:
    """729 prompts, each also with a gate (x2), plus neighbour choice on the 81 json_schema
    direct ones (x2 again): 729 * 2 + 81 * 2."""
    space = load_search_space(SPACE, suite, suite.load_dataset())
    ids = [c.id for c in space.candidates()]
    assert len(ids) == len(set(ids)) == 1620
    assert "t1-c0-json_schema-mixed2-direct" in ids
    assert "t0-c0-json_schema-retrieved4-direct" in ids
    assert "t0-c2-lines-none-structured_cot" in ids
    assert "t0-c0-json_schema-retrieved4-direct-choose4-copy0.5" in ids
    assert "t0-c0-lines-none-cot-copy0.5" in ids
    assert not [i for i in ids if "choose4" in i and ("-json-" in i or "-lines-" in i or "cot" in i)]
    assert space.shape().sizes == (3, 3, 3, 9, 3, 2, 2)


def test_no_validation_sample_appears_in_any_prompt(suite: Suite) -> None:
    """Fixed examples (system text) and retrieved ones (turns) come from the train split only,
    and retrieval never shows a sample its own answer."""
    dataset = suite.load_dataset()
    space = load_search_space(SPACE, suite, dataset)
    split = suite.split(dataset)
    by_id = dataset.by_id()
    validation_logs = [str(by_id[i].data["log_line"]) for i in split.validation]
    held_out = set(split.validation) | set(split.test)
    assert held_out and not held_out & {s.id for s in space.train}
    some_train_log_shown = False
    for candidate in space.candidates():
        if candidate.few_shot == "retrieved":
            continue
        system = space.to_mapping(candidate)["system"]
        for log in validation_logs:
            assert log not in system, f"{candidate.id} shows validation sample {log[:40]!r}"
        some_train_log_shown |= any(str(s.data["log_line"]) in system for s in space.train)
    assert some_train_log_shown
    retrieved = [
        c for c in space.candidates() if c.few_shot == "retrieved" and c.tone == 0 and c.constraints == 0
    ]
    assert {c.k for c in retrieved} == {2, 4}
    for candidate in retrieved:
        retrieval = space.retrieval(candidate)
        assert retrieval is not None
        for sample in dataset.samples:
            chosen = [
                n.example
                for n in retrieval.pool.nearest(
                    suite.template_values(sample), candidate.k, sample_id=sample.id
                )
            ]
            assert len(chosen) == candidate.k
            # Checked against the split's other sides, not the pool's own source: a pool built
            # from the whole dataset would show validation or test samples here.
            assert not {e.id for e in chosen} & held_out, (
                f"{candidate.id} on {sample.id} shows a held-out example"
            )
            assert sample.id not in {e.id for e in chosen}, f"{sample.id} is shown its own answer"
            template = space.to_template(candidate)
            messages = Prompt(suite, template, dataset=dataset, retrieval=retrieval).messages(sample)
            turns = " ".join(m["content"] for m in messages[1:-1])
            for log in validation_logs:
                assert log not in turns
            if sample.id in split.validation:
                assert str(sample.data["log_line"]) not in turns


def test_retrieved_examples_are_the_most_similar_most_similar_last(suite: Suite) -> None:
    dataset = suite.load_dataset()
    space = load_search_space(SPACE, suite, dataset)
    candidate = next(c for c in space.candidates() if c.few_shot == "retrieved" and c.k == 4)
    retrieval = space.retrieval(candidate)
    assert retrieval is not None
    probe = next(s for s in dataset.samples if s.id not in set(suite.split(dataset).train))
    template = space.to_template(candidate)
    messages = Prompt(suite, template, dataset=dataset, retrieval=retrieval).messages(probe)
    nearest = retrieval.pool.nearest(suite.template_values(probe), 4, sample_id=probe.id)
    shown = [m["content"] for m in messages if m["role"] == "user"][:-1]
    assert str(nearest[0].example.inputs["logs"]) in shown[-1], (
        "the nearest example sits next to the question"
    )
    assert str(nearest[-1].example.inputs["logs"]) in shown[0]


def test_candidate_renders_shared_text_first_and_sample_last(suite: Suite) -> None:
    dataset = suite.load_dataset()
    space = load_search_space(SPACE, suite, dataset)
    cand = next(c for c in space.candidates() if c.id == "t1-c0-json_schema-mixed2-direct")
    template = space.to_template(cand)
    messages = template.render(suite.template_values(dataset.samples[0]))
    assert messages[0]["content"].startswith(space.tones[1])
    assert "Examples:" in messages[0]["content"]
    assert str(dataset.samples[0].data["log_line"]) in messages[1]["content"]
    assert template.spec.output.format == "json_schema"
    examples = space.examples(cand)
    assert sum(space.is_benign(s) for s in examples) == 1 and len(examples) == 2
    # The user's field descriptions from the base template survive.
    assert "- root_cause: a snake_case identifier of the technical cause" in messages[0]["content"]
    # Reasoning never runs under constrained decoding, and gets the larger budget.
    cot = next(c for c in space.candidates() if c.id == "t0-c0-json_schema-none-cot")
    assert space.to_template(cot).spec.output.format == "text"
    assert cot.params(space)["max_tokens"] == 320


def test_without_tone_or_constraints_candidates_keep_the_base_words(tmp_path: Path, suite: Suite) -> None:
    space = load(tmp_path, suite, "base_template: {base}\noutput: [json_schema]\n")
    system = space.to_mapping(space.candidates()[0])["system"]
    assert "senior Kubernetes Site Reliability Engineer" in system
    assert "Exhausted retries or data loss risk are critical." in system


def test_hard_negatives_are_benign_and_look_suspicious(suite: Suite) -> None:
    space = load_search_space(SPACE, suite, suite.load_dataset())
    cand = next(c for c in space.candidates() if c.few_shot == "hard_negatives")
    examples = space.examples(cand)
    hard = [s for s in examples if space.is_benign(s)]
    assert hard and all(space.looks_suspicious(s) for s in hard)


def test_group_by_keeps_near_duplicates_on_one_side(suite: Suite) -> None:
    from promptsweep.core.data.dataset import stratified_split

    dataset = suite.load_dataset()
    split = stratified_split(dataset.samples, train=0.5, seed=13, group_by="signature_hash")
    side = {i: "train" for i in split.train} | {i: "validation" for i in split.validation}
    by_signature: dict[str, set[str]] = {}
    for sample in dataset.samples:
        by_signature.setdefault(str(sample.data["signature_hash"]), set()).add(side[sample.id])
    assert all(len(sides) == 1 for sides in by_signature.values())
    assert abs(len(split.train) - len(dataset) / 2) <= 3


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
        f"{tmp_path / 'x.space.yaml'}: few_shot: no strategy can run on the train split of "
        "k8s_triage.suite.yaml (32 samples): few_shot positive_only with k=500 dropped: k=500 is larger "
        "than the train split (32 samples); lower k or raise split.train in the suite"
    )


def test_a_strategy_the_data_cannot_support_is_dropped_with_a_note(tmp_path: Path, suite: Suite) -> None:
    """Another dataset of the same schema may have no benign sample or a small train split: the
    space still runs with what the data supports, and says what it dropped."""
    space = load(tmp_path, suite, MINIMAL + "few_shot: {strategies: [none, positive_only], k: [2, 500]}\n")
    shots = {c.shots for c in space.candidates()}
    assert "positive_only2" in shots and "none" in shots
    assert not any(s.endswith("500") for s in shots)
    assert space.notes == [
        "few_shot positive_only with k=500 dropped: k=500 is larger than the train split (32 samples)"
    ]


def test_retrieve_by_must_name_template_inputs(tmp_path: Path, suite: Suite) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, suite, MINIMAL + "few_shot: {strategies: [retrieved], retrieve_by: [log_line]}\n")
    assert "few_shot.retrieve_by: log_line is not an input of k8s_log_analysis@v1" in str(exc.value)


def test_hard_negatives_need_your_own_suspicious_words(tmp_path: Path, suite: Suite) -> None:
    with pytest.raises(ConfigError, match=r"strategy hard_negatives needs few_shot.suspicious"):
        load(
            tmp_path,
            suite,
            MINIMAL + "few_shot: {strategies: [hard_negatives], benign: {action_needed: none}}\n",
        )


def test_missing_base_template(tmp_path: Path, suite: Suite) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, suite, "base_template: nope.yaml\ntone: [a]\n")
    assert str(exc.value) == (
        f"{tmp_path / 'x.space.yaml'}: base_template: prompt template not found: {tmp_path / 'nope.yaml'}"
    )


def test_mixed_needs_a_benign_definition(tmp_path: Path, suite: Suite) -> None:
    with pytest.raises(ConfigError, match=r"few_shot: strategies mixed need few_shot.benign: the expected"):
        load(tmp_path, suite, MINIMAL + "few_shot: {strategies: [mixed]}\n")


def test_shared_first_layout_puts_what_candidates_share_before_their_own_words(
    suite: Suite, tmp_path: Path
) -> None:
    """The same candidates in both layouts: the same words, but under shared_first two candidates
    asked about one sample send the same prefix (the task, the examples, the sample) and differ
    only after it, which llama-server's prompt cache reuses."""
    dataset = suite.load_dataset()
    text = SPACE.read_text().replace("few_shot:", "layout: [instructions_first, shared_first]\nfew_shot:", 1)
    path = tmp_path / "layouts.space.yaml"
    path.write_text(text.replace("../prompt_templates/", str(SPACE.parent.parent / "prompt_templates") + "/"))
    space = load_search_space(path, suite, dataset)
    sample = next(s for s in dataset.samples if s.id in space.validation_ids)

    def prompt(candidate_id: str) -> str:
        candidate = next(c for c in space.candidates() if c.id == candidate_id)
        rendered = Prompt(
            suite, space.to_template(candidate), dataset=dataset, retrieval=space.retrieval(candidate)
        )
        return "\n".join(m["content"] for m in rendered.messages(sample))

    def shared(a: str, b: str) -> int:
        return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))

    one, other = "t0-c0-json_schema-retrieved4-direct", "t1-c2-json-retrieved4-cot"
    old = shared(prompt(f"{one}-instr"), prompt(f"{other}-instr"))
    new = shared(prompt(f"{one}-shared"), prompt(f"{other}-shared"))
    assert old < 30, "instructions first: two candidates differ from their first line"
    question = str(sample.data["log_line"])
    assert new > prompt(f"{one}-shared").index(question), (
        "shared first: they share the examples and the sample"
    )
    # The same words either way, only in another order.
    assert sorted(prompt(f"{one}-instr").split()) == sorted(prompt(f"{one}-shared").split())
