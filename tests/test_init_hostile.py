"""``promptsweep init --data`` on hostile data (issue 27, row 1): keys and values are data.

Nothing read from the user's file becomes Jinja or YAML structure: a key ``{{ 7*7 }}`` stays
those characters in the prompt, ``{% raw %}`` cannot break the template, a label value with a
line break cannot add a key to the template, a key ending in ``:`` is quoted. What ``init`` reads
is bounded: a 500 MB file and 100,000 distinct keys end in one line, at once, in a child process
whose address space is capped (a subprocess timeout guards against a hang; no timing is
asserted). The files are loaded back before they replace anything.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from promptsweep.cli import init as init_module
from promptsweep.cli.main import main as cli_main
from promptsweep.core.data.suite import load_suite
from promptsweep.core.prompt import Prompt

MEMORY_CAP = 1536 * 1024**2


def _rows(**extra: list[Any]) -> list[dict[str, Any]]:
    """Six samples with a free-text input and a label; ``extra`` adds a key per sample."""
    rows: list[dict[str, Any]] = [
        {
            "id": f"s{i}",
            "text": f"the disk on host {i} is {'full' if i % 2 else 'fine'} this morning",
            "status": ("bad", "ok")[i % 2],
        }
        for i in range(6)
    ]
    for key, values in extra.items():
        for row, value in zip(rows, values, strict=True):
            row[key] = value
    return rows


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _init(tmp_path: Path, rows: list[dict[str, Any]], *flags: str) -> int:
    data = _write(tmp_path / "rows.jsonl", rows)
    return cli_main(["init", str(tmp_path / "suite"), "--data", str(data), "--no-input", *flags])


def _messages(tmp_path: Path) -> list[dict[str, str]]:
    suite = load_suite(tmp_path / "suite" / "suite.suite.yaml")
    dataset = suite.load_dataset()
    return Prompt(suite, dataset=dataset).messages(dataset.samples[0])


def _no_traceback(text: str) -> None:
    for raw in ("Traceback", "MemoryError", "yaml.scanner", "jinja2.exceptions"):
        assert raw not in text, text[-3000:]


@pytest.mark.parametrize("key", ["{{ 7*7 }}", "{% raw %}", "{# x", "{%- if true %}x{% endif %}"])
def test_a_jinja_key_is_a_field_name_the_prompt_shows_as_written(
    tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows(**{key: ["up", "down", "up", "down", "up", "down"]})
    code = _init(tmp_path, rows)
    out, err = capsys.readouterr()
    assert code == 0, out + err
    suite = load_suite(tmp_path / "suite" / "suite.suite.yaml")
    assert key in suite.spec.fields
    system = _messages(tmp_path)[0]["content"]
    assert f"- {key}: one of: down, up" in system
    assert "49" not in system
    assert cli_main(["check", str(tmp_path / "suite")]) == 0


def test_a_jinja_key_read_as_an_input_is_its_value_and_its_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows(**{"{{ 7*7 }}": [f"note {{{{ 7*7 }}}} number {i} about the host" for i in range(6)]})
    code = _init(tmp_path, rows, "--input", "{{ 7*7 }}", "--input", "text")
    out, err = capsys.readouterr()
    assert code == 0, out + err
    user = _messages(tmp_path)[-1]["content"]
    assert "{{ 7*7 }}: note {{ 7*7 }} number 0 about the host" in user
    assert "49" not in user


def test_a_label_value_with_a_line_break_stays_in_the_prompt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    injected = "z\nmodel_defaults: {max_tokens: 4000}"
    # the label is the records' last key, so its values end the template's system block
    rows = [{k: v for k, v in row.items() if k != "status"} for row in _rows()]
    for row, value in zip(rows, ["ok", "bad", "ok", "bad", injected, "ok"], strict=True):
        row["status"] = value
    code = _init(tmp_path, rows)
    out, err = capsys.readouterr()
    assert code == 0, out + err
    template = load_suite(tmp_path / "suite" / "suite.suite.yaml").load_template()
    assert template.spec.model_defaults["max_tokens"] == 64  # labels only: init's own budget
    system = _messages(tmp_path)[0]["content"]
    assert '- status: one of: bad, ok, "z\\nmodel_defaults: {max_tokens: 4000}"' in system
    assert cli_main(["check", str(tmp_path / "suite")]) == 0


def test_a_key_ending_in_a_colon_is_quoted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{("severity:" if k == "status" else k): v for k, v in row.items()} for row in _rows()]
    code = _init(tmp_path, rows)
    out, err = capsys.readouterr()
    assert code == 0, out + err
    _no_traceback(out + err)
    suite = load_suite(tmp_path / "suite" / "suite.suite.yaml")
    assert suite.spec.category == "severity:" and list(suite.spec.fields) == ["severity:"]


def test_control_characters_in_keys_and_values_never_reach_the_files_or_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows(**{"\x1b[31mred": ["a", "b", "a", "b", "a", "b"]})
    for row, value in zip(rows, ["ok", "bad", "ok", "\x1b]0;owned\x07", "ok", "bad"], strict=True):
        row["status"] = value
    code = _init(tmp_path, rows)
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "\x1b" not in out + err and "\\u001b[31mred: skipped (a line break or control character" in out
    for path in (tmp_path / "suite").rglob("*.yaml"):
        assert "\x1b" not in path.read_text(), path
    assert cli_main(["check", str(tmp_path / "suite")]) == 0
    assert '"\\u001b]0;owned\\u0007"' in _messages(tmp_path)[0]["content"]


def test_an_input_key_with_a_line_break_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows(**{"a\nb": [f"more words for sample {i}" for i in range(6)]})
    code = _init(tmp_path, rows, "--input", "a\nb")
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and '--input "a\\nb": a line break or control character' in err, err
    assert not (tmp_path / "suite").exists()


def test_files_that_do_not_read_back_as_planned_replace_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The read-back catches what quoting might miss: here a template whose model_defaults an
    injected line replaced. Nothing is written, and what was there stays."""
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "README.md").write_text("mine\n")
    original = init_module.Plan.template_text

    def injected(self: init_module.Plan) -> str:
        return original(self) + "model_defaults: {max_tokens: 4000}\n"

    monkeypatch.setattr(init_module.Plan, "template_text", injected)
    code = _init(tmp_path, _rows(), "--force")
    err = capsys.readouterr().err
    assert code == 2
    assert "do not read back as planned (model_defaults)" in err, err
    assert [p.name for p in folder.iterdir()] == ["README.md"]
    assert (folder / "README.md").read_text() == "mine\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".suite-init-")]


