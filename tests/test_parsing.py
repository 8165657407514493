"""Parsing of model answers into fields; the Kubernetes triage schema is only an example."""

from __future__ import annotations

import random

import pytest

from promptsweep.core.answers.parsing import ParsedAnswer, normalize_label, parse_answer

FIELDS = ["root_cause", "severity", "component", "summary", "action_needed"]
LABELS = ["root_cause", "severity", "component"]
SYNONYMS = {"severity": {"warning": "warn", "err": "error", "crit": "critical", "information": "info"}}
ALIASES = {"action_needed": ["action required", "action"]}


def parse(text: str) -> ParsedAnswer:
    return parse_answer(text, FIELDS, label_fields=LABELS, synonyms=SYNONYMS, aliases=ALIASES)


def test_plain_lines() -> None:
    result = parse(
        "root_cause: apiserver_not_ready\n"
        "severity: error\n"
        "component: kube-apiserver\n"
        "summary: The API server is not ready.\n"
        "action_needed: yes\n"
    )
    assert result.source == "lines"
    assert result.fields == {
        "root_cause": "apiserver_not_ready",
        "severity": "error",
        "component": "kube_apiserver",
        "summary": "The API server is not ready.",
        "action_needed": "yes",
    }
    assert result.missing == ()
    assert result.error is None


def test_numbered_and_bulleted_lines() -> None:
    result = parse("1. Root cause: oom_killed\n2) Severity: warn\n- Component: kubelet\n* Summary: x")
    assert result.fields == {
        "root_cause": "oom_killed",
        "severity": "warn",
        "component": "kubelet",
        "summary": "x",
    }
    assert result.missing == ("action_needed",)


def test_bold_and_italic_keys() -> None:
    result = parse(
        "**Root cause:** image_pull_backoff\n"
        "__Severity__: error\n"
        "- **Component**: `kubelet`\n"
        "*Summary: Image could not be pulled.*\n"
        "**Action required: yes**"
    )
    assert result.fields == {
        "root_cause": "image_pull_backoff",
        "severity": "error",
        "component": "kubelet",
        "summary": "Image could not be pulled.",
        "action_needed": "yes",
    }


def test_bold_key_with_free_text_value() -> None:
    result = parse("**Summary:** *Pod* restarted.\n**Summary**: second *try*")
    assert result.fields == {"summary": "second *try*"}
    assert parse("**Summary:** *Pod* restarted.").fields == {"summary": "*Pod* restarted."}


def test_headings() -> None:
    result = parse("### Severity: critical\n## Root Cause: disk_pressure\n### Summary\n\nNode disk full.")
    assert result.fields == {
        "severity": "critical",
        "root_cause": "disk_pressure",
        "summary": "Node disk full.",
    }


def test_mixed_case_keys_and_separators() -> None:
    result = parse("ROOT-CAUSE: X\nsEvErItY: Info\nAction Needed: no")
    assert result.fields == {"root_cause": "x", "severity": "info", "action_needed": "no"}


def test_empty_value_takes_next_line_unless_it_is_a_key() -> None:
    result = parse("Summary:\n\n  The etcd leader changed.\nSeverity:\nComponent: etcd")
    assert result.fields["summary"] == "The etcd leader changed."
    assert "severity" not in result.fields
    assert result.fields["component"] == "etcd"


def test_value_is_rest_of_line_only() -> None:
    result = parse("Summary: first line\nsecond line\nSeverity: warn")
    assert result.fields["summary"] == "first line"


def test_quotes_and_trailing_period() -> None:
    result = parse('Root cause: "crash_loop_backoff".\nSummary: "Pod restarts."\nSeverity: `warn`')
    assert result.fields == {
        "root_cause": "crash_loop_backoff",
        "summary": "Pod restarts.",
        "severity": "warn",
    }


def test_key_with_trailing_parenthetical() -> None:
    result = parse("Severity (info/warn/error/critical): error")
    assert result.fields == {"severity": "error"}


def test_code_fenced_json() -> None:
    text = (
        "Here is the answer:\n```json\n"
        '{"root_cause": "apiserver_not_ready", "severity": "error", "component": "apiserver",'
        ' "summary": "API server down.", "action_needed": true}\n```\nHope that helps!'
    )
    result = parse(text)
    assert result.source == "json"
    assert result.fields == {
        "root_cause": "apiserver_not_ready",
        "severity": "error",
        "component": "apiserver",
        "summary": "API server down.",
        "action_needed": "true",
    }
    assert result.missing == ()


def test_json_keys_with_spaces_dashes_and_case() -> None:
    result = parse('{"Root Cause": "oom_killed", "SEVERITY": "Warning", "action-needed": false}')
    assert result.source == "json"
    assert result.fields == {"root_cause": "oom_killed", "severity": "warn", "action_needed": "false"}


def test_json_non_string_values() -> None:
    result = parse_answer(
        '{"component": ["etcd", "apiserver"], "summary": 42, "severity": null}',
        ["component", "summary", "severity"],
    )
    assert result.fields == {"component": "etcd, apiserver", "summary": "42"}
    assert result.missing == ("severity",)


def test_json_last_object_with_a_requested_field_wins() -> None:
    text = (
        'First thought: {"root_cause": "dns_failure", "severity": "info"}\n'
        "On reflection that is wrong.\n"
        '{"root_cause": "etcd_timeout", "severity": "critical"}\n'
        'Metadata: {"tokens": 12}'
    )
    result = parse(text)
    assert result.source == "json"
    assert result.fields == {"root_cause": "etcd_timeout", "severity": "critical"}


def test_json_answer_nested_in_wrapper() -> None:
    result = parse('{"analysis": "...", "answer": {"root_cause": "node_not_ready"}}')
    assert result.fields == {"root_cause": "node_not_ready"}


