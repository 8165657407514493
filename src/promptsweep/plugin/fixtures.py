"""The Python route: ``@pytest.mark.promptsweep(suite=...)`` tests get ``sample``, ``prompt``,
``endpoint`` and ``promptsweep_score`` fixtures for custom logic around the call."""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path

import pytest

from promptsweep.core.answers.chat import ChatRequest, ChatResult
from promptsweep.core.answers.result import SampleResult, repeat_suffix
from promptsweep.core.data.dataset import Sample
from promptsweep.core.evaluate import error_text
from promptsweep.core.io.errors import ConfigError, EndpointError
from promptsweep.llm.endpoint import Endpoint
from promptsweep.plugin.items import check_result, record_result, route_of
from promptsweep.plugin.state import SuiteRuntime, get_state

MARKER = "promptsweep"
#: Set on an item once ``promptsweep_score`` recorded its sample's result.
scored_key = pytest.StashKey[bool]()


def _suite_path(node: pytest.Item) -> Path:
    marker = node.get_closest_marker(MARKER)
    if marker is None:
        raise pytest.UsageError(
            f"{node.nodeid}: the promptsweep fixtures need @pytest.mark.promptsweep(suite='path/to/x.suite.yaml')"
        )
    suite = marker.kwargs.get("suite") or (marker.args[0] if marker.args else None)
    if not suite:
        raise pytest.UsageError(f"{node.nodeid}: @pytest.mark.promptsweep needs suite='path/to/x.suite.yaml'")
    path = Path(str(suite))
    return path if path.is_absolute() else Path(node.path).parent / path


def generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``sample`` over the marked suite's samples, with readable ids; with
    repeats, also ``promptsweep_repeat`` (ids ``<id>@r1`` ... as for suite files)."""
    if metafunc.definition.get_closest_marker(MARKER) is None or "sample" not in metafunc.fixturenames:
        return
    path = _suite_path(metafunc.definition)
    state = get_state(metafunc.config)
    try:
        runtime = state.runtime(path)
    except ConfigError as exc:
        pytest.fail(str(exc), pytrace=False)
    repeats = state.settings.repeats_for(runtime.suite.spec.repeats)
    if repeats > 1 and "promptsweep_repeat" in metafunc.fixturenames:
        metafunc.parametrize(
            ("sample", "promptsweep_repeat"),
            [(s, r) for r in range(repeats) for s in runtime.samples],
            ids=[f"{s.id}{repeat_suffix(r)}" for r in range(repeats) for s in runtime.samples],
        )
        return
    metafunc.parametrize("sample", runtime.samples, ids=[s.id for s in runtime.samples])


@pytest.fixture
def promptsweep_runtime(request: pytest.FixtureRequest) -> SuiteRuntime:
    """The marked suite, loaded: ``.suite``, ``.dataset``, ``.template`` and ``.evaluator``."""
    return get_state(request.config).runtime(_suite_path(request.node))


@pytest.fixture
def sample() -> Sample:
    """The golden sample of this item (parametrized by ``@pytest.mark.promptsweep``)."""
    raise pytest.UsageError("the sample fixture needs @pytest.mark.promptsweep(suite='...') on the test")


@pytest.fixture
def promptsweep_repeat() -> int:
    """Which repeat of the sample this item is (0 unless the suite or ``--llm-repeats`` asks
    for more): pass it on, ``endpoint.chat(prompt, repeat=promptsweep_repeat)``, so each repeat
    is its own request and cache entry."""
    return 0


@pytest.fixture
def prompt(sample: Sample, promptsweep_runtime: SuiteRuntime, promptsweep_repeat: int) -> ChatRequest:
    """This sample's request as the YAML route sends it: ``prompt.messages`` plus the template's
    parameters and ``response_format``, and which repeat it is. ``endpoint.chat(prompt)`` sends
    it unchanged, so each repeat is its own request and cache entry."""
    return promptsweep_runtime.evaluator.request(sample, repeat=promptsweep_repeat)


@pytest.fixture(scope="session")
def endpoint(request: pytest.FixtureRequest) -> Endpoint:
    """The LLM endpoint (``--llm-url`` or the managed llama-server): ``endpoint.chat(prompt)``."""
    try:
        return get_state(request.config).endpoints.endpoint()
    except EndpointError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def promptsweep_score(
    request: pytest.FixtureRequest,
    sample: Sample,
    promptsweep_runtime: SuiteRuntime,
    promptsweep_repeat: int,
) -> Callable[[str | ChatResult], SampleResult]:
    """Score an answer against this sample and record it for the run's aggregate and gate."""

    def score(answer: str | ChatResult) -> SampleResult:
        judge = get_state(request.config).endpoints.judge_route()  # judged fields ask a model
        result = promptsweep_runtime.evaluator.score_text(
            sample, answer, judge=judge, repeat=promptsweep_repeat
        )
        item = request.node
        assert isinstance(item, pytest.Item)
        record_result(item, promptsweep_runtime.suite.path, result, route=route_of(item))
        item.stash[scored_key] = True
        check_result(result, promptsweep_runtime.suite.spec.thresholds.sample)
        return result

    return score


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A Python-route test that raised before ``promptsweep_score`` scored its sample (e.g.
    ``endpoint.chat`` timed out) counts as the YAML route counts a failed call: the sample is
    errored, scores 0, is listed and counts against ``max_errors``, instead of leaving the totals."""
    if (
        call.when == "call"
        and call.excinfo is not None
        and not call.excinfo.errisinstance((pytest.skip.Exception, pytest.xfail.Exception))
        and "promptsweep_score" in getattr(item, "fixturenames", ())
        and not item.stash.get(scored_key, False)
        and item.get_closest_marker(MARKER) is not None
    ):
        funcargs = getattr(item, "funcargs", {})
        sample = funcargs.get("sample")
        runtime = funcargs.get("promptsweep_runtime")
        if isinstance(sample, Sample) and isinstance(runtime, SuiteRuntime):
            repeat = int(funcargs.get("promptsweep_repeat", 0) or 0)
            result = runtime.evaluator.errored(sample, error_text(call.excinfo.value), repeat=repeat)
            record_result(item, runtime.suite.path, result, route=route_of(item))
            item.stash[scored_key] = True
    return (yield)
