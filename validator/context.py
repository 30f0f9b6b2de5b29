"""Connecting a validator (or an auditor) to a run: chain client, IPFS client, the run's config checked
against its on-chain digest, the dataset, the payload codecs. The CLI and the tests build the loop this way."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.model import ModelSpec, build_model, model_spec
from base.paths import state_dir
from base.run_config import RunConfig
from base.units import eth
from contracts.client import TrainingRunClient
from contracts.errors import DeploymentError
from contracts.rpc import http_web3
from contracts.types import ValidatorInfo
from node.data import BlobStore, fetch_dataset
from node.keys import KeySourceError, account_from_hex
from validator.domain import ParamDict, ValidatorError
from validator.window_inputs import DecodedPayload, PayloadFormat, RunContext, RunStore

CONFIG_MAX_BYTES = 1024 * 1024
DEFAULT_IPFS_API = "http://127.0.0.1:5001"  # a local Kubo's, when neither a flag, the environment nor the file say


class ValidatorSetupError(ValidatorError):
    """The validator cannot connect to its run (no deployment file, no config CID, missing storage)."""


@dataclass(frozen=True)
class DeploymentInfo:
    """The fields of a deployment file the validator reads (extra keys such as `config_cid` are allowed)."""

    address: str
    block: int
    rpc_url: str
    config_cid: str
    run_id: int
    ipfs_api: str = DEFAULT_IPFS_API


def default_deployment() -> Path:
    """Where `trainmarket devnet` writes the deployment file."""
    return state_dir() / "devnet" / "deployment.json"


def read_deployment(path: Path) -> DeploymentInfo:
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
        return DeploymentInfo(address=str(raw["address"]), block=int(raw.get("block", 0)),
                              rpc_url=str(raw.get("rpc_url", "")), config_cid=str(raw.get("config_cid", "")),
                              run_id=int(raw.get("run_id", 0)),
                              ipfs_api=str(raw.get("ipfs_api") or DEFAULT_IPFS_API))
    except FileNotFoundError as err:
        raise DeploymentError(f"no deployment file at {path}: run `trainmarket devnet` first") from err
    except (ValueError, KeyError, TypeError) as err:
        raise DeploymentError(f"deployment file {path} is invalid: {err}") from err


class IpfsPayloadFormat:
    """The loop's `PayloadFormat` over tensors/payload.py, bound to one run (its id and model spec go into every
    manifest, so two validators encode the same model to the same bytes and CID)."""

    def __init__(self, run_id: int, config: RunConfig, spec: ModelSpec) -> None:
        from node.payloads import RunPayloads
        from tensors import payload

        self._payload = payload
        self.run_id = run_id
        self.spec = {n: (tuple(shape), dtype) for n, (shape, dtype) in spec.items()}
        # The seeded initial model's manifest has one home: the trainer's RunPayloads.
        self._run_payloads = RunPayloads(config, run_id, self.spec)
        self.errors: tuple[type[Exception], ...] = (payload.PayloadError, payload.PayloadTooLarge)

    def decode_contribution(self, data: bytes, spec: ModelSpec, max_bytes: int) -> DecodedPayload:
        decoded = self._payload.decode_contribution(data, spec, max_bytes, expect={"kind": "contribution"})
        m = decoded.manifest
        return DecodedPayload(run_id=m.run_id, trainer=m.trainer, window=m.window, base_model_cid=m.base_model_cid,
                              codec=m.codec, delta=dict(decoded.delta), indices=dict(decoded.indices))

    def encode_model(self, params: ParamDict, window: int, base_model_cid: str) -> bytes:
        manifest = self._payload.Manifest(kind="model", run_id=self.run_id, window=window, trainer="",
                                          base_model_cid=base_model_cid, codec="", spec=self.spec)
        return bytes(self._payload.encode_model(params, manifest))

    def encode_initial_model(self, params: ParamDict) -> bytes:
        return bytes(self._run_payloads.encode_initial_model(params))

    def decode_model(self, data: bytes, spec: ModelSpec, max_bytes: int) -> ParamDict:
        _, params = self._payload.decode_model(data, spec, max_bytes)
        return dict(params)


def ipfs_client(api_url: str, timeout: float = 30.0) -> BlobStore:
    """`timeout` bounds a fetch of a revealed CID nobody serves (an offline daemon waits for it until then)."""
    from ipfs.client import IpfsClient

    client: BlobStore = IpfsClient(api_url, timeout=timeout)
    return client


def chain_client(rpc_url: str, contract: str, private_key: str, from_block: int = 0) -> TrainingRunClient:
    try:
        account = account_from_hex(private_key, "the validator key")
    except KeySourceError as err:
        raise ValidatorSetupError(str(err)) from None
    web3 = http_web3(rpc_url)
    return TrainingRunClient(web3, contract, account, from_block)


class NotValidator(ValidatorSetupError):
    def __init__(self, run_id: int, account: str, min_stake: int) -> None:
        self.account = account
        super().__init__(
            f"account {account} is not an active validator of run {run_id}: register it first with "
            f"`trainmarket validator register --stake {eth(min_stake)}` (the run's minimum; same --deployment "
            "and key), then start this again"
        )


def require_validator(client: TrainingRunClient, run_id: int) -> ValidatorInfo:
    """The validator's record; NotValidator for an account that is not registered or is unbonding, whose every
    publication the contract would refuse."""
    info = client.validator_info(run_id, client.address_of_account)
    if not info.registered or not info.active:
        raise NotValidator(run_id, client.address_of_account, client.get_run(run_id).min_validator_stake)
    return info


def validator_status(client: TrainingRunClient, run_id: int, last: int) -> dict[str, Any]:
    """What `trainmarket validator status` shows, as plain JSON values (amounts in wei)."""
    me = client.address_of_account
    info = client.validator_info(run_id, me)
    run = client.get_run(run_id)
    block = client.block_number()
    status: dict[str, Any] = {
        "validator": me, "run_id": run_id, "block": block, "registered": info.registered,
        "min_stake_wei": run.min_validator_stake, "stake_wei": info.stake, "unbonding_at": info.unbonding_at,
        "claimable_wei": client.claimable(run_id, me), "votes_from_epoch": info.from_epoch,
        "last_voted_epoch": info.served_plus_one - 1 if info.served_plus_one else None, "windows": [],
    }
    if not info.registered:
        return status
    current = client.window_of_block(run_id, block)
    for window in range(max(0, current - last), current):
        pub = client.publications(run_id, window).get(me)
        status["windows"].append({"window": window, "published": pub is not None,
                                  "model_cid": pub.model_cid if pub else None,
                                  "report_cid": pub.report_cid if pub else None})
    return status


def load_run_config(client: TrainingRunClient, run_id: int, blobs: BlobStore, config_cid: str) -> RunConfig:
    """The run's config by CID, refused unless it hashes to the digest the run fixed on chain."""
    if not config_cid:
        raise ValidatorSetupError("no run config CID: pass --config-cid or add config_cid to the deployment file")
    digest = client.get_run(run_id).config_digest
    return RunConfig.from_json_bytes(blobs.cat(config_cid, CONFIG_MAX_BYTES), expected_digest=bytes(digest))


def open_run(client: TrainingRunClient, run_id: int, blobs: RunStore, config: RunConfig,
             cache_dir: Path | None = None, payloads: PayloadFormat | None = None) -> RunContext:
    """The run's context; `payloads` defaults to the real payload format (tensors/payload.py)."""
    dataset = fetch_dataset(blobs, config.dataset_cid, cache_dir or state_dir() / "datasets")
    spec = model_spec(build_model(config))
    return RunContext(views=client, run_id=run_id, config=config, dataset=dataset, blobs=blobs,
                      payloads=payloads or IpfsPayloadFormat(run_id, config, spec), spec=spec)


def validator_home(address: str) -> Path:
    return state_dir() / "validator" / address.lower()
