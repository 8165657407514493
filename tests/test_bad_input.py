"""Bad input: each case gives one clear message naming the file, line, key or flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.suitekit import SAMPLES, make_suite


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def _collect_error(pytester: pytest.Pytester, *args: str) -> str:
    """Run with no endpoint needed; the suite must fail at collection with one error."""
    result = pytester.runpytest("--llm-server=off", *args)
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()
    result.stdout.fnmatch_lines(["*1 error*"])
    return result.stdout.str()


def test_malformed_json_names_file_and_line(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    (pytester.path / "data.json").write_text('[\n  {"a": 1},\n  {"a": 2,,}\n]\n')
    out = _collect_error(pytester)
    assert (
        f"{pytester.path / 'data.json'}:3: invalid JSON: Expecting property name enclosed in double quotes (column 11)"
        in out
    )


def test_malformed_jsonl_line_names_file_and_line(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester)
    _edit(suite, "dataset: data.json", "dataset: data.jsonl")
    (pytester.path / "data.jsonl").write_text(json.dumps(SAMPLES[0]) + "\n" + '{"key": "k1", oops}\n')
    out = _collect_error(pytester)
    assert (
        f"{pytester.path / 'data.jsonl'}:2: invalid JSON: Expecting property name enclosed in double quotes (column 15)"
        in out
    )


def test_yaml_syntax_error_names_file_and_line(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester)
    suite.write_text(suite.read_text() + "\nextra: [unclosed\n")
    out = _collect_error(pytester)
    assert f"{suite}:16: YAML syntax error: expected ',' or ']', but got '<stream end>'" in out


def test_sample_missing_expected_field(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    samples = [dict(s) for s in SAMPLES]
    del samples[2]["severity"]
    (pytester.path / "data.json").write_text(json.dumps(samples, indent=2))
    out = _collect_error(pytester)
    assert f"{pytester.path / 'data.json'}:18: sample is missing expected field 'severity'" in out


def test_duplicate_sample_ids(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester)
    _edit(suite, 'id: "{label}-{key}"', "id_field: key")
    samples = [dict(s) for s in SAMPLES]
    samples[3]["key"] = "k1"
    data = pytester.path / "data.json"
    data.write_text(json.dumps(samples, indent=2))
    out = _collect_error(pytester)
    assert f"{data}:26: duplicate sample id 'k1' (first at {data}:10)" in out


def test_unknown_metric(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester)
    _edit(suite, "metric: rouge_l", "metric: rouge_xx")
    out = _collect_error(pytester)
    assert (
        f"{suite}: fields.summary.metric: unknown metric 'rouge_xx' for field 'summary'; "
        "known: exact, jaccard, rouge_l, token_f1" in out
    )


def test_negative_weight(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester)
    _edit(suite, "weight: 0.2", "weight: -0.2")
    out = _collect_error(pytester)
    assert f"{suite}:11: fields.summary.weight: weight must be >= 0, got -0.2" in out


def test_zero_sum_weights(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester)
    for weight in ("0.5", "0.3", "0.2"):
        _edit(suite, f"weight: {weight}", "weight: 0")
    out = _collect_error(pytester)
    assert f"{suite}:8: fields: field weights sum to 0; give at least one field a positive weight" in out


def test_template_syntax_error(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    template = pytester.path / "template.yaml"
    _edit(template, "{{ logs }}", "{{ logs }")
    out = _collect_error(pytester)
    assert f"template 'tiny' ({template}) (user) line 2: template syntax error: unexpected '}}'" in out


def test_missing_template_variable_names_template_variable_and_sample(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    template = pytester.path / "template.yaml"
    _edit(template, "{{ logs }}", "{{ logs }} {{ pod_name }}")
    out = _collect_error(pytester)
    assert (
        f"template 'tiny' ({template}) (user): 'pod_name' is undefined for sample 'disk_full-k0'; "
        "declare it under inputs.optional with a default, or map it in the suite's inputs" in out
    )
    # One collection error for the suite, not one failure per sample.
    assert out.count("is undefined") == 1


def test_threshold_out_of_range_in_suite(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester)
    _edit(suite, "overall: 0.5", "overall: 1.5")
    out = _collect_error(pytester)
    assert f"{suite}:13: thresholds.overall: threshold must be within [0, 1], got 1.5" in out


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2", "ERROR: --min-score must be within [0, 1], got 2.0; e.g. --min-score=0.7"),
        ("-0.1", "ERROR: --min-score must be within [0, 1], got -0.1; e.g. --min-score=0.7"),
        ("high", "ERROR: --min-score expects a number in [0, 1], got 'high'"),
    ],
)
def test_min_score_out_of_range_is_a_usage_error(pytester: pytest.Pytester, value: str, message: str) -> None:
    make_suite(pytester)
    result = pytester.runpytest("--llm-server=off", f"--min-score={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_unreachable_llm_url_is_one_error_at_start(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    # A subprocess: in-process pytester re-imports httpcore, and httpx then cannot map its errors.
    result = pytester.runpytest_subprocess("--llm-url", "http://127.0.0.1:9")
    assert result.ret == pytest.ExitCode.USAGE_ERROR == 4
    result.stderr.fnmatch_lines(
        [
            "ERROR: LLM endpoint http://127.0.0.1:9 is unreachable: [[]Errno 111[]] Connection refused. "
            "Start llama-server there, fix --llm-url, or leave --llm-url out to use the managed server."
        ]
    )
    text = result.stdout.str() + result.stderr.str()
    assert text.count("is unreachable") == 1
    assert "tiny.suite.yaml" not in result.stdout.str()  # nothing ran


def test_unreachable_llm_url_under_xdist(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    result = pytester.runpytest_subprocess("--llm-url", "http://127.0.0.1:9", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (result.stdout.str() + result.stderr.str()).count("is unreachable") == 1


def test_bad_llm_url_scheme(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    result = pytester.runpytest("--llm-url", "localhost:8080")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --llm-url must start with http:// or https://, got 'localhost:8080'"]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--llm-retries", "-1"], "ERROR: --llm-retries must be 0 or more, got -1"),
        (["--llm-retry-time", "0"], "ERROR: --llm-retry-time must be positive, got 0.0"),
        (["--llm-cache", "sometimes"], "*--llm-cache: invalid choice: 'sometimes'*"),
    ],
)
def test_bad_retry_and_cache_flags(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    make_suite(pytester)
    result = pytester.runpytest("--llm-server=off", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
