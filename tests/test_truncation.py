"""Issue 28 item 3: an answer cut at max_tokens is marked truncated (counted and listed in the
summary, written in results.jsonl), and a label outside its allowed values is never scored
as a label: it scores 0 and is counted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import promptsweep
from promptsweep.core.answers.chat import ChatResult
from promptsweep.core.answers.result import SampleResult
from promptsweep.core.measure.aggregate import aggregate
from promptsweep.reporting.summary import RunFacts, render_markdown, render_terminal
from tests.fakeserver import FakeLLMServer, Reply, user_text
from tests.suitekit import SAMPLES, TEMPLATE, make_suite

PARTIAL_CREDIT_SUITE = """\
name: tiny
dataset: data.json
template: template.yaml
id: "{label}-{key}"
inputs:
  logs: line
fields:
  label: {metric: token_f1, weight: 0.5, label: true, values: [disk_full, oom_killed, started]}
  severity: {metric: exact, weight: 0.5, label: true, values: dataset}
"""


@pytest.fixture
def prompt(tmp_path: Path) -> promptsweep.Prompt:
    (tmp_path / "template.yaml").write_text(TEMPLATE.format(fmt="json"))
    (tmp_path / "data.json").write_text(json.dumps(SAMPLES))
    (tmp_path / "tiny.suite.yaml").write_text(PARTIAL_CREDIT_SUITE)
    return promptsweep.load_prompt(tmp_path / "tiny.suite.yaml")


def test_a_label_outside_its_values_scores_zero_not_partial_credit(prompt: promptsweep.Prompt) -> None:
    """``disk_full_or_so`` shares words with ``disk_full``: token_f1 gave it 0.67 as a label."""
    result = prompt.score('{"label": "disk full or so", "severity": "fatal"}', {**SAMPLES[0]})
    assert result.got == {"label": "disk_full_or_so", "severity": "fatal"}  # what was said, kept
    assert result.unlisted == ["label", "severity"]
    assert result.scores == {"label": 0.0, "severity": 0.0} and result.score == 0.0
    right = prompt.score('{"label": "Disk Full", "severity": "error"}', {**SAMPLES[0]})
    assert right.unlisted == [] and right.score == 1.0


def test_the_samples_own_label_is_never_outside(prompt: promptsweep.Prompt) -> None:
    """A dataset label outside ``values:`` (``unlisted_values: warn``) answered right scores."""
    record = {**SAMPLES[0], "label": "kernel_panic"}
    result = prompt.score('{"label": "kernel_panic", "severity": "error"}', record)
    assert result.unlisted == [] and result.scores["label"] == 1.0


def test_finish_reason_length_marks_the_result_truncated(prompt: promptsweep.Prompt) -> None:
    cut = ChatResult(text='{\n  "label": "disk_fu', finish_reason="length")
    result = prompt.score(cut, {**SAMPLES[0]})
    assert result.truncated and result.unlisted == ["label"] and result.score == 0.0
    assert not prompt.score(
        ChatResult(text='{"label": "started"}', finish_reason="stop"), SAMPLES[4]
    ).truncated
    line = result.to_json()
    assert line["truncated"] is True and line["unlisted"] == ["label"]
    # a line written before the flag existed is read as truncated from its finish_reason
    old = {k: v for k, v in line.items() if k not in ("truncated", "unlisted")}
    assert SampleResult.from_json(old).truncated


def test_the_summary_counts_and_lists_truncated_and_unlisted_answers(prompt: promptsweep.Prompt) -> None:
    results = [
        prompt.score(
            ChatResult(text='{\n  "label": "disk_fu', finish_reason="length"), {**SAMPLES[0]}, sample_id="a"
        ),
        prompt.score(
            ChatResult(text='{"label": "disk_full", "sev', finish_reason="length"), SAMPLES[1], sample_id="b"
        ),
        prompt.score(ChatResult(text="no idea", finish_reason="stop"), SAMPLES[2], sample_id="c"),
        prompt.score(ChatResult(text='{"label": "started", "severity": "info"}'), SAMPLES[4], sample_id="d"),
    ]
    agg = aggregate("tiny", results, ["label", "severity"])
    assert (agg.truncated, agg.unlisted, agg.unparsed) == (2, 1, 1)
    metrics = agg.to_json()
    assert (metrics["truncated"], metrics["unlisted"], metrics["unparsed"]) == (2, 1, 1)
    text = render_terminal(agg, {"label": 0.5, "severity": 0.5}, RunFacts(), run_dir=None)
    assert "truncated: 2 of 4 answers were cut at max_tokens (finish_reason: length)" in text
    assert "a, b" in text.split("truncated:")[1].splitlines()[0]
    assert "outside the allowed values: 1 of 4 answers" in text and "a (label)" in text
    assert "unparsed: 1 of 4 answers could not be parsed: c" in text
    md = render_markdown(agg, {"label": 0.5, "severity": 0.5}, RunFacts(), title="t")
    assert "truncated: 2 of 4 answers" in md and "unparsed: 1 of 4" in md


def cut_at_max_tokens(body: dict[str, Any]) -> Reply:
    """A server that answers in pretty-printed JSON and, like llama-server, stops at
    ``max_tokens`` (one character a token here) with ``finish_reason: length``."""
    text = user_text(body)
    sample = next(s for s in SAMPLES if s["line"] in text)
    answer = json.dumps({k: sample[k] for k in ("label", "severity", "summary")}, indent=2)
    limit = int(body.get("max_tokens") or 10_000)
    finish = "length" if len(answer) > limit else "stop"
    return Reply(
        body={
            "model": "fake-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer[:limit]},
                    "finish_reason": finish,
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": min(len(answer), limit)},
        }
    )


def test_a_small_max_tokens_shows_as_truncated_never_as_a_label(pytester: pytest.Pytester) -> None:
    """The newcomer's run: at a small max_tokens the JSON answer was cut and read as a label
    outside the allowed values, while the summary said nothing. 23 characters keep
    ``disk_full`` and ``started`` and cut ``oom_killed`` to ``oom_kille``."""
    make_suite(pytester, threshold=0.0, fmt="json")
    template = pytester.path / "template.yaml"
    template.write_text(template.read_text().replace("max_tokens: 64", "max_tokens: 23"))
    with FakeLLMServer(cut_at_max_tokens) as fake:
        result = pytester.runpytest_subprocess(
            "tiny.suite.yaml", "--llm-url", fake.url, "--llm-cache=off", "-p", "no:cacheprovider"
        )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "truncated: 6 of 6 answers were cut at max_tokens (finish_reason: length); raise max_tokens*",
            "outside the allowed values: 2 of 6 answers gave a field none of its values, scored 0 there: "
            "oom_killed-k2 (label), oom_killed-k3 (label)",
        ]
    )
    (run,) = (pytester.path / ".promptsweep" / "runs").iterdir()
    lines = {r["sample_id"]: r for r in map(json.loads, (run / "results.jsonl").read_text().splitlines())}
    assert all(r["truncated"] and r["finish_reason"] == "length" for r in lines.values())
    cut = lines["oom_killed-k2"]
    assert (
        cut["got"]["label"] == "oom_kille" and cut["unlisted"] == ["label"] and cut["scores"]["label"] == 0.0
    )
    assert lines["disk_full-k0"]["scores"]["label"] == 1.0 and lines["disk_full-k0"]["unlisted"] == []
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["truncated"] == 6 and metrics["unlisted"] == 2
    assert "truncated: 6 of 6 answers" in (run / "summary.md").read_text()


def test_a_json_answer_cut_on_one_line_keeps_its_whole_pairs(prompt: promptsweep.Prompt) -> None:
    """The issue's ``alert=none","level":_"error","component…``: a one-line object after a
    ``{`` line was read as one key line running into the next pairs."""
    parsed = prompt.parse('{\n"label": "disk_full", "severity": "error", "summary": "the dis')
    assert parsed.fields == {"label": "disk_full", "severity": "error"}


@pytest.mark.real_server
def test_the_real_server_cut_at_a_small_max_tokens_is_truncated(
    pytester: pytest.Pytester, llama_server_url: str
) -> None:
    """llama-server itself, at 12 tokens: every answer is cut (``finish_reason: length``), the
    summary says so, and no label outside its values is scored as one."""
    from promptsweep.core.data.suite import load_suite
    from tests.test_public_api import copy_example

    copy_example(pytester.path, samples=4, max_tokens=12)
    result = pytester.runpytest_subprocess(
        "evals/k8s_triage.suite.yaml", "--llm-url", llama_server_url, "--llm-cache=off",
        "--min-score", "0", "-p", "no:cacheprovider",
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["truncated: 4 of 4 answers were cut at max_tokens (finish_reason: length)*"])
    (run,) = (pytester.path / ".promptsweep" / "runs").iterdir()
    lines = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and all(r["truncated"] and r["finish_reason"] == "length" for r in lines)
    suite = load_suite(pytester.path / "evals/k8s_triage.suite.yaml")
    allowed = suite.allowed_values(suite.load_dataset())
    for line in lines:
        for field, value in line["got"].items():
            if field in allowed and value not in allowed[field]:
                assert field in line["unlisted"] and line["scores"][field] == 0.0, line
