"""Hostile files and careless secrets: one test (or more) per attack that once got through.

Denial-of-service cases run pytest in a child process whose address space is capped
(``resource.setrlimit``): an attack that is not stopped dies of MemoryError or is killed by
the timeout, instead of taking the machine, and the test fails.
"""

from __future__ import annotations

import json
import os
import re
import resource
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptsweep.core.io.errors import ConfigError
from promptsweep.core.io.load import load_yaml_file
from promptsweep.core.templates.sandbox import RenderLimits
from promptsweep.core.templates.template import TemplateRenderError, template_from_mapping
from tests.fakeserver import FakeLLMServer, Reply, chat_reply, user_text
from tests.suitekit import SAMPLES, make_suite, oracle
from tests.test_telemetry import OTLPReceiver

KEY = "sk-planted-5f4e3d2c1b0a9988"
MEMORY_CAP = 2 * 1024**3


def run_capped(
    cwd: Path, *args: str, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``pytest *args`` in ``cwd`` in a child process capped at ``MEMORY_CAP`` bytes of address space."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    child_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "OTEL_", "PROMPTSWEEP_"))
    }
    child_env.update(env or {})
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=cap,
        env=child_env,
    )
    print(f"capped run took {time.monotonic() - started:.1f}s: {' '.join(args)}")  # the figure, with -s
    return done


def output(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def assert_one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    text = output(done)
    assert done.returncode in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.USAGE_ERROR), text[-3000:]
    for needle in needles:
        assert needle in text, text[-3000:]
    for raw in ("Traceback", "MemoryError", "INTERNALERROR", "RecursionError:", "UnicodeDecodeError"):
        assert raw not in text, text[-3000:]


def written_files(root: Path, *, skip: tuple[str, ...] = ()) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and p.name not in skip]


# ============================================================== credentials in endpoint URLs

WAYS = ("option", "env", "userinfo", "query", "experiment", "ini")


def _echoing_oracle() -> Any:
    """Answers like ``oracle``, except sample 1 gets an error whose body echoes the key (a proxy
    that repeats the request), so error messages are checked too."""
    right = oracle()

    def respond(body: dict[str, Any]) -> Reply:
        if "LOG-1 " in user_text(body):
            return Reply(status=400, body={"error": f"bad request from api_key={KEY} Bearer {KEY}"})
        reply: Reply = right(body)
        return reply

    return respond


def _plant(
    pytester: pytest.Pytester, way: str, url: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], set[str]]:
    """Pass KEY the given way; returns the pytest args and the files that hold it on purpose."""
    base = url.replace("http://", "")
    with_userinfo = f"http://user:{KEY}@{base}"
    with_query = f"{url}/v1?api_key={KEY}&api-version=2024"
    if way == "option":
        return ["--llm-url", url, "--llm-api-key", KEY], set()
    if way == "env":
        monkeypatch.setenv("PROMPTSWEEP_API_KEY", KEY)
        return ["--llm-url", url], set()
    if way == "userinfo":
        return ["--llm-url", with_userinfo], set()
    if way == "query":
        return [f"--llm-url={with_query}"], set()
    both = f"http://user:{KEY}@{base}/v1?token={KEY}"
    if way == "experiment":
        (pytester.path / "leaky.yaml").write_text(
            f"experiment_id: leaky\nmodel:\n  endpoint: {both}\nllm_config: {{temperature: 0.0}}\n"
        )
        return ["--experiment", "leaky.yaml"], {"leaky.yaml"}
    pytester.makeini(f"[pytest]\nllm_url = {both}\n")
    return [], {"tox.ini"}


def _key_was_sent(fake: FakeLLMServer, way: str) -> bool:
    import base64

    auths = [h.get("Authorization", "") for h in fake.headers_seen]
    if way in ("option", "env"):
        return bool(auths) and all(a == f"Bearer {KEY}" for a in auths)
    if way == "userinfo":
        expected = "Basic " + base64.b64encode(f"user:{KEY}".encode()).decode()
        return bool(auths) and all(a == expected for a in auths)
    return bool(fake.paths_seen) and all(KEY in path for path in fake.paths_seen)


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    r = OTLPReceiver()
    yield r
    r.close()


