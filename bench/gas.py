"""Gas of the TrainingRun contract on a real Anvil: commit, reveal, claim; an epoch's settlement (three
validators' commitWeights + revealReports + revealWeights + finalizeEpoch) with 64 and 256 trainers, and two
validators disputing the third's ballot (`disputeBallot`: a first dispute, then the forfeiting one); a
validator's sealed reports per epoch (publishWindow per window, one revealReports) at 1, 3 and 10 windows per
epoch; and `finalize_worst_case`,
the largest finalizeEpoch over the configurations the contract accepts (every run at the cap
maxTrainers × maxValidators = MAX_WEIGHT_ENTRIES, every validator revealing a full vector ordered so that the
consensus sort moves the most). Run `python -m bench.gas`; writes bench/results/gas.json. Transactions are
pre-signed and mined in batches (automine off) to stay fast."""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from eth_utils import keccak
from web3 import Web3

from base.commitments import commitment_hash, report_commitment, weights_commitment
from base.units import ETH
from contracts.anvil import AnvilNode
from contracts.client import TrainingRunClient, pack_weights
from contracts.deploy import deploy
from contracts.sending import broadcast, broadcast_all
from contracts.types import MAX_VALIDATORS, MAX_WEIGHT_ENTRIES, RunParams
from ipfs.cid import RAW, cid_bytes, cid_string

RESULTS = Path(__file__).resolve().parent / "results" / "gas.json"
TRAINER_COUNTS = (64, 256)
REPORT_WINDOWS = (1, 3, 10)  # windows per epoch for the sealed-report figures (demo/devnet epochs: 3)
VALIDATORS = 3
TARGETS = {"commit": 50_000, "reveal": 70_000, "claim": 50_000, "settlement_per_trainer": 10_000,
           "finalize_worst_case": 15_000_000}
