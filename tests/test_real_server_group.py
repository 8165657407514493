"""The suite's own scheduling: every real-server test joins one xdist group, so under
``--dist loadgroup`` (``just test``, ``just ci``) they run one at a time on one worker and
cannot fill each other's llama-server slots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TESTS = """
import os
import pytest

@pytest.fixture
def llama_server_url():
    return "http://127.0.0.1:9"  # stands in for the session fixture; nothing is started


def record(name):
    with open(f"ran-{name}", "w") as f:
        f.write(os.environ.get("PYTEST_XDIST_WORKER", "main"))


@pytest.mark.parametrize("i", range(3))
def test_by_fixture(llama_server_url, i):
    record(f"by_fixture{i}")


@pytest.mark.real_server
@pytest.mark.parametrize("i", range(3))
def test_by_mark(i):
    record(f"by_mark{i}")


@pytest.mark.xdist_group("real_server")
@pytest.mark.parametrize("i", range(3))
def test_by_group(i):
    record(f"by_group{i}")


@pytest.mark.parametrize("i", range(8))
def test_plain(i):
    record(f"plain{i}")
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A project whose conftest uses this suite's collection hook."""
    pytester.makeconftest(
        "from tests.conftest import pytest_collection_modifyitems, pytest_configure  # noqa: F401\n"
    )
    pytester.makeini("[pytest]\nmarkers =\n    real_server: uses the real llama-server\n")
    pytester.makepyfile(test_sched=TESTS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return pytester


def test_real_server_tests_are_marked_and_grouped(project: pytest.Pytester) -> None:
    """A fixture, a hand-written mark or the group itself: each makes a test a real-server test,
    with both the ``real_server`` mark and the ``real_server`` xdist group; others get neither."""
    items, _ = project.inline_genitems("test_sched.py")
    grouped = {
        item.originalname
        for item in items
        if item.get_closest_marker("real_server")
        and [m.args for m in item.iter_markers("xdist_group")] == [("real_server",)]
    }
    assert grouped == {"test_by_fixture", "test_by_mark", "test_by_group"}
    plain = [item for item in items if item.name.startswith("test_plain")]
    assert len(plain) == 8
    assert not [
        i for i in plain if i.get_closest_marker("real_server") or i.get_closest_marker("xdist_group")
    ]


def test_loadgroup_runs_the_real_server_group_on_one_worker(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=17)
    result.stdout.fnmatch_lines(["scheduling tests via GroupScheduling"])
    # nine grouped tests: spread over two workers (as without the group) they would not all
    # land on one
    workers = {path.name: path.read_text() for path in project.path.glob("ran-by_*")}
    assert len(workers) == 9
    assert len(set(workers.values())) == 1 and "main" not in workers.values(), workers