@pytest.mark.parametrize("way", WAYS)
def test_planted_key_reaches_no_artifact_output_or_span(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, receiver: OTLPReceiver, way: str
) -> None:
    """The worst case of the report: a server without /v1/models (the identity falls back to the
    endpoint) and one that echoes the key in an error. Every file under the project, the terminal,
    the CLI and the exported spans are searched for the key."""
    make_suite(pytester, threshold=0.0)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    with FakeLLMServer(_echoing_oracle(), models=False) as fake:
        args, planted = _plant(pytester, way, fake.url, monkeypatch)
        result = pytester.runpytest_subprocess(
            "tiny.suite.yaml", *args, "-n", "2", "-rA", "-v", "--junitxml", "junit.xml", "--llm-retries=0"
        )
        assert _key_was_sent(fake, way), (fake.headers_seen, fake.paths_seen)
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, text  # sample 1 errored: every error path ran
    assert "ERRORED" in text and "HTTP 400" in text

    cli_out = ""
    for command in (
        ["leaderboard"],
        ["leaderboard", "--format", "json"],
        ["leaderboard", "--rebuild"],
        ["cache", "stats"],
        ["report"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "promptsweep.cli.main", *command, "--dir", ".promptsweep"],
            cwd=pytester.path,
            capture_output=True,
            text=True,
            check=True,
        )
        cli_out += done.stdout + done.stderr
    assert "fake-model" not in cli_out and "127.0.0.1" in cli_out  # the model is named by its endpoint

    files = written_files(pytester.path, skip=(*planted, "tiny.suite.yaml"))
    names = {p.name for p in files}
    assert {
        "config.json",
        "results.jsonl",
        "metrics.json",
        "summary.md",
        "report.html",
        "cache.sqlite3",
    } <= names
    assert {"leaderboard.json", "leaderboard.html", "junit.xml"} <= names
    leaks = [str(p.relative_to(pytester.path)) for p in files if KEY.encode() in p.read_bytes()]
    assert leaks == []
    assert KEY not in text
    assert KEY not in cli_out
    assert receiver.bodies, "spans were exported"
    assert not [b for b in receiver.bodies if KEY.encode() in b]

    run_dir = next((pytester.path / ".promptsweep" / "runs").iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["url"].startswith("http://")
    if way in ("userinfo", "experiment", "ini"):
        assert "***@" in config["model"]["url"]
    with sqlite3.connect(pytester.path / ".promptsweep" / "cache.sqlite3") as db:
        models = {row[0] for row in db.execute("SELECT DISTINCT model FROM responses")}
    assert models == {"http://127.0.0.1:" + fake.url.rsplit(":", 1)[1]}  # scheme://host:port, nothing else


def test_real_server_reached_with_credentials_in_its_url_leaks_nothing(
    pytester: pytest.Pytester, llama_server_url: str
) -> None:
    """The real llama-server, addressed with userinfo and ?api_key= (it ignores both): the run
    scores every sample, and no file or output carries the key."""
    make_suite(pytester, threshold=0.0)
    template = pytester.path / "template.yaml"  # short answers: what leaks is the point here
    template.write_text(template.read_text().replace("max_tokens: 64", "max_tokens: 8"))
    base = llama_server_url.replace("http://", "")
    url = f"http://user:{KEY}@{base}/v1?api_key={KEY}"
    result = pytester.runpytest_subprocess(
        "tiny.suite.yaml", "--llm-url", url, "--llm-timeout", "600", "-n", "2"
    )
    result.assert_outcomes(passed=6)
    text = result.stdout.str() + result.stderr.str()
    assert KEY not in text
    files = written_files(pytester.path, skip=("tiny.suite.yaml",))
    assert [p.name for p in files if KEY.encode() in p.read_bytes()] == []
    run_dir = next((pytester.path / ".promptsweep" / "runs").iterdir())
    model = json.loads((run_dir / "config.json").read_text())["model"]
    assert model["url"] == f"http://***@{base}/v1?api_key=***"
    assert model["is_llama_server"] and model["model_path"].endswith(".gguf")


def test_unreachable_url_with_credentials_is_named_without_them(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    url = f"http://user:{KEY}@127.0.0.1:9/v1?api_key={KEY}"
    result = pytester.runpytest_subprocess("--llm-url", url)
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "LLM endpoint http://***@127.0.0.1:9/v1?api_key=*** is unreachable" in text
    assert KEY not in text


def test_bad_scheme_url_is_not_echoed_with_its_key(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    result = pytester.runpytest_subprocess("--llm-url", f"ftp://me:{KEY}@host/x?token={KEY}")
    text = result.stdout.str() + result.stderr.str()
    assert "--llm-url must start with http:// or https://" in text
    assert KEY not in text


# ============================================================== YAML alias bombs

BOMB = "\n".join(
    [
        '  a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
        *(f"  {n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)),
    ]
)


def _bomb_template(where: str) -> str:
    text = "id: bomb\nuser: '{{ logs }}'\ninputs:\n  required: [logs]\n"
    if where == "model_defaults":
        return text + "model_defaults:\n" + BOMB + "\n"
    return text.replace(
        "  required: [logs]\n", "  required: [logs]\n  optional:\n" + textwrap.indent(BOMB, "  ") + "\n"
    )


@pytest.mark.parametrize("where", ["model_defaults", "inputs.optional"])
def test_alias_bomb_in_a_template_is_refused_quickly(pytester: pytest.Pytester, where: str) -> None:
    make_suite(pytester)
    (pytester.path / "template.yaml").write_text(_bomb_template(where))
    done = run_capped(pytester.path, "tiny.suite.yaml", "--llm-server=off")
    assert_one_line_error(done, "template.yaml: refused: aliases (*name) expand this document to more than")


def test_alias_bomb_in_a_suite_is_refused_and_leaves_no_run_dir(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester)
    suite.write_text(suite.read_text() + "llm:\n" + BOMB + "\n")
    with FakeLLMServer(oracle()) as fake:
        done = run_capped(pytester.path, "tiny.suite.yaml", "--llm-url", fake.url)
    assert_one_line_error(done, "tiny.suite.yaml: refused: aliases (*name) expand")
    assert not (pytester.path / ".promptsweep" / "runs").exists()


@pytest.mark.parametrize("kind", ["suite", "template", "dataset", "experiment", "search space"])
def test_every_yaml_the_plugin_reads_is_bounded(tmp_path: Path, kind: str) -> None:
    from promptsweep.core.data.dataset import load_dataset
    from promptsweep.core.data.experiment import load_experiment
    from promptsweep.core.data.suite import load_suite
    from promptsweep.core.templates.template import load_template
    from promptsweep.optimize.space import load_search_space

    path = tmp_path / "bomb.yaml"
    path.write_text("x:\n" + BOMB + "\n")
    loaders = {
        "suite": lambda: load_suite(path),
        "template": lambda: load_template(path),
        "dataset": lambda: load_dataset(path, fields=["label"]),
        "experiment": lambda: load_experiment(path, tmp_path),
        "search space": lambda: load_search_space(path, None, None),  # type: ignore[arg-type]
    }
    with pytest.raises(ConfigError, match=re.escape(f"{path}: refused: aliases (*name) expand")):
        loaders[kind]()


def test_ordinary_aliases_still_load(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(
        "base: &base {temperature: 0.0, max_tokens: 64}\nfast:\n  <<: *base\n  max_tokens: 8\nsame: *base\n"
    )
    assert load_yaml_file(path) == {
        "base": {"temperature": 0.0, "max_tokens": 64},
        "fast": {"temperature": 0.0, "max_tokens": 8},
        "same": {"temperature": 0.0, "max_tokens": 64},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &a [*a]\n", "refers to a value that contains it"),
        ("x: " + "[" * 200 + "]" * 200 + "\n", "nested more than 100 levels deep"),
        ("x: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 100 levels deep"),
        ("n: " + "9" * 5000 + "\n", "a value cannot be read"),
    ],
    ids=["recursive", "deep", "deeper-than-the-stack", "huge-int"],
)
def test_yaml_bounds_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_yaml_file(path)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


# ============================================================== templates that ask for work

DOS_TEMPLATES = {
    "repeat": ("{{ 'a' * 10**9 }}", "a repeated value (*) would make 1000000000 characters"),
    "center": ("{{ 'a'|center(10**9) }}", "center() width would make 1000000000 characters"),
    "power": ("{{ 3**(10**8) }}", "a power (**) would have about 100000000 bits"),
    "nested-loops": (
        "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
        "the template ran more than 1000000 steps",
    ),
    "huge-range": ("{{ range(10**9)|list }}", "OverflowError: Range too big"),
}


@pytest.mark.parametrize("case", list(DOS_TEMPLATES))
def test_template_dos_ends_with_a_named_error(pytester: pytest.Pytester, case: str) -> None:
    source, message = DOS_TEMPLATES[case]
    make_suite(pytester)
    template = pytester.path / "template.yaml"
    template.write_text(template.read_text().replace("  Log: {{ logs }}", "  Log: {{ logs }} " + source))
    with FakeLLMServer(oracle()) as fake:
        done = run_capped(pytester.path, "tiny.suite.yaml", "--llm-url", fake.url)
        assert fake.requests == []
    assert_one_line_error(done, "template 'tiny'", "template.yaml", "sample 'disk_full-k0'", message)


def test_oversized_prompt_is_refused_before_it_is_sent(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    template = pytester.path / "template.yaml"
    big = "{{ 'a' * 300000 }}{{ 'b' * 300000 }}"  # each value is fine, the prompt is not
    template.write_text(template.read_text().replace("  Log: {{ logs }}", "  Log: {{ logs }} " + big))
    with FakeLLMServer(oracle()) as fake:
        done = run_capped(
            pytester.path, "tiny.suite.yaml", "--llm-url", fake.url, "--max-prompt-chars", "500000"
        )
        assert fake.requests == []
    assert_one_line_error(
        done,
        "template 'tiny'",
        "the prompt for sample 'disk_full-k0' is 600",
        "characters, over the limit of 500000 (--max-prompt-chars)",
    )
    with FakeLLMServer(oracle()) as fake:
        ok = run_capped(pytester.path, "tiny.suite.yaml", "--llm-url", fake.url, "--llm-cache=off")
        assert len(fake.requests) == 6  # the default limit (1 000 000) lets it through
    assert ok.returncode == 0, output(ok)[-2000:]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ '%0999999999d' % 1 }}", "a %-format width"),
        ("{{ '%*d' % (999999999, 1) }}", "a %-format width"),
        ("{{ '{:>999999999}'.format(1) }}", "a format width"),
        ("{{ '{:>{w}}'.format(1, w=999999999) }}", "a format width"),
        ("{{ 'a'.ljust(10**9) }}", "str.ljust() width"),
        ("{{ 'a'.zfill(10**9) }}", "str.zfill() width"),
        ("{{ ('\t' * 1000).expandtabs(999999) }}", "str.expandtabs() result"),
        ("{{ ('a' * 100000)|replace('a', 'b' * 1000) }}", "a replace() result"),
        ("{{ ('a' * 100000).replace('a', 'b' * 1000) }}", "a replace() result"),
        ("{{ ('x' * 1000).join(['y' * 1000] * 1000) }}", "a join() result"),
        ("{{ (['y' * 1000] * 1000)|join('x' * 1000) }}", "a join() result"),
        ("{{ ('a\n' * 1000)|indent(999999) }}", "an indent() result"),
        ("{{ ('a' * 1000)|wordwrap(1, wrapstring='x' * 10000) }}", "a wordwrap() result"),
        ("{{ ('a' * 1000)|wordwrap(1, True, 'x' * 10000) }}", "a wordwrap() result"),
        ("{{ '%s'|format('a' * 10**6 ~ 'a') }}", "over the limit"),
        ("{{ ('a' * 900000) + ('a' * 900000) }}", "a concatenation (+)"),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "a concatenation (~)",
        ),
        (
            "{% set x %}{% for i in range(100000) %}{{ 'a' * 1000 }}{% endfor %}{% endset %}",
            "produced more than 10000000 characters in all",
        ),
        ("{{ range(100000)|map('center', 100000)|list|length }}", "produced more than"),
        ("{% for i in range(100000) %}" + "constant text " * 20 + "{% endfor %}", "produced more than"),
        ("{% set big = 'a' * 1000000 %}" + "{{ big }}" * 20, "produced more than"),
        ("{% for a in range(5) recursive %}{{ loop(range(99999)) }}{% endfor %}", "recursion too deep"),
        (
            "{% for a in range(3) recursive %}{% if loop.depth < 3 %}{{ loop(range(99999)) }}{% endif %}{% endfor %}",
            "ran more than 1000000 steps",
        ),
        ("{{ ([[1]] * 100000)|sum(start=[]) }}", "sum() only adds numbers"),
        ("{{ 'x'.translate({120: 'y' * 10**6}) }}", "str.translate() is not available"),
        ("{{ 2 ** 5000 * 2 ** 5000 }}", "bits"),
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recursion too deep"),
        ("{{ lipsum(10**6) }}", "'lipsum' is undefined"),
        ("{{ 1 / 0 }}", "ZeroDivisionError: division by zero"),
    ],
)
def test_sandbox_limits(source: str, message: str) -> None:
    template = template_from_mapping({"id": "evil", "user": source})
    # Each case must meet its own limit, not the clock: a million steps can pass the default
    # 10 s on a busy machine (test_render_time_limit covers the clock).
    untimed = RenderLimits(timeout_s=3600)
    with pytest.raises(TemplateRenderError, match=re.escape(message)) as info:
        template.render({"logs": "x"}, sample_id="s1", limits=untimed)
    assert "template 'evil'" in str(info.value)


