"""Client helpers against the contract's own hashing, revert decoding, and a re-entering receiver."""

from __future__ import annotations

from typing import Any

import pytest
import solcx
from web3 import Web3

from contracts.client import commitment_hash, pack_weights
from contracts.compile import SETTINGS, load_artifact
from contracts.errors import ContractReverted
from contracts.tx import ErrorDecoder, send_transaction
from trainmarket.paths import solc_wrapper

from .conftest import ETH, Chain, commit_cid, make_run, reverts, salt_for, to_reveal_period

ATTACKER = """
// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;
interface ITrainingRun {
    function registerTrainer(uint256 runId) external payable;
    function requestUnstake(uint256 runId) external;
    function withdrawStake(uint256 runId) external;
}
/// Re-enters withdrawStake from its receive hook.
contract Reenterer {
    ITrainingRun public target;
    uint256 public runId;
    constructor(address t, uint256 r) { target = ITrainingRun(t); runId = r; }
    function join() external payable { target.registerTrainer{value: msg.value}(runId); }
    function leave() external { target.requestUnstake(runId); }
    function withdraw() external { target.withdrawStake(runId); }
    receive() external payable { target.withdrawStake(runId); }
}
"""


def test_commitment_hash_matches_what_the_contract_accepts(chain: Chain, run_id: int) -> None:
    trainer = chain.trainers[0]
    cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    trainer.commit(run_id, 0, commitment_hash(cid, salt_for("x")))
    to_reveal_period(chain, run_id, 0)
    trainer.reveal(run_id, 0, cid, salt_for("x"))  # the contract recomputed the same hash
    with pytest.raises(ValueError):
        commitment_hash(cid, b"short")


def test_pack_weights_is_big_endian_uint16() -> None:
    assert pack_weights([1, 0x0203, 65535]) == b"\x00\x01\x02\x03\xff\xff"
    with pytest.raises(ValueError):
        pack_weights([-1])


def test_revert_names_the_error_and_reads_as_a_sentence(chain: Chain, run_id: int) -> None:
    commit_cid(chain, chain.trainers[0], run_id, 0, "a")
    with pytest.raises(ContractReverted) as info:
        commit_cid(chain, chain.trainers[0], run_id, 0, "a")
    err = info.value
    assert (err.error_name, err.function) == ("AlreadyCommitted", "commit")
    assert err.error_args == {"runId": run_id, "window": 0, "trainer": chain.trainers[0].account.address}
    assert err.plain().startswith("The contract refused commit: already committed (")


def test_decoder_knows_every_custom_error_in_the_abi() -> None:
    abi = load_artifact()["abi"]
    decoder = ErrorDecoder(abi)
    names = {item["name"] for item in abi if item["type"] == "error"}
    assert len(names) >= 25
    assert decoder.decode(b"\xde\xad\xbe\xef") is None


def _deploy_attacker(chain: Chain, run_id: int) -> Any:
    output = solcx.compile_standard(
        {
            "language": "Solidity",
            "sources": {"Reenterer.sol": {"content": ATTACKER}},
            "settings": {**SETTINGS, "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}}},
        },
        solc_binary=str(solc_wrapper()),
    )
    compiled = output["contracts"]["Reenterer.sol"]["Reenterer"]
    factory = chain.web3.eth.contract(abi=compiled["abi"], bytecode=compiled["evm"]["bytecode"]["object"])
    deployer = chain.trainers[5].account
    tx = factory.constructor(chain.deployment.address, run_id).build_transaction({"from": deployer.address})
    receipt = send_transaction(chain.web3, deployer, tx, "deploy Reenterer")
    return chain.web3.eth.contract(address=receipt["contractAddress"], abi=compiled["abi"])


def test_reentrant_withdraw_is_refused(chain: Chain) -> None:
    rid = make_run(chain, unbonding_blocks=1)
    attacker = _deploy_attacker(chain, rid)
    owner = chain.trainers[5]
    decoder = owner.decoder

    def call(fn: Any, value: int = 0) -> None:
        params: Any = {"to": attacker.address, "data": fn._encode_transaction_data(), "value": value}
        send_transaction(chain.web3, owner.account, params, fn.fn_name, decoder)

    call(attacker.functions.join(), ETH)
    call(attacker.functions.leave())
    chain.node.mine(2)
    held = chain.web3.eth.get_balance(chain.deployment.address)
    # the inner withdrawStake hits the lock, the receive hook reverts, so the payout fails as a whole
    with reverts("TransferFailed", to=attacker.address, amount=ETH):
        call(attacker.functions.withdraw())
    assert chain.web3.eth.get_balance(chain.deployment.address) == held
    assert chain.sponsor.trainer_info(rid, Web3.to_checksum_address(attacker.address)).stake == ETH
