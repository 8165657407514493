"""A newcomer's second hour (issue 18), on the in-process fake server: errored samples count
the same on both routes, gates at or below the constant floor are flagged, ``promptsweep
check`` validates without a model, errors name file, line and key with a fix, and
``--split-evaluate`` picks the scored side of the split."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from promptsweep.cli.init import InitError, Plan, parse_field, plan_from_data
from promptsweep.cli.main import main as cli_main
from promptsweep.core.data.suite import load_suite
from promptsweep.core.io.errors import ConfigError
from tests.fakeserver import FakeLLMServer, Reply, chat_reply, user_text
from tests.suitekit import make_suite, oracle

PYTHON_ROUTE = """
import pytest

@pytest.mark.promptsweep(suite="tiny.suite.yaml")
def test_route(sample, prompt, endpoint, promptsweep_score):
    result = promptsweep_score(endpoint.chat(prompt))
    assert not result.errored
"""


def _failing_on(index: int) -> Any:
    """The oracle, except that the server answers sample ``index`` with a 500."""
    good = oracle()

    def respond(body: dict[str, Any]) -> Reply:
        if f"LOG-{index} " in user_text(body):
            return Reply(status=500, body={"error": {"message": "injected failure"}})
        return good(body)

    return respond


def _metrics(root: Path, suffix: str) -> dict[str, Any]:
    runs = sorted(p for p in (root / ".promptsweep" / "runs").iterdir() if p.name.endswith(suffix))
    assert runs, suffix
    data: dict[str, Any] = json.loads((runs[-1] / "metrics.json").read_text())
    return data


def test_an_errored_call_counts_the_same_on_both_routes(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.1)
    pytester.makepyfile(test_route=PYTHON_ROUTE)
    with FakeLLMServer(_failing_on(2)) as server:
        result = pytester.runpytest_subprocess("--llm-url", server.url, "--llm-retries", "0", "-n", "2")
    result.assert_outcomes(passed=10, failed=2)
    yaml_route = _metrics(pytester.path, "-tiny")
    python_route = _metrics(pytester.path, "-tiny-test_route")
    for metrics in (yaml_route, python_route):
        assert metrics["n"] == 6
        assert [e["sample_id"] for e in metrics["errored"]] == ["oom_killed-k2"]
        assert metrics["gate"]["passed"] is False  # max_errors: 0
        assert "1 sample(s) errored (allowed: 0)" in metrics["gate"]["failures"][0]
    assert python_route["overall"]["mean"] == pytest.approx(yaml_route["overall"]["mean"])
    result.stdout.fnmatch_lines(
        ["*suite tiny (test_route.py::test_route): 6 samples*", "*ERRORED oom_killed-k2*"]
    )


def test_a_gate_at_or_below_the_constant_floor_is_flagged(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.1)
    with FakeLLMServer(oracle()) as server:
        low = pytester.runpytest_subprocess("--llm-url", server.url)
        high = pytester.runpytest_subprocess("--llm-url", server.url, "--min-score", "0.9")
    low.stdout.fnmatch_lines(
        ["warning: the gate's threshold 0.100 is at or below the constant answer's 0.*", "gate passed"]
    )
    summary = sorted((pytester.path / ".promptsweep" / "runs").glob("*/summary.md"))
    assert "**Warning**: the gate's threshold 0.100" in summary[0].read_text()
    assert "at or below the constant" not in high.stdout.str()
    assert "**Warning**" not in summary[-1].read_text()


SPACE = """\
base_template: template.yaml
tone:
  - You are careful.
  - You are brief.
search:
  strategy: grid
