"""Gas of the TrainingRun contract on a real Anvil: commit, reveal, claim, and an epoch's settlement (three
validators' submitWeights + finalizeEpoch) with 64 and 256 trainers. Run `python -m bench.gas`; writes
bench/results/gas.json. Transactions are pre-signed and mined in batches (automine off) to stay fast."""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3

from contracts.anvil import AnvilNode
from contracts.client import TrainingRunClient, commitment_hash
from contracts.deploy import deploy
from contracts.types import RunParams

RESULTS = Path(__file__).resolve().parent / "results" / "gas.json"
ETH = 10**18
TRAINER_COUNTS = (64, 256)
VALIDATORS = 3
TARGETS = {"commit": 50_000, "reveal": 70_000, "claim": 50_000, "settlement_per_trainer": 10_000}
PARAMS = RunParams(
    config_digest=keccak(b"bench"),
    window_blocks=20,
    reveal_blocks=3,
    windows_per_epoch=1,
    grace_period_blocks=10,
    unbonding_blocks=10,
    validator_share_bps=2000,
    slash_bps=1000,
    miss_threshold=3,
    min_trainer_stake=ETH // 10,
    min_validator_stake=ETH,
    reward_per_epoch=10 * ETH,
)


def _batch(node: AnvilNode, web3: Web3, raws: list[bytes]) -> list[Any]:
    """Send pre-signed transactions with automine off, mine until all are in, return their receipts."""
    node.set_automine(False)
    hashes = [web3.eth.send_raw_transaction(raw) for raw in raws]
    node.set_automine(True)
    node.mine(1)
    receipts = [web3.eth.get_transaction_receipt(h) for h in hashes]
    failed = [r for r in receipts if r["status"] != 1]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(receipts)} batched transactions reverted")
    return receipts


def _mine_to(node: AnvilNode, block: int) -> None:
    """Mine so that the next transaction lands in `block`."""
    node.mine(block - 1 - node.block_number())


def setup_run(
    node: AnvilNode, sponsor: TrainingRunClient, validators: list[LocalAccount], trainers: int
) -> tuple[int, list[TrainingRunClient]]:
    run_id = sponsor.create_run(PARAMS, value=1000 * ETH)
    accounts = [Account.from_key(keccak(f"bench-trainer-{trainers}-{i}".encode())) for i in range(trainers)]
    for account in accounts:
        node.set_balance(account.address, 10 * ETH)
    clients = [sponsor.with_account(a) for a in accounts]
    fn = sponsor.contract.functions
    _batch(
        node, sponsor.web3, [c.signed(fn.registerTrainer(run_id), "registerTrainer", ETH, gas=250_000) for c in clients]
    )
    for v in validators:
        sponsor.with_account(v).register_validator(run_id, ETH)
    return run_id, clients


