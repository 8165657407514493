"""Builders for small suites in a pytester directory, shared by the end-to-end tests."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from promptsweep.core.answers.result import SampleResult
from tests.fakeserver import Reply, chat_reply, user_text

TEMPLATE = """\
id: tiny
version: v1
description: test template
model_defaults:
  temperature: 0.0
  max_tokens: 64
output:
  format: {fmt}
inputs:
  required: [logs]
  optional:
    namespace: unknown
system: |
  Classify the log line. Answer with label, severity and summary.
user: |
  Namespace: {{{{ namespace }}}}
  Log: {{{{ logs }}}}
"""

SUITE = """\
name: tiny
dataset: data.json
template: template.yaml
id: "{{label}}-{{key}}"
category: label
inputs:
  logs: line
fields:
  label: {{metric: exact, weight: 0.5, label: true, values: dataset}}
  severity: {{metric: exact, weight: 0.3, label: true, values: [info, warn, error], synonyms: {{warning: warn}}}}
  summary: {{metric: rouge_l, weight: 0.2}}
thresholds:
  overall: {threshold}
"""

# Six samples; the fake model gets some of them right.
SAMPLES: list[dict[str, Any]] = [
    {
        "key": f"k{i}",
        "namespace": "ns",
        "line": f"LOG-{i} something happened",
        "label": label,
        "severity": severity,
        "summary": summary,
    }
    for i, (label, severity, summary) in enumerate(
        [
            ("disk_full", "error", "the disk is full"),
            ("disk_full", "error", "volume ran out of space"),
            ("oom_killed", "error", "container was killed for memory"),
            ("oom_killed", "warn", "memory pressure is high"),
            ("started", "info", "service started"),
            ("started", "info", "service is ready"),
        ]
    )
]


MORE_SAMPLES: list[dict[str, Any]] = SAMPLES + [
    {**s, "key": f"k{i + len(SAMPLES)}", "line": f"LOG-{i + len(SAMPLES)} something happened"}
    for i, s in enumerate(SAMPLES)
]
"""Twelve samples: the six again under new ids, for tests that need a difference a paired test
can confirm (six samples, five of them worse, give p = 0.06 under the exact test)."""


def on_v1(suite_text: str) -> str:
    """The shipped example suite pointed at the v1 template. The suite itself gates the
    optimizer's winner (v2: retrieved few-shot examples pinned to the full dataset, ~1200-token
    prompts) on its held-out samples; tests of the plumbing run it on v1: short prompts, any
    subset of the data, every sample scored, the gate v1 was written for (0.08)."""
    text = re.sub(r"k8s_log_analysis_v\d+\.yaml", "k8s_log_analysis_v1.yaml", suite_text)
    # v2 is scored on the held-out side and gated at what it scores; v1 on any subset, every sample.
    text = re.sub(r"evaluate: held_out\b", "evaluate: all", text)
    text = re.sub(r"(?m)^search_space: .*\n", "", text)  # plumbing tests copy no search space
    return re.sub(r"(?m)^  overall: [0-9.]+", "  overall: 0.08", text)


def make_suite(
    pytester: pytest.Pytester,
    *,
    threshold: float = 0.5,
    fmt: str = "json_schema",
    samples: list[dict[str, Any]] | None = None,
    suite_text: str | None = None,
) -> Path:
    pytester.makefile(".yaml", template=TEMPLATE.format(fmt=fmt))
    (pytester.path / "data.json").write_text(
        json.dumps(samples if samples is not None else SAMPLES, indent=2)
    )
    suite = pytester.path / "tiny.suite.yaml"
    suite.write_text(suite_text if suite_text is not None else SUITE.format(threshold=threshold))
    return suite


def oracle(wrong: set[int] = frozenset(), samples: list[dict[str, Any]] | None = None) -> Any:  # type: ignore[assignment]
    """A responder that answers each sample correctly, except the indices in ``wrong``."""

    def respond(body: dict[str, Any]) -> Reply:
        text = user_text(body)
        for i, sample in enumerate(samples if samples is not None else SAMPLES):
            if f"LOG-{i} " in text:
                if i in wrong:
                    return chat_reply(
                        json.dumps({"label": "nonsense", "severity": "info", "summary": "no idea"})
                    )
                return chat_reply(json.dumps({k: sample[k] for k in ("label", "severity", "summary")}))
        return chat_reply("I cannot tell")

    return respond


def sample_result(
    sample_id: str,
    score: float,
    repeat: int = 0,
    raw: str | None = None,
    category: str = "c",
    **scores: float,
) -> SampleResult:
    """One scored answer of field ``a`` (right, ``x``, when ``score`` >= 0.5), for tests of totals,
    noise and comparisons; ``scores`` gives per-field scores of other fields instead."""
    return SampleResult(
        suite="s",
        sample_id=sample_id,
        category=category,
        template="t@v1",
        expected={"a": "x"},
        got={"a": "x" if score >= 0.5 else "y"},
        scores=scores or {"a": score},
        score=score,
        raw=raw if raw is not None else f"answer {score}",
        repeat=repeat,
    )
