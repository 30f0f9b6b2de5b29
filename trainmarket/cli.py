"""`trainmarket` — the one command-line entry point. Each role module contributes its subcommands through
`add_commands(subparsers)`; every subcommand sets `func(args) -> int`. Errors the project raises on purpose
(`TrainmarketError`) are printed as one plain sentence, never as a traceback.

The modules listed here only build parsers: they import neither torch nor web3, which a command imports
when it runs, so `trainmarket --help` (and every `--help`) answers at once."""

from __future__ import annotations

import argparse
import importlib
import sys

from base.errors import TrainmarketError

# Modules that define `add_commands(subparsers: argparse._SubParsersAction) -> None`.
COMMAND_MODULES: list[str] = [
    "trainmarket.devnet_cli",
    "node.cli",
    "validator.cli",
    "trainmarket.demo.cli",
]


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("trainmarket")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


class _VersionAction(argparse.Action):
    """--version, reading the installed package's metadata only when asked."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"trainmarket {version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainmarket", description="A blockchain-incentivised training marketplace: run a local devnet, "
        "train as a node, validate, or run the whole demo. Every command has --help.")
    parser.add_argument("--version", action=_VersionAction)
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
