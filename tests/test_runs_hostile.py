"""Issue 27 rows 9-12: what a run leaves behind, against a hostile or broken place to write.

A read-only promptsweep directory, symbolic links inside ``runs/``, field names XML cannot hold
and a disk that fills up mid-run each end in one clear line (or a well-formed file), and
nothing outside the project, nor any record already written, is replaced or torn.
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from promptsweep.cli.main import main
from promptsweep.core.io.files import UnsafePathError
from promptsweep.llm.cache import ResponseCache, cache_path
from promptsweep.reporting.artifacts import ResultsWriter, RunDirectory, read_results
from promptsweep.reporting.leaderboard import read_leaderboard
from tests.fakeserver import FakeLLMServer, Reply, chat_reply, user_text
from tests.runkit import run_once
from tests.suitekit import SAMPLES, make_suite, oracle

CLI = "import sys; from promptsweep.cli.main import main; sys.exit(main())"


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (links as their target's name), to prove nothing changed."""
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            files[str(path.relative_to(root))] = os.readlink(path).encode()
        elif path.is_file():
            files[str(path.relative_to(root))] = path.read_bytes()
    return files


def assert_one_line(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit non-zero with one ``error:`` line naming what it says, and no traceback."""
    text = done.stdout + done.stderr
    assert done.returncode != 0, text
    assert "Traceback" not in text and "OSError" not in text, text
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, text
    for needle in needles:
        assert needle in errors[0], text


# ============================================================== row 9: a read-only --dir


@pytest.fixture
def two_runs(pytester: pytest.Pytester) -> Path:
    """Two finished runs of the tiny suite and a response cache with one answer; the base dir."""
    run_once(pytester, set())
    run_once(pytester, {1})
    base = pytester.path / ".promptsweep"
    cache = ResponseCache(cache_path(base))
    cache.put("k" * 64, "fake-model", {"text": "an answer"})
    cache.close()
    return base


def read_only_cli(base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``promptsweep *args`` in a child process that cannot write under ``base``: a read-only
    bind mount in a user namespace where that works (root ignores permission bits), else
    permission bits taken away for the child's run."""
    command = [sys.executable, "-c", CLI, *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTSWEEP_")}
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.skip("running as root without unshare: no directory can be made read-only")
        mount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
        probe = subprocess.run(["unshare", "-rm", "sh", "-c", mount, str(base), "true"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip(f"running as root and no read-only bind mount: {probe.stderr[-200:]!r}")
        command = ["unshare", "-rm", "sh", "-c", mount, str(base), *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    dirs = [base, *(p for p in base.rglob("*") if p.is_dir() and not p.is_symlink())]
    for folder in dirs:
        folder.chmod(0o555)
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    finally:
        for folder in dirs:
            folder.chmod(0o755)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["report"], id="report"),
        pytest.param(["report", "--run", "FIRST"], id="report-run"),
        pytest.param(["leaderboard", "--rebuild"], id="leaderboard-rebuild"),
        pytest.param(["cache", "clear"], id="cache-clear"),
        pytest.param(["compare", "FIRST", "SECOND", "--markdown", "BASE/compare.md"], id="compare-markdown"),
    ],
)
def test_a_read_only_dir_is_one_line_naming_the_path(two_runs: Path, command: list[str]) -> None:
    """The attack: each of these ended in an OSError traceback on a read-only ``--dir``."""
    first, second = sorted(p.name for p in (two_runs / "runs").iterdir())
    names = {"FIRST": first, "SECOND": second}
    args = [names.get(a, a.replace("BASE", str(two_runs))) for a in command]
    before = snapshot(two_runs)
    done = read_only_cli(two_runs, *args, "--dir", str(two_runs))
    cause = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
    assert_one_line(done, str(two_runs), cause)
    assert snapshot(two_runs) == before


# ============================================================== row 10: links inside runs/


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory outside the project holding a file someone cares about."""
    folder = tmp_path_factory.mktemp("outside")
    (folder / "report.html").write_text("precious")
    return folder


def test_a_linked_run_dir_is_refused_by_report(
    two_runs: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attack: ``runs/evil -> /elsewhere`` made ``report --run evil`` replace
    ``/elsewhere/report.html``."""
    real = sorted((two_runs / "runs").iterdir())[0]
    for name in ("config.json", "results.jsonl", "metrics.json"):
        shutil.copy(real / name, outside / name)
    (two_runs / "runs" / "evil").symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    capsys.readouterr()
    assert main(["report", "--dir", str(two_runs), "--run", "evil"]) != 0
    err = capsys.readouterr().err
    assert f"{two_runs / 'runs' / 'evil'} is a symbolic link" in err and len(err.splitlines()) == 1
    assert main(["report", "--dir", str(two_runs), "--run", str(two_runs / "runs" / "evil")]) != 0
    assert main(["compare", "evil", real.name, "--dir", str(two_runs)]) != 0
    assert snapshot(outside) == before


def test_a_linked_report_in_a_run_dir_is_refused(
    two_runs: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = sorted((two_runs / "runs").iterdir())[0]
    (run / "report.html").unlink()
    (run / "report.html").symlink_to(outside / "report.html")
    capsys.readouterr()
    assert main(["report", "--dir", str(two_runs), "--run", run.name]) != 0
    assert f"{run / 'report.html'} is a symbolic link" in capsys.readouterr().err
    assert (run / "report.html").is_symlink()
    assert (outside / "report.html").read_text() == "precious"


def test_a_linked_runs_dir_is_refused_and_rebuild_skips_linked_runs(
    two_runs: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = two_runs / "runs"
    real = sorted(runs.iterdir())[0]
    shutil.copytree(real, outside / real.name)
    (runs / "linked").symlink_to(outside / real.name, target_is_directory=True)
    before = snapshot(outside)
    capsys.readouterr()
    assert main(["leaderboard", "--rebuild", "--format", "json", "--dir", str(two_runs)]) == 0
    assert f"{runs / 'linked'} is a symbolic link" in capsys.readouterr().err
    assert "linked" not in {e["run"] for e in read_leaderboard(two_runs)}
    moved = two_runs / "runs-real"
    runs.rename(moved)
    runs.symlink_to(moved, target_is_directory=True)
    assert main(["report", "--dir", str(two_runs), "--run", real.name]) != 0
    assert f"{runs} is a symbolic link" in capsys.readouterr().err
    assert not (moved / real.name / "report.html").is_symlink()
    assert snapshot(outside) == before


def test_run_directory_writers_refuse_links(tmp_path: Path, outside: Path) -> None:
    """Every artifact a run writes goes through ``RunDirectory``: a link at the file is refused."""
    run = RunDirectory.create(tmp_path, "tiny")
    (run.root / "summary.md").symlink_to(outside / "report.html")
    with pytest.raises(UnsafePathError, match=r"summary\.md is a symbolic link"):
        run.write_text("summary.md", "# hi\n")
    with pytest.raises(UnsafePathError):
        run.write_json("summary.md", {})
    assert (outside / "report.html").read_text() == "precious"
    assert run.write_text("metrics.json", "{}\n").read_text() == "{}\n"


# ============================================================== row 11: junitxml


SUITE_WITH_CONTROL_CHARACTERS = """\
name: tiny
dataset: data.json
template: template.yaml
id: "{label}-{key}"
inputs:
  logs: line
fields:
  "la\\x02bel": {metric: exact, weight: 0.5, label: true, values: dataset}
  "sev\\x1berity\\ufffe": {metric: exact, weight: 0.5}
"""

DATA_WITH_CONTROL_CHARACTERS = [
    {"key": f"k{i}", "line": f"LOG-{i} x", "label": "disk_full", "severity": "error"} for i in range(3)
]


def test_control_characters_in_field_names_keep_junitxml_well_formed(pytester: pytest.Pytester) -> None:
    """The attack: a field named with a control character made ``--junitxml`` ill-formed."""
    make_suite(pytester, suite_text=SUITE_WITH_CONTROL_CHARACTERS)
    data = [
        {**s, "la\x02bel": s["label"], "sev\x1berity\ufffe": s["severity"]}
        for s in DATA_WITH_CONTROL_CHARACTERS
    ]
    (pytester.path / "data.json").write_text(json.dumps(data))

    def answer(body: dict[str, Any]) -> Reply:
        return chat_reply(json.dumps({"la\x02bel": "disk_full", "sev\x1berity\ufffe": "error"}))

    with FakeLLMServer(answer) as fake:
        result = pytester.runpytest_subprocess(
            "tiny.suite.yaml", "--llm-url", fake.url, "--llm-cache=off", "--junitxml=junit.xml",
            "-p", "no:cacheprovider",
        )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    root = ET.parse(pytester.path / "junit.xml").getroot()  # raises on ill-formed XML
    names = {p.get("name") for p in root.iter("property")}
    assert {"score.la#x02bel", "score.sev#x1Berity#xFFFE"} <= names


# ============================================================== row 12: a full disk


def test_a_failed_append_leaves_no_torn_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC after part of a line was stored: the part is cut off, earlier lines stay whole."""
    from promptsweep.reporting.artifacts import ArtifactWriteError  # new with the fix

    path = tmp_path / "results.jsonl"
    writer = ResultsWriter(path)
    writer.write({"n": 1})
    real_write = os.write
    calls: list[int] = []

    def full_disk(fd: int, data: Any) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:7]))  # the disk takes a few bytes, then is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(
        ArtifactWriteError, match=re.escape(f"{path}: No space left on device; the run stops")
    ):
        writer.write({"n": 2, "text": "x" * 100})
    monkeypatch.undo()
    assert len(calls) == 2
    assert path.read_text() == '{"n":1}\n'
    writer.write({"n": 3})
    writer.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"n": 1}, {"n": 3}]


LONG = "the volume ran out of space " * 60


def long_answers(body: dict[str, Any]) -> Reply:
    """The oracle's answers with a long summary: a results line is a few KB."""
    text = user_text(body)
    for sample in SAMPLES:
        if f"{sample['line']}" in text:
            return chat_reply(
                json.dumps({"label": sample["label"], "severity": sample["severity"], "summary": LONG})
            )
    reply: Reply = oracle()(body)
    return reply


@pytest.mark.parametrize("jobs", ["0", "2"])
def test_a_disk_filling_mid_run_ends_in_one_line_and_no_torn_record(
    pytester: pytest.Pytester, jobs: str
) -> None:
    """The attack: a full disk gave a 96-line INTERNALERROR and a torn last line in results.jsonl.

    The child runs under ``RLIMIT_FSIZE``: the kernel stores what fits of the write that
    crosses it and fails the next one (EFBIG), as a full disk does (ENOSPC); every file the
    run writes after that fails alike."""
    make_suite(pytester, threshold=0.0)
    limit = 9000  # config.json fits; results.jsonl fills up on its third line

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PROMPTSWEEP_"))}
    with FakeLLMServer(long_answers) as fake:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tiny.suite.yaml", "--llm-url", fake.url,
             "--llm-cache=off", "-n", jobs],
            cwd=pytester.path, capture_output=True, text=True, timeout=300, preexec_fn=small_disk, env=env,
        )  # fmt: skip
    text = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.INTERRUPTED, text[-3000:]
    assert "INTERNALERROR" not in text and "Traceback" not in text, text[-3000:]
    (run,) = (pytester.path / ".promptsweep" / "runs").iterdir()
    results = run / "results.jsonl"
    assert f"{results}: File too large; the run stops here" in text, text[-3000:]
    raw = results.read_bytes()
    assert raw.endswith(b"\n") and 0 < raw.count(b"\n") < len(SAMPLES)
    lines = [json.loads(line) for line in raw.decode().splitlines()]  # every line whole
    assert len(read_results(results)) == len(lines)
    assert not (run / "metrics.json").exists()  # no totals over a run cut short