def test_lines_last_occurrence_wins() -> None:
    text = (
        "Reasoning: the first guess is Severity: info, but\n"
        "Severity: info\nRoot cause: dns_failure\n"
        "Actually the logs show etcd errors.\n\n"
        "Final answer:\nRoot cause: etcd_timeout\nSeverity: critical\n"
    )
    result = parse(text)
    assert result.fields == {"root_cause": "etcd_timeout", "severity": "critical"}


def test_json_preferred_unless_lines_yield_more() -> None:
    both_equal = 'severity: info\n{"severity": "error"}'
    assert parse(both_equal).source == "json"
    assert parse(both_equal).fields == {"severity": "error"}
    more_lines = 'severity: info\ncomponent: etcd\n{"severity": "error"}'
    assert parse(more_lines).source == "lines"
    assert parse(more_lines).fields == {"severity": "info", "component": "etcd"}


def test_truncated_pretty_json_falls_back_to_lines() -> None:
    text = '```json\n{\n  "root_cause": "oom_killed",\n  "severity": "warn",\n  "summary": "Pod was'
    result = parse(text)
    assert result.source == "lines"
    assert result.fields == {"root_cause": "oom_killed", "severity": "warn", "summary": "Pod was"}


def test_synonyms_map_label_values() -> None:
    assert parse("Severity: Warning").fields == {"severity": "warn"}
    assert parse('{"severity": "ERR"}').fields == {"severity": "error"}
    # Synonyms apply to their field only.
    assert parse("Component: warning").fields == {"component": "warning"}


def test_aliases_add_key_spellings() -> None:
    assert parse("Action: restart the pod").fields == {"action_needed": "restart the pod"}
    assert parse('{"Action Required": "yes"}').fields == {"action_needed": "yes"}


def test_free_text_is_only_stripped() -> None:
    assert parse("Summary:   API Server Not-Ready.  ").fields == {"summary": "API Server Not-Ready."}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("API Server Not Ready", "api_server_not_ready"),
        ("  apiserver-not-ready. ", "apiserver_not_ready"),
        ('"OOM  Killed"', "oom_killed"),
        ("node.not.ready", "node_not_ready"),
        ("a - b", "a_b"),
        ("**warn**", "warn"),
        ("", ""),
    ],
)
def test_normalize_label(raw: str, expected: str) -> None:
    assert normalize_label(raw) == expected


def test_normalize_label_synonym_keys_are_normalised() -> None:
    synonyms = {"Warning ": "Warn", "crit.": "critical"}
    assert normalize_label("WARNING", synonyms) == "warn"
    assert normalize_label("Crit", synonyms) == "critical"
    assert normalize_label("error", synonyms) == "error"


def test_garbage_is_all_missing_with_reason() -> None:
    result = parse("I cannot help with that.")
    assert result == ParsedAnswer(
        fields={},
        source="none",
        missing=tuple(FIELDS),
        error="no JSON object or `Field: value` lines found",
    )


def test_empty_and_wrong_json_reasons() -> None:
    assert parse("").error == "empty response"
    wrong = parse('{"cause": "x"}')
    assert wrong.source == "none"
    assert wrong.error is not None and "keys: cause" in wrong.error
    broken = parse('{"root_cause": "unfin')
    assert broken.source == "none"
    assert broken.error is not None and "truncated" in broken.error
    salvaged = parse('{"root_cause": "x", "severity": ')
    assert salvaged.source == "json" and salvaged.fields.get("root_cause") == "x"


def test_duplicate_requested_fields_are_reported_once() -> None:
    result = parse_answer("a: 1", ["a", "a", "b"])
    assert result.fields == {"a": "1"}
    assert result.missing == ("b",)


TRICKY = [
    "",
    " ",
    "{",
    "}",
    '{"a":',
    '{"severity": "warn"',
    "```json\n{",
    "```json\n```",
    "{{{{}}}}",
    "[1, 2, {]",
    '{"severity": {"severity": {"severity": null}}}',
    "[" * 5000 + "]" * 5000,
    '{"a":' * 3000,
    '{"a":[' * 3000,
    "{" * 10**5,
    "x" * 10**5,
    "Severity:" * 10**4,
    "severity: warn\n" * 10**4,
    '{"severity": 1' + "0" * 5000 + "}",
    '{"severity": NaN, "summary": Infinity}',
    "\x00\x01\x02\xff\ufffd",
    "\ud800 unpaired surrogate: {",
    "::::\n: : :\n**:**\n#\n###:\n- \n1.",
    "Severity:\n",
    "\r\n\r\nseverity:\r\nwarn\r\n",
]


@pytest.mark.parametrize("text", TRICKY, ids=range(len(TRICKY)))
def test_never_raises_on_tricky_input(text: str) -> None:
    result = parse(text)
    assert set(result.fields) | set(result.missing) == set(FIELDS)
    assert (result.source == "none") == (result.error is not None)


def test_never_raises_on_random_input() -> None:
    rng = random.Random(1234)
    alphabet = '{}[]":,*#_-`\n \t.0123456789abcRoOtseverity_cause\\\x00é'
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        result = parse(text)
        assert set(result.fields) | set(result.missing) == set(FIELDS)


def test_truncated_one_line_json_keeps_its_complete_pairs() -> None:
    """An answer cut by max_tokens inside the last value (seen on the real llama-server)."""
    text = (
        '{"root_cause": "unknown", "severity": "critical", "component": "envoy-gateway", "summary": "The serv'
    )
    parsed = parse_answer(
        text, ["root_cause", "severity", "component", "summary"], label_fields=["component"]
    )
    assert parsed.fields == {"root_cause": "unknown", "severity": "critical", "component": "envoy_gateway"}
    assert parsed.source == "json" and parsed.missing == ("summary",)
