"""`trainmarket` — the one command-line entry point. Each role module contributes its subcommands through
`add_commands(subparsers)`; every subcommand sets `func(args) -> int`. Errors the project raises on purpose
(`TrainmarketError`) are printed as one plain sentence, never as a traceback."""

from __future__ import annotations

import argparse
import importlib
import sys

from trainmarket.errors import TrainmarketError

# Modules that define `add_commands(subparsers: argparse._SubParsersAction) -> None`.
COMMAND_MODULES: list[str] = [
    "trainmarket.devnet",
    "node.cli",
    "validator.cli",
    "trainmarket.demo.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainmarket", description=__doc__.splitlines()[0] if __doc__ else "")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TrainmarketError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
