"""pytest's side of the options: flags and ini keys built from the one option table
(``promptsweep.config.options``), and the settings they resolve to, kept in the stash."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from promptsweep.config import options as o
from promptsweep.config.settings import Settings, Sources, resolve_settings
from promptsweep.core.io.paths import PathPolicy, set_path_policy
from promptsweep.core.io.redact import redact_argv

T = TypeVar("T")
SECRET_OPTIONS = (o.API_KEY.flag,)
settings_key = pytest.StashKey[Settings]()


def pytest_type(convert: o.Converter[T], flag: str) -> Callable[[str], T]:
    """A ``type=`` function: the table's check, its message as a ``UsageError`` (xdist's habit)."""

    def parse(text: str) -> T:
        try:
            return convert(text, flag)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None

    return parse


def existing_file(flag: str) -> Callable[[str], Path]:
    return pytest_type(o.existing_file, flag)


def positive_int(flag: str) -> Callable[[str], int]:
    return pytest_type(o.positive_int, flag)


def add_option(group: Any, parser: pytest.Parser, option: o.Option[Any]) -> None:
    """One table row as a flag (and an ini key where the table has one)."""
    kwargs: dict[str, Any] = {"dest": option.dest, "help": option.help_text.replace("%", "%%")}
    if option.switch:
        kwargs.update(action="store_true", default=False)
    elif option.choices:
        kwargs.update(default=None, choices=option.choices)
    else:
        kwargs.update(default=None, metavar=option.metavar, type=pytest_type(option.convert, option.flag))
        if option.many:
            kwargs.update(action="append", default=[])
    group.addoption(option.flag, **kwargs)
    if option.ini and option.many:
        parser.addini(option.ini, type="linelist", default=[], help=f"Default {option.flag} value(s).")
    elif option.ini and option.switch:
        parser.addini(option.ini, type="bool", default=False, help=f"Default {option.flag} (true/false).")
    elif option.ini:
        parser.addini(option.ini, type="string", default="", help=f"Default {option.flag}.")


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("promptsweep", "LLM evals as tests (pytest-promptsweep)")
    for option in o.PYTEST_OPTIONS:
        add_option(group, parser, option)


def sources(config: pytest.Config) -> Sources:
    return Sources(
        cli=vars(config.option),
        ini=config.getini,
        environ=os.environ,
        invocation_dir=config.invocation_params.dir,
        rootdir=config.rootpath,
    )


def settings_for(config: pytest.Config) -> Settings:
    """The run's settings, resolved once per process (with ``--experiment`` applied) and kept
    in the stash, so ``-n auto`` sizing, configure and every feature read the same values."""
    if settings_key not in config.stash:
        from promptsweep.plugin.experiments import apply_experiment

        source = sources(config)
        try:
            settings = resolve_settings(source)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
        # Before any file is read (the experiment is the first): what files may name.
        set_path_policy(PathPolicy.of(config.rootpath, settings.allow_paths))
        config.stash[settings_key] = apply_experiment(config, settings, source)
    return config.stash[settings_key]


def redact_args(args: list[str]) -> list[str]:
    """The command line for provenance files and spans: secret option values replaced and
    credentials in URLs redacted (``promptsweep.core.io.redact``)."""
    return redact_argv(args, SECRET_OPTIONS)


def deterministic_requested(config: pytest.Config) -> bool:
    """``--llm-deterministic`` or its ini key; what ``-n auto`` sizing reads."""
    return settings_for(config).deterministic
