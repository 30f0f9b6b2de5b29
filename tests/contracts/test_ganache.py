"""The managed Ganache process (the `--chain ganache` option of the demo): a real Ganache from npm, driven
through the same `LocalChain` surface as Anvil."""

from __future__ import annotations

import time
from pathlib import Path

from eth_account import Account
from web3 import Web3

from base.process import port_open
from contracts.deploy import deploy
from contracts.localchain import DEV_PRIVATE_KEYS, start_local_chain
from contracts.sending import broadcast
from contracts.tx import ResendPolicy


def test_ganache_runs_the_contract_with_the_dev_keys_and_a_block_clock(tmp_path: Path) -> None:
    chain = start_local_chain("ganache", tmp_path)
    try:
        assert chain.rpc_url.startswith("http://127.0.0.1:") and chain.private_keys == list(DEV_PRIVATE_KEYS)
        web3 = Web3(Web3.HTTPProvider(chain.rpc_url))
        sponsor = Account.from_key(chain.private_keys[0])
        assert web3.eth.get_balance(sponsor.address) > 0  # the dev mnemonic funds Anvil's accounts here too
        deployment = deploy(web3, sponsor)  # shanghai bytecode runs on Ganache
        assert web3.eth.get_code(deployment.address)

        snap = chain.snapshot()
        before = chain.block_number()
        chain.mine(3)
        assert chain.block_number() == before + 3
        chain.set_balance("0x" + "11" * 20, 12345)
        assert web3.eth.get_balance(Web3.to_checksum_address("0x" + "11" * 20)) == 12345
        chain.revert(snap)
        assert chain.block_number() == before

        chain.start_clock(0.5)
        clocked = chain.block_number()
        signed = sponsor.sign_transaction({
            "to": "0x" + "22" * 20, "value": 1, "gas": 21_000, "gasPrice": web3.eth.gas_price,
            "nonce": web3.eth.get_transaction_count(sponsor.address), "chainId": web3.eth.chain_id,
        })
        receipt = broadcast(web3, bytes(signed.raw_transaction), sponsor.address, "transfer",
                            ResendPolicy(receipt_timeout_s=10))
        assert receipt["status"] == 1  # the miner is stopped: only the clock's blocks take transactions
        time.sleep(1.5)
        assert chain.block_number() >= clocked + 2  # and blocks keep coming with no transactions
    finally:
        chain.stop()
    assert not chain.running and not port_open(int(chain.rpc_url.rsplit(":", 1)[1]))
