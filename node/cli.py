"""`trainmarket node keygen|register|run|status|claim|unstake` — the trainer's command line (parsers only).

The commands themselves live in node/commands.py and are imported when one runs, so building this parser
loads neither torch nor web3 and every `--help` answers at once."""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable
from pathlib import Path

from base import env
from base.units import parse_eth

Handler = Callable[[argparse.Namespace], int]
POLICY_HELP = "update policy: honest (default); the others are the adversaries of the tests and the demo"


def _command(name: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        handler: Handler = getattr(importlib.import_module("node.commands"), name)
        return handler(args)

    return run


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from err
    if value <= 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _common(parser: argparse.ArgumentParser, signs: bool = True) -> None:
    parser.add_argument("--deployment", type=Path, default=None,
                        help="deployment JSON written by `trainmarket devnet` (default: "
                             f"~/.trainmarket/devnet/deployment.json, or under ${env.HOME})")
    parser.add_argument("--rpc-url", default=os.environ.get(env.RPC_URL),
                        help=f"chain JSON-RPC URL, any EVM chain (default: ${env.RPC_URL}, else the deployment "
                             "file's)")
    parser.add_argument("--run-id", type=int, default=None, help="run id (default: the deployment file's, or 0)")
    parser.add_argument("--ipfs-api", default=None,
                        help=f"IPFS RPC API URL, e.g. your Kubo (default: ${env.IPFS_API}, else the deployment "
                             "file's)")
    parser.add_argument("--config-cid", default=None, help="CID of the run config (default: the deployment file's)")
    parser.add_argument("--keystore", type=Path, default=None,
                        help=f"encrypted keystore (passphrase from ${env.KEY_PASSPHRASE} or a prompt); else "
                             f"${env.PRIVATE_KEY}" + ("" if signs else " (only the address is used)"))
    parser.add_argument("--home", type=Path, default=None,
                        help="journal and cache folder (default: one per account and run under ~/.trainmarket/node)")


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")


def add_commands(sub: argparse._SubParsersAction) -> None:
    node = sub.add_parser("node", help="trainer node: keygen, register, run, status, claim, unstake",
                          description="The trainer: register with a stake, then `run` trains, commits and reveals "
                          "window after window; `status` explains what each window earned.")
    commands = node.add_subparsers(dest="node_command", required=True, metavar="NODE_COMMAND")

    keygen = commands.add_parser("keygen", help="create an encrypted keystore with a fresh key",
                                 description=f"Passphrase from ${env.KEY_PASSPHRASE}, else asked twice on a "
                                 "terminal. Prints the new address (never the key): fund it before registering.")
    keygen.add_argument("--out", type=Path, required=True, help="keystore file to create (never overwritten)")
    keygen.set_defaults(func=_command("cmd_keygen"))

    register = commands.add_parser("register", help="register this account as a trainer with a stake")
    _common(register)
    register.add_argument("--stake", type=parse_eth, required=True, metavar="ETH",
                          help="stake to lock, in ETH (at least the run's minimum; slashed for missed reveals)")
    register.set_defaults(func=_command("cmd_register"))

    run = commands.add_parser("run", help="train, commit and reveal window after window",
                              description="Trains each window on the chain's clock, commits, reveals, and prints "
                              "where it is. One `node run` per key: a second one refuses to start.")
    _common(run)
    run.add_argument("--windows", type=_positive, default=None, metavar="N",
                     help="stop after training N windows (default: run until Ctrl-C)")
    run.add_argument("--until-window", type=int, default=None, metavar="W", help="stop after window W")
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                     help="where to train (default auto: CUDA when present)")
    run.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's choice)")
    run.add_argument("--policy", default="honest", help=POLICY_HELP)
    run.set_defaults(func=_command("cmd_run"))

    status = commands.add_parser("status", help="per-window scores and weights, why, and what is claimable")
    _common(status, signs=False)
    status.add_argument("--last", type=_positive, default=10, metavar="N",
                        help="show the last N windows and epochs (default 10)")
    _json_flag(status)
    status.set_defaults(func=_command("cmd_status"))

    claim = commands.add_parser("claim", help="withdraw the rewards due (safe while `node run` is running)")
    _common(claim)
    _json_flag(claim)
    claim.set_defaults(func=_command("cmd_claim"))

    unstake = commands.add_parser("unstake", help="request an unstake, or withdraw the stake once the delay passed")
    _common(unstake)
    unstake.set_defaults(func=_command("cmd_unstake"))