"""


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli_main(["check", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_check_passes_a_clean_project_and_names_every_problem(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = make_suite(pytester)
    (pytester.path / "tiny.space.yaml").write_text(SPACE)
    suite.write_text(suite.read_text() + "search_space: tiny.space.yaml\n")
    code, out = _check(pytester.path, capsys)
    assert code == 0, out
    assert "6 of 6 samples rendered with tiny@v1, search space tiny.space.yaml (2 candidates)" in out

    # a typo in the space and a dataset path one letter off: both reported, with the fix
    (pytester.path / "tiny.space.yaml").write_text(SPACE.replace("tone:", "tonee:"))
    code, out = _check(pytester.path, capsys)
    assert code == 1
    assert f"{pytester.path / 'tiny.space.yaml'}:2: tonee: unknown key 'tonee'; did you mean 'tone'?" in out
    suite.write_text(suite.read_text().replace("dataset: data.json", "dataset: dta.json"))
    code, out = _check(suite, capsys)
    assert code == 1
    assert f"{suite}:2: dataset: dataset not found: dta.json (looked for " in out
    assert "did you mean 'data.json'?" in out


def test_a_plain_run_validates_the_suites_search_space(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester)
    (pytester.path / "tiny.space.yaml").write_text(SPACE.replace("tone:", "tonee:"))
    suite.write_text(suite.read_text() + "search_space: tiny.space.yaml\n")
    result = pytester.runpytest_subprocess("--llm-url", "http://127.0.0.1:9", "--collect-only")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*tiny.space.yaml:2: tonee: unknown key 'tonee'; did you mean 'tone'?*"])


def test_yaml_syntax_errors_say_what_to_fix(tmp_path: Path) -> None:
    bad = tmp_path / "x.suite.yaml"
    bad.write_text("name: x\ndataset: d.json\n  template: t.yaml\n")
    with pytest.raises(ConfigError) as exc:
        load_suite(bad)
    assert f"{bad}:3: YAML syntax error" in str(exc.value)
    assert "(a value that contains ': ' needs quotes" in str(exc.value)
    bad.write_text("name: x\nfields:\n\tcategory: {}\n")
    with pytest.raises(ConfigError, match="indent with spaces, not tabs"):
        load_suite(bad)


def test_split_evaluate_picks_the_side_a_plain_run_scores(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    everything = pytester.runpytest_subprocess("--llm-url", "http://127.0.0.1:9", "--collect-only", "-q")
    everything.stdout.fnmatch_lines(["6 tests collected*"])
    flag = pytester.runpytest_subprocess(
        "--llm-url", "http://127.0.0.1:9", "--collect-only", "-q", "--split-evaluate", "validation"
    )
    # 6 samples, train 0.5: 3 in train; the rest split into validation (2) and test (1).
    flag.stdout.fnmatch_lines(["2 tests collected*"])
    test_side = pytester.runpytest_subprocess(
        "--llm-url", "http://127.0.0.1:9", "--collect-only", "-q", "--split-evaluate", "test"
    )
    test_side.stdout.fnmatch_lines(["1 test collected*"])
    pytester.makeini("[pytest]\npromptsweep_split_evaluate = train\n")
    ini = pytester.runpytest_subprocess("--llm-url", "http://127.0.0.1:9", "--collect-only", "-q")
    ini.stdout.fnmatch_lines(["3 tests collected*"])
    validation = {line for line in flag.stdout.lines if "tiny[" in line}
    test = {line for line in test_side.stdout.lines if "tiny[" in line}
    assert validation.isdisjoint(line for line in ini.stdout.lines if "tiny[" in line)
    assert test.isdisjoint(validation) and test.isdisjoint(
        line for line in ini.stdout.lines if "tiny[" in line
    )
    bad = pytester.runpytest_subprocess("--split-evaluate", "valid")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--split-evaluate: invalid choice: 'valid'*"])


def test_split_evaluate_from_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_suite(pytester)
    monkeypatch.setenv("PROMPTSWEEP_SPLIT_EVALUATE", "validation")
    result = pytester.runpytest_subprocess("--llm-url", "http://127.0.0.1:9", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["2 tests collected*"])


TICKETS = [
    {
        "ticket_id": f"T-{100 + i}",
        "subject": f"Question {i} about {category}",
        "body": f"Hello, my {category} has a problem since yesterday (case {i}); please look into it.",
        "category": category,
        "priority": priority,
        "reply": f"Thanks, we are looking into your {category} question now.",
    }
    for i, (category, priority) in enumerate(
        [
            ("billing", "high"),
            ("bug", "low"),
            ("account", "normal"),
            ("billing", "low"),
            ("bug", "high"),
            ("account", "low"),
            ("billing", "normal"),
            ("bug", "normal"),
        ]
    )
]


def _ticket_oracle(body: dict[str, Any]) -> Reply:
    text = user_text(body)
    for row in TICKETS:
        if row["body"] in text:
            return chat_reply(json.dumps({k: row[k] for k in ("category", "priority", "reply")}))
    return chat_reply("?")


def test_init_data_proposes_the_suite_from_the_records_and_runs_green(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(pytester.path)
    (pytester.path / "tickets.jsonl").write_text("".join(json.dumps(t) + "\n" for t in TICKETS))
    assert cli_main(["init", "tickets", "--data", "tickets.jsonl", "--no-input"]) == 0
    out = capsys.readouterr().out
    assert "  id: ticket_id (unique in every record)" in out
    assert "  category: label: account, billing, bug (3 distinct values)" in out
    assert "  reply: text field (free text, and its name says the model writes it)" in out
    suite = load_suite(pytester.path / "tickets" / "tickets.suite.yaml")
    assert suite.spec.id_field == "ticket_id" and suite.spec.dataset == "../tickets.jsonl"
    assert suite.spec.inputs == {"subject": "subject", "body": "body"}
    assert suite.spec.fields["priority"].values == ["high", "low", "normal"]
    assert suite.spec.fields["reply"].label is False
    assert suite.spec.category == "category"
    assert [s.id for s in suite.load_dataset().samples][:2] == ["T-100", "T-101"]
    assert not (pytester.path / "tickets" / "data").exists()  # the user's file is read where it is
    match = re.search(r"a constant answer scores (\d\.\d+) on this data", out)
    assert match and f"scores {match.group(1)} on this data" in suite.path.read_text()
    assert cli_main(["check", "tickets"]) == 0
    with FakeLLMServer(_ticket_oracle) as fake:
        run = pytester.runpytest_subprocess(
            "tickets", "-n", "2", "--llm-url", fake.url, "-p", "no:cacheprovider"
        )
    run.assert_outcomes(passed=8)
    run.stdout.fnmatch_lines(["*suite tickets: 8 samples, overall 1.000*", "*gate passed*"])
    # the gate starts at 0.0: the summary says it is below the floor and proposes one from this run
    run.stdout.fnmatch_lines(["*thresholds.overall: 1.00 would gate on what this prompt reliably scores*"])


def test_init_data_asks_about_keys_it_cannot_place_and_says_what_it_picked_otherwise(tmp_path: Path) -> None:
    rows = [
        {
            "id": f"r{i}",
            "blurb": f"some words number {i} here",
            "mood": ("up", "down")[i % 2],
            "namespace": ("a", "b")[i % 2],
        }
        for i in range(6)
    ]
    data = tmp_path / "rows.json"
    data.write_text(json.dumps(rows))
    said: list[str] = []
    # off a terminal a guess never feeds the model: both unsure keys are left out, and said so
    with pytest.raises(InitError, match=r"no key to read: name the input with --input KEY \(e.g. blurb"):
        plan_from_data(tmp_path / "x", data, name=None, inputs=(), fields=(), ask=None, say=said.append)
    assert (
        "  blurb: left out; unsure: pass --input blurb or --field blurb:text to use it (free text)" in said[0]
    )
    answers = iter(["x", "t", "s"])  # blurb: a wrong key, then text; namespace: skip (mood is sure)
    questions: list[str] = []

    def ask(question: str) -> str:
        questions.append(question)
        return next(answers)

    with pytest.raises(InitError, match="no key to read: name the input with --input KEY"):
        plan_from_data(tmp_path / "x", data, name=None, inputs=(), fields=(), ask=ask, say=said.append)
    assert questions[0].startswith(
        "'blurb' (6 distinct values in 6 records, e.g. 'some words number 0 here')"
    )
    assert len(questions) == 3 and "answer i, l, t or s" in said
    flagged = plan_from_data(
        tmp_path / "x", data, name="rows", inputs=["blurb"], fields=["mood:label"], ask=None, say=said.append
    )
    assert flagged.inputs == ("blurb",) and [f.name for f in flagged.fields] == ["mood"]
    with pytest.raises(InitError, match="no record has a key 'blurp'; did you mean 'blurb'"):
        plan_from_data(
            tmp_path / "x", data, name=None, inputs=["blurp"], fields=(), ask=None, say=said.append
        )


def test_one_python_route_in_every_readme(tmp_path: Path) -> None:
    """init's README shows the call the main README shows, word for word."""
    main = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = main.split("### The Python route", 1)[1]
    (main_code,) = re.findall(r"```python\n(.*?)```", section, re.S)[:1]
    scaffold = Plan(folder=tmp_path, name="tickets", inputs=("body",), fields=(parse_field("reply:text"),))
    (init_code,) = re.findall(r"```python\n(.*?)```", scaffold.readme_text(), re.S)

    def route(code: str) -> list[str]:
        calls = [
            line.strip() for line in code.splitlines() if "endpoint." in line or "promptsweep_score(" in line
        ]
        signature = re.search(r"def test_\w+(\(.*\)):", code)
        assert signature, code
        return [signature.group(1), *calls]

    assert route(init_code) == route(main_code)
    assert "DETERMINISTIC_ADVICE" not in main
