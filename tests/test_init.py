"""``promptsweep init``: flags and questions become a suite that loads, validates and runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from promptsweep.cli.init import InitError, Plan, ask_plan, parse_field, write_plan
from promptsweep.cli.main import main as cli_main
from promptsweep.cli.schema import render_schema
from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.data.suite import load_suite
from promptsweep.optimize.space import load_search_space
from tests.fakeserver import FakeLLMServer, Reply, chat_reply, user_text

TICKET_FIELDS = ["category:label:billing,bug,account", "priority:label:low,normal,high", "reply:text"]


def _init(folder: Path, *extra: str) -> int:
    args = ["init", str(folder)]
    for spec in TICKET_FIELDS:
        args += ["--field", spec]
    return cli_main([*args, *extra])


def test_parse_field_forms() -> None:
    assert parse_field("priority:label:low,normal,high").values == ("low", "normal", "high")
    assert parse_field("topic:label").values == ()
    reply = parse_field("reply:text")
    assert (reply.kind, reply.metric) == ("text", "rouge_l")
    assert parse_field("reply:text:token_f1").metric == "token_f1"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("priority", "--field 'priority': use NAME:label:V1,V2,V3"),
        ("priority:enum:a,b", "--field 'priority:enum:a,b': use NAME:label:V1,V2,V3"),
        ("2nd:text", "'2nd' is not a field name (letters, digits, _)"),
        ("reply:text:bleu", "metric 'bleu' is not one of rouge_l, token_f1, jaccard, exact"),
        ("p:label:a,a", "a value is listed twice"),
    ],
)
def test_bad_field_specs_say_what_to_type(spec: str, message: str) -> None:
    with pytest.raises(InitError, match=None) as exc:
        parse_field(spec)
    assert message in str(exc.value)


def test_plan_refuses_inputs_that_are_fields(tmp_path: Path) -> None:
    with pytest.raises(InitError, match="--input 'reply' is also a --field"):
        Plan(folder=tmp_path, name="t", inputs=("reply",), fields=(parse_field("reply:text"),))


def test_init_writes_files_that_load_and_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "tickets"
    assert _init(folder, "--name", "ticket_router", "--input", "subject", "--input", "body") == 0
    out = capsys.readouterr().out
    assert "pytest" in out and "-n 2" in out
    suite = load_suite(folder / "ticket_router.suite.yaml")
    suite.check_metrics(MetricRegistry())
    dataset = suite.load_dataset()
    assert [s.id for s in dataset.samples] == [f"example-{i}" for i in range(1, 6)]
    assert dataset.samples[2].expected == {
        "category": "account",
        "priority": "high",
        "reply": "REPLACE ME: the reply you expect for example 3.",
    }
    template = suite.load_template()
    suite.check_template_inputs(template, dataset)
    assert template.spec.inputs.required == ("subject", "body")
    assert suite.spec.category == "category"
    space = load_search_space(folder / "ticket_router.space.yaml", suite, dataset)
    assert len(space.spec.tone) == 2
    for kind, path in [
        ("suite", folder / "ticket_router.suite.yaml"),
        ("template", folder / "prompt_templates" / "ticket_router_v1.yaml"),
        ("space", folder / "ticket_router.space.yaml"),
    ]:
        text = path.read_text()
        modeline = text.splitlines()[0]
        schema_ref = modeline.removeprefix("# yaml-language-server: $schema=")
        assert (path.parent / schema_ref).resolve() == (folder / "schemas" / f"{kind}.schema.json").resolve()
        jsonschema.validate(yaml.safe_load(text), json.loads(render_schema(kind)))
    readme = (folder / "README.md").read_text()
    assert f"pytest {folder} -n 2" not in readme  # paths are shown relative to where init ran
    assert "REPLACE ME" in (folder / "data" / "ticket_router.jsonl").read_text()


def test_init_prints_commands_relative_to_where_it_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _init(Path("work/tickets")) == 0
    out = capsys.readouterr().out
    assert "  2. pytest work/tickets -n 2\n" in out
    assert "  3. pytest work/tickets --optimize -n 2\n" in out
    assert "wrote work/tickets/tickets.suite.yaml" in out
    assert "pytest work/tickets -n 2" in (tmp_path / "work" / "tickets" / "README.md").read_text()


def test_init_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "tickets"
    assert _init(folder) == 0
    (folder / "data" / "tickets.jsonl").write_text("mine\n")
    capsys.readouterr()
    assert _init(folder) == 2
    err = capsys.readouterr().err
    assert "would overwrite" in err and "pass --force" in err
    assert (folder / "data" / "tickets.jsonl").read_text() == "mine\n"
    assert _init(folder, "--force") == 0


def test_init_without_fields_off_a_terminal_says_how(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli_main(["init", str(tmp_path / "x"), "--no-input"]) == 2
    err = capsys.readouterr().err
    assert "promptsweep init: error: give the fields the model answers: --field NAME:label:V1,V2,V3" in err
    assert not (tmp_path / "x").exists()


def test_init_asks_on_a_terminal_and_re_asks_after_a_bad_answer(tmp_path: Path) -> None:
    answers = iter(["", "message", "", "topic:labl", "topic:label:a,b", "summary:text", ""])
    said: list[str] = []
    plan = ask_plan(tmp_path / "support", None, lambda _prompt: next(answers), said.append)
    assert plan.name == "support" and plan.inputs == ("message",)
    assert [f.name for f in plan.fields] == ["topic", "summary"]
    assert any("give at least one field" in s for s in said)
    assert any("--field 'topic:labl'" in s for s in said)
    write_plan(plan, force=False)
    assert load_suite(tmp_path / "support" / "support.suite.yaml").load_dataset().samples


def _scaffold_oracle(folder: Path, name: str) -> Any:
    rows = [json.loads(line) for line in (folder / "data" / f"{name}.jsonl").read_text().splitlines()]

    def respond(body: dict[str, Any]) -> Reply:
        text = user_text(body)
        for row in rows:
            if row["body"] in text:
                return chat_reply(json.dumps({k: row[k] for k in ("category", "priority", "reply")}))
        return chat_reply("?")

    return respond


def test_scaffold_runs_green_and_optimizes_with_xdist(pytester: pytest.Pytester) -> None:
    folder = pytester.path / "tickets"
    assert _init(folder, "--input", "body") == 0
    with FakeLLMServer(_scaffold_oracle(folder, "tickets")) as fake:
        run = pytester.runpytest_subprocess(
            "tickets", "-n", "2", "--llm-url", fake.url, "-p", "no:cacheprovider"
        )
        run.assert_outcomes(passed=5)
        run.stdout.fnmatch_lines(["*suite tickets: 5 samples, overall 1.000*", "*gate passed*"])
        optimize = pytester.runpytest_subprocess(
            "tickets", "--optimize", "-n", "2", "--llm-url", fake.url, "-p", "no:cacheprovider"
        )
    assert optimize.ret == 0, optimize.stdout.str()
    optimize.stdout.fnmatch_lines(
        [
            "*tickets: search space: 2 candidates (tone 2), 2 validation samples*",
            "*best candidate vs baseline on the test split*",  # every candidate ties: not written
            "*not written: *",
        ]
    )