def test_render_time_limit(pytester: pytest.Pytester) -> None:
    """Under the step budget but over --template-timeout: some 650 000 steps take far longer
    than 10 ms on any machine."""
    make_suite(pytester)
    template = pytester.path / "template.yaml"
    loop = "{% for i in range(50000) %}{% for j in range(10) %}{% endfor %}{% endfor %}"
    template.write_text(template.read_text().replace("  Log: {{ logs }}", "  Log: {{ logs }} " + loop))
    done = run_capped(pytester.path, "tiny.suite.yaml", "--llm-server=off", "--template-timeout", "0.01")
    assert_one_line_error(
        done, "sample 'disk_full-k0'", "rendering took longer than the 0.01s limit (--template-timeout)"
    )


def test_ordinary_templates_render_as_before() -> None:
    template = template_from_mapping(
        {
            "id": "fine",
            "system": "{% for k, v in rules|dictsort %}{{ loop.index }}. {{ k }}={{ v }}\n{% endfor %}",
            "user": "{{ 'Log: ' ~ logs|upper }} {{ '%5s|' % 'x' }} {{ '{:>5}'.format('y') }} "
            "{{ logs|center(11) }} {{ ['a', 'b']|join(', ') }} {{ (2 ** 10) * 3 }} {{ '-' * 3 }}",
        }
    )
    messages = template.render({"logs": "hello", "rules": {"b": 2, "a": 1}}, sample_id="s1")
    assert messages == [
        {"role": "system", "content": "1. a=1\n2. b=2"},
        {"role": "user", "content": "Log: HELLO     x|     y    hello    a, b 3072 ---"},
    ]


