"""The ``promptsweep`` console command.

Subcommands are registered by small functions listed in :data:`SUBCOMMANDS`; each takes
the top-level subparsers object, adds its parser, and sets ``handler`` (a function from
the parsed namespace to an exit code) via ``set_defaults``. Adding ``compare`` or
``leaderboard`` later means writing one such function and appending it to the list.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from promptsweep import __version__
from promptsweep.cli.args import CommandLineError, SubParsers, add, value
from promptsweep.cli.check import register_check
from promptsweep.cli.harvest import register_add, register_harvest
from promptsweep.cli.init import register_init
from promptsweep.cli.judge import register_judge_agreement
from promptsweep.cli.reports import register_compare, register_leaderboard, register_report
from promptsweep.cli.schema import register_schema
from promptsweep.config.options import CTX_PER_SLOT, GPU_LAYERS, MODEL_PATH, SLOTS
from promptsweep.server.endpoints import default_gpu_layers
from promptsweep.server.managed import ManagedServer, ServerStartError, tail_lines
from promptsweep.server.provision import (
    ENV_LLAMA_SERVER,
    ProvisionError,
    cached_llama_server_path,
    ensure_default_model,
    ensure_llama_server,
    find_llama_server,
    llama_server_backend,
)

__all__ = [
    "SUBCOMMANDS",
    "Handler",
    "Registrar",
    "SubParsers",
    "build_parser",
    "main",
    "register_server",
]

#: A subcommand handler: parsed args in, process exit code out.
Handler = Callable[[argparse.Namespace], int]
#: Registers one top-level subcommand on the parser's subparsers object.
Registrar = Callable[[SubParsers], None]


def _stderr(message: str) -> None:
    """Progress goes to stderr so stdout stays clean for paths and URLs."""
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- server


def _server_ensure(args: argparse.Namespace) -> int:
    binary = ensure_llama_server(progress=_stderr)
    model = ensure_default_model(progress=_stderr)
    print(f"llama-server: {binary}")
    print(f"model: {model}")
    return 0


def _server_path(args: argparse.Namespace) -> int:
    binary = find_llama_server()
    if binary is None:
        _stderr(
            "no llama-server found (checked $"
            f"{ENV_LLAMA_SERVER}, PATH, and {cached_llama_server_path()}).\n"
            "Run `promptsweep server ensure` to build one (several minutes, once per "
            f"machine), install llama.cpp (e.g. `brew install llama.cpp`), or set "
            f"{ENV_LLAMA_SERVER}=/path/to/llama-server."
        )
        return 1
    print(binary)
    return 0


class _Terminated(Exception):
    """Raised from the SIGTERM handler so the server is stopped on the normal path."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def _server_start(args: argparse.Namespace) -> int:
    model_path = value(args, MODEL_PATH)
    slots, ctx_per_slot = value(args, SLOTS), value(args, CTX_PER_SLOT)
    binary = ensure_llama_server(progress=_stderr)
    model = model_path if model_path is not None else ensure_default_model(progress=_stderr)
    # Loopback is shared by every local user: the server requires a key. $PROMPTSWEEP_API_KEY
    # if set (pytest sends it too), else a fresh one printed for the caller to export.
    given_key = os.environ.get("PROMPTSWEEP_API_KEY") or None
    api_key = None if args.no_api_key else (given_key or secrets.token_urlsafe(32))
    server = ManagedServer(
        binary,
        model,
        slots=slots,
        ctx_per_slot=ctx_per_slot,
        port=args.port,
        log_path=args.log_file,
        api_key=api_key,
        gpu_layers=default_gpu_layers(value(args, GPU_LAYERS), llama_server_backend(binary)),
    )
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        _stderr(f"starting llama-server (log: {server.log_path})")
        url = server.start()
        print(url, flush=True)
        if api_key and not given_key:
            print(f"PROMPTSWEEP_API_KEY={api_key}", flush=True)
            _stderr("export the PROMPTSWEEP_API_KEY line above for pytest --llm-url (or pass --llm-api-key)")
        _stderr("serving; press Ctrl-C to stop")
        while server.is_alive():
            time.sleep(0.5)
        _stderr("llama-server exited unexpectedly; last log lines:")
        for line in tail_lines(server.log_path):
            _stderr(f"    {line}")
        return 1
    except (KeyboardInterrupt, _Terminated):
        _stderr("stopping llama-server")
        return 0
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)


def register_server(subparsers: SubParsers) -> None:
    """``promptsweep server {ensure,path,start}``: get and run a local llama-server."""
    server = subparsers.add_parser("server", help="find, build or run llama-server")
    server.set_defaults(handler=lambda _args: _usage(server))
    actions = server.add_subparsers(title="server commands", metavar="COMMAND")

    ensure = actions.add_parser(
        "ensure", help="find or build llama-server and fetch the default model; print paths"
    )
    ensure.set_defaults(handler=_server_ensure)

    path = actions.add_parser("path", help="print the llama-server path, or exit 1 if none")
    path.set_defaults(handler=_server_path)

    start = actions.add_parser("start", help="run llama-server in the foreground until Ctrl-C")
    for option in (MODEL_PATH, SLOTS, CTX_PER_SLOT, GPU_LAYERS):
        add(start, option)
    start.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    start.add_argument("--log-file", type=Path, default=None, help="server log (default: a temp file)")
    start.add_argument(
        "--no-api-key",
        action="store_true",
        help="serve without an API key (any local user can then use it; default: require "
        "$PROMPTSWEEP_API_KEY, or a generated key printed after the URL)",
    )
    start.set_defaults(handler=_server_start)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def register_cache(subparsers: SubParsers) -> None:
    """``promptsweep cache {stats,clear}``: the response cache (see promptsweep.cache)."""
    from promptsweep.cli.cache import register_cache_command

    register_cache_command(subparsers)


#: Top-level subcommand registrars, in help order. Append to add a subcommand.
SUBCOMMANDS: list[Registrar] = [
    register_init,
    register_check,
    register_server,
    register_cache,
    register_compare,
    register_leaderboard,
    register_report,
    register_schema,
    register_judge_agreement,
    register_harvest,
    register_add,
]


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="promptsweep", description="LLM evals as pytest tests, against llama-server."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.set_defaults(handler=lambda _args: _usage(parser))
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point for the console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CommandLineError as exc:
        _stderr(f"promptsweep: error: {exc}")
        return 2
    except (ProvisionError, ServerStartError) as exc:
        _stderr(f"promptsweep: error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
