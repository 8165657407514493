"""Answers that need no call: a gated lookup (``examples.copy_if_similar``) copies a near-duplicate
pool sample's answer and asks the model about the rest, the same way on every route; and the
optimizer's no-call families."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from promptsweep.core.answers.chat import ChatRequest, ChatResult
from promptsweep.core.io.errors import ConfigError
from promptsweep.core.neighbours.lookup import vote_answer
from promptsweep.core.templates.template import load_template
from tests.fakeserver import FakeLLMServer, Reply, chat_reply
from tests.suitekit import TEMPLATE, make_suite

FIELDS = ("label", "severity", "summary")


def record(
    key: str, line: str, label: str, severity: str, summary: str, namespace: str = "ns"
) -> dict[str, Any]:
    return {
        "key": key,
        "namespace": namespace,
        "line": line,
        "label": label,
        "severity": severity,
        "summary": summary,
    }


POOL = [
    record("p0", "disk full on node alpha volume exhausted", "disk_full", "error", "the disk is full"),
    record("p1", "oom killer terminated container payments", "oom_killed", "error", "killed for memory"),
    record("p2", "service started listening on port", "started", "info", "service started"),
    record("p3", "certificate expired for ingress gateway", "cert_expired", "warn", "certificate expired"),
]
# e0-e2 are near-duplicates of p0-p2 (token overlap 6/7, 5/6, 5/7); e3-e5 resemble nothing in the pool.
DATA = [
    record("e0", "disk full on node alpha volume exhausted again", "disk_full", "error", "disk is full"),
    record("e1", "oom killer terminated container payments today", "oom_killed", "error", "out of memory"),
    record("e2", "service started listening on port 8080 quickly", "started", "info", "service is up"),
    record("e3", "kernel panic unexpected trap", "crashed", "error", "the node crashed"),
    record("e4", "network unreachable dns timeout", "crashed", "warn", "network is down"),
    record("e5", "weird message nobody knows", "started", "info", "nothing to see"),
]
MODEL_ANSWER = {"label": "crashed", "severity": "error", "summary": "the model answered"}

GATED = TEMPLATE.format(fmt="json_schema").replace("id: tiny\n", "id: tiny_gated\n") + textwrap.dedent(
    """\
    examples:
      retrieve: {k: 0, by: [logs]}
      copy_if_similar: 0.5
      pool:
        dataset: pool.json
        split: {train: 1.0}
        inputs: {logs: line}
        answer: [label, severity, summary]
        id: "{label}-{key}"
        category: label
    """
)


SUITE_TEXT = """\
name: tiny
dataset: data.json
template: template.yaml
id: "{label}-{key}"
category: label
inputs:
  logs: line
fields:
  label: {metric: exact, weight: 0.5, label: true, values: dataset}
  severity: {metric: exact, weight: 0.3, label: true, values: [info, warn, error]}
  summary: {metric: rouge_l, weight: 0.2}