def test_keyboard_interrupt_is_never_swallowed() -> None:
    class Interrupting:
        def __str__(self) -> str:
            raise KeyboardInterrupt

    template = template_from_mapping({"id": "t", "user": "{{ logs }}"})
    with pytest.raises(KeyboardInterrupt):
        template.render({"logs": Interrupting()}, sample_id="s1")


def test_limits_are_configurable() -> None:
    template = template_from_mapping({"id": "t", "system": "{{ 'a' * 30 }}", "user": "{{ 'b' * 20 }}"})
    with pytest.raises(
        TemplateRenderError, match="the prompt for sample 's1' is 50 characters, over the limit of 40"
    ):
        template.render({}, sample_id="s1", limits=RenderLimits(max_prompt_chars=40))
    with pytest.raises(TemplateRenderError, match="a repeated value"):
        template.render({}, sample_id="s1", limits=RenderLimits(max_prompt_chars=25))
    assert template.render({}, limits=RenderLimits(max_prompt_chars=50))[1]["content"] == "b" * 20


# ============================================================== files that are not templates

SHADOW = (
    "root:$6$saltsalt$Zm9vYmFyYmF6cXV4SECRETHASH:20228:0:99999:7:::\n"
    "daemon:*:20228:0:99999:7:::\n"
    "alice:$y$j9T$AnotherSECRETHASH0123:20228:0:99999:7:::\n"
)


