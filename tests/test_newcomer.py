"""A newcomer's first hour, scripted (issue 9's "done when"): a support-ticket router built only
through ``promptsweep init`` and documented keys, run on the real llama-server with ``-n 2``, the
Python route from the scaffold's README giving the YAML route's score, and ``--optimize`` on the
scaffold's two-candidate space."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptsweep.cli.schema import render_schema
from promptsweep.server.provision import default_model_path, find_llama_server
from tests.test_reference import _documented, _sections, key_paths

# Authored for this test: short support tickets, three teams, three priorities.
TICKETS: list[dict[str, str]] = [
    {
        "id": "t-01",
        "body": "I was charged twice for my March subscription. Please refund one payment.",
        "category": "billing",
        "priority": "high",
        "reply": "Sorry about the double charge, we have refunded one payment.",
    },
    {
        "id": "t-02",
        "body": "Where can I download the invoice for last month?",
        "category": "billing",
        "priority": "low",
        "reply": "You can download every invoice from the Billing page.",
    },
    {
        "id": "t-03",
        "body": "The app crashes every time I open the settings screen.",
        "category": "bug",
        "priority": "high",
        "reply": "Thanks for the report, we are fixing the crash in settings.",
    },
    {
        "id": "t-04",
        "body": "The export button shows a blank page in Firefox.",
        "category": "bug",
        "priority": "normal",
        "reply": "Thanks, we can reproduce the blank export page and are on it.",
    },
    {
        "id": "t-05",
        "body": "I forgot my password and the reset email never arrives.",
        "category": "account",
        "priority": "high",
        "reply": "We have sent a new reset link, please check your spam folder.",
    },
    {
        "id": "t-06",
        "body": "How do I change the email address on my account?",
        "category": "account",
        "priority": "low",
        "reply": "You can change your email address under Profile settings.",
    },
]
SLOW = ["--llm-timeout", "600", "-p", "no:cacheprovider"]
# Resolved at import: pytester points $HOME (and so the default cache) at its temporary directory.
REAL_BINARY = find_llama_server()
REAL_MODEL = default_model_path()


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "promptsweep.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,  # a bound only a hung CLI reaches; `init` itself takes a second
        check=False,
    )


def _user_keys(data: Any, prefix: str = "") -> set[str]:
    """Dotted keys a file uses, with field names folded to ``<name>`` like the reference."""
    keys: set[str] = set()
    if not isinstance(data, dict):
        return keys
    for key, value in data.items():
        path = f"{prefix}{key}"
        folded = f"{prefix}<name>" if prefix == "fields." else path
        keys.add(folded)
        if isinstance(value, dict) and key not in ("llm", "inputs", "synonyms"):
            keys |= _user_keys(value, f"{folded}.")
    return {k for k in keys if k != "fields.<name>"}


def _run_dir(root: Path, suffix: str) -> Path:
    runs = sorted(p for p in (root / ".promptsweep" / "runs").iterdir() if p.name.endswith(suffix))
    assert runs, f"no run directory ending in {suffix}"
    return runs[-1]


def _results(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


@pytest.mark.real_server
def test_a_newcomer_builds_runs_and_optimizes_a_ticket_router(
    pytester: pytest.Pytester, llama_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert REAL_BINARY is not None
    # the managed server of step 2 uses the llama-server and model the fixture server uses
    monkeypatch.setenv("PROMPTSWEEP_LLAMA_SERVER", str(REAL_BINARY))
    monkeypatch.setenv("PROMPTSWEEP_MODEL", str(REAL_MODEL))
    root = pytester.path
    tickets = root / "tickets"

    # 1. Scaffold through the CLI, fields given as flags.
    made = _cli(
        root,
        "init",
        "tickets",
        "--name",
        "ticket_router",
        "--input",
        "body",
        "--field",
        "category:label:billing,bug,account",
        "--field",
        "priority:label:low,normal,high",
        "--field",
        "reply:text",
    )
    assert made.returncode == 0, made.stderr
    assert "  2. pytest tickets -n 2\n" in made.stdout

    # 2. Out of the box, the scaffold runs green on the managed llama-server with -n 2.
    first = pytester.runpytest_subprocess("tickets", "-n", "2", *SLOW)
    first.assert_outcomes(passed=5)
    first.stdout.fnmatch_lines(["*suite ticket_router: 5 samples*", "*gate passed*"])

    # 3. The user's own data, and the suite tuned with documented keys only.
    (tickets / "data" / "ticket_router.jsonl").write_text("".join(json.dumps(t) + "\n" for t in TICKETS))
    suite_path = tickets / "ticket_router.suite.yaml"
    suite_text = suite_path.read_text()
    for old, new in [
        ('"REPLACE ME with what the model does, in one line."', "Route support tickets and draft a reply."),
        (
            "    values: [low, normal, high]\n",
            "    values: [low, normal, high]\n    synonyms: {urgent: high}\n",
        ),
        ("description: one short sentence ", "description: one short sentence for the customer "),
        ("  overall: 0.0 ", "  overall: 0.05 "),
    ]:
        assert old in suite_text, old
        suite_text = suite_text.replace(old, new)
    suite_path.write_text(suite_text)
    documented = set(_documented(_sections()["suite"]))
    schema_keys = set(key_paths(json.loads(render_schema("suite"))))
    used = _user_keys(yaml.safe_load(suite_text))
    assert used <= documented & schema_keys, f"undocumented keys in the suite: {used - documented}"

    # 4. The YAML route on the real llama-server, two workers.
    yaml_route = pytester.runpytest_subprocess("tickets", "-n", "2", "--llm-url", llama_server_url, *SLOW)
    yaml_route.assert_outcomes(passed=6)
    yaml_run = _run_dir(root, "-ticket_router")
    yaml_results = _results(yaml_run)
    assert len(yaml_results) == 6 and not any(r["error"] for r in yaml_results)
    assert sum(r["parse_source"] == "json" for r in yaml_results) >= 5  # constrained decoding holds
    yaml_metrics = json.loads((yaml_run / "metrics.json").read_text())

    # 5. The Python route with the README's code: the same requests (all answered from the
    #    response cache the YAML route filled), so the same score on the same samples.
    readme = (tickets / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", readme, re.S)
    (tickets / "test_ticket_router.py").write_text(code)
    python_route = pytester.runpytest_subprocess(
        "tickets/test_ticket_router.py", "-n", "2", "--llm-url", llama_server_url, *SLOW
    )
    python_route.assert_outcomes(passed=6)
    python_run = _run_dir(root, "-ticket_router-test_ticket_router")
    python_results = _results(python_run)
    assert all(r["from_cache"] for r in python_results), "the Python route sent other requests"
    python_metrics = json.loads((python_run / "metrics.json").read_text())
    assert python_metrics["overall"]["mean"] == pytest.approx(yaml_metrics["overall"]["mean"])
    by_id = {r["sample_id"]: r["score"] for r in yaml_results}
    assert {r["sample_id"]: r["score"] for r in python_results} == pytest.approx(by_id)

    # 6. --optimize on the scaffold's two-candidate space.
    (tickets / "test_ticket_router.py").unlink()
    optimize = pytester.runpytest_subprocess(
        "tickets", "--optimize", "-n", "2", "--llm-url", llama_server_url, *SLOW
    )
    assert optimize.ret == 0, optimize.stdout.str()
    optimize.stdout.fnmatch_lines(
        [
            "*ticket_router: search space: 2 candidates (tone 2), 3 validation samples*",
            "*vs baseline ticket_router@v1*",
        ]
    )
    # a winner file only when the gain is significant; else the best candidate is kept in the run
    written = (tickets / "prompt_templates" / "ticket_router_v2.yaml").is_file()
    assert written or any("best_candidate.yaml" in line for line in optimize.stdout.lines)
    summary = [line for line in optimize.stdout.lines if " vs baseline " in line]
    print(  # the figures, for `pytest tests/test_newcomer.py -s`
        f"\nnewcomer: yaml route {yaml_metrics['overall']['mean']:.3f}, python route "
        f"{python_metrics['overall']['mean']:.3f} (n={python_metrics['n']}, {python_metrics['from_cache']} from cache); "
        f"{summary[0].strip()}"
    )
