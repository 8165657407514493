"""The HTML reports: self-contained, escaped, and rendered by a real headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from promptsweep.cli.main import main
from promptsweep.reporting.html import heat_color, render_leaderboard_report
from tests.conftest import in_ci
from tests.runkit import run_once

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def chromium() -> str:
    """The browser binary; skip only outside CI (under CI=true a missing browser fails)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if binary is None:
        if in_ci():
            pytest.fail(
                "chromium is not installed (apt-get install -y chromium chromium-driver)", pytrace=False
            )
        pytest.skip("chromium is not installed and CI is not set")
    return binary


def browse(binary: str, page: Path, profile: Path, *extra: str) -> str:
    proc = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=600,  # a bound only a hung browser reaches, not a busy machine
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture
def report(pytester: pytest.Pytester) -> Path:
    """Three runs of the tiny suite (the last with two hostile wrong answers); the last run's report."""
    run_once(pytester, set())
    run_once(pytester, {4})
    _, last = run_once(pytester, {0, 3})
    return last / "report.html"


def test_report_is_self_contained_and_escapes_model_text(report: Path) -> None:
    text = report.read_text()
    assert "<script>alert" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(" in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', text), "no external resources"
    assert "@import" not in text
    assert text.count("<script>") == 1  # only the filter script
    assert 'id="score-chart"' in text and 'id="category-heatmap"' in text and 'id="samples"' in text
    assert "latency p50 / p95" in text and "tokens prompt / completion" in text


def test_leaderboard_report_cli(report: Path) -> None:
    base = report.parents[2]
    assert main(["report", "--dir", str(base)]) == 0
    page = (base / "leaderboard.html").read_text()
    assert page.count('class="point"') == 3
    assert page.count('class="lb-row"') == 1
    assert main(["report", "--dir", str(base), "--run", report.parent.name, "-o", str(base / "r.html")]) == 0
    assert (base / "r.html").read_text().count('class="sample-row') == 6


def test_heat_colours_run_from_red_to_green() -> None:
    assert heat_color(0.0).startswith("hsl(0,") and heat_color(1.0).startswith("hsl(120,")
    assert heat_color(None) == "#f3f4f6"


def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    binary = chromium()
    dom = browse(binary, report, tmp_path / "profile-dom", "--dump-dom")
    # the filter script ran on load
    assert re.search(r'<body[^>]*data-filter-ready="1"', dom), dom[:500]
    assert "showing 6 of 6 samples" in dom
    # score over time: an SVG polyline with one point per run (three runs)
    chart = re.search(r'<svg id="score-chart".*?</svg>', dom, re.S)
    assert chart is not None
    points = re.findall(r'<circle class="point" data-run="[^"]+" data-score="([0-9.]+)"', chart.group(0))
    assert len(points) == 3 and float(points[0]) == 1.0 and float(points[-1]) < 1.0
    polyline = re.search(r'<polyline class="series"[^>]*points="([^"]+)"', chart.group(0))
    assert polyline is not None and len(polyline.group(1).split()) == 3
    # heatmap: three runs by three categories
    cells = re.findall(
        r'<rect class="heat-cell" data-run="[^"]+" data-category="([^"]+)" data-score="([0-9.]+)"', dom
    )
    assert len(cells) == 9 and {c for c, _ in cells} == {"disk_full", "oom_killed", "started"}
    # per-sample rows, failures first, model markup shown as text
    rows = re.findall(r'<tr class="sample-row (right|wrong)" data-right="([01])"', dom)
    assert len(rows) == 6 and rows[0] == ("wrong", "0") and sum(r == "1" for _, r in rows) == 4
    assert "<script>alert" not in dom and "&lt;script&gt;alert" in dom
    assert 'id="leaderboard"' in dom and 'id="fields"' in dom and 'id="categories"' in dom

    shot = tmp_path / "report.png"
    browse(
        binary,
        report,
        tmp_path / "profile-shot",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        "--hide-scrollbars",
    )
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    keep = os.environ.get("PROMPTSWEEP_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / "report.png")


def _wide_leaderboard(categories: int = 30, runs: int = 30) -> list[dict[str, object]]:
    names = [f"very_long_category_name_{i:02d}" for i in range(categories)]
    return [
        {
            "run": f"20260101T0000{i:02d}Z-suite",
            "suite": "suite",
            "template": {"id": "t", "version": "v1", "sha256": "ab" * 32},
            "model": {"name": "m.gguf"},
            "dataset": {"path": "/d/data.json", "sha256": "cd" * 32},
            "sample_set": "ef" * 32,
            "n": 1,
            "score": {"mean": 0.22, "low": 0.22, "high": 0.22},
            "categories": {name: (i * j % 10) / 10 for j, name in enumerate(names)},
            "latency_s": {"p50": 0.1, "p95": 0.2},
            "tokens": {"per_sample": 100.0},
            "date": f"2026-01-01T00:00:{i:02d}+00:00",
        }
        for i in range(runs)
    ]


def test_intervals_of_one_sample_print_as_a_dash() -> None:
    page = render_leaderboard_report(_wide_leaderboard(categories=2, runs=2))
    assert "0.22-0.22" not in page and "—" in page


def test_a_wide_heatmap_scrolls_inside_a_1280_px_page(tmp_path: Path) -> None:
    binary = chromium()
    page = tmp_path / "leaderboard.html"
    measure = (
        "<script>document.body.setAttribute('data-page-width', document.documentElement.scrollWidth);"
        "var box=document.getElementById('heatmap-box');"
        "document.body.setAttribute('data-box-scrolls', box.scrollWidth > box.clientWidth ? '1' : '0');</script>"
    )
    page.write_text(render_leaderboard_report(_wide_leaderboard()).replace("</body>", measure + "</body>"))
    dom = browse(binary, page, tmp_path / "profile", "--window-size=1280,900", "--dump-dom")
    width = re.search(r'data-page-width="(\d+)"', dom)
    assert width is not None, dom[:500]
    assert int(width.group(1)) <= 1280, "the page itself must not scroll sideways at 1280 px"
    assert 'data-box-scrolls="1"' in dom, "30 categories are wider than the page: the heatmap scrolls"
