"""`trainmarket node …` fails with one plain sentence (exit 2, no traceback) for each failure a user can fix:
chain unreachable, IPFS unreachable, not registered, insufficient stake, wrong protocol digest, and a
decoded revert. Runs the real CLI entry point in-process against a real Anvil and IPFS daemon."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from base.process import free_port
from contracts.anvil import AnvilNode
from contracts.tx import NONCES
from ipfs.client import IpfsClient
from ipfs.daemon import IpfsDaemon
from node.keys import PRIVATE_KEY_ENV
from tests.node.test_runner_integration import ETH, DevRun, start_dev_run, tiny_config
from trainmarket.cli import main

UNREGISTERED = 7  # dev key never registered in these tests
REGISTERED = 8
NodeCli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def devrun(ipfs_daemon: IpfsDaemon) -> Iterator[DevRun]:
    with AnvilNode() as node, IpfsClient(ipfs_daemon.api_url) as blobs:
        run = start_dev_run(node, blobs, ipfs_daemon.api_url)
        run.client(REGISTERED).register_trainer(run.run_id, ETH)
        yield run
    NONCES.reset()


def node_cli(
    devrun: DevRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    key_index: int, *args: str,
) -> tuple[int, str, str]:
    monkeypatch.setenv(PRIVATE_KEY_ENV, devrun.keys[key_index])
    monkeypatch.setenv("TRAINMARKET_HOME", str(tmp_path / "state"))
    deployment = devrun.write_deployment(tmp_path / "deployment.json")
    command, *rest = args
    code = main(["node", command, "--deployment", str(deployment), "--home", str(tmp_path / "home"), *rest])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def cli(
    devrun: DevRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> NodeCli:
    def call(key_index: int, *args: str) -> tuple[int, str, str]:
        return node_cli(devrun, tmp_path, monkeypatch, capsys, key_index, *args)

    return call


def _one_sentence(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_chain_unreachable(cli: NodeCli, devrun: DevRun) -> None:
    code, _, err = cli(REGISTERED, "status", "--rpc-url", f"http://127.0.0.1:{free_port()}")
    assert code == 2
    assert "chain RPC at http://127.0.0.1:" in _one_sentence(err) and "unreachable" in err


def test_ipfs_unreachable(cli: NodeCli) -> None:
    code, _, err = cli(REGISTERED, "run", "--windows", "1", "--ipfs-api", f"http://127.0.0.1:{free_port()}")
    assert code == 2
    assert "IPFS daemon unreachable" in _one_sentence(err)


def test_not_registered(cli: NodeCli, devrun: DevRun) -> None:
    code, _, err = cli(UNREGISTERED, "run", "--windows", "1")
    assert code == 2
    line = _one_sentence(err)
    assert "is not registered as a trainer in run" in line and "trainmarket node register" in line


def test_insufficient_stake_on_register(cli: NodeCli, devrun: DevRun) -> None:
    code, _, err = cli(UNREGISTERED, "register", "--stake", "0.5")
    assert code == 2
    assert "insufficient stake: 0.5 ETH offered" in _one_sentence(err) and "at least 1 ETH" in err
    info = devrun.sponsor.trainer_info(devrun.run_id, devrun.client(UNREGISTERED).address_of_account)
    assert not info.registered


def test_wrong_protocol_digest(cli: NodeCli, devrun: DevRun) -> None:
    with IpfsClient(devrun.api_url) as blobs:
        other = blobs.add(tiny_config(dataset_cid=devrun.config.dataset_cid, inner_lr=1e-2).to_json_bytes())
    code, _, err = cli(REGISTERED, "run", "--windows", "1", "--config-cid", other)
    assert code == 2
    line = _one_sentence(err)
    assert "wrong protocol digest" in line and devrun.config.digest().hex() in line


def test_decoded_revert_and_nothing_to_claim(cli: NodeCli, devrun: DevRun) -> None:
    code, _, err = cli(REGISTERED, "register", "--stake", "1")
    assert code == 2
    assert _one_sentence(err).startswith("error: the contract refused registerTrainer: account ")
    assert f"is already registered in run {devrun.run_id}" in err
    # Nothing due is an answer, not a failure: no transaction is sent and the exit code is 0.
    code, out, err = cli(REGISTERED, "claim")
    assert code == 0 and not err
    assert out.startswith(f"nothing to claim in run {devrun.run_id}: no finalised epoch has credited")


def test_unfunded_key_names_the_address_and_the_amount(cli: NodeCli, devrun: DevRun) -> None:
    poor = devrun.client(UNREGISTERED).address_of_account
    devrun.node.set_balance(poor, ETH // 2)
    try:
        code, _, err = cli(UNREGISTERED, "register", "--stake", "1")
    finally:
        devrun.node.set_balance(poor, 10_000 * ETH)
    assert code == 2
    line = _one_sentence(err)
    assert f"account {poor} has 0.5 ETH" in line and "send 0.5" in line and "ETH more to " + poor in line