"""


def model(body: dict[str, Any]) -> Reply:
    return chat_reply(json.dumps(MODEL_ANSWER), prompt_tokens=40, completion_tokens=12)


def gated_project(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.0, samples=DATA)
    (pytester.path / "pool.json").write_text(json.dumps(POOL, indent=1))
    (pytester.path / "gated.yaml").write_text(GATED)


def test_vote_takes_each_fields_majority_and_ties_go_to_the_nearer() -> None:
    answers = [{"a": "x", "b": "p"}, {"a": "y", "b": "q"}, {"a": "y", "b": "r"}]
    assert vote_answer(answers) == {"a": "y", "b": "p"}
    assert vote_answer(answers[:1]) == answers[0]
    assert vote_answer([]) == {}


def test_a_copied_request_never_reaches_the_transport() -> None:
    from promptsweep.core.answers.chat import CopiedAnswer
    from promptsweep.llm.client import EndpointInfo
    from promptsweep.llm.endpoint import Endpoint, EndpointConfig

    sent: list[ChatRequest] = []

    def base(request: ChatRequest) -> ChatResult:
        sent.append(request)
        return ChatResult(text="{}")

    endpoint = Endpoint(EndpointInfo(url="http://unused"), EndpointConfig(), base=base)
    copied = ChatRequest(
        messages=({"role": "user", "content": "q"},), copied=CopiedAnswer('{"a": "b"}', ("p0",), 0.9)
    )
    result = endpoint.send(copied)
    assert (result.text, result.answered_by, result.prompt_tokens, result.latency_s) == (
        '{"a": "b"}',
        "lookup",
        0,
        0.0,
    )
    assert sent == []
    assert endpoint.send(ChatRequest(messages=copied.messages)).answered_by == "model"
    assert len(sent) == 1
    assert "copied" not in json.dumps(copied.body()), "the copied answer is never sent"


def test_k_zero_needs_the_gate(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(GATED.replace("  copy_if_similar: 0.5\n", ""))
    with pytest.raises(ConfigError, match=r"retrieve\.k: 0 shows no examples"):
        load_template(tmp_path / "t.yaml")
    (tmp_path / "t.yaml").write_text(GATED.replace("copy_if_similar: 0.5", "copy_if_similar: 1.5"))
    with pytest.raises(ConfigError, match="copy_if_similar"):
        load_template(tmp_path / "t.yaml")


def _run_dir(pytester: pytest.Pytester) -> Path:
    return sorted((pytester.path / ".promptsweep" / "runs").iterdir())[-1]


def test_gated_lookup_replays_the_same_answers_and_calls_through_pytest_and_the_api(
    pytester: pytest.Pytester,
) -> None:
    gated_project(pytester)
    with FakeLLMServer(model) as server:
        result = pytester.runpytest_subprocess(
            "tiny.suite.yaml", "--llm-url", server.url, "--llm-cache=off", "--prompt-template", "gated.yaml",
            "-p", "no:cacheprovider",
        )  # fmt: skip
        pytest_calls = len(server.requests)
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*answered 3 of 6 without a call*"])
    lines = [json.loads(line) for line in (_run_dir(pytester) / "results.jsonl").read_text().splitlines()]
    by_key = {r["sample_id"].rsplit("-", 1)[1]: r for r in lines}
    assert {k: r["answered_by"] for k, r in by_key.items()} == {
        "e0": "lookup", "e1": "lookup", "e2": "lookup", "e3": "model", "e4": "model", "e5": "model",
    }  # fmt: skip
    assert pytest_calls == 3, "only the samples with no near-duplicate in the pool were asked"
    for key in ("e0", "e1", "e2"):
        copied = by_key[key]
        assert (copied["prompt_tokens"], copied["completion_tokens"], copied["latency_s"]) == (0, 0, 0.0)
        source = POOL[int(key[1])]
        assert copied["got"] == {f: source[f] for f in FIELDS}
    assert by_key["e3"]["got"] == MODEL_ANSWER and by_key["e3"]["prompt_tokens"] == 40
    metrics = json.loads((_run_dir(pytester) / "metrics.json").read_text())
    assert metrics["answered_by"] == {"lookup": 3, "model": 3}

    script = textwrap.dedent(
        """
        import json, sys
        import promptsweep

        prompt = promptsweep.load_prompt("tiny.suite.yaml", "gated.yaml")
        out = {}
        with promptsweep.connect(sys.argv[1]) as endpoint:
            for record in json.load(open("data.json")):
                answer = endpoint.send(prompt.render(record))
                out[record["key"]] = [prompt.parse(answer.text).fields, answer.answered_by]
        print(json.dumps(out))
        """
    )
    (pytester.path / "use_it.py").write_text(script)
    with FakeLLMServer(model) as server:
        proc = subprocess.run(
            [sys.executable, "use_it.py", server.url], cwd=pytester.path, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
        api_calls = len(server.requests)
    assert proc.returncode == 0, proc.stderr
    api = json.loads(proc.stdout.strip().splitlines()[-1])
    assert api_calls == pytest_calls
    assert {k: v[1] for k, v in api.items()} == {k: r["answered_by"] for k, r in by_key.items()}
    assert {k: v[0] for k, v in api.items()} == {k: r["got"] for k, r in by_key.items()}


def test_a_stricter_gate_asks_the_model_more(pytester: pytest.Pytester) -> None:
    gated_project(pytester)
    (pytester.path / "gated.yaml").write_text(GATED.replace("copy_if_similar: 0.5", "copy_if_similar: 0.8"))
    with FakeLLMServer(model) as server:
        result = pytester.runpytest_subprocess(
            "tiny.suite.yaml", "--llm-url", server.url, "--llm-cache=off", "--prompt-template", "gated.yaml",
            "-p", "no:cacheprovider",
        )  # fmt: skip
        calls = len(server.requests)
    result.assert_outcomes(passed=6)
    # e0 (6/7) and e1 (5/6) pass 0.8; e2 (5/7) does not.
    assert calls == 4
    result.stdout.fnmatch_lines(["*answered 2 of 6 without a call*"])


# -- the copy dimension under --optimize ------------------------------------------------------

PHRASES = {
    "disk_full": ("error", "disk full on node volume exhausted quota"),
    "oom_killed": ("warn", "oom killer terminated container memory limit"),
    "started": ("info", "service started listening ready healthy port"),
}
OPT_SAMPLES = [
    {
        "key": f"k{i:02d}",
        "line": f"LOG-{i:02d} {PHRASES[label][1]}",
        "label": label,
        "severity": PHRASES[label][0],
    }
    for i, label in enumerate(list(PHRASES) * 8)
]
OPT_TEMPLATE = """\
id: tiny
version: v1
model_defaults: {temperature: 0.0, max_tokens: 32}
output: {format: json_schema}
inputs: {required: [logs]}
system: |
  Classify the log line.

  - label: what happened, in one word
  - severity: how bad it is
