"""Every CLI that talks to a chain or IPFS joins external endpoints: an Anvil and an IPFS daemon started here,
outside the CLI (as a remote chain or a user's Kubo would be), keys from encrypted keystores.

`trainmarket devnet --rpc-url … --ipfs-api … --keystore …` deploys onto them and starts nothing of its own;
then the deployment file's RPC URL is pointed at a dead port, so the node and validator commands can only
succeed through their own `--rpc-url` flag (or $TRAINMARKET_RPC_URL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from base.process import free_port, port_open
from base.run_config import RunConfig
from contracts.anvil import AnvilNode
from contracts.deploy import Deployment
from contracts.tx import NONCES
from contracts.views import TrainingRunViews
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from node.keys import PASSPHRASE_ENV, write_keystore
from trainmarket.cli import main

PASSPHRASE = "external-endpoints-test"


@pytest.fixture()
def external_chain() -> Iterator[AnvilNode]:
    with AnvilNode() as node:
        yield node
    NONCES.reset()


def _keystore(tmp_path: Path, name: str, key: str) -> Path:
    path = tmp_path / "keys" / f"{name}.json"
    write_keystore(Account.from_key(key), path, PASSPHRASE)
    return path


def test_clis_join_an_external_chain_and_ipfs(
    external_chain: AnvilNode, ipfs_daemon: IpfsDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("TRAINMARKET_HOME", str(home))
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    for env in ("TRAINMARKET_IPFS_API", "TRAINMARKET_PRIVATE_KEY", "TRAINMARKET_VALIDATOR_KEY", "TRAINMARKET_RPC_URL"):
        monkeypatch.delenv(env, raising=False)
    rpc, api = external_chain.rpc_url, ipfs_daemon.api_url
    keys = external_chain.private_keys
    sponsor, trainer, validator = (_keystore(tmp_path, n, keys[i]) for i, n in ((0, "sponsor"), (3, "t"), (4, "v")))
    deployment_file = tmp_path / "deployment.json"

    assert main(["devnet", "--rpc-url", rpc, "--ipfs-api", api, "--keystore", str(sponsor),
                 "--deployment", str(deployment_file)]) == 0
    assert not (home / "devnet" / "ipfs").exists()  # no IPFS daemon of its own
    assert external_chain.running  # the external chain was neither replaced nor stopped
    deployment = Deployment.load(deployment_file)
    raw = json.loads(deployment_file.read_text())
    assert deployment.rpc_url == rpc and raw["ipfs_api"] == api
    assert deployment.deployer == Account.from_key(keys[0]).address
    with IpfsClient(api) as blobs:  # the run's config lives on the external daemon
        RunConfig.from_json_bytes(blobs.cat(raw["config_cid"], 1 << 20))
    views = TrainingRunViews(Web3(Web3.HTTPProvider(rpc)), deployment.address, deployment.block)
    assert views.run_count() == 1

    dead = free_port()
    assert not port_open(dead)
    deployment_file.write_text(json.dumps({**raw, "rpc_url": f"http://127.0.0.1:{dead}", "ipfs_api": "http://127.0.0.1:9"}))
    endpoints = ["--deployment", str(deployment_file), "--rpc-url", rpc, "--ipfs-api", api]

    assert main(["node", "register", *endpoints, "--keystore", str(trainer), "--stake", "1"]) == 0
    assert views.trainer_info(0, Account.from_key(keys[3]).address).registered
    capsys.readouterr()
    # A validator that is not registered is refused at start, with the command that registers it.
    assert main(["validator", "run", *endpoints, "--keystore", str(validator), "--home", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert "is not an active validator of run 0" in err and "trainmarket validator register --stake 5" in err
    # Stakes are ETH both ways; --stake-eth is the old name of --stake.
    assert main(["validator", "register", *endpoints, "--keystore", str(validator), "--stake", "1"]) == 2
    assert "insufficient stake: 1 ETH offered, run 0 requires at least 5 ETH" in capsys.readouterr().err
    assert main(["validator", "register", *endpoints, "--keystore", str(validator), "--stake-eth", "5"]) == 0
    assert views.validator_info(0, Account.from_key(keys[4]).address).registered
    capsys.readouterr()
    assert main(["validator", "status", *endpoints, "--keystore", str(validator), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["registered"] and status["stake_wei"] == 5 * 10**18 and status["claimable_wei"] == 0
    # status reads the chain and IPFS (the run's reports) through the flags alone
    assert main(["node", "status", *endpoints, "--keystore", str(trainer), "--home", str(tmp_path / "j")]) == 0
    out = capsys.readouterr().out
    assert "stake 1 ETH (active)" in out

    # The same through the environment, and the dead URL in the file is really used when nothing overrides it.
    monkeypatch.setenv("TRAINMARKET_RPC_URL", rpc)
    assert main(["node", "claim", "--deployment", str(deployment_file), "--keystore", str(trainer)]) == 0
    assert "nothing to claim" in capsys.readouterr().out
    monkeypatch.delenv("TRAINMARKET_RPC_URL")
    assert main(["node", "claim", "--deployment", str(deployment_file), "--keystore", str(trainer)]) == 2
    assert f"127.0.0.1:{dead}" in capsys.readouterr().err
