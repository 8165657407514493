"""The judge metric: a model grades a free-text field; its calls are cached like any call, its
scores sit beside ROUGE-L, and judge-agreement ranks the two against each other."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from promptsweep.cli.main import main as cli_main
from promptsweep.core.answers.judge import Judge, JudgeError, JudgeSpec, spearman, spearman_interval
from promptsweep.core.answers.result import SampleResult
from promptsweep.core.data.suite import load_suite
from promptsweep.core.io.errors import ConfigError
from promptsweep.reporting.agreement import judge_agreement
from tests.fakeserver import FakeLLMServer, Reply, chat_reply
from tests.suitekit import SAMPLES, SUITE, make_suite, oracle

JUDGED_SUITE = SUITE.replace(
    "  summary: {{metric: rouge_l, weight: 0.2}}",
    '  summary: {{metric: judge, weight: 0.2, judge: {{rubric: "Says what went wrong.", scale: 1-5, repeats: 2}}}}',
)


def is_judge(body: dict[str, Any]) -> bool:
    return (body.get("response_format") or {}).get("json_schema", {}).get("name") == "judge_score"


def judging_oracle(wrong: set[int] = frozenset()) -> Any:  # type: ignore[assignment]
    """Answers like ``oracle``; as the judge, 5 when the graded answer equals the reference, else 2."""
    answer = oracle(wrong)

    def respond(body: dict[str, Any]) -> Reply:
        if not is_judge(body):
            return answer(body)
        text = body["messages"][-1]["content"]
        reference = re.search(r"<reference-(\w+)>\n(.*?)\n</reference-\1>", text, re.S)
        graded = re.search(r"<answer-(\w+)>\n(.*?)\n</answer-\1>", text, re.S)
        same = reference and graded and reference.group(2) == graded.group(2)
        return chat_reply(json.dumps({"score": 5 if same else 2}))

    return respond


def test_judge_spec_reads_a_scale_and_refuses_nonsense() -> None:
    assert JudgeSpec(rubric="r", scale="1-5").scale == (1, 5)  # type: ignore[arg-type]
    assert JudgeSpec(rubric="r", scale=[0, 10]).scale == (0, 10)  # type: ignore[arg-type]
    for bad in ("5-1", "one to five", [3, 3]):
        with pytest.raises(ValueError, match="scale"):
            JudgeSpec(rubric="r", scale=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="response_format"):
        JudgeSpec(rubric="r", llm={"response_format": {"type": "text"}})


def test_a_judge_request_constrains_the_score_and_reads_it_back() -> None:
    judge = Judge("summary", JudgeSpec(rubric="Says what went wrong.", scale=(1, 5)))
    request = judge.request(
        question="Log: disk full", reference="the disk is full", answer="disk full", repeat=0
    )
    body = request.body()
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["score"]["enum"] == [1, 2, 3, 4, 5]
    assert body["max_tokens"] == 16 and body["temperature"] == 0.0
    assert "Says what went wrong." in body["messages"][-1]["content"]
    assert "the disk is full" in body["messages"][-1]["content"]
    assert judge.parse('{"score": 4}') == 4
    assert judge.parse('```json\n{"score": "3"}\n```') == 3
    assert judge.parse("I would give it 2 out of 5") == 2
    assert judge.normalise(1) == 0.0 and judge.normalise(5) == 1.0
    with pytest.raises(JudgeError, match="gave no score in 1-5"):
        judge.parse("no idea")


def test_spearman_handles_ties_and_says_nothing_without_a_ranking() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # By hand: ranks [1, 2.5, 2.5, 4, 5] and [2, 1, 3.5, 3.5, 5]; Pearson of the ranks = 7.25 / 9.5.
    assert spearman([1, 2, 2, 3, 5], [2, 1, 3, 3, 4]) == pytest.approx(7.25 / 9.5)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1, 2], [1, 2]) is None
    low, high = spearman_interval(0.8, 30) or (0.0, 0.0)
    assert low < 0.8 < high


def test_metric_judge_without_a_rubric_names_the_suite_line(pytester: pytest.Pytester) -> None:
    text = SUITE.replace(
        "  summary: {{metric: rouge_l, weight: 0.2}}", "  summary: {{metric: judge, weight: 0.2}}"
    )
    suite = make_suite(pytester, suite_text=text.format(threshold=0.5))
    with pytest.raises(
        ConfigError, match=r"tiny\.suite\.yaml:\d+: fields\.summary.*metric: judge needs a judge"
    ):
        load_suite(suite)


def test_judged_field_scores_beside_rouge_l_and_is_cached(pytester: pytest.Pytester) -> None:
    make_suite(pytester, suite_text=JUDGED_SUITE.format(threshold=0.0))
    with FakeLLMServer(judging_oracle(wrong={1})) as fake:
        result = pytester.runpytest("tiny.suite.yaml", "--llm-url", fake.url, "-p", "no:cacheprovider")
        result.assert_outcomes(passed=6)
        judge_calls = [b for b in fake.requests if is_judge(b)]
        assert len(judge_calls) == 12  # 6 samples x 2 judge repeats
        assert (
            len({json.dumps(b, sort_keys=True) for b in judge_calls}) == 6
        )  # repeats differ only in cache key
        result.stdout.fnmatch_lines(["*judged: summary judge * beside rouge_l * (n=6*"])
        run = next((pytester.path / ".promptsweep" / "runs").iterdir())
        rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
        by_id = {r["sample_id"]: r for r in rows}
        right = by_id[f"disk_full-{SAMPLES[0]['key']}"]
        assert right["judge"]["summary"]["raw"] == [5, 5]
        assert right["scores"]["summary"] == 1.0
        assert right["judge"]["summary"]["reference_metric"] == "rouge_l"
        assert right["judge"]["summary"]["reference_score"] == 1.0
        wrong = by_id[f"disk_full-{SAMPLES[1]['key']}"]
        assert wrong["judge"]["summary"]["raw"] == [2, 2]
        assert wrong["scores"]["summary"] == pytest.approx(0.25)
        assert wrong["judge"]["summary"]["reference_score"] == 0.0
        assert "judge 5/5 · rouge_l 1.00" in (run / "report.html").read_text()
        assert "Judged: summary judge" in (run / "summary.md").read_text()
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["judge"][0]["field"] == "summary" and metrics["judge"][0]["n"] == 6
        # A second run asks nothing: answers and judgements come from the response cache.
        before = len(fake.requests)
        again = pytester.runpytest("tiny.suite.yaml", "--llm-url", fake.url, "-p", "no:cacheprovider")
        again.assert_outcomes(passed=6)
        assert len(fake.requests) == before


def test_a_failing_judge_errors_the_sample_and_keeps_the_answer(pytester: pytest.Pytester) -> None:
    make_suite(pytester, suite_text=JUDGED_SUITE.format(threshold=0.0))
    answer = oracle()

    def respond(body: dict[str, Any]) -> Reply:
        return chat_reply("no idea") if is_judge(body) else answer(body)

    with FakeLLMServer(respond) as fake:
        result = pytester.runpytest("tiny.suite.yaml", "--llm-url", fake.url, "--llm-cache=off")
    result.assert_outcomes(failed=6)
    result.stdout.fnmatch_lines(["*the judge of field 'summary' gave no score in 1-5: 'no idea'*"])
    run = next((pytester.path / ".promptsweep" / "runs").iterdir())
    row = json.loads((run / "results.jsonl").read_text().splitlines()[0])
    assert row["error"] and row["got"]["summary"]  # the answer is kept for reading


def _result(sample: str, judge: float, reference: float, *, repeat: int = 0) -> SampleResult:
    return SampleResult(
        suite="s",
        sample_id=sample,
        category=None,
        template="t",
        expected={},
        repeat=repeat,
        judge={
            "summary": {
                "score": judge,
                "raw": [1],
                "reference_metric": "rouge_l",
                "reference_score": reference,
            }
        },
    )


def test_agreement_averages_repeats_per_sample_and_reports_n() -> None:
    results = [_result(f"s{i}", i / 12, (i % 6) / 6) for i in range(12)]
    results.append(_result("s0", 1.0, 0.0, repeat=1))  # s0's mean judge score becomes 0.5
    (field,) = judge_agreement(results)
    assert field.n == 12
    assert field.rho is not None and -1.0 <= field.rho <= 1.0
    assert field.interval is not None


def test_judge_agreement_command_on_a_run(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    make_suite(pytester, suite_text=JUDGED_SUITE.format(threshold=0.0))
    with FakeLLMServer(judging_oracle(wrong={1, 3})) as fake:
        pytester.runpytest(
            "tiny.suite.yaml", "--llm-url", fake.url, "-p", "no:cacheprovider"
        ).assert_outcomes(passed=6)
    base = pytester.path / ".promptsweep"
    assert cli_main(["judge-agreement", "tiny", "--dir", str(base)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"summary: Spearman rho \+1\.000 .* between judge and rouge_l vs the label, n=6", out)
    assert "too few samples to tell (n=6 < 10)" in out
    assert cli_main(["judge-agreement", "tiny", "--dir", str(base), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fields"][0]["n"] == 6 and data["fields"][0]["spearman"] == pytest.approx(1.0)
    assert cli_main(["judge-agreement", "nope", "--dir", str(base)]) == 2


def test_python_route_judges_too(pytester: pytest.Pytester) -> None:
    make_suite(pytester, suite_text=JUDGED_SUITE.format(threshold=0.0))
    pytester.makepyfile(
        test_route="""
        import pytest

        @pytest.mark.promptsweep(suite="tiny.suite.yaml")
        def test_triage(sample, prompt, endpoint, promptsweep_score):
            result = promptsweep_score(endpoint.chat(prompt))
            assert result.judge["summary"]["raw"] == [5, 5]
        """
    )
    with FakeLLMServer(judging_oracle()) as fake:
        result = pytester.runpytest("test_route.py", "--llm-url", fake.url, "--llm-cache=off")
    result.assert_outcomes(passed=6)


def test_scoring_a_judged_field_without_a_route_says_so(pytester: pytest.Pytester) -> None:
    suite = load_suite(make_suite(pytester, suite_text=JUDGED_SUITE.format(threshold=0.0)))
    from promptsweep.core.prompt import Prompt

    prompt = Prompt(suite)
    with pytest.raises(JudgeError, match="scored by a judge model: pass judge="):
        prompt.score('{"label": "x", "severity": "info", "summary": "s"}', SAMPLES[0])


def test_judge_url_asks_another_server_with_its_own_key(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = JUDGED_SUITE.replace("repeats: 2", "repeats: 1, url: {judge_url}, api_key_env: JUDGE_KEY")
    monkeypatch.setenv("JUDGE_KEY", "judge-secret")
    with FakeLLMServer(oracle()) as model, FakeLLMServer(judging_oracle()) as judge_server:
        make_suite(pytester, suite_text=text.replace("{judge_url}", judge_server.url).format(threshold=0.0))
        result = pytester.runpytest("tiny.suite.yaml", "--llm-url", model.url, "--llm-cache=off")
        result.assert_outcomes(passed=6)
        assert not any(is_judge(b) for b in model.requests)
        assert sum(is_judge(b) for b in judge_server.requests) == 6
        assert {h.get("Authorization") for h in judge_server.headers_seen} == {"Bearer judge-secret"}
        assert not any("judge-secret" in json.dumps(h) for h in model.headers_seen)


@pytest.mark.xdist_group("real_server")
def test_the_default_model_judges_a_field(llama_server_url: str, tmp_path: Path) -> None:
    """The real llama-server and the default 135M model: the score schema holds (every judgement
    parses into the scale) and the scores land beside ROUGE-L. Two samples, tiny budgets."""
    import promptsweep

    (tmp_path / "template.yaml").write_text(
        "id: tiny\nversion: v1\nmodel_defaults: {temperature: 0.0, max_tokens: 48}\n"
        "output: {format: json_schema}\ninputs: {required: [logs]}\n"
        "system: Summarise the log line in a few words.\nuser: 'Log: {{ logs }}'\n"
    )
    (tmp_path / "data.json").write_text(
        json.dumps(
            [
                {"id": "a", "logs": "disk /dev/sda1 is full", "summary": "the disk is full"},
                {"id": "b", "logs": "container api OOMKilled", "summary": "the container ran out of memory"},
            ]
        )
    )
    (tmp_path / "t.suite.yaml").write_text(
        "name: t\ndataset: data.json\ntemplate: template.yaml\n"
        "fields:\n  summary:\n    metric: judge\n    max_length: 60\n"
        "    judge: {rubric: 'Says what went wrong.', scale: 1-5, llm: {temperature: 0.0, max_tokens: 16}}\n"
    )
    agg = promptsweep.evaluate(tmp_path / "t.suite.yaml", url=llama_server_url, concurrency=2)
    assert agg.n == 2 and not agg.errored, [r.error for r in agg.errored]
    judged_answers = 0
    for r in agg.results:
        judged = r.judge["summary"] if r.judge else {}
        print(r.sample_id, repr(r.got.get("summary")), judged)
        assert judged["reference_metric"] == "rouge_l"
        if r.got.get("summary", "").strip():
            judged_answers += 1
            assert len(judged["raw"]) == 1 and 1 <= judged["raw"][0] <= 5
            assert r.scores["summary"] == (judged["raw"][0] - 1) / 4
            assert 0.0 <= judged["reference_score"] <= 1.0
    assert judged_answers >= 1  # the field's schema (max_length 60) leaves room to close the JSON


def test_optimize_asks_a_judge_with_its_own_url(pytester: pytest.Pytester) -> None:
    from tests import test_optimize as opt

    suite = opt.make_optimize_suite(pytester)

    def answer(body: dict[str, Any]) -> Reply:
        reply = opt.answer(body)
        assert isinstance(reply.body, dict)
        got = json.loads(reply.body["choices"][0]["message"]["content"])
        return chat_reply(json.dumps({**got, "summary": "something happened"}))

    with FakeLLMServer(answer) as model, FakeLLMServer(judging_oracle()) as judge:
        suite.write_text(
            suite.read_text().replace(
                "fields:\n",
                "fields:\n  summary: {metric: judge, weight: 0.2, "
                f'judge: {{rubric: "Says what happened.", url: "{judge.url}"}}}}\n',
            )
        )
        result = pytester.runpytest_subprocess(
            "--optimize", "--llm-url", model.url, "--optimize-budget", "30", "-p", "no:cacheprovider"
        )
        assert result.ret == 0, result.stdout.str()
        assert not any(is_judge(b) for b in model.requests)
        assert sum(is_judge(b) for b in judge.requests) >= 1
    rows = [
        json.loads(line) for line in (opt.run_dir_of(pytester) / "results.jsonl").read_text().splitlines()
    ]
    assert rows and not any(r["error"] for r in rows)
    asked = [r for r in rows if r["answered_by"] == "model"]  # the kNN votes copy train samples' text
    assert asked and all(r["judge"]["summary"]["raw"] == [2] for r in asked)  # "something happened" is no reference


def test_an_unreachable_judge_url_errors_each_sample_with_the_reason(pytester: pytest.Pytester) -> None:
    from promptsweep.server.managed import free_port

    text = JUDGED_SUITE.replace("repeats: 2", f"url: http://127.0.0.1:{free_port()}")
    make_suite(pytester, suite_text=text.format(threshold=0.0))
    with FakeLLMServer(oracle()) as model:
        result = pytester.runpytest("tiny.suite.yaml", "--llm-url", model.url, "--llm-cache=off")
    result.assert_outcomes(failed=6)
    result.stdout.fnmatch_lines(
        ["*the judge of field 'summary': LLM endpoint http://127.0.0.1:* is unreachable*"]
    )
    assert "Traceback" not in result.stdout.str()


def test_judged_results_travel_from_xdist_workers(pytester: pytest.Pytester) -> None:
    make_suite(pytester, suite_text=JUDGED_SUITE.format(threshold=0.0))
    with FakeLLMServer(judging_oracle(wrong={0})) as fake:
        result = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url, "-n", "2")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*judged: summary judge 0.875 beside rouge_l 0.833 (n=6*"])
