"""What ``promptsweep harvest`` keeps, and how long it takes, on the example suite's golden set.

2000 synthetic production inputs against the 64 golden samples: half are golden log lines with a
request id appended (``... req=17``: covered, must be dropped), half are 8 words drawn at random
from the golden lines (new inputs, a few of which repeat each other). No llama-server needed.

Run: ``python benchmarks/bench_harvest.py [N]`` (prints one line; writes nothing).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from promptsweep.core.data.suite import load_suite
from promptsweep.core.harvest.coverage import harvest
from promptsweep.core.harvest.spans import Candidate

ROOT = Path(__file__).resolve().parents[1]


def main(n: int = 2000) -> None:
    suite = load_suite(ROOT / "evals" / "k8s_triage.suite.yaml")
    dataset = suite.load_dataset()
    golden = [(s.id, s.data) for s in dataset.samples]
    words = [w for s in dataset.samples for w in str(s.data["log_line"]).split()]
    rng = random.Random(1)
    candidates = []
    for i in range(n):
        base = rng.choice(dataset.samples).data
        if i % 2:
            candidates.append(Candidate({**base, "log_line": f"{base['log_line']} req={i}"}, f"x:{i}"))
        else:
            candidates.append(
                Candidate({"log_line": " ".join(rng.sample(words, 8)), "namespace": "prod"}, f"x:{i}")
            )
    started = time.perf_counter()
    result = harvest(suite, suite.load_template(), golden, candidates, threshold=0.8)
    print(
        f"{n} inputs vs {len(golden)} golden samples: {result.covered} covered (of {n // 2} near-copies), "
        f"{len(result.kept)} kept, {result.duplicates} repeats, {time.perf_counter() - started:.1f}s"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
