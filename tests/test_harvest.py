"""Harvest and add: a run's own spans (or a JSONL of inputs) become unlabelled samples the golden
set does not cover; labelled ones merge into the dataset and the next collection sees them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from promptsweep.cli.main import main as cli_main
from promptsweep.core.data.suite import load_suite
from promptsweep.core.harvest.coverage import harvest
from promptsweep.core.harvest.spans import Candidate, read_source, span_input
from tests.fakeserver import FakeLLMServer
from tests.suitekit import SAMPLES, make_suite, oracle
from tests.test_telemetry import OTLPReceiver

NEW_LINES = [
    "kernel panic on node worker-3 after firmware upgrade",
    "TLS certificate for ingress expired yesterday",
    "DNS resolution timeout for upstream payments service",
]


def _production(pytester: pytest.Pytester) -> Path:
    """What production saw: two inputs the golden set has, and three it has never seen."""
    seen = [dict(SAMPLES[0]), dict(SAMPLES[4])]
    new = [
        {
            "key": f"p{i}",
            "namespace": "prod",
            "line": line,
            "label": "unknown",
            "severity": "info",
            "summary": "?",
        }
        for i, line in enumerate(NEW_LINES)
    ]
    path = pytester.path / "production.json"
    path.write_text(json.dumps(seen + new))
    return path


def _otlp_file(receiver: OTLPReceiver, path: Path) -> Path:
    """The receiver's requests as the OpenTelemetry Collector's file exporter writes them: one
    OTLP/JSON ExportTraceServiceRequest per line."""
    lines = []
    for body in receiver.bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        lines.append(MessageToJson(request, indent=None))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_harvest_a_runs_own_spans_then_add_what_was_labelled(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = make_suite(pytester, threshold=0.0)
    production = _production(pytester)
    receiver = OTLPReceiver()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        with FakeLLMServer(oracle()) as fake:
            run = pytester.runpytest_subprocess(
                "tiny.suite.yaml", "--llm-url", fake.url, "--llm-cache=off", "--golden", str(production)
            )
        run.assert_outcomes(passed=5)
    finally:
        receiver.close()
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    traces = _otlp_file(receiver, pytester.path / "traces.jsonl")

    out = pytester.path / "to_label.jsonl"
    assert cli_main(["harvest", str(traces), "--suite", str(suite), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "read 5 inputs" in err and "2 covered by the golden set" in err
    harvested = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(h["line"] for h in harvested) == sorted(NEW_LINES)
    for h in harvested:
        assert h["label"] == h["severity"] == h["summary"] == ""  # for a person to fill
        assert h["key"] == ""  # the suite's id pattern reads it
        assert "LOG-" not in h["line"]
        origin = h["harvested_from"]
        assert origin["trace_id"] and origin["span_id"] and origin["similarity"] < 0.5
        assert origin["nearest"] in {s.id for s in load_suite(suite).load_dataset().samples}
    similarities = [h["harvested_from"]["similarity"] for h in harvested]
    assert similarities == sorted(similarities)  # most unlike the golden set first

    # A person labels them; one label is wrong and one is left empty: nothing is added.
    labelled = pytester.path / "labelled.jsonl"
    rows = []
    for i, h in enumerate(harvested):
        rows.append({**h, "key": f"h{i}", "label": "node_failure", "severity": "error", "summary": h["line"]})
    rows[1]["severity"] = "catastrophic"
    rows[2]["summary"] = ""
    labelled.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = (pytester.path / "data.json").read_text()
    assert cli_main(["add", str(labelled), "--suite", str(suite)]) == 1
    err = capsys.readouterr().err
    assert f"{labelled}:2: severity: 'catastrophic' is not one of info, warn, error" in err
    assert f"{labelled}:3: summary: empty" in err
    assert (pytester.path / "data.json").read_text() == before

    rows[1]["severity"] = "warn"
    rows[2]["summary"] = "dns times out"
    labelled.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli_main(["add", str(labelled), "--suite", str(suite)]) == 0
    assert "added 3 samples" in capsys.readouterr().out
    assert len(json.loads((pytester.path / "data.json").read_text())) == 9

    collected = pytester.runpytest("tiny.suite.yaml", "--collect-only", "-q")
    collected.stdout.fnmatch_lines(["*tiny[[]node_failure-h0[]]*", "*9 tests collected*"])
    # The same samples again are duplicates, refused by id.
    assert cli_main(["add", str(labelled), "--suite", str(suite)]) == 1
    assert "duplicate sample id 'node_failure-h0'" in capsys.readouterr().err


def test_harvest_reads_a_jsonl_of_production_inputs(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = make_suite(pytester)
    inputs = pytester.path / "prod.jsonl"
    records = [
        {"line": SAMPLES[2]["line"], "namespace": "ns"},
        {"line": NEW_LINES[0]},
        {"line": NEW_LINES[0]},
    ]
    records.append({"logs": NEW_LINES[1]})  # the template's own variable name works too
    inputs.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = pytester.path / "h.yaml"
    assert cli_main(["harvest", str(inputs), "--suite", str(suite), "--out", str(out)]) == 0
    assert "1 covered" in capsys.readouterr().err
    harvested = yaml.safe_load(out.read_text())
    assert sorted(h.get("line") or h.get("logs") for h in harvested) == sorted(NEW_LINES[:2])
    assert all(h["harvested_from"]["line"] in (2, 4) for h in harvested)


def test_similarity_threshold_and_repeats(pytester: pytest.Pytester) -> None:
    suite = load_suite(make_suite(pytester))
    template = suite.load_template()
    golden = [(s.id, s.data) for s in suite.load_dataset().samples]

    def candidate(line: str, n: int) -> Candidate:
        return Candidate({"line": line, "namespace": "ns"}, f"x:{n}")

    near = f"{SAMPLES[0]['line']} again"  # a golden line plus one word
    new, again = candidate(NEW_LINES[0], 2), candidate(NEW_LINES[0] + " twice", 3)
    everything = harvest(suite, template, golden, [candidate(near, 1), new, again], threshold=1.0)
    by_where = {h.candidate.where: h.similarity for h in everything.kept}
    assert by_where["x:1"] > 0.5 > by_where["x:2"]  # near a golden sample / unlike all of them
    assert list(by_where) == sorted(by_where, key=by_where.__getitem__)  # most novel first
    assert len(by_where) == 3  # at threshold 1 only identical inputs count as repeats
    # Just below the near one's similarity it is covered, and the new input's repeat is dropped.
    found = harvest(
        suite, template, golden, [candidate(near, 1), new, again], threshold=by_where["x:1"] - 0.01
    )
    assert len(found.kept) == 1 and found.kept[0].candidate.where in ("x:2", "x:3")
    assert found.covered == 1 and found.duplicates == 1
    assert found.kept[0].nearest in {sample_id for sample_id, _ in golden}
    with pytest.raises(ValueError, match="threshold"):
        harvest(suite, template, golden, [], threshold=1.5)


def test_span_input_is_redacted_and_bounded() -> None:
    text, cut = span_input({"line": "GET https://user:hunter2@example.com/x failed"})
    assert "hunter2" not in text and not cut
    long_text, cut = span_input({"line": "x" * 20000, "namespace": "ns"}, limit=1000)
    assert cut and len(long_text) <= 1000
    assert json.loads(long_text)["namespace"] == "ns"


def test_a_bad_source_names_file_and_line(tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('{"line": "ok"}\n[1, 2]\n')
    from promptsweep.core.io.errors import ConfigError

    with pytest.raises(ConfigError, match=r"bad\.jsonl:2: expected a JSON object"):
        read_source(source)


@pytest.mark.parametrize("suffix", [".jsonl", ".yaml", ".json"])
def test_add_keeps_the_dataset_format(pytester: pytest.Pytester, suffix: str) -> None:
    make_suite(pytester)
    data = pytester.path / f"data{suffix}"
    if suffix == ".jsonl":
        data.write_text("".join(json.dumps(s) + "\n" for s in SAMPLES))
    elif suffix == ".yaml":
        data.write_text("# golden samples, reviewed\n" + yaml.safe_dump(SAMPLES, sort_keys=False))
    else:
        data.write_text(json.dumps(SAMPLES, indent=4))
    suite_path = pytester.path / "tiny.suite.yaml"
    suite_path.write_text(suite_path.read_text().replace("dataset: data.json", f"dataset: data{suffix}"))
    new: dict[str, Any] = {
        "key": "n1",
        "namespace": "prod",
        "line": NEW_LINES[2],
        "label": "dns_failure",
        "severity": "error",
        "summary": "dns times out",
    }
    labelled = pytester.path / "new.json"
    labelled.write_text(json.dumps([new]))
    assert cli_main(["add", str(labelled), "--suite", str(suite_path)]) == 0
    text = data.read_text()
    if suffix == ".yaml":
        assert text.startswith("# golden samples, reviewed\n")
    if suffix == ".json":
        assert text.startswith("[\n    {")
    assert len(load_suite(suite_path).load_dataset().samples) == 7
    assert not [p for p in pytester.path.iterdir() if p.name.startswith(".data")]  # no temp file left


def test_the_commands_are_listed_and_a_bad_threshold_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    out = capsys.readouterr().out
    for command in ("harvest", "add", "judge-agreement"):
        assert command in out
    with pytest.raises(SystemExit):
        cli_main(["harvest", "x.jsonl", "--suite", "s.suite.yaml", "--threshold", "2"])
    assert "--threshold: must be within [0, 1], got 2.0; e.g. --threshold 0.5" in capsys.readouterr().err
