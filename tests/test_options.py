"""One definition per option: the same precedence, defaults and messages in pytest and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptsweep.cli.main import main
from promptsweep.config import options as o
from tests.fakeserver import FakeLLMServer
from tests.suitekit import make_suite, oracle


def test_resolve_prefers_command_line_then_ini_then_environment_then_default() -> None:
    env = {"PROMPTSWEEP_LLM_URL": "http://env:1, http://env:2"}
    assert o.resolve(o.LLM_URL, ["http://cli:1"], ["http://ini:1"], env) == ("http://cli:1",)
    assert o.resolve(o.LLM_URL, [], ["http://ini:1"], env) == ("http://ini:1",)
    assert o.resolve(o.LLM_URL, [], [], env) == ("http://env:1", "http://env:2")
    assert o.resolve(o.LLM_URL, [], [], {}) == ()
    assert o.resolve(o.SLOTS, 2, "3", {}) == 2
    assert o.resolve(o.SLOTS, None, "3", {}) == 3
    assert o.resolve(o.SLOTS, None, "", {}) == o.SLOTS.default == 4


@pytest.mark.parametrize(
    ("option", "ini", "env", "message"),
    [
        (o.SLOTS, "0", {}, "promptsweep_slots (ini) must be at least 1, got 0"),
        (o.LLM_URL, ["ftp://x"], {}, "llm_url (ini) must start with http:// or https://, got 'ftp://x'"),
        (o.LLM_URL, [], {"PROMPTSWEEP_LLM_URL": "nope"}, "$PROMPTSWEEP_LLM_URL must start with http://"),
        (o.CACHE, "sometimes", {}, "promptsweep_cache (ini) must be one of off, read, write, read-write"),
    ],
)
def test_a_bad_ini_or_environment_value_names_where_it_came_from(
    option: o.Option[object], ini: object, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")):
        o.resolve(option, None, ini, env)  # type: ignore[arg-type]


def test_every_flag_says_its_default_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    text = " ".join(result.stdout.str().split())
    for option in o.PYTEST_OPTIONS:
        assert option.flag in text
        assert " ".join(option.help_text.split()) in text, option.flag


def test_the_token_weight_is_checked_the_same_way_in_pytest_and_the_cli(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    message = "--objective-token-weight must be >= 0, got -1.0; e.g. --objective-token-weight=0.05"
    result = pytester.runpytest("--objective-token-weight=-1")
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert main(["leaderboard", "--dir", str(pytester.path), "--objective-token-weight", "-1"]) == 2
    assert message in capsys.readouterr().err


def test_promptsweep_dir_means_the_same_place_for_pytest_and_every_command(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_suite(pytester, threshold=0.0)
    monkeypatch.setenv("PROMPTSWEEP_DIR", "shared-out")  # relative: to where the command runs
    with FakeLLMServer(oracle()) as server:
        result = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", server.url)
    result.assert_outcomes(passed=6)
    out = pytester.path / "shared-out"
    assert (out / "cache.sqlite3").is_file() and (out / "leaderboard.json").is_file()
    assert not (pytester.path / ".promptsweep").exists()
    (run,) = (out / "runs").iterdir()
    monkeypatch.chdir(pytester.path)
    capsys.readouterr()
    assert main(["leaderboard", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"][0]["run"] == run.name
    assert main(["cache", "stats"]) == 0
    assert "6 answers" in capsys.readouterr().out
    assert main(["compare", run.name, run.name]) == 0
    assert main(["report"]) == 0
    assert capsys.readouterr().out.strip().endswith(str(Path("shared-out") / "leaderboard.html"))
    # the flag still wins over the variable
    with FakeLLMServer(oracle()) as server:
        pytester.runpytest_subprocess(
            "tiny.suite.yaml", "--llm-url", server.url, "--promptsweep-dir", "flag-out"
        )
    assert (pytester.path / "flag-out" / "leaderboard.json").is_file()


def test_n_auto_sizes_workers_to_the_experiments_endpoint(pytester: pytest.Pytester) -> None:
    """``-n auto`` reads the same settings as the run: here the endpoint comes from the experiment."""
    make_suite(pytester, threshold=0.0)
    with FakeLLMServer(oracle(), props={"total_slots": 3}) as server:
        (pytester.path / "exp.yaml").write_text(f"experiment_id: e1\nmodel: {{endpoint: {server.url}}}\n")
        result = pytester.runpytest_subprocess(
            "tiny.suite.yaml", "--experiment", "exp.yaml", "-n", "auto", "-v"
        )
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*created: 3/3 workers*"])
