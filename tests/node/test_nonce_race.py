"""A node keeps committing and revealing while its user sends from the same key elsewhere (a `node claim`,
a wallet): on a chain that mines a block a second, as the devnet does, so transactions wait in the pool and
both senders keep picking the same next nonce. Real Anvil, real IPFS, the real window loop."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3
from web3.exceptions import Web3RPCError

from base.units import ETH
from contracts.anvil import AnvilNode
from contracts.sending import broadcast_all
from contracts.tx import NONCES
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from node.runner import TrainerNode
from tests.node.test_runner_integration import node_setup, start_dev_run

pytestmark = pytest.mark.slow
TRAINER = 4
WINDOWS = 2


def test_the_node_survives_its_users_own_transactions(ipfs_daemon: IpfsDaemon, tmp_path: Path) -> None:
    with AnvilNode() as chain, IpfsClient(ipfs_daemon.api_url) as blobs:
        run = start_dev_run(chain, blobs, ipfs_daemon.api_url)
        run.client(TRAINER).register_trainer(run.run_id, ETH)
        chain.start_clock(1)  # interval mining: sent transactions wait in the pool for the next block
        stop = threading.Event()
        sent: list[int] = []
        refused: list[str] = []

        def user() -> None:
            """Another process with the same key: a fresh web3, the chain's pending count as its nonce."""
            web3 = Web3(Web3.HTTPProvider(chain.rpc_url))
            account = Account.from_key(run.keys[TRAINER])
            while not stop.is_set():
                nonce = web3.eth.get_transaction_count(account.address, "pending")
                tx = {"to": account.address, "value": 0, "gas": 21_000, "gasPrice": web3.eth.gas_price,
                      "nonce": nonce, "chainId": web3.eth.chain_id}
                try:
                    broadcast_all(web3, [bytes(account.sign_transaction(tx).raw_transaction)])
                    sent.append(nonce)
                except Web3RPCError as err:  # the node took this nonce first: the user's wallet would retry too
                    refused.append(str(err))
                stop.wait(0.1)

        node = TrainerNode(node_setup(run, TRAINER, tmp_path / "home", blobs))
        clock = run.clock()
        while clock.end(clock.window_of(chain.block_number() + 1)) - chain.block_number() < 6:
            stop.wait(0.2)  # start early in a window, as `node run` does, so no window is lost to a late start
        thread = threading.Thread(target=user, daemon=True)
        thread.start()
        try:
            trained = node.run(windows=WINDOWS)
            entries = node.journal.entries()
        finally:
            stop.set()
            thread.join(timeout=10)
            node.close()
            NONCES.reset()
    assert trained == WINDOWS
    trained_entries = [e for e in entries if not e.note]
    assert len(trained_entries) == WINDOWS and all(e.committed and e.revealed for e in trained_entries), entries
    assert not [e for e in entries if e.missed], entries
    assert len(sent) >= 20, f"the user's transactions did not run beside the node ({len(sent)} sent)"
