"""``promptsweep cache stats|clear``."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

from promptsweep.cli.args import add_dir, base_dir
from promptsweep.llm.cache import CacheError, ResponseCache, cache_path


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _stats(cache: ResponseCache) -> None:
    stats = cache.stats()
    print(f"{stats.path}: {stats.entries} answers, {stats.size_bytes / 1e6:.1f} MB")
    for model, count in stats.models.items():
        print(f"  {count:>8}  {model}")


def _clear(cache: ResponseCache) -> None:
    print(f"{cache.path}: removed {cache.clear()} answers")


def _on_cache(action: Callable[[ResponseCache], None]) -> Callable[[argparse.Namespace], int]:
    """Run ``action`` on the cache under ``--dir``; a missing cache is not an error, a broken one is."""

    def run(args: argparse.Namespace) -> int:
        path = cache_path(base_dir(args))
        if not path.exists():
            print(f"{path}: no response cache yet")
            return 0
        try:
            action(ResponseCache(path))
        except (CacheError, sqlite3.Error) as exc:
            print(f"promptsweep: error: {exc}", file=sys.stderr)
            return 1
        return 0

    return run


def register_cache_command(subparsers: Any) -> None:
    """``promptsweep cache stats|clear [--dir DIR]``."""
    cache = subparsers.add_parser("cache", help="inspect or clear the response cache")
    cache.set_defaults(handler=lambda _args: _usage(cache))
    actions = cache.add_subparsers(title="cache commands", metavar="COMMAND")
    for name, action, text in (
        ("stats", _stats, "answers stored, per model, and the file size"),
        ("clear", _clear, "delete every stored answer"),
    ):
        parser = actions.add_parser(name, help=text)
        add_dir(parser)
        parser.set_defaults(handler=_on_cache(action))
