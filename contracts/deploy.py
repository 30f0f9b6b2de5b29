"""Deploy the committed TrainingRun artifact and save/load where it went (a small JSON file, the deployment
file: devnet and the demo add the run id, the config CID and the IPFS API beside the contract's address)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import Web3Exception

from base.paths import state_dir
from contracts.compile import load_artifact
from contracts.errors import ChainUnreachable, DeploymentError
from contracts.sending import send_transaction

DEFAULT_IPFS_API = "http://127.0.0.1:5001"  # a local Kubo's, when neither a flag, the environment nor the file say


@dataclass(frozen=True)
class Deployment:
    """Where the contract lives: enough for any process to connect to it."""

    address: str
    chain_id: int
    block: int
    deployer: str
    tx_hash: str
    rpc_url: str = ""
    compiler: str = ""

    def save(self, path: Path, **extra: Any) -> None:
        """Write the file; `extra` keys (run_id, config_cid, …) ride along for the node and validator CLIs."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**asdict(self), **extra}, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            # The file may carry more (run_id, config_cid for nodes and validators): take this class's fields.
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except FileNotFoundError as err:
            raise DeploymentError(f"no deployment file at {path}: run `trainmarket devnet` first") from err
        except (json.JSONDecodeError, TypeError) as err:
            raise DeploymentError(f"deployment file {path} is invalid: {err}") from err


@dataclass(frozen=True)
class DeploymentFile:
    """What the node and validator commands read from a deployment file (`Deployment.save` with the extra keys
    devnet and the demo write); a key the file lacks takes its default here."""

    address: str
    block: int
    rpc_url: str
    config_cid: str
    run_id: int
    ipfs_api: str = DEFAULT_IPFS_API


def default_deployment() -> Path:
    """Where `trainmarket devnet` writes the deployment file, and where every command looks by default."""
    return state_dir() / "devnet" / "deployment.json"


def read_deployment(path: Path) -> DeploymentFile:
    """The deployment file at `path`; DeploymentError, saying what to do, when it is missing or malformed."""
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
        return DeploymentFile(address=str(raw["address"]), block=int(raw.get("block", 0)),
                              rpc_url=str(raw.get("rpc_url", "")), config_cid=str(raw.get("config_cid", "")),
                              run_id=int(raw.get("run_id") or 0),
                              ipfs_api=str(raw.get("ipfs_api") or DEFAULT_IPFS_API))
    except FileNotFoundError as err:
        hint = "run `trainmarket devnet` first or pass --deployment"
        raise DeploymentError(f"no deployment file at {path}: {hint}") from err
    except (ValueError, KeyError, TypeError) as err:
        raise DeploymentError(f"deployment file {path} is invalid: {err}") from err


def deploy(web3: Web3, account: LocalAccount) -> Deployment:
    """Deploy TrainingRun from `account` (locally signed) and wait for the receipt."""
    artifact = load_artifact()
    factory = web3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    try:
        tx = factory.constructor().build_transaction({"from": account.address})
        chain_id = web3.eth.chain_id
    except (Web3Exception, OSError) as err:
        raise ChainUnreachable(_rpc_url(web3), str(err)) from err
    receipt = send_transaction(web3, account, tx, "deploy")
    address = receipt["contractAddress"]
    if address is None or len(web3.eth.get_code(address)) == 0:
        raise DeploymentError(f"deployment transaction {receipt['transactionHash'].hex()} created no contract")
    return Deployment(
        address=str(address),
        chain_id=int(chain_id),
        block=int(receipt["blockNumber"]),
        deployer=account.address,
        tx_hash="0x" + receipt["transactionHash"].hex().removeprefix("0x"),
        rpc_url=_rpc_url(web3),
        compiler=str(artifact["compiler"]),
    )


def _rpc_url(web3: Web3) -> str:
    return str(getattr(web3.provider, "endpoint_uri", ""))
