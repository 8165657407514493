"""``promptsweep cache stats|clear``."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

from promptsweep.cli.args import add_dir, base_dir
from promptsweep.core.io.files import os_error_line
from promptsweep.core.io.redact import redact_text, terminal_text
from promptsweep.llm.cache import CacheError, ResponseCache, cache_files, cache_path


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _cache_for(args: argparse.Namespace) -> ResponseCache:
    return ResponseCache(cache_path(base_dir(args)))


def _cli_errors(
    name: str, handler: Callable[[argparse.Namespace], int]
) -> Callable[[argparse.Namespace], int]:
    """One line for a cache that cannot be used, and for a directory that cannot be written
    (read-only, full): the path and the cause, exit 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (CacheError, sqlite3.Error) as exc:
            hint = "" if "cache clear" in str(exc) else "; run `promptsweep cache clear` to remove it"
            print(f"promptsweep cache {name}: error: {exc}{hint}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"promptsweep cache {name}: error: {terminal_text(os_error_line(exc))}", file=sys.stderr)
            return 1

    return run


def _cache_stats(args: argparse.Namespace) -> int:
    path = cache_path(base_dir(args))
    if not path.exists():
        print(f"{path}: no response cache yet")
        return 0
    stats = _cache_for(args).stats()
    print(f"{stats.path}: {stats.entries} answers, {stats.size_bytes / 1e6:.1f} MB")
    for model, count in stats.models.items():
        # Redacted here too: caches written by older versions may hold URLs with credentials.
        print(f"  {count:>8}  {terminal_text(redact_text(model))}")
    return 0


def _cache_clear(args: argparse.Namespace) -> int:
    path = cache_path(base_dir(args))
    if not any(p.exists() or p.is_symlink() for p in cache_files(path)):
        print(f"{path}: no response cache yet")
        return 0
    removed, damaged = _cache_for(args).clear_or_remove()
    if damaged:
        print(f"{path}: removed the cache files (the cache could not be used: {damaged})")
    else:
        print(f"{path}: removed {removed} answers")
    return 0


def register_cache_command(subparsers: Any) -> None:
    """``promptsweep cache stats|clear [--dir DIR]``."""
    cache = subparsers.add_parser("cache", help="inspect or clear the response cache")
    cache.set_defaults(handler=lambda _args: _usage(cache))
    actions = cache.add_subparsers(title="cache commands", metavar="COMMAND")
    for name, handler, text in (
        ("stats", _cache_stats, "answers stored, per model, and the file size"),
        ("clear", _cache_clear, "delete every stored answer (a damaged cache file is deleted)"),
    ):
        parser = actions.add_parser(name, help=text)
        add_dir(parser)
        parser.set_defaults(handler=_cli_errors(name, handler))
