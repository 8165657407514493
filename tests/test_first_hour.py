"""A newcomer's first hour (issue 9): the plugin stays invisible where it has nothing to do,
data mistakes are errors that say how to fix them, mixed routes are counted, small papercuts."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from promptsweep.core.data.dataset import RawRecord, infer_id_field, load_dataset
from tests.fakeserver import FakeLLMServer
from tests.suitekit import SAMPLES, make_suite, oracle


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def _collect_error(pytester: pytest.Pytester, *args: str) -> str:
    result = pytester.runpytest("--llm-server=off", *args)
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()
    result.stdout.fnmatch_lines(["*1 error*"])
    return result.stdout.str()


def _runs(pytester: pytest.Pytester) -> list[Path]:
    return sorted((pytester.path / ".promptsweep" / "runs").iterdir())


# ----------------------------------------------------------------- nothing on disk


def test_pytest_help_leaves_no_promptsweep_dir(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*LLM evals as tests*"])
    assert not (pytester.path / ".promptsweep").exists()


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["n0", "n2"])
def test_unrelated_project_leaves_no_promptsweep_dir(pytester: pytest.Pytester, workers: list[str]) -> None:
    pytester.makepyfile(test_plain="def test_ordinary():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest_subprocess(*workers, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / ".promptsweep").exists()


def test_collect_only_on_a_suite_starts_nothing_and_writes_nothing(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    result = pytester.runpytest_subprocess("--collect-only", "-q", "-n", "2", "-p", "no:cacheprovider")
    assert result.ret == 0
    assert not (pytester.path / ".promptsweep").exists()


def test_the_cache_appears_with_the_first_answer(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.0)
    with FakeLLMServer(oracle()) as fake:
        pytester.runpytest_subprocess("--llm-url", fake.url, "-p", "no:cacheprovider").assert_outcomes(
            passed=6
        )
    assert (pytester.path / ".promptsweep" / "cache.sqlite3").is_file()


# ----------------------------------------------------------------- errors that say how to fix them


def test_key_typo_suggests_the_key(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester)
    _edit(suite, "weight: 0.3", "wieght: 0.3")
    out = _collect_error(pytester)
    assert f"{suite}:10: fields.severity.wieght: unknown key 'wieght'; did you mean 'weight'?" in out
    assert "Extra inputs are not permitted" not in out and "Value error" not in out


def test_unknown_key_without_a_close_match_lists_the_known_ones(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester)
    _edit(suite, "thresholds:\n", "thresholds:\n  zzz: 1\n")
    out = _collect_error(pytester)
    assert (
        f"{suite}:13: thresholds.zzz: unknown key 'zzz'; known keys: fields, max_errors, max_latency_p95_ms, max_tokens_per_sample, overall, sample"
        in out
    )


def test_template_key_typo_suggests_the_key(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    template = pytester.path / "template.yaml"
    _edit(template, "model_defaults:", "model_default:")
    out = _collect_error(pytester)
    assert f"{template}:4: model_default: unknown key 'model_default'; did you mean 'model_defaults'?" in out


def test_field_name_typo_is_reported_against_the_suite_key(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester)
    _edit(suite, "  severity: {", "  severty: {")
    out = _collect_error(pytester)
    assert (
        f"{suite}:10: fields.severty: no sample in {pytester.path / 'data.json'} has a key 'severty'; "
        "did you mean 'severity'?" in out
    )
    assert "sample is missing expected field" not in out


def test_a_field_missing_from_one_sample_is_still_a_data_error(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    samples = [dict(s) for s in SAMPLES]
    del samples[2]["severity"]
    (pytester.path / "data.json").write_text(json.dumps(samples, indent=2))
    out = _collect_error(pytester)
    assert f"{pytester.path / 'data.json'}:18: sample is missing expected field 'severity'" in out


def test_category_typo_is_reported_against_the_suite_key(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester)
    _edit(suite, "category: label", "category: lable")
    out = _collect_error(pytester)
    assert (
        f"{suite}:5: category: no sample in {pytester.path / 'data.json'} has a key 'lable'; did you mean 'label'?"
        in out
    )


def test_label_outside_values_is_an_error_naming_file_line_field_and_values(
    pytester: pytest.Pytester,
) -> None:
    suite = make_suite(pytester)
    samples = [dict(s) for s in SAMPLES]
    samples[2]["severity"] = "urgent"
    samples[4]["severity"] = "urgent"
    data = pytester.path / "data.json"
    data.write_text(json.dumps(samples, indent=2))
    out = _collect_error(pytester)
    assert (
        f"{data}:18: field 'severity' is 'urgent' (and 1 more samples), which is not in its values: "
        f"info, warn, error. Fix the label, add it to fields.severity.values in {suite}, "
        "or set fields.severity.unlisted_values: warn to score it anyway" in out
    )


def test_label_outside_values_close_to_one_suggests_it(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    samples = [dict(s) for s in SAMPLES]
    samples[0]["severity"] = "eror"
    (pytester.path / "data.json").write_text(json.dumps(samples, indent=2))
    out = _collect_error(pytester)
    assert (
        "field 'severity' is 'eror', which is not in its values: info, warn, error; did you mean 'error'? Fix the label"
        in out
    )


def test_labels_are_compared_after_normalisation_and_synonyms(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.0)
    samples = [dict(s) for s in SAMPLES]
    samples[0]["severity"] = "Error"
    samples[3]["severity"] = "warning"  # a synonym of warn
    (pytester.path / "data.json").write_text(json.dumps(samples, indent=2))
    with FakeLLMServer(oracle()) as fake:
        result = pytester.runpytest_subprocess("--llm-url", fake.url, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)


def test_unlisted_values_warn_scores_them_and_says_so(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester, threshold=0.0)
    _edit(suite, "values: [info, warn, error]", "values: [info, warn, error], unlisted_values: warn")
    samples = [dict(s) for s in SAMPLES]
    samples[2]["severity"] = "urgent"
    (pytester.path / "data.json").write_text(json.dumps(samples, indent=2))
    with FakeLLMServer(oracle()) as fake:
        result = pytester.runpytest_subprocess("--llm-url", fake.url, "-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)  # each xdist worker warns; the summary shows it once
    assert result.stdout.str().count("PromptsweepWarning") == 1
    result.stdout.fnmatch_lines(
        [
            "*PromptsweepWarning: *data.json:18: field 'severity' is 'urgent', which is not in its values: "
            "info, warn, error; scored anyway (fields.severity.unlisted_values: warn), "
            "but constrained decoding can never produce it"
        ]
    )


def test_input_mapping_typo_is_reported_against_the_suite_key(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester)
    _edit(suite, "logs: line", "logs: lines")
    out = _collect_error(pytester)
    assert (
        f"{suite}:7: inputs.logs: no sample in {pytester.path / 'data.json'} has a key 'lines' "
        "(this maps the template's 'logs' to the data's 'lines'); did you mean 'line'?" in out
    )


def test_required_input_missing_in_one_sample_names_the_data_key_and_the_mapping(
    pytester: pytest.Pytester,
) -> None:
    suite = make_suite(pytester)
    samples = [dict(s) for s in SAMPLES]
    del samples[1]["line"]
    data = pytester.path / "data.json"
    data.write_text(json.dumps(samples, indent=2))
    out = _collect_error(pytester)
    assert (
        f"{data}:10: required input 'logs' has no value: the suite maps inputs.logs: line ({suite}), "
        "and this sample has no 'line'" in out
    )


def test_unmapped_required_input_says_how_to_map_it(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester)
    _edit(suite, "inputs:\n  logs: line\n", "")
    out = _collect_error(pytester)
    assert (
        f"{suite}: template 'tiny' needs input 'logs', but no sample in {pytester.path / 'data.json'} has a key "
        "'logs'; map one in the suite: `inputs: {logs: <data key>}`" in out
    )


# ----------------------------------------------------------------- both routes in one run


ROUTE_TEST = """
import pytest

