"""The result message items send the controller: one type, one to_json/from_json pair."""

from __future__ import annotations

import json

from promptsweep.core.answers.result import SampleResult
from promptsweep.plugin.messages import PROPERTY, ResultMessage, from_properties, to_property


def result(**extra: object) -> SampleResult:
    fields: dict[str, object] = {
        "suite": "s",
        "sample_id": "a-1",
        "category": "c",
        "template": "t@v1",
        "expected": {"f": "x"},
        "got": {"f": "x"},
        "scores": {"f": 1.0},
        "score": 1.0,
        **extra,
    }
    return SampleResult(**fields)  # type: ignore[arg-type]


def test_a_message_survives_the_round_trip_xdist_makes() -> None:
    message = ResultMessage(
        suite_path="/p/s.suite.yaml", result=result(candidate="c7"), mode="optimize", round=2
    )
    name, text = to_property(message)
    assert name == PROPERTY and isinstance(text, str)
    back = from_properties([(name, json.loads(json.dumps(text)))])
    assert back == message
    assert (back.sample_id, back.candidate, back.failure) == ("a-1", "c7", None)


def test_the_latest_message_of_an_item_wins_and_failures_are_values() -> None:
    announced = ResultMessage(suite_path="/p", mode="optimize", sample_id="a-1", candidate="c1", round=1)
    timed_out = ResultMessage(
        suite_path="/p", mode="optimize", sample_id="a-1", candidate="c1", round=1, failure="round_timeout"
    )
    errored = announced.with_result(result(error="HTTP 500", candidate="c1"))
    assert errored.failure == "errored" and errored.round == 1
    props = [to_property(announced), ("score", 0.5), to_property(timed_out)]
    assert from_properties(props) == timed_out
    assert from_properties([("score", 0.5)]) is None