def measure_epoch(
    node: AnvilNode,
    sponsor: TrainingRunClient,
    validators: list[LocalAccount],
    run_id: int,
    clients: list[TrainingRunClient],
    epoch: int,
) -> dict[str, Any]:
    """One window (= one epoch here) of commit, reveal, three submissions, finalize and a claim."""
    web3, fn, trainers = sponsor.web3, sponsor.contract.functions, len(clients)
    window = sponsor.current_window(run_id)
    assert sponsor.epoch_of_window(run_id, window) == epoch
    salts = [keccak(f"salt-{epoch}-{i}".encode()) for i in range(trainers)]
    cids = [f"bafkreibench{epoch:04d}{i:06d}{'x' * 40}" for i in range(trainers)]  # CIDv1-sized strings
    commits = _batch(
        node,
        web3,
        [
            c.signed(
                fn.commit(run_id, window, commitment_hash(cid, salt, run_id, window, c.account.address)),
                "commit",
                gas=120_000,
            )
            for c, cid, salt in zip(clients, cids, salts, strict=True)
        ],
    )
    _mine_to(node, sponsor.window_bounds(run_id, window).end)
    reveals = _batch(
        node,
        web3,
        [
            c.signed(fn.reveal(run_id, window, cid, salt), "reveal", gas=150_000)
            for c, cid, salt in zip(clients, cids, salts, strict=True)
        ],
    )
    _mine_to(node, sponsor.epoch_end_block(run_id, epoch))
    rng = random.Random(trainers * 1000 + epoch)
    honest = [rng.randint(1, 65535) for _ in range(trainers)]
    submit_gas = []
    for k, v in enumerate(validators):
        # two honest validators with small noise, one that reports the same values in the wrong order
        noisy = [max(0, min(65535, w + rng.randint(-500, 500))) for w in honest]
        weights = noisy if k < 2 else sorted(honest, reverse=True)
        submit_gas.append(int(sponsor.with_account(v).submit_weights(run_id, epoch, weights)["gasUsed"]))
    finalize_gas = int(sponsor.finalize_epoch(run_id, epoch)["gasUsed"])
    claim_receipt = web3.eth.wait_for_transaction_receipt(
        web3.eth.send_raw_transaction(clients[1].signed(fn.claim(run_id), "claim"))
    )
    settlement = sum(submit_gas) + finalize_gas
    return {
        "commit": int(statistics.median(r["gasUsed"] for r in commits)),
        "reveal": int(statistics.median(r["gasUsed"] for r in reveals)),
        "submit_weights": submit_gas,
        "finalize": finalize_gas,
        "claim": int(claim_receipt["gasUsed"]),
        "settlement_total": settlement,
        "settlement_per_trainer": settlement // trainers,
    }


def main() -> int:
    started = time.perf_counter()
    with AnvilNode(accounts=1 + VALIDATORS, gas_limit=1_000_000_000) as node:
        web3 = Web3(Web3.HTTPProvider(node.rpc_url))
        keys = node.private_keys
        deployer = Account.from_key(keys[0])
        deployment = deploy(web3, deployer)
        sponsor = TrainingRunClient(web3, deployment.address, deployer, deployment.block)
        validators = [Account.from_key(k) for k in keys[1 : 1 + VALIDATORS]]
        runs: dict[int, list[dict[str, Any]]] = {}
        for trainers in TRAINER_COUNTS:
            run_id, clients = setup_run(node, sponsor, validators, trainers)
            # epoch 0 allocates fresh storage; epoch 1 shows the steady state (slots reused)
            runs[trainers] = [measure_epoch(node, sponsor, validators, run_id, clients, e) for e in (0, 1)]
    largest = runs[TRAINER_COUNTS[-1]]
    results: dict[str, Any] = {
        # headline figures: the worse of the first and the steady epoch
        "commit": max(e["commit"] for e in largest),
        "reveal": max(e["reveal"] for e in largest),
        "claim": max(e["claim"] for e in largest),
        "settlement_per_trainer": {str(n): max(e["settlement_per_trainer"] for e in r) for n, r in runs.items()},
        "settlement_per_trainer_steady": {str(n): r[1]["settlement_per_trainer"] for n, r in runs.items()},
        "epochs": {str(n): {"first": r[0], "steady": r[1]} for n, r in runs.items()},
        "validators": VALIDATORS,
        "targets": TARGETS,
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    for key in ("commit", "reveal", "claim"):
        print(
            f"{key:<7} {results[key]:>8} gas  (first epoch {largest[0][key]}, steady {largest[1][key]})"
            f"  target <= {TARGETS[key]}"
        )
    for n, r in runs.items():
        for label, e in zip(("first", "steady"), r, strict=True):
            print(
                f"settlement {n:>3} trainers, {label:<6} epoch: submitWeights {e['submit_weights']}, "
                f"finalize {e['finalize']}, per trainer {e['settlement_per_trainer']}"
                f"  target <= {TARGETS['settlement_per_trainer']}"
            )
    print(f"wrote {RESULTS} in {results['seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
