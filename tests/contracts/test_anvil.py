"""The managed Anvil process and the client's failure modes when the chain is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from contracts.anvil import AnvilNode
from contracts.client import TrainingRunClient
from contracts.deploy import Deployment, deploy
from contracts.errors import ChainUnreachable, DeploymentError
from contracts.localchain import DEV_PRIVATE_KEYS
from trainmarket.errors import ToolMissingError
from trainmarket.process import free_port, port_open

from .conftest import ETH, PARAMS, Chain


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


def test_client_on_a_dead_rpc_raises_chain_unreachable() -> None:
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
    """The same dev key on a second chain must not shift the nonces used on the first."""
    with AnvilNode() as other:
        other_web3 = Web3(Web3.HTTPProvider(other.rpc_url))
        account = chain.sponsor.account
        deploy(other_web3, account)
        deploy(other_web3, account)
    chain.sponsor.fund(chain.sponsor.create_run(PARAMS), ETH)  # would hang on a nonce gap
