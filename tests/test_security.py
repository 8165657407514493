"""Security: the template sandbox, safe YAML only, loopback-only server, no leaked API key, safe names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from promptsweep.core.io.bounded_yaml import BoundedSafeLoader, load_bounded
from promptsweep.core.io.errors import ConfigError
from promptsweep.core.templates.template import TemplateRenderError, template_from_mapping
from promptsweep.server.managed import ManagedServer
from tests.fakeserver import FakeLLMServer
from tests.suitekit import make_suite, oracle

SRC = Path(__file__).resolve().parents[1] / "src" / "promptsweep"
SECRET = "sk-promptsweep-test-9f8e7d6c5b4a"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "{{ ''.__class__.__mro__ }}",
            "refused by the sandbox: access to attribute '__class__' of 'str' object is unsafe.",
        ),
        (
            "{{ logs.__class__.__base__.__subclasses__() }}",
            "refused by the sandbox: access to attribute '__class__'",
        ),
        ("{{ cycler.__init__.__globals__ }}", "refused by the sandbox: access to attribute '__init__'"),
        ("{{ logs.upper.__globals__ }}", "has no attribute '__globals__'"),
        ("{{ logs.mro() }}", "has no attribute 'mro'"),
        (
            "{% set x = [].append(1) %}",
            "refused by the sandbox: access to attribute 'append' of 'list' object is unsafe.",
        ),
    ],
)
def test_sandbox_refuses_reaching_for_python_internals(source: str, message: str) -> None:
    template = template_from_mapping({"id": "evil", "user": source})
    with pytest.raises(TemplateRenderError, match=re.escape(message)):
        template.render({"logs": "x"}, sample_id="s1")


def test_only_the_bounded_safe_loader_reads_yaml() -> None:
    unsafe = re.compile(
        r"yaml\.(load|unsafe_load|full_load|load_all|safe_load|safe_load_all)\(|Loader\s*=|yaml\.Loader|UnsafeLoader"
    )
    offenders = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if unsafe.search(line)
    ]
    assert offenders == []
    assert issubclass(BoundedSafeLoader, yaml.SafeLoader)
    with pytest.raises(yaml.constructor.ConstructorError):
        load_bounded("!!python/object/apply:os.system ['true']")


def test_managed_server_binds_loopback_only(tmp_path: Path) -> None:
    server = ManagedServer(tmp_path / "llama-server", tmp_path / "m.gguf", port=8080)
    command = server.command
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert "0.0.0.0" not in command


@pytest.mark.parametrize("bad_id", ["../../etc/x", "/etc/passwd", "a/b", ".hidden", "..", "x\\y"])
def test_template_ids_cannot_escape_their_folder(bad_id: str) -> None:
    with pytest.raises(ConfigError, match="must be letters, digits"):
        template_from_mapping({"id": bad_id, "user": "hi"})


def test_suite_names_cannot_escape_the_runs_folder(pytester: pytest.Pytester) -> None:
    suite = make_suite(pytester)
    suite.write_text(suite.read_text().replace("name: tiny", "name: ../../x"))
    result = pytester.runpytest("--llm-server=off")
    result.stdout.fnmatch_lines(
        ["*tiny.suite.yaml:1: name: name must be letters, digits, '_' or '-' (it names run folders)"]
    )
    assert not (pytester.path.parent / "x").exists()


@pytest.mark.parametrize("how", ["env", "option"])
def test_api_key_is_sent_but_never_written(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    make_suite(pytester, threshold=0.99)  # some output in the gate lines too
    args: list[str] = ["--junitxml", "junit.xml", "-v", "-rA"]
    if how == "env":
        monkeypatch.setenv("PROMPTSWEEP_API_KEY", SECRET)
    else:
        args += ["--llm-api-key", SECRET]
    with FakeLLMServer(oracle(wrong={1})) as fake:
        result = pytester.runpytest_subprocess("--llm-url", fake.url, *args)
        headers = [h.get("Authorization") for h in fake.headers_seen]
    assert headers and all(h == f"Bearer {SECRET}" for h in headers)
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the gate fails: reports were written in full
    assert SECRET not in result.stdout.str() + result.stderr.str()
    written = [p for p in pytester.path.rglob("*") if p.is_file() and p.name != "tiny.suite.yaml"]
    assert any(p.name == "cache.sqlite3" for p in written)
    assert any(p.name == "junit.xml" for p in written)
    assert any(p.name == "config.json" for p in written)
    leaks = [str(p) for p in written if SECRET.encode() in p.read_bytes()]
    assert leaks == []
    if how == "option":
        config = next(p for p in written if p.name == "config.json").read_text()
        assert '"--llm-api-key",\n    "***"' in config


@pytest.mark.parametrize(
    ("url", "redacted", "origin"),
    [
        (
            "http://user:pw0rd@h:8080/v1?api_key=K3Y1&api-version=2",
            "http://***@h:8080/v1?api_key=***&api-version=2",
            "http://h:8080",
        ),
        (
            "https://TOKEN123@api.example.com/v1",
            "https://***@api.example.com/v1",
            "https://api.example.com:443",
        ),
        (
            "http://h/v1?key=a&token=b&access_token=c&auth=d&password=e&secret=f&sig=g&x=1",
            "http://h/v1?key=***&token=***&access_token=***&auth=***&password=***&secret=***&sig=***&x=1",
            "http://h:80",
        ),
        ("http://[::1]:9/x#frag-with-secret", "http://[::1]:9/x", "http://[::1]:9"),
    ],
)
def test_one_redaction_rule_for_urls(url: str, redacted: str, origin: str) -> None:
    from promptsweep.core.io.redact import redact_text, redact_url, url_origin, url_secrets

    assert redact_url(url) == redacted
    assert url_origin(url) == origin
    secrets = url_secrets(url)
    message = f"cannot reach {url}: server said {' '.join(secrets)}"
    cleaned = redact_text(message, secrets)
    assert not any(s in cleaned for s in secrets if len(s) >= 4)
    assert redacted in cleaned


def test_command_lines_are_redacted_for_provenance() -> None:
    from promptsweep.core.io.redact import redact_argv

    assert redact_argv(
        [
            "--llm-url",
            "http://u:pw0rd@h/v1?api_key=K3Y1",
            "--llm-api-key",
            "sk-1",
            "--llm-api-key=sk-2",
            "-o",
            "llm_url=http://k3y@h",
        ]
    ) == [
        "--llm-url",
        "http://***@h/v1?api_key=***",
        "--llm-api-key",
        "***",
        "--llm-api-key=***",
        "-o",
        "llm_url=http://***@h",
    ]