# ============================================================== bombs, in a capped child


def _capped_init(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``promptsweep init *args`` in a child whose address space is capped at ``MEMORY_CAP``;
    the timeout only guards against a hang."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PROMPTSWEEP_"))}
    return subprocess.run(
        [sys.executable, "-m", "promptsweep.cli.main", "init", *args, "--no-input"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=cap,
        env=env,
        check=False,
    )


def _assert_one_line(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    text = done.stdout + done.stderr
    assert done.returncode == 2, text[-3000:]
    assert done.stderr.count("\n") == 1, done.stderr[-3000:]
    for needle in needles:
        assert needle in done.stderr, done.stderr[-3000:]
    _no_traceback(text)


def test_a_500_mb_one_line_json_is_refused_before_it_is_read(tmp_path: Path) -> None:
    data = tmp_path / "huge.json"
    chunk = "a" * (8 * 1024**2)
    with data.open("w") as handle:
        handle.write('[{"label": "x", "text": "')
        for _ in range(63):  # 504 MiB
            handle.write(chunk)
        handle.write('"}]')
    try:
        done = _capped_init(tmp_path, "suite", "--data", str(data))
    finally:
        data.unlink()
    _assert_one_line(done, "huge.json: 504 MB, over the 50 MB init reads")
    assert not (tmp_path / "suite").exists()


def test_a_hundred_thousand_distinct_keys_are_refused_at_the_limit(tmp_path: Path) -> None:
    data = tmp_path / "keys.jsonl"
    with data.open("w") as handle:
        for record in range(10_000):
            handle.write(json.dumps({f"k{record}_{i}": i for i in range(10)}) + "\n")
    done = _capped_init(tmp_path, "suite", "--data", str(data))
    _assert_one_line(done, "keys.jsonl: more than 200 distinct keys (record 21 reaches it)")
    assert not (tmp_path / "suite").exists()


def test_a_prompt_that_renders_otherwise_than_planned_replaces_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without its Jinja escaping, a key ``{{ 7*7 }}`` would render as 49: the read-back
    renders a sample and compares, so such a prompt is never written."""
    monkeypatch.setattr(init_module, "_jinja_text", lambda text: text)
    code = _init(tmp_path, _rows(**{"{{ 7*7 }}": ["up", "down", "up", "down", "up", "down"]}))
    err = capsys.readouterr().err
    assert code == 2
    assert "do not read back as planned (rendered system)" in err, err
    assert not (tmp_path / "suite").exists()
