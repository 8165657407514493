"""``promptsweep init``: flags and questions become a suite that loads, validates and runs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from promptsweep.cli.init import (
    TONES,
    InitError,
    Plan,
    ask_plan,
    ci_snippet,
    parse_field,
    plan_from_data,
    token_budget,
    write_plan,
)
from promptsweep.cli.main import main as cli_main
from promptsweep.cli.schema import render_schema
from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.data.suite import load_suite
from promptsweep.core.measure.scoring import Scorer
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
            "*tickets: search space: * candidates (tone 2 x copy_if_similar 2), 2 validation samples*",
            "*best candidate vs baseline on the test split*",  # every candidate ties: not written
            "*not written: *",
        ]
    )


# ---------------------------------------------------------------- init --data (issue 28)

SERVICES = ("api", "db", "queue")


def _log_rows(n: int = 12) -> list[dict[str, Any]]:
    """Log lines with what a team labelled on each: a severity, the line's template (text that
    restates the line) and a free-text remark nobody can place."""
    rows = []
    for i in range(n):
        service = SERVICES[i % 3]
        rows.append(
            {
                "id": f"log-{i}",
                "line": f"{service} worker {i} failed to reach host-{i} after {i + 2} retries",
                "remark": f"seen by operator {i} during the weekly review of cluster {i % 4}",
                "template": f"{service} worker <*> failed to reach <*> after <*> retries",
                "severity": ("error", "warn")[i % 2],
            }
        )
    return rows


def _data(tmp_path: Path, rows: list[dict[str, Any]], name: str = "rows.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _init_data(tmp_path: Path, rows: list[dict[str, Any]], *flags: str) -> int:
    data = _data(tmp_path, rows)
    return cli_main(["init", str(tmp_path / "logs"), "--data", str(data), "--no-input", *flags])


def test_init_data_never_feeds_a_possible_answer_to_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _init_data(tmp_path, _log_rows()) == 0
    out = capsys.readouterr().out.splitlines()
    assert "  line: input (free text, and its name says the model reads it)" in out
    assert (
        "  remark: left out; unsure: pass --input remark or --field remark:text to use it (free text)" in out
    )
    assert any(line.startswith("  template: text field (free text that restates 'line': ") for line in out), (
        out
    )
    suite = load_suite(tmp_path / "logs" / "logs.suite.yaml")
    assert suite.spec.inputs == {"line": "line"}
    assert list(suite.spec.fields) == ["template", "severity"]
    user = suite.load_template().spec.user
    assert "remark" not in user and "template" not in user


def test_init_data_asks_on_a_terminal_about_the_keys_it_is_unsure_of(tmp_path: Path) -> None:
    said: list[str] = []
    asked: list[str] = []

    def ask(question: str) -> str:
        asked.append(question)
        return "i"

    plan = plan_from_data(
        tmp_path / "logs",
        _data(tmp_path, _log_rows()),
        name=None,
        inputs=(),
        fields=(),
        ask=ask,
        say=said.append,
    )
    assert [q.split(" ")[0] for q in asked] == ["'remark'"]
    assert "  remark: asked below (free text)" in said[0].splitlines()
    assert plan.inputs == ("line", "remark")


def test_flags_decide_only_the_keys_they_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    said: list[str] = []
    data = _data(tmp_path, _log_rows())
    plan = plan_from_data(
        tmp_path / "logs",
        data,
        name=None,
        inputs=["remark"],
        fields=["template:text:token_f1"],
        ask=None,
        say=said.append,
    )
    assert plan.inputs == ("line", "remark")  # --input remark adds to line, it does not replace it
    assert [(f.name, f.kind, f.metric) for f in plan.fields] == [
        ("template", "text", "token_f1"),
        ("severity", "label", "exact"),  # kept: no flag named it
    ]


def test_a_label_field_lists_its_values_in_the_prompt_however_declared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _init_data(tmp_path, _log_rows(), "--field", "severity:label", "--input", "remark") == 0
    suite = load_suite(tmp_path / "logs" / "logs.suite.yaml")
    assert suite.spec.fields["severity"].values == ["error", "warn"]
    assert "- severity: one of: error, warn" in suite.load_template().spec.system
    # the placeholder scaffold lists the labels its samples hold
    assert _init(tmp_path / "scaffold", "--input", "body", "--field", "topic:label") == 0
    scaffold = load_suite(tmp_path / "scaffold" / "scaffold.suite.yaml")
    assert "- topic: one of: replace_me_a, replace_me_b" in scaffold.load_template().spec.system
    assert {s.expected["topic"] for s in scaffold.load_dataset().samples} == {"replace_me_a", "replace_me_b"}


def test_the_printed_constant_floor_counts_every_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _init_data(tmp_path, _log_rows()) == 0
    out = capsys.readouterr().out
    suite = load_suite(tmp_path / "logs" / "logs.suite.yaml")
    dataset = suite.load_dataset()
    constant = Scorer(suite, MetricRegistry()).constant_answer([s.expected for s in dataset.samples])
    assert constant is not None and set(constant.fields) == {"template", "severity"}
    assert f"a constant answer scores {constant.score:.3f} on this data (every field counted)" in out


def test_the_space_is_retrieval_lookup_and_choice_beside_tones_and_follows_the_template(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _init_data(tmp_path, _log_rows(40)) == 0
    folder = tmp_path / "logs"
    template_path = folder / "prompt_templates" / "logs_v1.yaml"
    edited = "You triage log lines for the on-call engineer."
    template_path.write_text(template_path.read_text().replace(TONES[0], edited))
    suite = load_suite(folder / "logs.suite.yaml")
    dataset = suite.load_dataset()
    space = load_search_space(folder / "logs.space.yaml", suite, dataset)
    assert space.tones == [edited, TONES[1]]  # the template as edited, not its first text
    assert space.spec.few_shot.strategies == ["none", "retrieved"] and space.spec.few_shot.ks == [4]
    assert space.copies == [None, 0.5] and space.choices == [None, 4]
    assert len(space.candidates()) == 16
    assert space.spec.search.strategy == "screen" and space.spec.search.limit == "10m"


def test_max_tokens_is_sized_from_the_longest_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _log_rows()
    rows[3]["template"] = "word " * 150  # 750 characters: about 250 tokens
    assert _init_data(tmp_path, rows) == 0
    template = load_suite(tmp_path / "logs" / "logs.suite.yaml").load_template()
    longest = max(len(json.dumps({"template": r["template"], "severity": r["severity"]})) for r in rows)
    assert template.spec.model_defaults["max_tokens"] >= 1.5 * longest / 3
    assert template.spec.model_defaults["max_tokens"] == token_budget(math.ceil(longest / 3))
    labels_only = [{k: r[k] for k in ("id", "line", "severity")} for r in _log_rows()]
    assert (
        cli_main(["init", str(tmp_path / "short"), "--data", str(_data(tmp_path, labels_only, "s.jsonl"))])
        == 0
    )
    short = load_suite(tmp_path / "short" / "short.suite.yaml").load_template()
    assert short.spec.model_defaults["max_tokens"] == 64


def test_readme_counts_agree_with_the_split_and_its_ci_runs_the_users_suite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _data(tmp_path, _log_rows(41))
    assert cli_main(["init", "evals/logs", "--data", "rows.jsonl"]) == 0
    suite = load_suite(tmp_path / "evals" / "logs" / "logs.suite.yaml")
    split = suite.split(suite.load_dataset())
    readme = (tmp_path / "evals" / "logs" / "README.md").read_text()
    assert f"puts {len(split.train)} of the 41 samples in train" in readme
    assert f"{len(split.validation)} in validation and {len(split.test)} in test" in readme
    assert f"the {len(split.test)} test samples, which no choice read" in readme
    assert f"split: {len(split.train)} train, {len(split.validation)} validation, {len(split.test)} test" in (
        capsys.readouterr().out
    )
    (ci,) = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    steps = yaml.safe_load(ci)["jobs"]["evals"]["steps"]
    runs = [step["run"] for step in steps if "run" in step]
    assert runs[0].startswith("pip install pytest-promptsweep")
    assert "promptsweep server ensure" in runs
    assert any(r.startswith("pytest evals/logs -n 2") for r in runs)
    cached = next(step["with"] for step in steps if step.get("uses", "").startswith("actions/cache"))
    assert cached["path"] == "~/.cache/promptsweep"
    assert "-e '.[dev]'" not in ci and "pytest evals/ " not in ci
    assert "low end of the run's 95% interval" in readme


def test_init_keeps_promptsweep_artifacts_out_of_git(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (project / ".gitignore").write_text("build/")  # no newline at the end
    assert _init(project / "evals" / "tickets") == 0
    assert "added .promptsweep/ to" in capsys.readouterr().out
    assert (project / ".gitignore").read_text() == "build/\n.promptsweep/\n"
    # the CI job runs from the project's root, wherever init ran
    assert "- run: pytest evals/tickets -n 2" in (project / "evals" / "tickets" / "README.md").read_text()
    assert _init(project / "evals" / "tickets", "--force") == 0
    assert "promptsweep/ to" not in capsys.readouterr().out
    assert (project / ".gitignore").read_text() == "build/\n.promptsweep/\n"
    # no project file, no git: the folder above DIR, created
    assert _init(tmp_path / "loose" / "tickets") == 0
    assert (tmp_path / "loose" / ".gitignore").read_text() == ".promptsweep/\n"
    # a link is not followed
    target = tmp_path / "elsewhere.txt"
    target.write_text("x\n")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / ".git").mkdir()
    (tmp_path / "linked" / ".gitignore").symlink_to(target)
    assert _init(tmp_path / "linked" / "tickets") == 0
    assert "left" in capsys.readouterr().out and target.read_text() == "x\n"


def test_the_readme_ci_job_is_the_one_init_writes() -> None:
    """One CI job for a user's project: the main README shows what init writes, word for word."""
    main = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = main.split("## CI for your own project", 1)[1].split("\n## ", 1)[0]
    (job,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert job.rstrip("\n") == ci_snippet("tickets")