user: |
  Log: {{ logs }}
"""
OPT_SUITE = """\
name: tiny
dataset: data.json
template: prompt_templates/tiny_v1.yaml
id: "{label}-{key}"
category: label
inputs: {logs: line}
search_space: tiny.space.yaml
fields:
  label: {metric: exact, weight: 0.6, label: true, values: dataset}
  severity: {metric: exact, weight: 0.4, label: true, values: [info, warn, error]}
split: {train: 0.5, seed: 3}
thresholds: {overall: 0.1}
"""
OPT_SPACE = """\
base_template: prompt_templates/tiny_v1.yaml
tone: ["An analyst.", "A careful analyst."]
few_shot: {strategies: [none], copy_if_similar: [off, 0.5]}
search: {strategy: grid}
"""


def wrong_model(body: dict[str, Any]) -> Reply:
    """A model that never knows the label: only a copy from a near-duplicate gets it right."""
    return chat_reply(json.dumps({"label": "nonsense", "severity": "error"}), prompt_tokens=50)


def optimize_project(pytester: pytest.Pytester, space: str = OPT_SPACE) -> None:
    optimize_project_at(pytester.path, space)


def optimize_project_at(root: Path, space: str = OPT_SPACE) -> None:
    (root / "prompt_templates").mkdir()
    (root / "prompt_templates" / "tiny_v1.yaml").write_text(OPT_TEMPLATE)
    (root / "data.json").write_text(json.dumps(OPT_SAMPLES))
    (root / "tiny.space.yaml").write_text(space)
    (root / "tiny.suite.yaml").write_text(OPT_SUITE)


def test_the_space_reads_off_and_thresholds_and_writes_the_gate_with_a_pinned_pool(tmp_path: Path) -> None:
    from promptsweep.core.answers.metrics import MetricRegistry
    from promptsweep.core.data.dataset import samples_sha256
    from promptsweep.core.data.suite import load_suite
    from promptsweep.core.evaluate import Evaluator
    from promptsweep.optimize.space import load_search_space

    (tmp_path / "prompt_templates").mkdir()
    (tmp_path / "prompt_templates" / "tiny_v1.yaml").write_text(OPT_TEMPLATE)
    (tmp_path / "data.json").write_text(json.dumps(OPT_SAMPLES))
    (tmp_path / "tiny.space.yaml").write_text(OPT_SPACE.replace("[off, 0.5]", "[off, 0.5, 0.3]"))
    (tmp_path / "tiny.suite.yaml").write_text(OPT_SUITE)
    suite = load_suite(tmp_path / "tiny.suite.yaml")
    dataset = suite.load_dataset()
    space = load_search_space(tmp_path / "tiny.space.yaml", suite, dataset)
    assert space.copies == [None, 0.5, 0.3], "YAML's bare `off` (false) means no gate"
    ids = [c.id for c in space.candidates()]
    assert len(ids) == 6 and sum(i.endswith("-copy0.5") for i in ids) == 2
    dims = {d.name: d.labels for d in space.shape().dimensions}
    assert dims["copy_if_similar"] == ("off", "copy0.5", "copy0.3")
    gated = next(c for c in space.candidates() if c.copy == 0.5)
    folder = tmp_path / "prompt_templates"
    mapping = space.to_mapping(gated, pool_spec=space.pool_spec(folder))
    examples = mapping["examples"]
    assert examples["retrieve"]["k"] == 0 and examples["copy_if_similar"] == 0.5
    train = [s for s in dataset.samples if s.id in {t.id for t in space.train}]
    assert examples["pool"]["train_sha256"] == samples_sha256(train), "the pin is the train part"
    import yaml

    path = folder / "tiny_v2.yaml"
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    optimizer = Evaluator(
        suite, space.to_template(gated), MetricRegistry(), dataset=dataset,
        params=gated.params(space), retrieval=space.retrieval(gated),
    )  # fmt: skip
    production = Evaluator(suite, load_template(path), MetricRegistry(), dataset=dataset)
    for sample in dataset.samples:
        ours, theirs = optimizer.request(sample), production.request(sample)
        assert ours.body() == theirs.body() and ours.copied == theirs.copied, sample.id
        assert ours.copied is not None, "every sample has a same-label near-duplicate in train"
    with pytest.raises(ConfigError, match="copy_if_similar"):
        (tmp_path / "bad.space.yaml").write_text(OPT_SPACE.replace("[off, 0.5]", "[off, 2]"))
        load_search_space(tmp_path / "bad.space.yaml", suite, dataset)


@pytest.mark.parametrize("tones", [2, 50])
def test_the_plan_counts_no_time_for_answers_a_gate_copies(tmp_path: Path, tones: int) -> None:
    """The estimate was twice the wall time on golden-v1 (24.4 vs 12.9 min): it priced every
    gated job as a call. A copy is known before any call (the nearest pool sample's
    similarity against the gate), so the plan prices only the jobs that ask."""
    from promptsweep.core.answers.metrics import MetricRegistry
    from promptsweep.core.data.suite import load_suite
    from promptsweep.optimize.estimate import CostModel
    from promptsweep.optimize.search import BASELINE, Job, Search, SearchSettings
    from promptsweep.optimize.space import load_search_space
    from promptsweep.optimize.strategies import GridSearch

    # 50 tones: 100 candidates, more than the 40 the plan prices, in sorted ids that alternate
    # without and with the gate (a fixed step once drew only those without).
    phrasings = json.dumps([f"Analyst number {i}." for i in range(tones)])
    optimize_project_at(tmp_path, OPT_SPACE.replace('["An analyst.", "A careful analyst."]', phrasings))
    suite = load_suite(tmp_path / "tiny.suite.yaml")
    dataset = suite.load_dataset()
    space = load_search_space(tmp_path / "tiny.space.yaml", suite, dataset)
    validation = [s for s in dataset.samples if s.id in space.validation_ids]
    split = suite.split(dataset)
    search = Search(
        suite, space, validation, SearchSettings(GridSearch(), 0, None), MetricRegistry(), [],
        test=[s for s in dataset.samples if s.id in split.test], record=lambda result: None, reporter=type("Quiet", (), {"line": lambda self, text: None})(),
    )  # fmt: skip
    search.ledger.cost = CostModel(slots=1, prompt_s=0.001, gen_s=0.01)
    positions = range(len(search.ledger.order))
    assert len(positions) >= 2
    gated = next(c for c in search.ledger.candidates if c.endswith("-copy0.5"))
    asked = gated.removesuffix("-copy0.5")
    assert asked in search.ledger.candidates
    assert all(search.planner.copies(gated, p) for p in positions), (
        "every sample has a near-duplicate in train"
    )
    assert search.planner.jobs_seconds([Job(gated, p) for p in positions]) == 0.0
    ask_s = search.planner.jobs_seconds([Job(asked, p) for p in positions])
    assert ask_s > 0
    # Half the space copies every answer: a job costs half what an asking job costs, on average.
    assert len(search.ledger.grid) == 2 * tones
    assert search.planner._mean_job_seconds(search.ledger.grid, positions) == pytest.approx(
        search.planner.call_seconds(asked, len(positions)) / 2, rel=0.25
    )
    # The test round: the baseline and the prompt-only family ask every test sample; the gated
    # family's member copies them all, so it adds nothing (it was priced as the baseline's calls).
    test = range(len(search.ledger.order), len(search.ledger.order) + len(search.ledger.test))
    assert search.ledger.test and all(search.planner.copies(gated, p) for p in test)
    prompt_only = [c for c in search.ledger.candidates if not c.endswith("-copy0.5")]
    expected = search.planner.call_seconds(BASELINE, len(test)) * len(test) + sum(
        search.planner.call_seconds(c, len(test)) for c in prompt_only
    ) / len(prompt_only) * len(test)
    assert search.planner._test_seconds() == pytest.approx(expected, rel=0.01)  # 40 of 50 members priced


def test_optimize_finds_the_gate_and_its_winner_replays_without_calls(pytester: pytest.Pytester) -> None:
    optimize_project(pytester)
    with FakeLLMServer(wrong_model) as server:
        result = pytester.runpytest_subprocess(
            "--optimize", "--llm-url", server.url, "-p", "no:cacheprovider"
        )
        optimize_calls = len(server.requests)
    assert result.ret == 0, result.stdout.str()
    winner = pytester.path / "prompt_templates" / "tiny_v2.yaml"
    assert winner.is_file(), result.stdout.str()
    import yaml

    data = yaml.safe_load(winner.read_text())
    # The gate copies every sample here, as the 1-nearest vote does: both cost no call and score
    # alike, so the one rule for "best" takes the kNN vote (the smaller id); it is written as a
    # template that copies the nearest train sample (a gate at 0).
    assert data["optimization"]["candidate"] == "knn1"
    assert data["examples"]["copy_if_similar"] == 0.0 and data["examples"]["retrieve"]["k"] == 0
    run = sorted((pytester.path / ".promptsweep" / "runs").glob("*-optimize"))[-1]
    lines = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    gated = [r for r in lines if (r.get("candidate") or "").endswith("copy0.5")]
    assert gated and all(r["answered_by"] == "lookup" and r["prompt_tokens"] == 0 for r in gated)
    asked = [r for r in lines if r["answered_by"] == "model"]
    assert optimize_calls == len(asked), "the server saw exactly the answers that say answered_by: model"
    # The family table: each family's best on the test split, with its calls per answer.
    result.stdout.fnmatch_lines([
        "*candidate families (best of each chosen on validation):*",
        "*family*best member*validation*test (n=6)*- lookup (test, 95% CI)*calls/answer*",
        "*prompt-only*t?-c0-json_schema-none-direct *0.133*0.133*-0.867 (*1.00*",
        "*gated lookup*-copy0.5*1.000*1.000*+0.000 (+0.000..+0.000)*0.00*",
        "*kNN vote*knn1*1.000*1.000*+0.000 (+0.000..+0.000)*0.00*",
        "no family beat the lookup floor on the test split",
    ])  # fmt: skip
    summary = json.loads((run / "all_results.json").read_text())
    families = {f["family"]: f for f in summary["families"]}
    assert families["gated lookup"]["calls_per_answer"] == 0.0 and families["gated lookup"]["test"] == 1.0
    assert families["prompt-only"]["calls_per_answer"] == 1.0 and families["prompt-only"]["test_n"] == 6
    assert families["kNN vote"] == {
        "family": "kNN vote", "member": "knn1", "validation": 1.0, "test": 1.0, "test_n": 6, "calls_per_answer": 0.0,
        "minus_lookup": {"mean": 0.0, "low": 0.0, "high": 0.0, "n": 6, "holm_p": 1.0},
    }  # fmt: skip
    assert families["prompt-only"]["minus_lookup"]["high"] < 0
    assert summary["lookup_beat_every_prompt"] is False, "the gate ties the vote, it is not beaten"

    with FakeLLMServer(wrong_model) as server:
        replay = pytester.runpytest_subprocess(
            "tiny.suite.yaml", "--llm-url", server.url, "--llm-cache=off",
            "--prompt-template", str(winner), "-p", "no:cacheprovider",
        )  # fmt: skip
        replay_calls = len(server.requests)
    assert replay.ret == 0, replay.stdout.str()
    assert replay_calls == 0, "every sample the winner scores has a near-duplicate: no call"
    replay.stdout.fnmatch_lines(["*answered * without a call*"])


def test_a_lookup_beats_every_prompt_only_when_it_beats_every_familys_best() -> None:
    """The 18:12 golden-v1 run said "a lookup beat every prompt" of a gated winner 0.015 below
    the lookup while the neighbour-choice family's best scored 0.052 above it."""
    from promptsweep.optimize.families import FamilyBest, lookup_beat_every_prompt
    from promptsweep.optimize.space import GATED, KNN, NEIGHBOUR_CHOICE

    knn = FamilyBest(KNN, "knn1", 0.8, (1.0, 0.5) * 4, 0.0)
    below = FamilyBest(GATED, "g", 0.9, (0.9, 0.4) * 4, 0.2)
    above = FamilyBest(NEIGHBOUR_CHOICE, "c", 0.9, (1.0, 0.6) * 4, 1.0)
    assert lookup_beat_every_prompt([below, knn])
    assert not lookup_beat_every_prompt([below, above, knn])
    assert not lookup_beat_every_prompt([knn]), "no prompt scored: nothing was beaten"


