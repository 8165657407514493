"""``--optimize --golden OTHER`` with the suite's own space on a dataset of the same schema but
another cluster's logs: another taxonomy, one ``signature_hash`` for every sample and no benign
(``action_needed: none``) sample. The search runs to a verdict, and the plan says what it dropped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.fakeserver import FakeLLMServer, Reply, chat_reply, question

ROOT = Path(__file__).resolve().parent.parent
OTHER = Path(__file__).resolve().parent / "data" / "other-cluster-k8s.json"


def _answer(body: dict[str, Any]) -> Reply:
    """A plausible answer in the other taxonomy, keyed on words of the log line."""
    text = question(body).lower()
    cause = "dns_resolution_failed" if "lookup" in text or "resolve" in text else "disk_pressure"
    got = {
        "root_cause": cause,
        "severity": "error",
        "component": "kubelet",
        "summary": f"{cause} seen",
        "action_needed": "investigate",
    }
    return chat_reply(json.dumps(got))


def test_optimize_runs_to_a_verdict_on_another_taxonomy(pytester: pytest.Pytester) -> None:
    shutil.copytree(ROOT / "evals", pytester.path / "evals", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "prompt_templates", pytester.path / "prompt_templates")
    other = pytester.path / "other.json"
    shutil.copy(OTHER, other)
    with FakeLLMServer(_answer, props={"total_slots": 4}) as fake:
        result = pytester.runpytest_subprocess(
            "evals/", "--optimize", "--golden", str(other), "--llm-url", fake.url,
            "--optimize-budget", "3000", "-n", "4", "-p", "no:cacheprovider",
        )  # fmt: skip
    out = result.stdout.str()
    assert result.ret == 0, out + result.stderr.str()
    # The plan names what the data cannot support, before the first call.
    first_call = out.index("calibrating:")
    assert out.index("every sample has the same 'signature_hash' value") < first_call
    assert (
        out.index("few_shot mixed with k=2 dropped: needs 1 benign train samples, the train split has 0")
        < first_call
    )
    assert "hard_negatives with k=2 dropped" in out
    runs = sorted((pytester.path / ".promptsweep" / "runs").glob("*-optimize"))
    summary = json.loads((runs[-1] / "all_results.json").read_text())
    # A verdict on the test split, beside both floors.
    assert summary["complete"] is True
    assert set(summary["test"]["verdicts"]) == {"baseline", "lookup"}
    assert summary["test"]["n"] == 10 and summary["test"]["floors"]["lookup"] is not None
    # The reason agrees with the verdict it gives: written exactly when the winner beat the baseline.
    beat = summary["test"]["verdicts"]["baseline"]["significant"]
    assert summary["promoted"] is beat
    expected = (
        "it beats the baseline on the test split"
        if beat
        else "it does not beat the baseline on the test split"
    )
    assert summary["promotion"] == expected
    assert (summary["winner_file"] is not None) is beat
    assert any("dropped" in note for note in summary["notes"])
    # The bar is the prompt the suite runs today (v2), not the space's seed (base_template: v1).
    baseline = next(c for c in summary["candidates"] if c["candidate"] == "baseline")
    assert baseline["dimensions"] == {"template": "k8s_log_analysis@v2"}
    assert "baseline (k8s_log_analysis@v2)" in out
