"""The command's flags from the one option table, resolved the way pytest resolves them."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, TypeAlias

from promptsweep.config import options as o

#: The object ``ArgumentParser.add_subparsers()`` returns; each subcommand module registers
#: itself on it (here, not in ``cli.main``, so those modules need not import ``main``).
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CommandLineError(Exception):
    """A bad flag value: printed as ``promptsweep <command>: error: ...``, exit code 2."""


def add(parser: argparse.ArgumentParser, option: o.Option[Any]) -> None:
    """Add a table row under its command-line spelling; the value is checked by :func:`value`.
    A ``many`` option repeats (``--allow-path A --allow-path B``)."""
    parser.add_argument(
        option.cli_flag or option.flag,
        dest=option.dest,
        default=None,
        metavar=option.metavar,
        help=option.help_text,
        action="append" if option.many else "store",
    )


def value(args: argparse.Namespace, option: o.Option[Any]) -> Any:
    """The flag, else the environment, else the default, with the same checks as pytest's."""
    text = getattr(args, option.dest, None)
    flag = option.cli_flag or option.flag
    try:
        if option.many:
            parsed: Any = [option.convert(item, flag) for item in text] if text else None
        else:
            parsed = option.convert(text, flag) if text is not None else None
        return o.resolve(option, parsed, None, os.environ)
    except ValueError as exc:
        raise CommandLineError(str(exc)) from None


def add_dir(parser: argparse.ArgumentParser) -> None:
    add(parser, o.BASE_DIR)


def base_dir(args: argparse.Namespace) -> Path:
    """``--dir``, else ``$PROMPTSWEEP_DIR``, else ``./.promptsweep``: where pytest writes."""
    here = Path.cwd()
    return o.base_dir(getattr(args, o.BASE_DIR.dest, None), None, os.environ, invocation=here, root=here)