def test_the_summary_says_when_a_lookup_beat_every_prompt(pytester: pytest.Pytester) -> None:
    optimize_project(pytester, OPT_SPACE.replace("[off, 0.5]", "[off]") + "choices: [off, 2]\n")
    with FakeLLMServer(wrong_model) as server:
        result = pytester.runpytest_subprocess(
            "--optimize", "--llm-url", server.url, "-p", "no:cacheprovider"
        )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([
        "*prompt-only*1.00*",
        "*neighbour choice*-choose2 *1.00*",
        "*a lookup beat every prompt: the 1-nearest vote (no call) scores 1.000 on the test split, +0.867 over *",
    ])  # fmt: skip
    assert "gated lookup" not in result.stdout.str(), "a space without the gate has no gated family"
    run = sorted((pytester.path / ".promptsweep" / "runs").glob("*-optimize"))[-1]
    summary = json.loads((run / "all_results.json").read_text())
    assert summary["lookup_beat_every_prompt"] is True
    assert [f["family"] for f in summary["families"]] == ["prompt-only", "neighbour choice", "kNN vote"]


def test_a_family_the_search_did_not_draw_gets_its_member_nearest_the_winner(
    pytester: pytest.Pytester,
) -> None:
    """A random search of one candidate reaches one family; the table still has every family of
    the space: for each other one, the member nearest the winner, asked after the verdict on the
    winner's validation samples and on test."""
    space = OPT_SPACE.replace("search: {strategy: grid}", "search: {strategy: random, budget: 1, seed: 3}")
    optimize_project(pytester, space + "choices: [off, 2]\n")
    with FakeLLMServer(wrong_model) as server:
        result = pytester.runpytest_subprocess(
            "--optimize", "--llm-url", server.url, "-p", "no:cacheprovider"
        )
    out = result.stdout.str()
    assert result.ret == 0, out
    run = sorted((pytester.path / ".promptsweep" / "runs").glob("*-optimize"))[-1]
    summary = json.loads((run / "all_results.json").read_text())
    # The one prompt the search drew (a kNN vote, which copies as it does, may win the tie).
    (drawn,) = {c for d in summary["decisions"] for c in d["evaluated"]}
    families = {f["family"]: f for f in summary["families"]}
    assert set(families) == {"prompt-only", "gated lookup", "neighbour choice", "kNN vote"}
    assert all(f["test_n"] == 6 for f in families.values()), families
    added = [f["member"] for f in families.values() if f["member"] not in (drawn, "knn1", "knn3", "knn5")]
    assert len(added) == 2, families
    assert "the search drew no member of 2 families: asking the one nearest the winner" in out
    # Nearest: the winner's tone kept, only the family's own dimensions changed.
    tone = drawn.split("-")[0]
    assert all(member.startswith(tone + "-") for member in added), (drawn, added)
    # Added after the verdict: no decision names them; their validation calls are counted.
    decided = {c for d in summary["decisions"] for c in [*d["evaluated"], *d["survivors"], *d["pruned"]]}
    assert decided == {drawn} and not decided & set(added)
    assert summary["candidate_calls"] == 12, "the winner copies every answer; the two added members ask all 6"


