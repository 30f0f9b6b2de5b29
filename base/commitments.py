"""The commitment hashes the contract checks at reveal: a trainer's contribution CID, a validator's weight
vector and a validator's report CID. Each binds who commits and for what (run, window or epoch), so a copied
commitment is useless to anyone else. Pure functions shared by the trainer, the validator and the audit."""

from __future__ import annotations

from eth_abi import encode as abi_encode
from eth_utils import keccak
from web3 import Web3


def commitment_hash(cid: str, salt: bytes, run_id: int, window: int, trainer: str) -> bytes:
    """keccak256(abi.encodePacked(cid, salt, runId, window, trainer)): what `trainer` commits for `window` of
    `run_id` before revealing `cid`. Binding the trainer, run and window makes a copied commitment useless."""
    if len(salt) != 32:
        raise ValueError(f"salt must be 32 bytes, got {len(salt)}")
    address = bytes.fromhex(trainer.removeprefix("0x"))
    if len(address) != 20:
        raise ValueError(f"trainer must be a 20-byte address, got {trainer!r}")
    return keccak(cid.encode("utf-8") + salt + run_id.to_bytes(32, "big") + window.to_bytes(32, "big") + address)


def weights_commitment(packed: bytes, salt: bytes, run_id: int, epoch: int, validator: str) -> bytes:
    """keccak256(abi.encodePacked(weights, salt, runId, epoch, validator)): what `validator` commits for `epoch`
    before revealing the packed weight vector `packed`."""
    if len(salt) != 32:
        raise ValueError(f"salt must be 32 bytes, got {len(salt)}")
    address = bytes.fromhex(validator.removeprefix("0x"))
    if len(address) != 20:
        raise ValueError(f"validator must be a 20-byte address, got {validator!r}")
    return keccak(packed + salt + run_id.to_bytes(32, "big") + epoch.to_bytes(32, "big") + address)


def report_commitment(report_cid: str, validator: str) -> bytes:
    """keccak256(abi.encode(reportCid, validator)): how `validator` seals a window's report CID at publication
    (`revealReports` checks it). Binding the validator makes a copied commitment useless to anyone else."""
    return keccak(abi_encode(["string", "address"], [report_cid, Web3.to_checksum_address(validator)]))
