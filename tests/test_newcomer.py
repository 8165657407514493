"""A newcomer's hour, scripted (issues 9 and 18): a support-ticket router made from the user's own
JSONL by ``promptsweep init --data``, green with ``pytest -n 2`` on the real llama-server,
``promptsweep check`` clean, the Python route from the scaffold's README scoring exactly what the
YAML route scores even when the server fails a call (both count the error), and ``--optimize``
on the scaffold's space (too few tickets for its retrieval and neighbour choice: the run says so)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from promptsweep.server.provision import default_model_path, find_llama_server
from tests.fakeserver import FakeLLMServer, Reply

# Authored for this test: short support tickets, three teams, three priorities; keys as a
# help desk exports them (``ticket_id``, not ``id``).
TICKETS: list[dict[str, str]] = [
    {
        "ticket_id": "t-01",
        "subject": "Double charge",
        "body": "I was charged twice for my March subscription. Please refund one payment.",
        "category": "billing",
        "priority": "high",
        "reply": "Sorry about the double charge, we have refunded one payment.",
    },
    {
        "ticket_id": "t-02",
        "subject": "Invoice download",
        "body": "Where can I download the invoice for last month?",
        "category": "billing",
        "priority": "low",
        "reply": "You can download every invoice from the Billing page.",
    },
    {
        "ticket_id": "t-03",
        "subject": "Settings crash",
        "body": "The app crashes every time I open the settings screen.",
        "category": "bug",
        "priority": "high",
        "reply": "Thanks for the report, we are fixing the crash in settings.",
    },
    {
        "ticket_id": "t-04",
        "subject": "Blank export",
        "body": "The export button shows a blank page in Firefox.",
        "category": "bug",
        "priority": "normal",
        "reply": "Thanks, we can reproduce the blank export page and are on it.",
    },
    {
        "ticket_id": "t-05",
        "subject": "Password reset",
        "body": "I forgot my password and the reset email never arrives.",
        "category": "account",
        "priority": "high",
        "reply": "We have sent a new reset link, please check your spam folder.",
    },
    {
        "ticket_id": "t-06",
        "subject": "Change email",
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
FAILING = "t-04"  # the ticket the proxy fails with a 500


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "promptsweep.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,  # a bound only a hung CLI reaches; `init` itself takes a second
        check=False,
    )


def _run_dir(root: Path, suffix: str) -> Path:
    runs = sorted(p for p in (root / ".promptsweep" / "runs").iterdir() if p.name.endswith(suffix))
    assert runs, f"no run directory ending in {suffix}"
    return runs[-1]


def _results(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


def _proxy(real_url: str) -> Any:
    """Forward to the real llama-server, except that the ticket ``FAILING`` gets a 500."""
    failing_body = next(t["body"] for t in TICKETS if t["ticket_id"] == FAILING)

    def respond(body: dict[str, Any]) -> Reply:
        last = body["messages"][-1]["content"]
        if failing_body in last:
            return Reply(status=500, body={"error": {"message": "injected server error"}})
        answer = httpx.post(f"{real_url}/v1/chat/completions", json=body, timeout=600)
        return Reply(status=answer.status_code, body=answer.content)

    return respond


@pytest.mark.real_server
@pytest.mark.xdist_group("real_server")
def test_a_newcomer_brings_their_data_runs_checks_and_optimizes(
    pytester: pytest.Pytester, llama_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert REAL_BINARY is not None
    monkeypatch.setenv("PROMPTSWEEP_LLAMA_SERVER", str(REAL_BINARY))
    monkeypatch.setenv("PROMPTSWEEP_MODEL", str(REAL_MODEL))
    root = pytester.path
    tickets = root / "tickets"
    (root / "tickets.jsonl").write_text("".join(json.dumps(t) + "\n" for t in TICKETS))

    # 1. init --data on the user's own JSONL, off a terminal: it picks and says what it picked.
    made = _cli(root, "init", "tickets", "--data", "tickets.jsonl", "--name", "ticket_router", "--no-input")
    assert made.returncode == 0, made.stderr
    for line in [
        "  id: ticket_id (unique in every record)",
        "  body: input (free text, and its name says the model reads it)",
        "  category: label: account, billing, bug (3 distinct values)",
        "  priority: label: high, low, normal (3 distinct values)",
        "  reply: text field (free text, and its name says the model writes it)",
        "  2. pytest tickets -n 2",
    ]:
        assert line in made.stdout.splitlines(), made.stdout
    suite_path = tickets / "ticket_router.suite.yaml"
    assert "id_field: ticket_id" in suite_path.read_text()
    template = tickets / "prompt_templates" / "ticket_router_v1.yaml"
    template.write_text(re.sub(r"max_tokens: \d+", "max_tokens: 64", template.read_text()))  # keep it small

    # 2. Green as written with two workers on the real llama-server.
    first = pytester.runpytest_subprocess("tickets", "-n", "2", "--llm-url", llama_server_url, *SLOW)
    first.assert_outcomes(passed=6)
    first.stdout.fnmatch_lines(["*suite ticket_router: 6 samples*", "*a constant answer*", "*gate passed*"])

    # 3. promptsweep check: clean, without calling a model.
    checked = _cli(root, "check", "tickets")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "no problems" in checked.stdout

    # 4. Both routes in one session through a proxy that fails one ticket: the README's Python
    #    route scores what the YAML route scores, and both count the error against max_errors.
    readme = (tickets / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", readme, re.S)
    (tickets / "test_ticket_router.py").write_text(code)
    with FakeLLMServer(_proxy(llama_server_url)) as proxy:
        both = pytester.runpytest_subprocess(
            "tickets", "-n", "2", "--llm-url", proxy.url, "--llm-retries", "0", *SLOW
        )
    both.assert_outcomes(passed=10, failed=2)
    yaml_run = _run_dir(root, "-ticket_router")
    python_run = _run_dir(root, "-ticket_router-test_ticket_router")
    metrics = {}
    for name, run in (("yaml", yaml_run), ("python", python_run)):
        results = _results(run)
        assert len(results) == 6, name
        assert [r["sample_id"] for r in results if r["error"]] == [FAILING], name
        metrics[name] = json.loads((run / "metrics.json").read_text())
        assert metrics[name]["gate"]["passed"] is False, name
        assert "1 sample(s) errored (allowed: 0)" in metrics[name]["gate"]["failures"][0], name
    assert metrics["python"]["overall"]["mean"] == pytest.approx(metrics["yaml"]["overall"]["mean"])
    by_id = {r["sample_id"]: r["score"] for r in _results(yaml_run)}
    assert {r["sample_id"]: r["score"] for r in _results(python_run)} == pytest.approx(by_id)

    # 5. --optimize on the space init wrote.
    (tickets / "test_ticket_router.py").unlink()
    optimize = pytester.runpytest_subprocess(
        "tickets", "--optimize", "-n", "2", "--llm-url", llama_server_url, *SLOW
    )
    assert optimize.ret == 0, optimize.stdout.str()
    optimize.stdout.fnmatch_lines(
        [
            "*ticket_router: test split: *",
            "*ticket_router: search space: * candidates (tone 2*), * validation samples*",
            "* vs baseline on the test split:*",
        ]
    )
    # Written exactly when the test-split verdict says so; otherwise the summary says why not.
    runs = sorted((tickets.parent / ".promptsweep" / "runs").glob("*-optimize"))
    verdict = json.loads((runs[-1] / "all_results.json").read_text())
    written = (tickets / "prompt_templates" / "ticket_router_v2.yaml").is_file()
    assert written == bool(verdict["promoted"]), verdict["promotion"]
    # Called the winner only when it was written.
    role = "winner" if written else "best candidate"
    optimize.stdout.fnmatch_lines([f"*{role} vs baseline on the test split:*"])
    if not written:
        optimize.stdout.fnmatch_lines(["*not written: *best_candidate.yaml*"])
    summary = [line for line in optimize.stdout.lines if " vs baseline " in line]
    print(  # the figures, for `pytest tests/test_newcomer.py -s`
        f"\nnewcomer: yaml route {metrics['yaml']['overall']['mean']:.3f}, python route "
        f"{metrics['python']['overall']['mean']:.3f} (n={metrics['python']['n']}, 1 errored on both); "
        f"{summary[0].strip()}"
    )