@pytest.mark.parametrize("how", ["suite", "option", "experiment"])
def test_a_secret_file_given_as_template_is_not_echoed(pytester: pytest.Pytester, how: str) -> None:
    make_suite(pytester)
    shadow = pytester.path / "shadow"
    shadow.write_text(SHADOW)
    args = ["tiny.suite.yaml", "--llm-server=off"]
    if how == "suite":
        suite = pytester.path / "tiny.suite.yaml"
        suite.write_text(suite.read_text().replace("template: template.yaml", f"template: {shadow}"))
    elif how == "option":
        args += ["--prompt-template", str(shadow)]
    else:
        (pytester.path / "exp.yaml").write_text(f"experiment_id: e\nprompt: {shadow}\n")
        args += ["--experiment", "exp.yaml"]
    result = pytester.runpytest_subprocess(*args)
    text = result.stdout.str() + result.stderr.str()
    assert f"{shadow}: not a prompt template: none of its 3 top-level keys is a prompt template key" in text
    for secret in ("SECRETHASH", "root:", "alice", "daemon", "20228"):
        assert secret not in text


def test_a_secret_file_given_as_suite_or_experiment_is_not_echoed(pytester: pytest.Pytester) -> None:
    (pytester.path / "x.suite.yaml").write_text(SHADOW)
    (pytester.path / "exp.yaml").write_text(SHADOW)
    for args in (["x.suite.yaml", "--llm-server=off"], ["--experiment", "exp.yaml", "--llm-server=off"]):
        result = pytester.runpytest_subprocess(*args)
        text = result.stdout.str() + result.stderr.str()
        assert "not a suite: none of its 3" in text or "not an experiment: none of its 3" in text, text
        assert "SECRETHASH" not in text and "root:" not in text


def test_unknown_keys_are_named_only_when_they_are_plain_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        template_from_mapping({"id": "t", "user": "x", "extra_key": 1, "root:$6$SECRETHASH:1:2::": None})
    message = str(info.value)
    assert "extra_key: unknown key 'extra_key'" in message
    assert "<a key of 24 characters>: unknown key '<a key of 24 characters>'" in message
    assert "SECRETHASH" not in message


# ============================================================== symbolic links under .promptsweep


def test_symlinked_leaderboard_lock_does_not_truncate_its_target(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.0)
    victim = pytester.path / "precious.txt"
    victim.write_text("do not truncate me\n")
    base = pytester.path / ".promptsweep"
    base.mkdir()
    (base / ".leaderboard.json.lock").symlink_to(victim)
    with FakeLLMServer(oracle()) as fake:
        result = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url)
    result.assert_outcomes(passed=6)
    assert victim.read_text() == "do not truncate me\n"
    result.stderr.fnmatch_lines(
        ["*could not write the leaderboard*.leaderboard.json.lock is a symbolic link*"]
    )


def test_symlinked_cache_is_refused_and_its_target_untouched(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    victim = pytester.path / "notes.txt"
    victim.write_text("my notes\n")
    base = pytester.path / ".promptsweep"
    base.mkdir()
    (base / "cache.sqlite3").symlink_to(victim)
    with FakeLLMServer(oracle()) as fake:
        result = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url)
        assert fake.requests == []
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*cache.sqlite3 is a symbolic link; refusing to follow it*cache clear*"])
    assert victim.read_text() == "my notes\n"
    # `cache clear` removes the link, never its target; the next run works.
    subprocess.run(
        [sys.executable, "-m", "promptsweep.cli.main", "cache", "clear", "--dir", str(base)], check=True
    )
    assert not (base / "cache.sqlite3").is_symlink() and victim.read_text() == "my notes\n"
    with FakeLLMServer(oracle()) as fake:
        pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url).assert_outcomes(passed=6)


