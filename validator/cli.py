"""`trainmarket validator register|run|serve|status|claim|audit`.

Heavy imports (torch, web3, the loop) happen inside the commands, so `trainmarket --help` stays fast and
works before every package of the project is installed."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from base import env
from base.units import eth, parse_eth

KEY_ENV = env.VALIDATOR_KEY
RPC_ENV = env.RPC_URL


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--deployment", type=Path, default=None,
                        help="deployment JSON written by `trainmarket devnet` (contract, block, rpc_url, run_id, "
                             f"config_cid, ipfs_api; default: ~/.trainmarket/devnet/deployment.json, or under "
                             f"${env.HOME})")
    parser.add_argument("--rpc-url", default=os.environ.get(RPC_ENV),
                        help=f"chain JSON-RPC URL, any EVM chain (default: ${RPC_ENV}, else the deployment file's)")
    parser.add_argument("--run-id", type=int, default=None, help="run id (default: the deployment file's, or 0)")
    parser.add_argument("--ipfs-api", default=None,
                        help=f"IPFS RPC API URL, e.g. your Kubo (default: ${env.IPFS_API}, else the deployment "
                             "file's)")
    parser.add_argument("--ipfs-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="how long a payload fetch may wait for content (a revealed CID nobody serves; "
                             "default 30)")
    parser.add_argument("--config-cid", default=None, help="run config CID (default: the deployment file's)")
    # No --key flag: a key on the command line is readable by every local user through the process list.
    parser.add_argument("--keystore", type=Path, default=None,
                        help=f"encrypted keystore of the validator's key (passphrase from ${env.KEY_PASSPHRASE} "
                             f"or a prompt); takes precedence over ${KEY_ENV}")


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")


def add_commands(sub: argparse._SubParsersAction) -> None:
    top = sub.add_parser("validator", help="score contributions, settle on chain, serve the dashboard, audit",
                         description="A validator: register once with a stake, then `serve` (or `run`) scores "
                         "every window, publishes the new model and report, and submits the epoch weights.")
    cmds = top.add_subparsers(dest="validator_command", required=True, metavar="ACTION")

    register = cmds.add_parser("register", help="stake and register this account as one of the run's validators")
    _common(register)
    register.add_argument("--stake", "--stake-eth", dest="stake", type=parse_eth, required=True, metavar="ETH",
                          help="stake to lock, in ETH (at least the run's minimum; --stake-eth is the old name)")
    register.set_defaults(func=cmd_register)

    for name, help_text, func in (("run", "run the window loop (no web server)", cmd_run),
                                  ("serve", "run the window loop and the dashboard/API on 127.0.0.1", cmd_serve)):
        parser = cmds.add_parser(name, help=help_text)
        _common(parser)
        parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                            help="where to evaluate (default auto: CUDA when present)")
        parser.add_argument("--start-window", type=int, default=0, metavar="W",
                            help="first window to process when the state is fresh (default 0)")
        parser.add_argument("--poll-seconds", type=float, default=0.5, metavar="SECONDS",
                            help="pause between chain polls when nothing is due (default 0.5)")
        parser.add_argument("--home", type=Path, default=None,
                            help="state folder (default: one per account under ~/.trainmarket/validator)")
        if name == "serve":
            parser.add_argument("--port", type=int, default=None, help="dashboard/API port on 127.0.0.1 "
                                "(default 8700, or $TRAINMARKET_VALIDATOR_PORT)")
        parser.set_defaults(func=func)

    status = cmds.add_parser("status", help="registration, stake, what this validator published, claimable")
    _common(status)
    status.add_argument("--last", type=int, default=10, metavar="N", help="show the last N windows (default 10)")
    _json_flag(status)
    status.set_defaults(func=cmd_status)

    claim = cmds.add_parser("claim", help="withdraw this validator's reward credit")
    _common(claim)
    _json_flag(claim)
    claim.set_defaults(func=cmd_claim)

    audit = cmds.add_parser("audit", help="recompute a published window report and compare every number")
    _common(audit)
    audit.add_argument("--window", type=int, required=True, help="the window to audit")
    audit.add_argument("--validator", default=None, help="whose report (default: the window's sole publisher)")
    audit.add_argument("--from-window", type=int, default=None,
                       help="replay from this window with fresh state (default: the validator's first)")
    audit.add_argument("--rtol", type=float, default=1e-9, help="relative tolerance of a float match (default 1e-9)")
    audit.add_argument("--mismatches-only", action="store_true", help="list only the numbers that differ")
    _json_flag(audit)
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
    from validator.context import chain_client, default_deployment, ipfs_client, read_deployment

    deployment = read_deployment(args.deployment or default_deployment())
    rpc_url = args.rpc_url or deployment.rpc_url
    run_id = args.run_id if args.run_id is not None else deployment.run_id
    client = chain_client(rpc_url, deployment.address, _key(args, key_required), deployment.block)
    api = args.ipfs_api or os.environ.get(env.IPFS_API) or deployment.ipfs_api
    return client, run_id, ipfs_client(api, args.ipfs_timeout), args.config_cid or deployment.config_cid


def _context(args: argparse.Namespace, key_required: bool = True) -> Any:
    from validator.context import load_run_config, open_run

    client, run_id, blobs, config_cid = _connect(args, key_required)
    config = load_run_config(client, run_id, blobs, config_cid)
    return client, open_run(client, run_id, blobs, config)


def cmd_register(args: argparse.Namespace) -> int:
    from contracts.errors import ContractReverted
    from node.session import explain_revert, require_funds
    from validator.context import ValidatorSetupError

    client, run_id, _, _ = _connect(args)
    required = client.get_run(run_id).min_validator_stake
    if args.stake < required:
        raise ValidatorSetupError(f"insufficient stake: {eth(args.stake)} ETH offered, run {run_id} requires at "
                                  f"least {eth(required)} ETH from a validator")
    require_funds(client, args.stake, f"registering as a validator with a stake of {eth(args.stake)} ETH")
    try:
        client.register_validator(run_id, args.stake)
    except ContractReverted as err:
        raise ValidatorSetupError(explain_revert(err)) from None
    print(f"validator {client.address_of_account} registered in run {run_id} with {eth(args.stake)} ETH; "
          "next: `trainmarket validator serve`")
    return 0


def _loop(args: argparse.Namespace, cluster: Any) -> Any:
    from base.model import select_device
    from validator.context import require_validator, validator_home
    from validator.distributed import DistributedEvaluate
    from validator.loop import ValidatorLoop, configure_determinism
    from validator.store import ValidatorStore

    # One line per window, epoch and retried failure; the HTTP clients' per-request lines are noise here.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("httpx", "web3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    configure_determinism()
    client, run_id, _, _ = _connect(args)
    require_validator(client, run_id)  # before loading the model and data: an unregistered key fails now
    client, ctx = _context(args)
    home = args.home or validator_home(client.address_of_account)
    store = ValidatorStore(home / "state.sqlite3")
    device = cluster.device if cluster.distributed else select_device(args.device)
    evaluate = DistributedEvaluate(cluster, ctx.config) if cluster.distributed else None
    loop = ValidatorLoop(ctx, client, store, home / "state", device, args.start_window, evaluate=evaluate)
    return loop, store


def _ranks(args: argparse.Namespace, run: Any) -> int:
    """Under torchrun, ranks > 0 only evaluate the slices rank 0 hands out (validator/distributed.py); rank 0 runs
    `run(cluster)` as the validator, then releases them. Outside torchrun: `run` in this one process."""
    from node.ddp import leave_cluster
    from validator.distributed import follow, join_scoring_group

    cluster = join_scoring_group(args.device)
    if cluster.distributed and not cluster.leader:
        jobs = follow(cluster)
        print(f"rank {cluster.rank}/{cluster.world_size} ({cluster.backend}): {jobs} evaluation job(s)", flush=True)
        leave_cluster(cluster)
        return 0
    try:
        return int(run(cluster))
    finally:
        leave_cluster(cluster)  # tells the followers to stop


def cmd_run(args: argparse.Namespace) -> int:
    return _ranks(args, lambda cluster: _run(args, cluster))


def _run(args: argparse.Namespace, cluster: Any) -> int:
    loop, store = _loop(args, cluster)
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
    return _ranks(args, lambda cluster: _serve(args, cluster))


def _serve(args: argparse.Namespace, cluster: Any) -> int:
    from validator.service import ServiceSettings, create_app, serve

    loop, store = _loop(args, cluster)
    settings = (ServiceSettings(db_path=store.path) if args.port is None
                else ServiceSettings(port=args.port, db_path=store.path))

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


def cmd_status(args: argparse.Namespace) -> int:
    from validator.context import validator_status

    client, run_id, _, _ = _connect(args)
    status = validator_status(client, run_id, args.last)
    if args.json:
        print(json.dumps(status, indent=2, ensure_ascii=False))
        return 0
    me = status["validator"]
    if not status["registered"]:
        print(f"{me} is not registered as a validator in run {run_id}: `trainmarket validator register --stake "
              f"{eth(status['min_stake_wei'])}` first")
        return 0
    state = f"unbonding until block {status['unbonding_at']}" if status["unbonding_at"] else "active"
    print(f"validator {me} in run {run_id} at block {status['block']}: stake {eth(status['stake_wei'])} ETH "
          f"({state}), claimable now {eth(status['claimable_wei'])} ETH")
    for w in status["windows"]:
        print(f"window {w['window']}: {'published' if w['published'] else 'not published by this validator'}"
              + (f" (model {w['model_cid']}, report {w['report_cid'] or 'sealed until its epoch settles'})"
                 if w["published"] else ""))
    print(f"votes on epochs from {status['votes_from_epoch']}; "
          + (f"last weights revealed for epoch {status['last_voted_epoch']}" if status["last_voted_epoch"] is not None
             else "no epoch weights revealed yet"))
    return 0


def cmd_claim(args: argparse.Namespace) -> int:
    client, run_id, _, _ = _connect(args)
    me = client.address_of_account
    due = client.claimable(run_id, me)
    paid = client.claim(run_id) if due else 0
    if args.json:
        print(json.dumps({"claimed_wei": paid, "account": me, "run_id": run_id}))
    elif paid:
        print(f"claimed {eth(paid)} ETH from run {run_id} to {me}")
    else:
        print(f"nothing to claim in run {run_id}: no finalised epoch has credited {me} yet")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from validator.audit import as_json, audit_window, render, sole_publisher
    from validator.loop import configure_determinism

    configure_determinism()
    _, ctx = _context(args, key_required=False)
    validator = args.validator or sole_publisher(ctx, args.window)
    result = audit_window(ctx, args.window, validator, args.from_window, rtol=args.rtol)
    print(as_json(result) if args.json else render(result, only_mismatches=args.mismatches_only))
    sys.stdout.flush()
    return 0 if result.ok else 1