# The configurations at the contract's cap on maxTrainers × maxValidators: the most validators, and the most
# trainers it allows (fewer of either costs less).
WORST_CASES = ((MAX_VALIDATORS, MAX_WEIGHT_ENTRIES // MAX_VALIDATORS), (8, MAX_WEIGHT_ENTRIES // 8))
PARAMS = RunParams.dev(
    keccak(b"bench"), window_blocks=20, reveal_blocks=3, windows_per_epoch=1, grace_period_blocks=10,
    min_trainer_stake=ETH // 10, min_validator_stake=ETH, max_trainers=max(TRAINER_COUNTS),
    start_delay_blocks=30,  # validators registered before window 0 vote on epoch 0
)


def content_cid(label: str) -> str:
    """A real CIDv1 (raw, base32), the shape trainers reveal."""
    return cid_string(cid_bytes(RAW, keccak(text=label)))


def _batch(node: AnvilNode, web3: Web3, raws: list[bytes]) -> list[Any]:
    """Send pre-signed transactions with automine off, mine until all are in, return their receipts."""
    node.set_automine(False)
    hashes = broadcast_all(web3, raws)
    node.set_automine(True)
    node.mine(1)
    receipts = [web3.eth.get_transaction_receipt(HexStr(h)) for h in hashes]
    failed = [r for r in receipts if r["status"] != 1]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(receipts)} batched transactions reverted")
    return receipts


def _mine_to(node: AnvilNode, block: int) -> None:
    """Mine so that the next transaction lands in `block` (at least one block from now)."""
    node.mine(max(0, block - 1 - node.block_number()))


def funded(node: AnvilNode, label: str, count: int) -> list[LocalAccount]:
    accounts = [Account.from_key(keccak(f"bench-{label}-{i}".encode())) for i in range(count)]
    for account in accounts:
        node.set_balance(account.address, 10**6 * ETH)
    return accounts


def setup_run(node: AnvilNode, sponsor: TrainingRunClient, validators: list[LocalAccount], trainers: int,
              params: RunParams = PARAMS, stakes: list[int] | None = None) -> tuple[int, list[TrainingRunClient]]:
    run_id = sponsor.create_run(params, value=1000 * ETH)
    clients = [sponsor.with_account(a) for a in funded(node, f"trainer-{trainers}-{run_id}", trainers)]
    fn = sponsor.contract.functions
    for start in range(0, trainers, 512):
        _batch(node, sponsor.web3, [c.signed(fn.registerTrainer(run_id), "registerTrainer", ETH, gas=300_000)
                                    for c in clients[start:start + 512]])
    stakes = stakes or [ETH] * len(validators)
    _batch(node, sponsor.web3, [sponsor.with_account(v).signed(fn.registerValidator(run_id), "registerValidator",
                                                               stake, gas=300_000)
                                for v, stake in zip(validators, stakes, strict=True)])
    return run_id, clients


def settle_epoch(node: AnvilNode, sponsor: TrainingRunClient, validators: list[LocalAccount], run_id: int,
                 epoch: int, vectors: list[list[int]]) -> dict[str, Any]:
    """Every validator publishes the epoch's windows (sealing its reports), commits its vector, reveals its reports
    and its vector; then finalizeEpoch. Returns the gas of each step (publication is per window, not part of
    settlement)."""
    web3, fn = sponsor.web3, sponsor.contract.functions
    run = sponsor.get_run(run_id)
    clients = [sponsor.with_account(v) for v in validators]
    windows = range(epoch * run.windows_per_epoch, (epoch + 1) * run.windows_per_epoch)
    publications: list[int] = []
    for window in windows:
        _mine_to(node, sponsor.window_bounds(run_id, window).reveal_end)
        publications += [int(r["gasUsed"]) for r in _batch(node, web3, [
            c.signed(fn.publishWindow(run_id, window, content_cid(f"model-{window}"),
                                      report_commitment(content_cid(f"report-{window}-{i}"), c.address_of_account)),
                     "publishWindow", gas=400_000) for i, c in enumerate(clients)])]
    _mine_to(node, sponsor.epoch_end_block(run_id, epoch))
    salts = [keccak(f"weights-{epoch}-{i}".encode()) for i in range(len(clients))]
    packed = [pack_weights(v) for v in vectors]
    commits = _batch(node, web3, [
        c.signed(fn.commitWeights(run_id, epoch, weights_commitment(p, s, run_id, epoch, c.address_of_account)),
                 "commitWeights", gas=200_000) for c, p, s in zip(clients, packed, salts, strict=True)])
    reports = _batch(node, web3, [
        c.signed(fn.revealReports(run_id, epoch, [content_cid(f"report-{w}-{i}") for w in windows]),
                 "revealReports", gas=5_000_000) for i, c in enumerate(clients)])
    reveals = _batch(node, web3, [c.signed(fn.revealWeights(run_id, epoch, p, s), "revealWeights", gas=1_000_000)
                                  for c, p, s in zip(clients, packed, salts, strict=True)])
    finalize = sponsor.finalize_epoch(run_id, epoch)
    return {
        "publish_window": publications,
        "commit_weights": [int(r["gasUsed"]) for r in commits],
        "reveal_reports": [int(r["gasUsed"]) for r in reports],
        "reveal_weights": [int(r["gasUsed"]) for r in reveals],
        "finalize": int(finalize["gasUsed"]),
    }


def measure_epoch(node: AnvilNode, sponsor: TrainingRunClient, validators: list[LocalAccount], run_id: int,
                  clients: list[TrainingRunClient], epoch: int) -> dict[str, Any]:
    """One window (= one epoch here) of commit, reveal, three validators' ballots, finalize and a claim."""
    web3, fn, trainers = sponsor.web3, sponsor.contract.functions, len(clients)
    window = epoch * PARAMS.windows_per_epoch
    _mine_to(node, sponsor.window_bounds(run_id, window).start)
    salts = [keccak(f"salt-{epoch}-{i}".encode()) for i in range(trainers)]
    cids = [content_cid(f"contribution-{run_id}-{epoch}-{i}") for i in range(trainers)]
    commits = _batch(node, web3, [
        c.signed(fn.commit(run_id, window, commitment_hash(cid, salt, run_id, window, c.account.address)),
                 "commit", gas=120_000)
        for c, cid, salt in zip(clients, cids, salts, strict=True)])
    _mine_to(node, sponsor.window_bounds(run_id, window).end)
    reveals = _batch(node, web3, [c.signed(fn.reveal(run_id, window, cid, salt), "reveal", gas=150_000)
                                  for c, cid, salt in zip(clients, cids, salts, strict=True)])
    rng = random.Random(trainers * 1000 + epoch)
    honest = [rng.randint(1, 65535) for _ in range(trainers)]
    # two honest validators with small noise, one that reports the same values in the wrong order
    vectors = [[max(0, min(65535, w + rng.randint(-500, 500))) for w in honest] for _ in range(2)]
    vectors.append(sorted(honest, reverse=True))
    settled = settle_epoch(node, sponsor, validators, run_id, epoch, vectors)
    claim_receipt = broadcast(web3, clients[1].signed(fn.claim(run_id), "claim"), clients[1].address_of_account,
                              "claim")
    # the two others dispute the third validator's ballot: the first dispute, then the one that reaches a stake
    # majority and forfeits its held credit (not part of settlement: only a ballot that fails the audit costs it)
    accused = validators[2].address
    disputes = [sponsor.with_account(v).dispute_ballot(run_id, epoch, accused) for v in validators[:2]]
    assert all(r is not None for r in disputes)  # sent without `once`: always a receipt
    settlement = (sum(settled["commit_weights"]) + sum(settled["reveal_reports"]) + sum(settled["reveal_weights"])
                  + settled["finalize"])
    return {
        "commit": int(statistics.median(r["gasUsed"] for r in commits)),
        "reveal": int(statistics.median(r["gasUsed"] for r in reveals)),
        **settled,
        "claim": int(claim_receipt["gasUsed"]),
        "dispute_ballot": [int(r["gasUsed"]) for r in disputes if r is not None],  # [first dispute, the forfeiting one]
        "settlement_total": settlement,
        "settlement_per_trainer": settlement // trainers,
    }


def measure_reports(node: AnvilNode, sponsor: TrainingRunClient, windows_per_epoch: int) -> dict[str, Any]:
    """One validator's sealed reports over two epochs of `windows_per_epoch` windows (8 trainers): publishWindow
    per window (the first epoch fills fresh seal slots, the second rewrites them) and revealReports per epoch."""
    params = replace(PARAMS, windows_per_epoch=windows_per_epoch, max_trainers=8, start_delay_blocks=60,
                     unbonding_blocks=windows_per_epoch * PARAMS.window_blocks + PARAMS.reveal_blocks
                     + 2 * PARAMS.grace_period_blocks)
    accounts = funded(node, f"reports-{windows_per_epoch}", 1)
    run_id, _ = setup_run(node, sponsor, accounts, 8, params, [ETH])
    epochs = []
    for epoch in (0, 1):
        settled = settle_epoch(node, sponsor, accounts, run_id, epoch, [[1] * 8])
        epochs.append({"publish_window": settled["publish_window"], "reveal_reports": settled["reveal_reports"][0],
                       "per_epoch": sum(settled["publish_window"]) + settled["reveal_reports"][0]})
    return {"first": epochs[0], "steady": epochs[1]}


def worst_case_vectors(validators: int, trainers: int) -> list[list[int]]:
    """Full vectors whose normalised values, for every trainer but one, strictly increase as finalizeEpoch takes
    the validators (last revealer first): each insertion then moves every key sorted before it."""
    return [[0xFFFF] + [60_000 - 100 * v] * (trainers - 1) for v in range(validators)]


def worst_case_stakes(validators: int) -> list[int]:
    """The last revealer (sorted last) holds more than all others together: the stake scan visits every key."""
    return [ETH] * (validators - 1) + [validators * ETH]


def measure_worst_case(node: AnvilNode, sponsor: TrainingRunClient, validators: int, trainers: int) -> int:
    params = replace(PARAMS, max_trainers=trainers, max_validators=validators, start_delay_blocks=60)
    accounts = funded(node, f"worst-{validators}-{trainers}", validators)
    run_id, _ = setup_run(node, sponsor, accounts, trainers, params, worst_case_stakes(validators))
    settled = settle_epoch(node, sponsor, accounts, run_id, 0, worst_case_vectors(validators, trainers))
    return int(settled["finalize"])


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
        worst = {f"{v}x{t}": measure_worst_case(node, sponsor, v, t) for v, t in WORST_CASES}
        reports = {str(w): measure_reports(node, sponsor, w) for w in REPORT_WINDOWS}
    largest = runs[TRAINER_COUNTS[-1]]
    results: dict[str, Any] = {
        # headline figures: the worse of the first and the steady epoch
        "commit": max(e["commit"] for e in largest),
        "reveal": max(e["reveal"] for e in largest),
        "claim": max(e["claim"] for e in largest),
        "settlement_per_trainer": {str(n): max(e["settlement_per_trainer"] for e in r) for n, r in runs.items()},
        "settlement_per_trainer_steady": {str(n): r[1]["settlement_per_trainer"] for n, r in runs.items()},
        "dispute_ballot": max(max(e["dispute_ballot"]) for e in largest),
        "finalize_worst_case": max(worst.values()),
        "finalize_worst_case_by_config": worst,  # "validators x trainers"
        # one validator, per epoch: publishWindow of each window (sealing its report) + one revealReports
        "sealed_reports_by_windows_per_epoch": reports,
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
                f"settlement {n:>3} trainers, {label:<6} epoch: commitWeights {e['commit_weights']}, "
                f"revealWeights {e['reveal_weights']}, finalize {e['finalize']}, per trainer "
                f"{e['settlement_per_trainer']}  target <= {TARGETS['settlement_per_trainer']}"
            )
    print(f"disputeBallot (first, forfeiting): first epoch {largest[0]['dispute_ballot']}, "
          f"steady {largest[1]['dispute_ballot']}")
    for w, sealed in reports.items():
        print(f"sealed reports, {w:>2} windows per epoch, per validator: first epoch {sealed['first']}, "
              f"steady {sealed['steady']}")
    print(f"finalize_worst_case {results['finalize_worst_case']} gas {worst}  "
          f"target <= {TARGETS['finalize_worst_case']}")
    print(f"wrote {RESULTS} in {results['seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
