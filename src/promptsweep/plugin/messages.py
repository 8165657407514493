"""The one message an item sends to the controller, and the one place it is serialised.

Workers attach a :class:`ResultMessage` to ``item.user_properties`` (plain JSON, so xdist
carries it with the report); controller-side plugins read it back with :func:`from_report`.
This is pytest's own pattern (``pytest_report_to_serializable`` /
``pytest_report_from_serializable``): one ``to_json`` / ``from_json`` pair, and nothing else
parses that JSON.

The same type serves eval items, Python-route tests and optimizer items: ``mode`` says which
controller totals it, ``candidate`` and ``round`` place an optimizer result, and ``failure``
says, as a value rather than as text to search, why an item has no result.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import pytest
from _pytest.junitxml import bin_xml_escape

from promptsweep.core.answers.result import SampleResult

PROPERTY = "promptsweep.result"
MESSAGE_SCHEMA_VERSION = 1

Mode = Literal["eval", "optimize"]
Failure = Literal["errored", "round_timeout", "broken"]
"""Why an item has no usable result: the call ``errored`` (the result says why), the item
gave up waiting for the previous round (``round_timeout``), or it broke before it had a
result (``broken``: a bug, a render error)."""


@dataclass(frozen=True)
class ResultMessage:
    """What one item reports: its suite, its result (None if it has none yet), and where it
    belongs (``mode``; ``route``, the Python-route test, None for the suite's own items; for
    the optimizer also ``candidate`` and ``round``)."""

    suite_path: str
    result: SampleResult | None = None
    mode: Mode = "eval"
    route: str | None = None
    sample_id: str | None = None
    candidate: str | None = None
    round: int | None = None
    failure: Failure | None = None

    def __post_init__(self) -> None:
        if self.result is not None:
            if self.sample_id is None:
                object.__setattr__(self, "sample_id", self.result.sample_id)
            if self.candidate is None and self.result.candidate is not None:
                object.__setattr__(self, "candidate", self.result.candidate)
            if self.failure is None and self.result.errored:
                object.__setattr__(self, "failure", "errored")

    def with_result(self, result: SampleResult) -> ResultMessage:
        """The same item's message once it has a result (an optimizer item announces itself first)."""
        return replace(self, result=result, failure="errored" if result.errored else None)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": MESSAGE_SCHEMA_VERSION,
            "suite_path": self.suite_path,
            "mode": self.mode,
            "route": self.route,
            "sample_id": self.sample_id,
            "candidate": self.candidate,
            "round": self.round,
            "failure": self.failure,
            "result": self.result.to_json() if self.result is not None else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResultMessage:
        result = data.get("result")
        return cls(
            suite_path=str(data["suite_path"]),
            result=SampleResult.from_json(result) if isinstance(result, Mapping) else None,
            mode=data.get("mode") or "eval",
            route=data.get("route"),
            sample_id=data.get("sample_id"),
            candidate=data.get("candidate"),
            round=data.get("round"),
            failure=data.get("failure"),
        )


def to_property(message: ResultMessage) -> tuple[str, str]:
    """The ``user_properties`` entry carrying ``message`` (a JSON string, as xdist needs)."""
    return PROPERTY, json.dumps(message.to_json(), ensure_ascii=False, separators=(",", ":"))


def property_name(name: str) -> str:
    """A junitxml property name XML 1.0 can hold: pytest escapes property values but not
    names, so a field named with a control character would make the file ill-formed. The
    characters XML cannot hold are written the way pytest writes them in values (``#x01``)."""
    return bin_xml_escape(name)


def attach(item: pytest.Item, message: ResultMessage) -> None:
    """Record ``message`` on the item; a result's scores also become junitxml properties."""
    item.user_properties.append(to_property(message))
    if message.result is not None and message.mode == "eval":
        item.user_properties.append(("score", round(message.result.score, 4)))
        for name, value in message.result.scores.items():
            item.user_properties.append((property_name(f"score.{name}"), round(value, 4)))


def from_properties(properties: Iterable[tuple[str, object]]) -> ResultMessage | None:
    """The item's latest message (an item may announce itself, then report its result)."""
    found: ResultMessage | None = None
    for name, value in properties:
        if name != PROPERTY:
            continue
        data = json.loads(value) if isinstance(value, str) else value
        if isinstance(data, Mapping) and "suite_path" in data:
            found = ResultMessage.from_json(data)
    return found


def from_report(report: pytest.TestReport) -> ResultMessage | None:
    """The message of a call-phase report (teardown reports carry the same properties)."""
    if report.when != "call":
        return None
    return from_properties(report.user_properties)