def test_every_artifact_gets_one_mode_that_respects_the_umask(pytester: pytest.Pytester) -> None:
    make_suite(pytester, threshold=0.0)
    with FakeLLMServer(oracle()) as fake:
        done = subprocess.run(
            [
                "sh",
                "-c",
                f'umask 027 && exec "{sys.executable}" -m pytest -p no:cacheprovider tiny.suite.yaml --llm-url {fake.url}',
            ],
            cwd=pytester.path,
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
        )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    base = pytester.path / ".promptsweep"
    modes = {str(p.relative_to(base)): stat.S_IMODE(p.stat().st_mode) for p in base.rglob("*") if p.is_file()}
    assert {"cache.sqlite3", "leaderboard.json", "leaderboard.html"} <= set(modes)
    assert any(name.endswith("results.jsonl") for name in modes)
    assert set(modes.values()) == {0o640}, modes


# ============================================================== a damaged cache


def test_corrupt_cache_file_is_removed_by_cache_clear(pytester: pytest.Pytester) -> None:
    make_suite(pytester)
    base = pytester.path / ".promptsweep"
    base.mkdir()
    (base / "cache.sqlite3").write_bytes(b"this is not a database" * 100)
    with FakeLLMServer(oracle()) as fake:
        result = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*cannot be used*promptsweep cache clear*"])
    done = subprocess.run(
        [sys.executable, "-m", "promptsweep.cli.main", "cache", "clear", "--dir", str(base)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "removed the cache files (the cache could not be used" in done.stdout
    with FakeLLMServer(oracle()) as fake:
        pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url).assert_outcomes(passed=6)
    (base / "cache.sqlite3").write_bytes(b"damaged again" * 100)
    with FakeLLMServer(oracle()) as fake:  # --llm-cache-clear recovers it too
        result = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url, "--llm-cache-clear")
    result.assert_outcomes(passed=6)
    result.stderr.fnmatch_lines(["*response cache removed (it could not be used: *)*"])


