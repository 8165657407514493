"""Suite-wide fixtures: one real llama-server per test process, shared by every test.

Starting the server costs about a second, so it is session scoped. Every real-server test is
put in one xdist group (see ``pytest_collection_modifyitems``): under ``--dist loadgroup``
(``just test``, ``just ci``) they all run on one worker, which starts the one shared server.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import httpcore  # noqa: F401
import pytest

from promptsweep.server.managed import ManagedServer, ServerStartError
from promptsweep.server.provision import ProvisionError, default_model_path, find_llama_server

# httpx imports httpcore lazily; a module first imported inside an in-process pytester run is
# dropped after it, and later runs then raise httpcore errors httpx cannot map. Import it here.
SKIP_ENV = "PROMPTSWEEP_SKIP_REAL_SERVER"
REAL_SERVER_FIXTURES = frozenset({"managed_llama_server", "llama_server_url", "llama_server_files"})
REAL_SERVER_GROUP = "real_server"


def in_real_server_group(item: pytest.Item) -> bool:
    """Whether the item is marked ``xdist_group("real_server")`` (positional or ``name=``)."""
    return any(
        (mark.args[0] if mark.args else mark.kwargs.get("name")) == REAL_SERVER_GROUP
        for mark in item.iter_markers("xdist_group")
    )


def uses_real_server(item: pytest.Item) -> bool:
    """A real-server fixture, an explicit ``real_server`` mark, or the real-server xdist group."""
    return (
        bool(REAL_SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())))
        or item.get_closest_marker("real_server") is not None
        or in_real_server_group(item)
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        from tests.groupsched import GroupChannel

        config.pluginmanager.register(GroupChannel(), "promptsweep-tests-groupsched")


@pytest.hookimpl(tryfirst=True)  # before the xdist_group marks are read (--dist loadgroup)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the real llama-server gets the ``real_server`` mark (so
    ``-m "not real_server"`` works) and joins one xdist group, so ``--dist loadgroup`` runs them
    one after another on one worker: they cannot fill each other's server slots or share the
    CPU with each other, and only that worker starts the shared server. A test marked by hand,
    one using a real-server fixture and a new ``xdist_group("real_server")`` test are covered
    alike. The group is the largest unit of work, so the loadgroup scheduler hands it out
    first: its serial time is the run's critical path. (tests/groupsched.py makes loadgroup
    work on pytest 9.2.)"""
    for item in items:
        if not uses_real_server(item):
            continue
        if item.get_closest_marker("real_server") is None:
            item.add_marker(pytest.mark.real_server)
        if not in_real_server_group(item):
            item.add_marker(pytest.mark.xdist_group(REAL_SERVER_GROUP))


# Captured at import: some tests point PATH at an empty directory while they run.
REAL_PATH = os.environ.get("PATH", os.defpath)


def in_ci() -> bool:
    """``CI`` set to anything but empty, 0, false or no (GitHub Actions sets ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def need_tools(tools: Sequence[str], why: str) -> None:
    """Skip when a tool is missing; under CI fail instead: CI must run every test, so a
    missing tool there is a broken image, not a reason to pass quietly."""
    missing = [tool for tool in tools if shutil.which(tool, path=REAL_PATH) is None]
    if not missing:
        return
    reason = f"{' and '.join(missing)} not on PATH ({why})"
    if in_ci():
        pytest.fail(f"{reason}; CI must provide it", pytrace=False)
    pytest.skip(f"{reason}; set CI=true to make this a failure")


@pytest.fixture
def toolchain() -> None:
    """cmake and a C compiler, for the tests that really build (skipped locally, failed in CI)."""
    need_tools(("cmake", "cc"), "needed to build llama-server")


def _unavailable(reason: str) -> NoReturn:
    """Fail loudly by default; skip only when the user opted out explicitly."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{reason} ({SKIP_ENV}=1)")
    pytest.fail(
        f"{reason}\nRun `promptsweep server ensure` once to build llama-server and fetch the "
        f"default model, or set {SKIP_ENV}=1 to skip tests that need the real server.",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def llama_server_files() -> tuple[Path, Path]:
    """The provisioned llama-server binary and default model (no server is started)."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"real llama-server disabled by {SKIP_ENV}=1")
    try:
        binary = find_llama_server()
    except ProvisionError as exc:
        _unavailable(str(exc))
    if binary is None:
        _unavailable("no llama-server binary found")
    model = default_model_path()
    if not model.is_file():
        _unavailable(f"model not found: {model}")
    return binary, model


@pytest.fixture(scope="session")
def managed_llama_server(
    tmp_path_factory: pytest.TempPathFactory, llama_server_files: tuple[Path, Path]
) -> Iterator[ManagedServer]:
    """The real llama-server (default binary and model, 4 slots), started once per process."""
    binary, model = llama_server_files
    log_path = tmp_path_factory.mktemp("llama-server") / "llama-server.log"
    server = ManagedServer(binary, model, slots=4, log_path=log_path)
    try:
        server.start()
    except ServerStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def llama_server_url(managed_llama_server: ManagedServer) -> str:
    """Base URL (``http://127.0.0.1:PORT``) of the shared real llama-server."""
    return managed_llama_server.url
