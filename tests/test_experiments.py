"""--experiment: YAML configs that pin dataset, prompt, endpoint, model, llm_config and concurrency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptsweep.config.settings import Settings
from promptsweep.core.data.experiment import find_experiment, load_experiment
from promptsweep.core.io.errors import ConfigError
from promptsweep.plugin.experiments import apply_to_settings
from tests.fakeserver import FakeLLMServer
from tests.suitekit import SAMPLES, TEMPLATE, make_suite, oracle

EXPERIMENT = """\
experiment_id: {id}
description: a test experiment
dataset: subset.json
model:
  name: my-model
llm_config:
  max_tokens: 7
  temperature: 0.0
prompt: text-template.yaml
concurrency: {concurrency}
"""


def write_experiment(
    pytester: pytest.Pytester, name: str = "exp1", concurrency: int = 1, text: str | None = None
) -> Path:
    make_suite(pytester)
    (pytester.path / "subset.json").write_text(json.dumps(SAMPLES[:4]))
    (pytester.path / "text-template.yaml").write_text(
        TEMPLATE.format(fmt="text").replace("id: tiny", "id: tiny-text")
    )
    folder = pytester.path / "evals" / "experiments"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text if text is not None else EXPERIMENT.format(id=name, concurrency=concurrency))
    return path


def test_experiment_by_name_overrides_the_run_and_freezes_its_config(pytester: pytest.Pytester) -> None:
    write_experiment(pytester)
    with FakeLLMServer(oracle()) as fake:
        result = pytester.runpytest_subprocess(
            "tiny.suite.yaml", "--llm-url", fake.url, "--experiment", "exp1"
        )
    result.assert_outcomes(passed=4)  # the experiment's 4-sample dataset, not the suite's 6
    assert {r["max_tokens"] for r in fake.requests} == {7}
    assert {r["model"] for r in fake.requests} == {"my-model"}
    assert all("response_format" not in r for r in fake.requests)  # the text template
    (run_dir,) = (pytester.path / ".promptsweep" / "runs").iterdir()
    assert run_dir.name.endswith("-exp1")
    frozen = json.loads((run_dir / "experiment.json").read_text())
    assert frozen["schema_version"] == 1
    assert frozen["experiment_id"] == "exp1"
    assert frozen["config"]["llm_config"] == {"max_tokens": 7, "temperature": 0.0}
    assert frozen["resolved"]["dataset"].endswith("subset.json")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["template"]["id"] == "tiny-text"


def test_experiment_by_path_and_concurrency_starts_xdist_workers(pytester: pytest.Pytester) -> None:
    path = write_experiment(pytester, "par", concurrency=2)
    with FakeLLMServer(oracle()) as fake:
        result = pytester.runpytest_subprocess(
            "tiny.suite.yaml", "--llm-url", fake.url, "--experiment", str(path)
        )
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*2 workers*"])
    (run_dir,) = (pytester.path / ".promptsweep" / "runs").iterdir()
    assert run_dir.name.endswith("-par")


def test_command_line_flags_win_over_the_experiment(tmp_path: Path) -> None:
    (tmp_path / "subset.json").write_text("[]")
    (tmp_path / "t.yaml").write_text("x")
    exp_file = tmp_path / "e.yaml"
    exp_file.write_text(
        EXPERIMENT.format(id="e", concurrency=3)
        .replace("text-template.yaml", "t.yaml")
        .replace("  name: my-model", "  name: my-model\n  endpoint: http://h:1")
    )
    experiment = load_experiment(exp_file, tmp_path)
    settings = apply_to_settings(Settings(model="cli-model"), experiment, {"model": True})
    assert settings.model == "cli-model"
    assert settings.llm_urls == ("http://h:1",)
    assert settings.slots == 3
    assert settings.run_name == "e"
    assert settings.golden == (tmp_path / "subset.json").resolve()


def test_unknown_key_is_a_usage_error_naming_the_key(pytester: pytest.Pytester) -> None:
    write_experiment(pytester, "bad", text="experiment_id: bad\ndatset: x.json\nconcurrency: 0\n")
    result = pytester.runpytest_subprocess(
        "tiny.suite.yaml", "--llm-url", "http://127.0.0.1:9", "--experiment", "bad"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = result.stderr.str()
    assert "bad.yaml:2: datset: unknown key 'datset'; did you mean 'dataset'?" in errors
    assert "bad.yaml:3: concurrency: Input should be greater than or equal to 1" in errors


def test_unknown_experiment_lists_the_known_ones(pytester: pytest.Pytester) -> None:
    write_experiment(pytester, "exp1")
    result = pytester.runpytest_subprocess("tiny.suite.yaml", "--experiment", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--experiment: no experiment 'nope'; known: exp1*"])


def test_missing_files_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text("experiment_id: e\nprompt: no_such_template\n")
    with pytest.raises(ConfigError, match=r"e.yaml: prompt: no template 'no_such_template'"):
        load_experiment(path, tmp_path)
    path.write_text("experiment_id: e\ndataset: missing.json\n")
    with pytest.raises(ConfigError, match=r"e.yaml:\d+: dataset: file not found: missing.json"):
        load_experiment(path, tmp_path)
    path.write_text("experiment_id: 'has space'\n")
    with pytest.raises(ConfigError, match=r"experiment_id"):
        load_experiment(path, tmp_path)


def test_shipped_experiments_load() -> None:
    root = Path(__file__).resolve().parents[1]
    for name in ("baseline-v1", "concise-v1"):
        experiment = load_experiment(find_experiment(name, root), root)
        assert experiment.id == name
        assert experiment.template_path is not None and experiment.template_path.is_file()
        assert experiment.dataset_path is not None and experiment.dataset_path.is_file()


def test_help_shows_the_new_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "*--experiment=NAME|PATH*",
            "*--baseline=RUN*",
            "*(paired 95% CI below 0)*",
            "*--objective-token-weight=LAMBDA*",
        ]
    )