@pytest.mark.xdist_group("real_server")
def test_real_server_gated_lookup_asks_only_about_inputs_without_a_near_duplicate(
    pytester: pytest.Pytester, llama_server_url: str
) -> None:
    """The gated template on 6 samples against llama-server: the 3 near-duplicates of the pool
    are answered from it, the other 3 cost a real call each."""
    gated_project(pytester)
    (pytester.path / "gated.yaml").write_text(GATED.replace("max_tokens: 64", "max_tokens: 24"))
    result = pytester.runpytest_subprocess(
        "tiny.suite.yaml", "--llm-url", llama_server_url, "--llm-cache", "off", "--llm-timeout", "600",
        "--prompt-template", "gated.yaml", "-p", "no:cacheprovider",
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()[-3000:]
    lines = [json.loads(line) for line in (_run_dir(pytester) / "results.jsonl").read_text().splitlines()]
    asked = [r for r in lines if r["answered_by"] == "model"]
    copied = [r for r in lines if r["answered_by"] == "lookup"]
    assert len(lines) == 6 and len(asked) == 3 and len(copied) == 3
    assert all((r["prompt_tokens"] or 0) > 0 and not r["error"] for r in asked), "real calls report tokens"
    assert all(r["prompt_tokens"] == 0 and r["latency_s"] == 0.0 for r in copied)
    result.stdout.fnmatch_lines(["*answered 3 of 6 without a call*"])


# -- choose among the neighbours --------------------------------------------------------------

CHOICES = GATED.replace("  copy_if_similar: 0.5\n", "").replace(
    "output:\n  format: json_schema\n", "output:\n  format: json_schema\n  choices: {neighbours: 2}\n"
)


def test_each_sample_chooses_among_its_neighbours_labels(tmp_path: Path) -> None:
    import promptsweep

    (tmp_path / "pool.json").write_text(json.dumps(POOL))
    (tmp_path / "data.json").write_text(json.dumps(DATA))
    (tmp_path / "template.yaml").write_text(CHOICES)
    (tmp_path / "tiny.suite.yaml").write_text(SUITE_TEXT)
    prompt = promptsweep.load_prompt(tmp_path / "tiny.suite.yaml", tmp_path / "template.yaml")

    def enums(record: dict[str, Any]) -> dict[str, list[str]]:
        request = prompt.render(record)
        assert request.copied is None, "no gate: every sample is asked"
        assert request.response_format is not None
        props = request.response_format["json_schema"]["schema"]["properties"]
        return {name: props[name]["enum"] for name in ("label", "severity")}

    near = enums(DATA[0])
    assert near["label"][0] == "disk_full" and len(near["label"]) == 2, near
    assert set(near["label"]) <= {p["label"] for p in POOL} and near["severity"][0] == "error"
    (tmp_path / "template.yaml").write_text(
        CHOICES.replace("{neighbours: 2}", "{neighbours: 2, plus_all: true}")
    )
    prompt = promptsweep.load_prompt(tmp_path / "tiny.suite.yaml", tmp_path / "template.yaml")
    wide = enums(DATA[0])
    assert wide["label"][:2] == near["label"], "the neighbours' labels come first"
    assert set(wide["label"]) >= {d["label"] for d in DATA} and sorted(wide["severity"]) == [
        "error",
        "info",
        "warn",
    ]
    (tmp_path / "template.yaml").write_text(CHOICES.replace("format: json_schema", "format: json"))
    with pytest.raises(ConfigError, match=r"output\.choices"):
        load_template(tmp_path / "template.yaml")


def test_a_neighbour_choice_winner_sends_what_the_optimizer_scored(tmp_path: Path) -> None:
    import yaml

    from promptsweep.core.answers.metrics import MetricRegistry
    from promptsweep.core.data.suite import load_suite
    from promptsweep.core.evaluate import Evaluator
    from promptsweep.optimize.space import load_search_space

    (tmp_path / "prompt_templates").mkdir()
    (tmp_path / "prompt_templates" / "tiny_v1.yaml").write_text(OPT_TEMPLATE)
    (tmp_path / "data.json").write_text(json.dumps(OPT_SAMPLES))
    space_text = (
        OPT_SPACE.replace("[off, 0.5]", "[off]") + "output: [json_schema, lines]\nchoices: [off, 2]\n"
    )
    (tmp_path / "tiny.space.yaml").write_text(space_text)
    (tmp_path / "tiny.suite.yaml").write_text(OPT_SUITE)
    suite = load_suite(tmp_path / "tiny.suite.yaml")
    dataset = suite.load_dataset()
    space = load_search_space(tmp_path / "tiny.space.yaml", suite, dataset)
    ids = [c.id for c in space.candidates()]
    assert sum("choose2" in i for i in ids) == 2 and all("json_schema" in i for i in ids if "choose2" in i)
    chosen = next(c for c in space.candidates() if c.choices == 2)
    folder = tmp_path / "prompt_templates"
    mapping = space.to_mapping(chosen, pool_spec=space.pool_spec(folder))
    assert mapping["output"]["choices"] == {"neighbours": 2} and mapping["examples"]["retrieve"]["k"] == 0
    path = folder / "tiny_v2.yaml"
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    optimizer = Evaluator(
        suite, space.to_template(chosen), MetricRegistry(), dataset=dataset,
        params=chosen.params(space), retrieval=space.retrieval(chosen),
    )  # fmt: skip
    production = Evaluator(suite, load_template(path), MetricRegistry(), dataset=dataset)
    for sample in dataset.samples:
        body = optimizer.request(sample).body()
        assert production.request(sample).body() == body, sample.id
        label_enum = body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"]
        assert label_enum == [sample.expected["label"]], "both neighbours share the sample's label"


def test_beat_lookup_sentence_says_which_family_beat_the_floor_or_that_none_did() -> None:
    from promptsweep.optimize.families import FamilyBest, against_lookup, beat_lookup_sentence
    from promptsweep.optimize.space import GATED, NEIGHBOUR_CHOICE, PROMPT_ONLY

    lookup = [0.5] * 12
    better = FamilyBest(PROMPT_ONLY, "p", 0.9, (0.9, 0.8) * 6, 1.0)
    worse = FamilyBest(GATED, "g", 0.4, (0.4, 0.5, 0.3) * 4, 0.2)
    # +0.117 over the lookup, raw p = 0.027: significant alone, not once two questions were asked.
    marginal = FamilyBest(
        NEIGHBOUR_CHOICE,
        "c",
        0.6,
        tuple(0.5 + d for d in (0.3, -0.1, 0.3, 0, 0.3, 0, 0.2, -0.1, 0.3, 0, 0.1, 0.1)),
        1.0,
    )
    alone = against_lookup([marginal], lookup, seed=0)[0]
    assert alone.lookup_p is not None and alone.lookup_p < 0.05
    assert beat_lookup_sentence([alone]) is not None and beat_lookup_sentence([alone]).startswith(
        "beat the lookup"
    )
    flat = FamilyBest(GATED, "f", 0.5, (0.5, 0.6, 0.4) * 4, 0.2)
    table = against_lookup([better, marginal, flat], lookup, seed=0)
    assert [f.lookup_p is not None and f.lookup_p < 0.05 for f in table] == [True, False, False]
    sentence = beat_lookup_sentence(table)
    assert sentence is not None
    assert sentence.startswith(
        "beat the lookup floor on the test split (Holm over 3 comparisons, p < 0.05): prompt-only (p, +0.350"
    )
    assert "neighbour choice" not in sentence, "raw p 0.027, second smallest of 3: x 2 is not significant"
    assert (
        beat_lookup_sentence(against_lookup([worse], lookup, seed=0))
        == "no family beat the lookup floor on the test split"
    )
    noisy = against_lookup([marginal, flat], lookup, seed=0)
    assert beat_lookup_sentence(noisy) == (
        "no family beat the lookup floor significantly on the test split (neighbour choice above it, within noise "
        "after Holm over 2 comparisons)"
    )
    unasked = FamilyBest(GATED, "g", 0.4, (), 0.2).against(lookup)
    assert unasked.vs_lookup is None and beat_lookup_sentence([unasked]) is None