@pytest.mark.promptsweep(suite="tiny.suite.yaml")
def test_route(sample, prompt, endpoint, promptsweep_score):
    promptsweep_score(endpoint.chat(prompt, max_tokens=32))
"""


def test_mixed_routes_are_both_counted_and_match_results_jsonl(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.0)
    pytester.makepyfile(test_route=ROUTE_TEST)
    with FakeLLMServer(oracle({5})) as fake:
        cold = pytester.runpytest_subprocess("--llm-url", fake.url, "-n", "2", "-p", "no:cacheprovider")
        cold.assert_outcomes(passed=12)
        cold.stdout.fnmatch_lines(
            [
                "*suite tiny (test_route.py::test_route): 6 samples, overall 0.883*",
                "*response cache (read-write, *): 0 hits, 12 misses",
            ]
        )
        cold.stdout.fnmatch_lines(["*suite tiny: 6 samples, overall 0.883*"])
        runs = _runs(pytester)
        assert sorted(r.name.split("-", 1)[1] for r in runs) == ["tiny", "tiny-test_route"]
        for run in runs:
            lines = (run / "results.jsonl").read_text().splitlines()
            metrics = json.loads((run / "metrics.json").read_text())
            assert len(lines) == metrics["n"] == 6
        warm = pytester.runpytest_subprocess("--llm-url", fake.url, "-n", "2", "-p", "no:cacheprovider")
        warm.assert_outcomes(passed=12)
        warm.stdout.fnmatch_lines(["*: 12 hits, 0 misses"])
        assert len(fake.requests) == 12
    route_run = next(r for r in _runs(pytester)[2:] if r.name.endswith("tiny-test_route"))
    results = [json.loads(x) for x in (route_run / "results.jsonl").read_text().splitlines()]
    assert [r["from_cache"] for r in results] == [True] * 6


# ----------------------------------------------------------------- small ones


def test_failed_gate_shows_on_pytests_last_line(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.9)
    with FakeLLMServer(oracle({1, 3})) as fake:
        result = pytester.runpytest_subprocess("--llm-url", fake.url, "-n", "2", "-p", "no:cacheprovider")
    assert result.ret == 1
    last = result.stdout.lines[-1]
    assert "6 passed, 1 gate FAILED in " in last, last


def test_passed_gate_keeps_pytests_last_line(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.5)
    with FakeLLMServer(oracle({1})) as fake:
        result = pytester.runpytest_subprocess("--llm-url", fake.url, "-p", "no:cacheprovider")
    assert result.ret == 0
    assert "gate FAILED" not in result.stdout.lines[-1]


def test_artifacts_share_one_file_mode(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.0)
    with FakeLLMServer(oracle()) as fake:
        pytester.runpytest_subprocess("--llm-url", fake.url, "-p", "no:cacheprovider").assert_outcomes(
            passed=6
        )
    umask = os.umask(0)
    os.umask(umask)
    base = pytester.path / ".promptsweep"
    (run,) = _runs(pytester)
    files = [p for p in [*run.iterdir(), *base.iterdir()] if p.is_file() and not p.name.startswith(".")]
    names = {p.name for p in files}
    assert {"report.html", "summary.md", "metrics.json", "results.jsonl", "leaderboard.json"} <= names
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_ids_come_from_an_obvious_id_key(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester, threshold=0.0)
    _edit(suite, 'id: "{label}-{key}"\n', "")
    samples = [{"ticket_id": f"T-{i:03d}", **s} for i, s in enumerate(SAMPLES)]
    (pytester.path / "data.json").write_text(json.dumps(samples, indent=2))
    result = pytester.runpytest("--llm-server=off", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["tiny.suite.yaml::tiny[[]T-000[]]", "*tiny[[]T-005[]]"])


def _records(*rows: dict[str, object]) -> list[RawRecord]:
    return [RawRecord(data=dict(r), index=i, line=i + 1) for i, r in enumerate(rows)]


def test_infer_id_field_prefers_id_and_needs_unique_values() -> None:
    assert (
        infer_id_field(_records({"x": 1, "ticket_id": "a", "id": 1}, {"x": 2, "ticket_id": "b", "id": 2}))
        == "id"
    )
    assert infer_id_field(_records({"ticket_id": "a", "id": 1}, {"ticket_id": "b", "id": 1})) == "ticket_id"
    assert infer_id_field(_records({"ticket_id": "a"}, {"ticket_id": "a"})) is None
    assert infer_id_field(_records({"ticket_id": "a"}, {"other": "b"})) is None
    assert infer_id_field(_records({"userId": "u1"}, {"userId": "u2"})) == "userId"
    assert infer_id_field(_records({"id": True}, {"id": False})) is None
    # a scored field is never taken as the id
    assert infer_id_field(_records({"label_id": "a"}, {"label_id": "b"}), exclude=["label_id"]) is None


def test_positions_remain_the_fallback(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "y": "1"}\n{"text": "b", "y": "2"}\n')
    dataset = load_dataset(path, fields=["y"])
    assert [s.id for s in dataset.samples] == ["sample0001", "sample0002"]
    assert dataset.id_source is None
