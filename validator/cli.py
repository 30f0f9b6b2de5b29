"""`trainmarket validator register|run|serve|audit`.

Heavy imports (torch, web3, the loop) happen inside the commands, so `trainmarket --help` stays fast and
works before every package of the project is installed."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from trainmarket.paths import state_dir

ETH = 10**18
KEY_ENV = "TRAINMARKET_VALIDATOR_KEY"
RPC_ENV = "TRAINMARKET_RPC_URL"
DEFAULT_IPFS_API = "http://127.0.0.1:5001"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--deployment", type=Path, default=state_dir() / "devnet" / "deployment.json",
                        help="deployment JSON (contract address, block, rpc_url, optional config_cid, run_id)")
    parser.add_argument("--rpc-url", default=os.environ.get(RPC_ENV),
                        help=f"chain JSON-RPC URL, any EVM chain (default: ${RPC_ENV}, else the deployment file's)")
    parser.add_argument("--run-id", type=int, default=None, help="run id (default: the deployment file's, or 0)")
    parser.add_argument("--ipfs-api", default=os.environ.get("TRAINMARKET_IPFS_API", DEFAULT_IPFS_API))
    parser.add_argument("--ipfs-timeout", type=float, default=30.0,
                        help="seconds a payload fetch may wait for content (a revealed CID nobody serves)")
    parser.add_argument("--config-cid", default=None, help="run config CID (default: the deployment file's)")
    # No --key flag: a key on the command line is readable by every local user through the process list.
    parser.add_argument("--keystore", type=Path, default=None,
                        help="encrypted keystore of the validator's key (passphrase from $TRAINMARKET_KEY_PASSPHRASE "
                             f"or a prompt); takes precedence over ${KEY_ENV}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    top = sub.add_parser("validator", help="score contributions, settle on chain, serve the dashboard, audit")
    cmds = top.add_subparsers(dest="validator_command", required=True, metavar="ACTION")

    register = cmds.add_parser("register", help="stake and register this account as the run's validator")
    _common(register)
    register.add_argument("--stake-eth", type=float, required=True)
    register.set_defaults(func=cmd_register)

    for name, help_text, func in (("run", "run the window loop", cmd_run),
                                  ("serve", "run the loop and the dashboard/API on loopback", cmd_serve)):
        parser = cmds.add_parser(name, help=help_text)
        _common(parser)
        parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
        parser.add_argument("--start-window", type=int, default=0, help="first window to process (fresh state)")
        parser.add_argument("--poll-seconds", type=float, default=0.5)
        parser.add_argument("--home", type=Path, default=None, help="state folder (default: per account)")
        if name == "serve":
            parser.add_argument("--port", type=int, default=8700)
        parser.set_defaults(func=func)

    audit = cmds.add_parser("audit", help="recompute a published window report and compare every number")
    _common(audit)
    audit.add_argument("--window", type=int, required=True)
    audit.add_argument("--validator", default=None, help="whose report (default: the window's sole publisher)")
    audit.add_argument("--from-window", type=int, default=None,
                       help="replay from this window with fresh state (default: the validator's first)")
    audit.add_argument("--rtol", type=float, default=1e-9)
    audit.add_argument("--mismatches-only", action="store_true")
    audit.set_defaults(func=cmd_audit)


def _key(args: argparse.Namespace, required: bool = True) -> str:
    from validator.context import ValidatorSetupError

    if args.keystore is not None:
        from node.keys import load_account

        return str(load_account(args.keystore).key.hex())
    key = os.environ.get(KEY_ENV)
    if not key:
        if not required:
            from eth_account import Account

            return str(Account.create().key.hex())  # read-only use: any account can call views
        raise ValidatorSetupError(f"no validator key: pass --keystore FILE or set ${KEY_ENV}")
    return str(key)


def _connect(args: argparse.Namespace, key_required: bool = True) -> Any:
    """(client, run_id, blobs, config_cid) from the arguments and the deployment file."""
    from validator.context import chain_client, ipfs_client, read_deployment

    deployment = read_deployment(args.deployment)
    rpc_url = args.rpc_url or deployment.rpc_url
    run_id = args.run_id if args.run_id is not None else deployment.run_id
    client = chain_client(rpc_url, deployment.address, _key(args, key_required), deployment.block)
    return client, run_id, ipfs_client(args.ipfs_api, args.ipfs_timeout), args.config_cid or deployment.config_cid


def _context(args: argparse.Namespace, key_required: bool = True) -> Any:
    from validator.context import load_run_config, open_run

    client, run_id, blobs, config_cid = _connect(args, key_required)
    config = load_run_config(client, run_id, blobs, config_cid)
    return client, open_run(client, run_id, blobs, config)


def cmd_register(args: argparse.Namespace) -> int:
    client, run_id, _, _ = _connect(args)
    client.register_validator(run_id, int(args.stake_eth * ETH))
    print(f"validator {client.address_of_account} registered in run {run_id} with {args.stake_eth} ETH")
    return 0


def _loop(args: argparse.Namespace) -> Any:
    from node.model import select_device
    from validator.context import validator_home
    from validator.loop import ValidatorLoop, configure_determinism
    from validator.store import ValidatorStore

    # One line per window, epoch and retried failure; the HTTP clients' per-request lines are noise here.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("httpx", "web3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    configure_determinism()
    client, ctx = _context(args)
    home = args.home or validator_home(client.address_of_account)
    store = ValidatorStore(home / "state.sqlite3")
    loop = ValidatorLoop(ctx, client, store, home / "state", select_device(args.device), args.start_window)
    return loop, store


def cmd_run(args: argparse.Namespace) -> int:
    loop, store = _loop(args)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"validator {loop.client.address_of_account}: state in {store.path}", flush=True)
    try:
        loop.run(stop, args.poll_seconds)
    except KeyboardInterrupt:
        stop.set()
    finally:
        store.close()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from validator.service import ServiceSettings, create_app, serve

    loop, store = _loop(args)
    settings = ServiceSettings(port=args.port, db_path=store.path)

    def background(stop: threading.Event) -> None:
        loop.run(stop, args.poll_seconds)

    app = create_app(store, settings, background=background)
    print(f"validator {loop.client.address_of_account}: dashboard at http://{settings.host}:{settings.port}/",
          flush=True)
    try:
        serve(app, settings)
    finally:
        store.close()
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from validator.audit import audit_window, render, sole_publisher
    from validator.loop import configure_determinism

    configure_determinism()
    _, ctx = _context(args, key_required=False)
    validator = args.validator or sole_publisher(ctx, args.window)
    result = audit_window(ctx, args.window, validator, args.from_window, rtol=args.rtol)
    print(render(result, only_mismatches=args.mismatches_only))
    sys.stdout.flush()
    return 0 if result.ok else 1
