"""The managed Anvil process and the client's failure modes when the chain is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3
from web3.types import TxParams, Wei

from base.errors import ToolMissingError
from base.process import free_port, port_open
from contracts import tx
from contracts.anvil import AnvilNode
from contracts.client import TrainingRunClient
from contracts.deploy import Deployment
from contracts.errors import ChainUnreachable, DeploymentError
from contracts.localchain import DEV_PRIVATE_KEYS
from contracts.sending import broadcast, send_transaction
from contracts.tx import ResendPolicy, nonce_of, sign_transaction

from .conftest import Chain


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRAINMARKET_ANVIL", str(tmp_path / "no-anvil"))
    with pytest.raises(ToolMissingError, match="anvil not found"):
        AnvilNode().start()


def test_starts_on_loopback_mines_and_stops(tmp_path: Path) -> None:
    node = AnvilNode(log_path=tmp_path / "anvil.log")
    with node:
        assert node.rpc_url.startswith("http://127.0.0.1:")
        assert port_open(node.port)
        before = node.block_number()
        node.mine(5)
        assert node.block_number() == before + 5
    assert not node.running
    assert not port_open(node.port)


def test_dev_keys_are_anvils_funded_accounts(chain: Chain) -> None:
    for key in DEV_PRIVATE_KEYS:
        assert chain.web3.eth.get_balance(Account.from_key(key).address) > 0


def test_snapshot_and_revert_restore_state(chain: Chain) -> None:
    snapshot = chain.node.snapshot()
    before = chain.node.block_number()
    chain.node.mine(3)
    chain.node.revert(snapshot)
    assert chain.node.block_number() == before


def test_client_on_a_dead_rpc_raises_chain_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    # One retry, not the default policy's eight with backoff (about 20 s of waiting that this test is not about).
    monkeypatch.setattr(tx, "RESEND_POLICY", ResendPolicy(retries=1, backoff_s=0.01))
    url = f"http://127.0.0.1:{free_port()}"
    client = TrainingRunClient(Web3(Web3.HTTPProvider(url)), "0x" + "11" * 20, Account.from_key(DEV_PRIVATE_KEYS[0]))
    with pytest.raises(ChainUnreachable) as info:
        client.run_count()
    assert info.value.rpc_url == url
    with pytest.raises(ChainUnreachable):
        client.fund(0, 1)


def test_deployment_file_round_trip(chain: Chain, tmp_path: Path) -> None:
    path = tmp_path / "deployment.json"
    chain.deployment.save(path)
    assert Deployment.load(path) == chain.deployment
    assert chain.deployment.chain_id == 31337
    assert len(chain.web3.eth.get_code(chain.deployment.address)) > 0
    with pytest.raises(DeploymentError):
        Deployment.load(tmp_path / "missing.json")


def test_nonces_are_tracked_per_chain(chain: Chain) -> None:
    """The same key on a second chain must not shift the nonces used on the first: a nonce past the chain's count
    leaves the transaction pending forever."""
    account = chain.trainers[5].account
    sent_here = chain.web3.eth.get_transaction_count(account.address)
    transfer: TxParams = {"to": account.address, "value": Wei(1)}
    with AnvilNode() as other:
        other_web3 = Web3(Web3.HTTPProvider(other.rpc_url))
        for _ in range(sent_here + 3):  # more transactions there than this key ever sent here
            send_transaction(other_web3, account, transfer, "transfer")
        assert other_web3.eth.get_transaction_count(account.address) == sent_here + 3
    raw = sign_transaction(chain.web3, account, transfer, "transfer")
    assert nonce_of(raw) == sent_here
    assert broadcast(chain.web3, raw, account.address, "transfer")["status"] == 1
    assert chain.web3.eth.get_transaction_count(account.address) == sent_here + 1
