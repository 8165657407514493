"""Benchmark scripts share benchmarks/RESULTS.md: each owns one marked section and rewrites only it."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = re.compile(r"<!-- section:(?P<name>[\w-]+) -->\n.*?<!-- /section:(?P=name) -->\n", re.DOTALL)


def marked(name: str, body: str) -> str:
    return f"<!-- section:{name} -->\n{body.rstrip()}\n<!-- /section:{name} -->\n"


def sections(text: str) -> str:
    """Every marked section of ``text``, in order (what another script must keep)."""
    return "".join(match.group(0) for match in SECTION.finditer(text))


def update_section(name: str, body: str, path: Path = RESULTS_MD) -> None:
    """Replace section ``name`` of the results file with ``body``, or append it."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = marked(name, body)
    pattern = re.compile(rf"<!-- section:{name} -->\n.*?<!-- /section:{name} -->\n", re.DOTALL)
    found = pattern.search(text) is not None
    path.write_text(pattern.sub(lambda _: block, text) if found else text.rstrip() + "\n\n" + block)
