"""The run's protocol configuration: everything a trainer and a validator must agree on to take part.

The sponsor writes it once as canonical JSON, adds it to IPFS and fixes `keccak256(json bytes)` in the run
on chain (`configDigest`). A node fetches the JSON by CID and refuses to start when its digest differs from
the chain's: two parties can only disagree about the rules by refusing to play, never silently."""

from __future__ import annotations

import json
from typing import Any

from eth_utils import keccak
from pydantic import BaseModel, ConfigDict, Field

from trainmarket.errors import TrainmarketError

PROTOCOL_VERSION = 1


class ProtocolMismatch(TrainmarketError):
    """The configuration a node holds is not the one the run fixed on chain."""

    def __init__(self, expected_hex: str, actual_hex: str) -> None:
        self.expected_hex = expected_hex
        self.actual_hex = actual_hex
        super().__init__(
            f"wrong protocol digest: the run on chain fixes {expected_hex}, this configuration hashes to "
            f"{actual_hex}; fetch the run's own configuration (its CID is in the deployment file)"
        )


class RunConfig(BaseModel):
    """Parameters of one training run. Frozen and canonically serialised, so its digest identifies it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol_version: int = PROTOCOL_VERSION
    model_preset: str = "tiny"
    model_overrides: dict[str, int | float | bool] = Field(default_factory=dict)
    model_seed: int = 0
    run_seed: int = 1
    dataset_cid: str = ""
    initial_model_cid: str = ""
    seq_len: int = 64
    # Trainer side: H inner AdamW steps per window on `seqs_per_step` sequences each.
    inner_steps: int = 20
    seqs_per_step: int = 8
    inner_lr: float = 3e-3
    inner_weight_decay: float = 0.0
    codec: str = "chunked_topk"
    codec_params: dict[str, Any] = Field(default_factory=dict)
    # Error feedback decays fast: a trainer's update lands on a model one window newer than its base (the
    # publish lag), and a slowly decaying residual turns into bursts of large sparse steps on a model that has
    # moved. Measured in-process (tiny model, 5 trainers, one-window lag, 12 windows): decay 0.95 oscillated
    # between 3.7 and 8.5 held-out loss; 0.7 wobbled; 0.5 fell steadily 5.45 → 3.22, as fast as with no lag.
    error_feedback_decay: float = 0.5
    # Validator side.
    eval_step_size: float = 1.0
    eval_own_seqs: int = 4
    eval_random_seqs: int = 12
    # Plain averaging, no momentum: a trainer's update is computed on a model up to two windows old (window
    # w−1's model is published during window w), and momentum on stale updates overshoots; measured in the
    # demo, lr 0.7 with Nesterov 0.9 took the held-out loss from 4.3 to 16 in four windows.
    outer_lr: float = 1.0
    outer_momentum: float = 0.0
    max_stale_windows: int = 2
    max_payload_bytes: int = 16 * 1024 * 1024
    max_model_bytes: int = 1024 * 1024 * 1024

    def to_json_bytes(self) -> bytes:
        """Canonical JSON: sorted keys, no whitespace, so equal configs hash equally everywhere."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> bytes:
        return keccak(self.to_json_bytes())

    @classmethod
    def from_json_bytes(cls, data: bytes, expected_digest: bytes | None = None) -> RunConfig:
        """Parse a configuration fetched from the network, checking it against the on-chain digest."""
        if expected_digest is not None and keccak(data) != expected_digest:
            raise ProtocolMismatch("0x" + expected_digest.hex(), "0x" + keccak(data).hex())
        try:
            return cls.model_validate_json(data)
        except ValueError as err:
            raise TrainmarketError(f"run configuration is not valid: {err}") from err
