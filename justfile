# Recipes mirror the eval workflow. They use the project's .venv (see README).
export PATH := justfile_directory() + "/.venv/bin:" + env_var('PATH')

golden := "../shared/datasets/k8s-golden-v1.json"

default:
    @just --list

# Install the package, llama-server (built once into ~/.cache/promptsweep) and the default model.
setup:
    pip install -q -e '.[dev]'
    promptsweep server ensure

# Score the example suite on the managed llama-server; exit 1 if the gate fails.
# No setup step: the plugin finds (or builds, once) llama-server and the model when it first
# needs them, so a warm re-run costs only pytest itself.
eval *ARGS:
    pytest evals/ -n auto {{ARGS}}

# The baseline experiment (evals/experiments/baseline-v1.yaml).
eval-baseline *ARGS:
    pytest evals/ --experiment baseline-v1 {{ARGS}}

# Any experiment by name or path.
experiment NAME *ARGS:
    pytest evals/ --experiment {{NAME}} {{ARGS}}

# Deltas between two runs with paired intervals; exit 1 on a significant drop.
compare A B:
    promptsweep compare {{A}} {{B}} --markdown .promptsweep/compare.md --fail-on-regression

leaderboard *ARGS:
    promptsweep leaderboard {{ARGS}}

# Write .promptsweep/leaderboard.html (each run also has its own report.html).
report:
    promptsweep report

# Sweep the prompt search space; writes prompt_templates/<id>_vN.yaml.
optimize-prompts space="evals/k8s_triage.space.yaml" *ARGS:
    pytest evals/ --optimize -n auto --search-space {{space}} {{ARGS}}

# Optimize on the small space, then score the winner on the full golden dataset.
optimize-and-validate space="evals/k8s_triage.space-small.yaml":
    pytest evals/ --optimize -n auto --search-space {{space}}
    pytest evals/ -n auto --golden {{golden}} --prompt-template "$(ls -t prompt_templates/*_v*.yaml | head -1)"

# The plugin's own hot paths (pytest-benchmark, benchmarks/test_hot_paths.py), compared with the
# baseline kept in the repository (benchmarks/baselines, not the gitignored .benchmarks/): a median
# more than 50% above the baseline's fails the recipe. -n 0: pytest-benchmark does not time under xdist.
hot_paths := "benchmarks/test_hot_paths.py -n 0 -p no:cacheprovider --benchmark-storage=file://benchmarks/baselines"

# The real-server scripts write benchmarks/RESULTS.md; ARGS go to bench_runtime.py.
# Hot paths vs the saved baseline (fails on a median >50% slower), then the real-server benchmarks.
bench *ARGS:
    pytest {{hot_paths}} --benchmark-compare --benchmark-compare-fail=median:50%
    python benchmarks/bench_runtime.py {{ARGS}}
    python benchmarks/bench_search.py
    python benchmarks/bench_optimize.py

# Writes benchmarks/baselines/<machine>/NNNN_hot_paths.json (commit it) and its RESULTS.md section;
# save on a quiet machine (the section states the load average).
# Save a new hot-path baseline for `just bench` to compare with.
bench-save *ARGS:
    pytest {{hot_paths}} --benchmark-save=hot_paths {{ARGS}}
    python benchmarks/hot_paths_md.py

# What CI runs: browser for the HTML report test, llama-server + model, then the tests.
# CI=true turns a missing tool (cmake, a compiler, chromium) into a failure instead of a skip;
# --durations=15 lists the slowest tests, so a test that grows shows up in every run.
ci:
    command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)
    just setup
    CI=true just test --durations=15

# The tests on 2 workers. --dist loadgroup keeps the xdist_group("real_server") tests (every
# test that uses the real llama-server, see tests/conftest.py) on one worker, one at a time.
# --timeout: a hung test fails with its stack after 15 minutes (no test needs a tenth of that)
# instead of holding CI until the job's own limit. Any exit code but 0 fails the recipe,
# "no tests collected" (5) included.
test *ARGS:
    pytest tests/ -n 2 --dist loadgroup --timeout 900 {{ARGS}}

lint:
    ruff check src tests benchmarks
    ruff format --check src tests
    mypy
