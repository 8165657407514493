"""Built-in metrics, the checked wrapper and the metric registry."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from promptsweep.core.answers.metrics import (
    Metric,
    MetricRegistry,
    UnknownMetricError,
    checked,
    exact_match,
    rouge_l,
    token_f1,
    token_jaccard,
    tokenize,
)

TOKEN_METRICS: list[Metric] = [token_jaccard, rouge_l, token_f1]
ALL_METRICS: list[Metric] = [exact_match, *TOKEN_METRICS]
PAIRS = [
    ("the cat sat on the mat", "the cat on the mat"),
    ("API server not ready", "apiserver_not_ready"),
    ("etcd leader election timed out", "timed out etcd leader"),
    ("a a a b", "a b b"),
    ("Pod OOMKilled", "pod oomkilled"),
    ("", "something"),
    ("x", "y"),
]


def test_tokenize_lowercases_and_splits_snake_case() -> None:
    assert tokenize("API-Server not_ready, Größe 42!") == [
        "api",
        "server",
        "not",
        "ready",
        "grösse",
        "42",
    ]
    assert tokenize("  ...  ") == []


def test_exact_match() -> None:
    assert exact_match(" Warn ", "warn") == 1.0
    assert exact_match("warn", "warning") == 0.0
    assert exact_match("", "") == 1.0


def test_rouge_l_known_value() -> None:
    # LCS = "the cat on the mat" = 5 tokens; P = 5/5, R = 5/6, F1 = 2PR/(P+R) = 10/11.
    assert rouge_l("the cat sat on the mat", "the cat on the mat") == pytest.approx(10 / 11)


def test_rouge_l_is_order_aware() -> None:
    # Same bag of tokens, reversed: LCS = 1 of 3 tokens.
    assert rouge_l("a b c", "c b a") == pytest.approx(1 / 3)
    assert token_f1("a b c", "c b a") == 1.0


def test_rouge_l_lcs_is_not_greedy() -> None:
    # Matching "a" first would give 1; the LCS is "b d e": P = R = 3/5.
    assert rouge_l("a b c d e", "b d x e a") == pytest.approx(3 / 5)


def test_token_jaccard_known_value() -> None:
    # {the, cat, sat, on, mat} vs {the, cat, on, mat}: 4 / 5.
    assert token_jaccard("the cat sat on the mat", "the cat on the mat") == pytest.approx(0.8)


def test_token_f1_counts_repeated_tokens() -> None:
    # expected [a a a b], got [a b b]: overlap a*1 + b*1 = 2; P = 2/3, R = 2/4.
    precision, recall = 2 / 3, 2 / 4
    expected = 2 * precision * recall / (precision + recall)
    assert token_f1("a a a b", "a b b") == pytest.approx(expected)


def test_snake_case_label_against_free_text() -> None:
    assert token_f1("apiserver_not_ready", "apiserver not ready") == 1.0


@pytest.mark.parametrize("metric", TOKEN_METRICS)
def test_empty_conventions(metric: Metric) -> None:
    assert metric("", "") == 1.0
    assert metric("  ", "!!") == 1.0
    assert metric("", "word") == 0.0
    assert metric("word", "") == 0.0


@pytest.mark.parametrize("metric", ALL_METRICS)
@pytest.mark.parametrize(("expected", "got"), PAIRS)
def test_bounds_and_symmetry(metric: Metric, expected: str, got: str) -> None:
    score = metric(expected, got)
    assert 0.0 <= score <= 1.0
    assert metric(got, expected) == pytest.approx(score)
    assert metric(expected, expected) == 1.0


def test_registry_names_and_aliases() -> None:
    registry = MetricRegistry()
    assert registry.names() == ["exact", "jaccard", "rouge_l", "token_f1"]
    assert registry.resolve("exact") is exact_match
    assert registry.resolve("exact_match") is exact_match
    assert registry.resolve("token_jaccard") is token_jaccard
    assert registry.resolve("rougeL") is rouge_l
    assert registry.resolve("ROUGE_L") is rouge_l
    assert registry.resolve("f1") is token_f1


def test_registry_register_and_duplicates() -> None:
    registry = MetricRegistry()

    def starts_same(expected: str, got: str) -> float:
        return float(expected[:1] == got[:1])

    registry.register("starts_same", starts_same)
    assert registry.resolve("starts_same")("abc", "axe") == 1.0
    assert "starts_same" in registry.names()
    with pytest.raises(ValueError, match="already registered"):
        registry.register("starts_same", starts_same)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("F1", starts_same)  # an alias, case-insensitively
    with pytest.raises(ValueError, match="invalid metric name"):
        registry.register("pkg:fn", starts_same)
    # A registry is independent of others.
    assert "starts_same" not in MetricRegistry().names()


@pytest.fixture
def metric_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = "promptsweep_test_custom_metrics"
    (tmp_path / f"{name}.py").write_text(
        "def first_word(expected, got):\n"
        "    return float(expected.split()[:1] == got.split()[:1])\n"
        "def too_big(expected, got):\n"
        "    return 2.0\n"
        "def wrong_type(expected, got):\n"
        "    return 'high'\n"
        "class Scorers:\n"
        "    @staticmethod\n"
        "    def always(expected, got):\n"
        "        return 1\n"
        "NOT_CALLABLE = 3\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_resolve_import_path(metric_module: str) -> None:
    registry = MetricRegistry()
    metric = registry.resolve(f"{metric_module}:first_word", field="summary")
    assert metric("pod crashed", "pod restarted") == 1.0
    assert metric("pod crashed", "node crashed") == 0.0
    assert registry.resolve(f"{metric_module}:Scorers.always")("a", "b") == 1.0


def test_imported_metric_out_of_range_names_the_metric(metric_module: str) -> None:
    metric = MetricRegistry().resolve(f"{metric_module}:too_big", field="summary")
    with pytest.raises(ValueError) as excinfo:
        metric("a", "b")
    assert str(excinfo.value) == (
        f"metric '{metric_module}:too_big' for field 'summary' returned 2.0, outside [0, 1]"
    )


def test_imported_metric_non_number_names_the_metric(metric_module: str) -> None:
    metric = MetricRegistry().resolve(f"{metric_module}:wrong_type")
    with pytest.raises(ValueError, match=rf"metric '{metric_module}:wrong_type' returned 'high'"):
        metric("a", "b")


@pytest.mark.parametrize(
    ("attr", "reason"),
    [("missing", "has no attribute 'missing'"), ("NOT_CALLABLE", "is not callable")],
)
def test_import_path_errors(metric_module: str, attr: str, reason: str) -> None:
    with pytest.raises(UnknownMetricError, match=reason):
        MetricRegistry().resolve(f"{metric_module}:{attr}")


def test_import_path_missing_module() -> None:
    with pytest.raises(UnknownMetricError, match="cannot import 'no_such_module_xyz'"):
        MetricRegistry().resolve("no_such_module_xyz:fn")


def test_unknown_metric_message_is_pinned() -> None:
    with pytest.raises(UnknownMetricError) as excinfo:
        MetricRegistry().resolve("bleu", field="summary")
    assert str(excinfo.value) == (
        "unknown metric 'bleu' for field 'summary'; known: exact, jaccard, rouge_l, token_f1 "
        "(or an import path 'package.module:function')"
    )
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize("value", [0, 1, True, 0.5, 1.0 + 1e-12, -1e-12])
def test_checked_accepts_scores(value: float) -> None:
    metric = checked("custom", lambda expected, got: value)
    assert 0.0 <= metric("a", "b") <= 1.0
    assert isinstance(metric("a", "b"), float)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), None, "1", [1]])
def test_checked_rejects_bad_scores(value: object) -> None:
    metric = checked("custom", lambda expected, got: value)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="metric 'custom'"):
        metric("a", "b")