def _corrupt_pages(path: Path) -> None:
    """Overwrite every page after the first with garbage: the header opens, reads fail."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    for start in range(page, len(data), page):
        data[start : start + page] = b"\xa5" * min(page, len(data) - start)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["in-process", "xdist"])
def test_damaged_cache_pages_are_announced_in_the_summary(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    make_suite(pytester)
    long = [{**s, "summary": s["summary"] + " " + "padding " * 400} for s in SAMPLES]
    (pytester.path / "data.json").write_text(json.dumps(long))
    with FakeLLMServer(oracle()) as fake:
        pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url).assert_outcomes(passed=6)
        base = pytester.path / ".promptsweep"
        with sqlite3.connect(base / "cache.sqlite3") as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _corrupt_pages(base / "cache.sqlite3")
        result = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url, *workers)
    result.assert_outcomes(passed=6)  # the calls were made without the cache
    result.stdout.fnmatch_lines(
        [
            "*the response cache*cache.sqlite3 failed * time(s) (*malformed*); those calls were made without it*cache clear*"
        ]
    )


# ============================================================== malformed files


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "data.json",
            "[" * 100000 + "]" * 100000,
            "data.json:1: values are nested more than 100 levels deep",
        ),
        ("data.json", '[{"a": ' * 150 + "1" + "}]" * 150, "nested more than 100 levels"),
        ("data.jsonl", '{"a": ' * 100000 + "1" + "}" * 100000 + "\n", "data.jsonl:1: values are nested"),
        ("data.json", b'[{"line": "caf\xe9"}]', "data.json:1: not valid UTF-8 (byte 0xe9 at offset 14)"),
        ("template.yaml", b"id: tiny\nuser: '\xff\xfe'\n", "template.yaml:2: not valid UTF-8 (byte 0xff"),
        ("tiny.suite.yaml", b"name: tiny\n\x80\n", "tiny.suite.yaml:2: not valid UTF-8"),
        (
            "data.json",
            "\ufeff[1]".encode("utf-16"),
            "data.json: the file is UTF-16/UTF-32 encoded; save it as UTF-8",
        ),
        ("data.json", "[" + "9" * 5000 + "]", "data.json:1: a value cannot be read"),
    ],
    ids=[
        "deep-json",
        "deep-json-records",
        "deep-jsonl",
        "latin1-json",
        "bad-yaml-bytes",
        "bad-suite-bytes",
        "utf16",
        "huge-int",
    ],
)
def test_malformed_files_are_one_line_errors(
    pytester: pytest.Pytester, name: str, content: str | bytes, message: str
) -> None:
    make_suite(pytester)
    if name == "data.jsonl":
        suite = pytester.path / "tiny.suite.yaml"
        suite.write_text(suite.read_text().replace("dataset: data.json", "dataset: data.jsonl"))
    path = pytester.path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    done = run_capped(pytester.path, "tiny.suite.yaml", "--llm-server=off")
    assert_one_line_error(done, message)


@pytest.mark.parametrize("name", ["data.json", "data.jsonl", "data.yaml", "template.yaml", "tiny.suite.yaml"])
def test_a_utf8_bom_is_accepted_in_every_format(pytester: pytest.Pytester, name: str) -> None:
    make_suite(pytester, threshold=0.0)
    suite = pytester.path / "tiny.suite.yaml"
    if name == "data.jsonl":
        (pytester.path / "data.jsonl").write_text("".join(json.dumps(s) + "\n" for s in SAMPLES))
        suite.write_text(suite.read_text().replace("dataset: data.json", "dataset: data.jsonl"))
    elif name == "data.yaml":
        (pytester.path / "data.yaml").write_text(json.dumps(SAMPLES))  # JSON is YAML
        suite.write_text(suite.read_text().replace("dataset: data.json", "dataset: data.yaml"))
    path = pytester.path / name
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    with FakeLLMServer(oracle()) as fake:
        pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url).assert_outcomes(passed=6)


# ============================================================== summary.md and the terminal

HOSTILE = [
    "[click](javascript:alert(3)) and more",
    "<script>alert(1)</script>",
    "<svg onload=alert(2)>",
    "| `x` \x1b]52;c;cHduZWQ=\x07 (an OSC 52 clipboard write)",
]


def test_summary_md_and_terminal_do_not_carry_markup_or_escapes(pytester: pytest.Pytester) -> None:
    samples = [dict(s) for s in SAMPLES]
    samples[5]["label"] = "<svg onload=alert(9)>"
    make_suite(pytester, threshold=0.99, samples=samples)

    def respond(body: dict[str, Any]) -> Reply:
        text = user_text(body)
        i = next(i for i in range(6) if f"LOG-{i} " in text)
        answer = {"label": samples[i]["label"], "severity": samples[i]["severity"]}
        return chat_reply(json.dumps({**answer, "summary": HOSTILE[i % len(HOSTILE)]}))

    with FakeLLMServer(respond) as fake:
        result = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-url", fake.url)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    terminal = result.stdout.str() + result.stderr.str()
    assert "summary=[click](javascript:alert(3))" in terminal  # the model output is shown ...
    assert "\x1b" not in terminal and "\x07" not in terminal  # ... without its control characters
    run_dir = next((pytester.path / ".promptsweep" / "runs").iterdir())
    summary = (run_dir / "summary.md").read_text()
    for raw in ("<script", "<svg", "\x1b", "\x07", "| `x`"):
        assert raw not in summary, raw
    assert not re.search(r"(?<!\\)\]\(javascript", summary)  # a link needs an unescaped "]("
    assert "summary=\\[click\\](javascript:alert(3))" in summary
    assert "&lt;script>alert(1)&lt;/script>" in summary
    assert "&lt;svg onload=alert(2)>" in summary
    assert "\\| \\`x\\` ?\\]52;c;cHduZWQ=?" in summary
    assert "&lt;svg onload=alert(9)>" in summary  # a label from the data, in the categories table
    assert "overall 0." in summary and " < 0.990" in summary  # comparisons stay readable


# ============================================================== the managed server's API key

FAKE_LLAMA = textwrap.dedent(
    """\
    import json, os, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    args = sys.argv[1:]
    if args == ["--version"]:
        print("version: 4242 (fake0042)"); print("built with fake-cc for testing"); sys.exit(0)
    opt = lambda name: args[args.index(name) + 1]
    key = os.environ.get("LLAMA_API_KEY")
    open(os.environ["FAKE_LLAMA_LOG"], "a").write(json.dumps({"argv": args, "key_set": bool(key)}) + "\\n")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass
        def _send(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        def _authorized(self):
            return not key or self.headers.get("Authorization") == "Bearer " + key
        def do_GET(self):
            if self.path in ("/health", "/v1/models"):
                return self._send(200, {"status": "ok", "data": [{"id": "fake"}]})
            if not self._authorized():
                return self._send(401, {"error": "Invalid API Key"})
            self._send(200, {"model_path": opt("-m"), "build_info": "b4242-fake", "total_slots": 2})
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if not self._authorized():
                return self._send(401, {"error": "Invalid API Key"})
            text = " ".join(m["content"] for m in body["messages"])
            answers = {
                "LOG-0 ": ("disk_full", "error"), "LOG-1 ": ("disk_full", "error"),
                "LOG-2 ": ("oom_killed", "error"), "LOG-3 ": ("oom_killed", "warn"),
                "LOG-4 ": ("started", "info"), "LOG-5 ": ("started", "info"),
            }
            label, severity = next(v for k, v in answers.items() if k in text)
            content = json.dumps({"label": label, "severity": severity, "summary": "x"})
            self._send(200, {"choices": [{"message": {"content": content}, "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 5, "completion_tokens": 5}})

    ThreadingHTTPServer((opt("--host"), int(opt("--port"))), Handler).serve_forever()
    """
)


@pytest.fixture
def fake_llama_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A llama-server on PATH that enforces ``LLAMA_API_KEY`` like the real one; returns its log."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    binary = bindir / "llama-server"
    binary.write_text(f"#!{sys.executable}\n{FAKE_LLAMA}")
    binary.chmod(0o755)
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF")
    log = tmp_path / "fake-llama.log"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("PROMPTSWEEP_LLAMA_SERVER", raising=False)
    monkeypatch.setenv("PROMPTSWEEP_MODEL", str(model))
    monkeypatch.setenv("FAKE_LLAMA_LOG", str(log))
    return log


PLANTED_KEY_CONFTEST = """
import secrets
secrets.token_urlsafe = lambda n=None: "managed-key-planted-7d6c5b4a"
"""


def test_managed_server_key_is_required_passed_to_workers_and_never_written(
    pytester: pytest.Pytester, fake_llama_on_path: Path
) -> None:
    make_suite(pytester, threshold=0.0)
    pytester.makeconftest(PLANTED_KEY_CONFTEST)  # a known "random" key, to search for it
    result = pytester.runpytest_subprocess("tiny.suite.yaml", "--llm-server=managed", "-n", "2")
    result.assert_outcomes(passed=6)  # the workers' calls carried the key (the fake refuses others)
    runs = [json.loads(line) for line in fake_llama_on_path.read_text().splitlines()]
    # `--list-devices` asks the binary its backend (GPU offload); the one server start is the rest.
    (started,) = [r for r in runs if "--list-devices" not in r["argv"]]
    assert started["key_set"] and "managed-key-planted" not in " ".join(started["argv"])
    planted = "managed-key-planted-7d6c5b4a"
    assert planted not in result.stdout.str() + result.stderr.str()
    leaks = [
        p.name
        for p in written_files(pytester.path, skip=("conftest.py",))
        if planted.encode() in p.read_bytes()
    ]
    assert leaks == []
    run_dir = next((pytester.path / ".promptsweep" / "runs").iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["llama_server"]["source"] == "PATH"
    assert config["llama_server"]["version"] == "version: 4242 (fake0042); built with fake-cc for testing"


def test_an_impostor_on_the_port_is_not_taken_for_our_server(tmp_path: Path) -> None:
    """A server that answers /health but does not enforce our key is not the one we started."""
    from promptsweep.server.managed import ManagedServer, ServerStartError

    binary = tmp_path / "llama-server"
    binary.write_text(
        f"#!{sys.executable}\n" + FAKE_LLAMA.replace('key = os.environ.get("LLAMA_API_KEY")', "key = None")
    )
    binary.chmod(0o755)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    os.environ["FAKE_LLAMA_LOG"] = str(tmp_path / "log")
    try:
        server = ManagedServer(
            binary, model, api_key="k" * 20, startup_timeout=30, log_path=tmp_path / "s.log"
        )
        with pytest.raises(ServerStartError, match="is not the llama-server we started with an API key"):
            server.start()
        assert not server.is_alive()
    finally:
        del os.environ["FAKE_LLAMA_LOG"]


@pytest.mark.real_server
@pytest.mark.skipif(
    os.environ.get("PROMPTSWEEP_SKIP_REAL_SERVER") == "1", reason="real llama-server disabled"
)
def test_real_managed_server_requires_its_key(tmp_path: Path) -> None:
    """The real llama-server started by EndpointManager: the plugin's own calls work, a caller
    without the key gets 401, and the key is in neither its command line nor its log."""
    import httpx

    from promptsweep.llm.endpoint import EndpointConfig
    from promptsweep.server.endpoints import EndpointManager, ServerConfig

    manager = EndpointManager(ServerConfig(slots=1, log_dir=tmp_path), EndpointConfig(timeout=300))
    try:
        info = manager.start_managed()
        key = manager.managed_api_key
        assert key and len(key) >= 32
        answer = manager.endpoint().chat([{"role": "user", "content": "Say OK."}], max_tokens=4)
        assert answer.completion_tokens
        assert httpx.get(f"{info.url}/props").status_code == 401
        assert httpx.post(f"{info.url}/v1/chat/completions", json={"messages": []}).status_code == 401
        assert manager.server is not None
        assert key not in " ".join(manager.server.command)
        assert key not in manager.server.log_path.read_text(errors="replace")
        assert key not in json.dumps(info.to_json())
    finally:
        manager.close()


def test_server_start_requires_a_key_and_prints_it(tmp_path: Path) -> None:
    """`promptsweep server start` serves with a generated key, printed after the URL for export."""
    binary = tmp_path / "llama-server"
    binary.write_text(f"#!{sys.executable}\n{FAKE_LLAMA}")
    binary.chmod(0o755)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTSWEEP_")}
    env.update(PROMPTSWEEP_LLAMA_SERVER=str(binary), FAKE_LLAMA_LOG=str(tmp_path / "log"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "promptsweep.cli.main",
            "server",
            "start",
            "--model",
            str(model),
            "--log-file",
            str(tmp_path / "s.log"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        key_line = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert key_line.startswith("PROMPTSWEEP_API_KEY=") and len(key_line) > 40
        import httpx

        key = key_line.split("=", 1)[1]
        assert httpx.get(f"{url}/props").status_code == 401
        assert httpx.get(f"{url}/props", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)
