"""Transactions estimated against the same pending state and mined in one block: each must still land.

Found by the `validator_lag` fault scenario (bench/faults/lag.py): two validators revealed their weights in the
same block, both estimated as the epoch's first revealer, whose slot an earlier epoch had written; the second
took the next slot, never written before, and storing a fresh slot costs ~17k gas more than rewriting one. The
25% headroom did not cover it: the reveal ran out of gas, the validator lost its vote for the epoch and its loop
stopped on the failed transaction."""

from __future__ import annotations

from eth_typing import HexStr

from base.units import ETH
from contracts.client import pack_weights
from contracts.sending import broadcast_all

from .conftest import Chain, finalize, make_run, publish_epoch, to_epoch_end, to_start, weight_salt


def test_two_weight_reveals_in_one_block_both_land_when_one_takes_a_fresh_slot(chain: Chain) -> None:
    rid = make_run(chain)
    voters = chain.validators[:2]
    for trainer in chain.trainers[:2]:
        trainer.register_trainer(rid, ETH)
    for v in voters:
        v.register_validator(rid, 2 * ETH)
    to_start(chain, rid)
    # Epoch 0: one ballot, so revealer slot 0 is written and slot 1 never is.
    publish_epoch(chain, rid, 0, voters[:1])
    to_epoch_end(chain, rid, 0)
    voters[0].commit_weights(rid, 0, [1, 1], weight_salt(voters[0], 0))
    chain.mine_to(chain.sponsor.settlement_of(rid, 0).reveals_from)
    voters[0].reveal_weights(rid, 0, [1, 1], weight_salt(voters[0], 0))
    finalize(chain, rid, 0, after_deadline=True)
    # Epoch 1: both vote; both reveals are signed (estimated) before either is mined, then mined together.
    publish_epoch(chain, rid, 1, voters)
    to_epoch_end(chain, rid, 1)
    for v in voters:
        v.commit_weights(rid, 1, [2, 1], weight_salt(v, 1))
    assert chain.sponsor.settlement_of(rid, 1).reveals_open(chain.node.block_number() + 1)  # every vote is in
    raws = [v.signed(v.contract.functions.revealWeights(rid, 1, pack_weights([2, 1]), weight_salt(v, 1)),
                     "revealWeights") for v in voters]
    chain.node.set_automine(False)
    try:
        hashes = [HexStr(h) for h in broadcast_all(chain.web3, raws)]
        chain.node.mine(1)
    finally:
        chain.node.set_automine(True)
    receipts = [chain.web3.eth.get_transaction_receipt(h) for h in hashes]
    assert receipts[0]["blockNumber"] == receipts[1]["blockNumber"]
    gas = [(r["gasUsed"], chain.web3.eth.get_transaction(h)["gas"]) for r, h in zip(receipts, hashes, strict=True)]
    assert [r["status"] for r in receipts] == [1, 1], f"(gas used, limit) per reveal: {gas}"
    assert gas[1][0] > gas[0][0] + 15_000  # the second paid for a fresh slot: the case the headroom must cover
