"""The run's protocol configuration: everything a trainer and a validator must agree on to take part.

The sponsor writes it once as canonical JSON, adds it to IPFS and fixes `keccak256(json bytes)` in the run
on chain (`configDigest`). A node fetches the JSON by CID and refuses to start when its digest differs from
the chain's: two parties can only disagree about the rules by refusing to play, never silently.

Timing: window w trains from the global model of window w − 1 (node/runner.py's sync phase), so each window
opens with a wait for w − 1's reveals (`revealBlocks`, kept short), its scoring and its publication. Chosen
over the alternatives by measurement (bench.convergence --small set-up, final held-out loss; centralised 2.405):
- the old one-window publish lag keeps 100% of a window for compute but applies each update one model late:
  2.762 at H = 6, even with the AdamW moments carried over;
- the sync phase at H = 6 / 5 / 4 (100% / 83% / 67% of the compute, i.e. a sync phase of 0 / 17 / 33% of a
  window): 2.317 / 2.368 / 2.441: even with a third of the window idle it beats the lag at full compute;
- trainers applying the outer step themselves need the validators' accepted set, which exists only after the
  same evaluation, so they wait as long and decode every payload besides; an eager start from the stale model
  minus one's own last update gained nothing under the lag (loss ratio 1.182 vs 1.175).
Idle compute measured: the default `make demo` (15 CPU trainers, 2 validators, 24-block windows at 1 s, 3 to
reveal) waits 8–9 of 24 blocks, 34% of a window (`sync_fraction` in report.json, measured on the
loaded 2-core machine); at a GPU-like timing, where scoring takes at most 10% of a window, the wait is
reveal + scoring + one publication block, about 12% of a 300-block window."""

from __future__ import annotations

import json
from typing import Any

from eth_utils import keccak
from pydantic import BaseModel, ConfigDict, Field

from base.errors import TrainmarketError

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
    # Trainer side: H inner AdamW steps per window on `seqs_per_step` sequences each. At equal tokens in the
    # bench.convergence --small set-up (outer lr 1), H 3 over 48 windows / 6 over 24 / 12 over 12 → 2.360 / 2.377
    # / 2.476: the codec's per-window budget favours shorter windows, a little.
    inner_steps: int = 20
    seqs_per_step: int = 8
    inner_lr: float = 3e-3
    inner_weight_decay: float = 0.0
    codec: str = "chunked_topk"
    codec_params: dict[str, Any] = Field(default_factory=dict)
    # Tuned with the protocol as it is now (window w trains from the model of w − 1, AdamW moments carried over):
    # `python -m bench.convergence --small` set-up, 8 trainers, W = 24, H = 6, final held-out loss, centralised
    # 2.405 (seed 1) / 2.373 (seed 2). Error-feedback decay 0.3 / 0.5 / 0.8 / 0.95 → 2.426 / 2.377 / 2.347 /
    # 2.395 at outer lr 1; with outer lr 1.5, decay 0.5 → 2.317 (seed 2: 2.320), 0.7 → 2.338, 0.8 → 2.396. (The
    # 0.5 of the lagged protocol had been chosen because 0.95 oscillated there; without the lag 0.95 is stable,
    # but not better here.)
    error_feedback_decay: float = 0.5
    # Validator side. The evaluation step size only decides which updates count as improving (s_i > 0): 0.5, 1
    # and 2 gave 2.377 / 2.377 / 2.376 at outer lr 1, and 0.2 / 1 gave 2.319 / 2.317 at lr 1.5, since every honest
    # sparse update improves at all of them (a dense update is another matter: see bench/convergence.dense_config).
    eval_step_size: float = 1.0
    # Evaluation rows per window (validator/eval_data.py): `eval_own_seqs` of each trainer's own assignment and
    # `eval_random_seqs` common rows from the committed trainers' assignments. The own-vs-common specificity is a
    # row-level statistic whose per-row spread is ~7× its honest mean (tiny model); 8 own rows against 48 common
    # keep its per-window noise below its signal once training is under way (bench.incentives reports both).
    # Cost: 1 + 2·8/48 = 1.33 forward passes of the common batch per contribution for the evaluation
    # (validator/evaluate.py), + 8/48 for the own rows' reference pass of the marginal estimate.
    eval_own_seqs: int = 8
    eval_random_seqs: int = 48
    # The outer step: θ ← θ − lr·mean Δ, the mean over the contributors of each coordinate. Same set-up, decay
    # 0.5: lr 0.8 / 1.0 / 1.2 / 1.5 / 2.0 → 2.420 / 2.377 / 2.343 / 2.317 / 2.343 (seed 2: lr 1.0 2.377, 1.5
    # 2.320). Nesterov momentum 0.5 at lr 1 → 2.348, 0.9 at lr 0.5 → 2.558: no momentum (error feedback carries
    # the history, as in SparseLoCo). Top-k density (k per 64×64 tile) 16 / 32 / 64 / 128 → 2.472 / 2.377 /
    # 2.349 / 2.378 at lr 1: 32 keeps 2× the compression of 64 for 1% of loss.
    outer_lr: float = 1.5
    outer_momentum: float = 0.0
    # Bases a contribution may name, beyond the model of w − 1: one window older (a trainer whose sync deadline
    # passed before the model of w − 1 was published). See validator/window_inputs.base_models for the rule.
    max_stale_windows: int = 1
    # How long a validator keeps trying to fetch a window's payloads before it records one as unavailable and
    # reports it (validator/fetch.py). It delays that window's publication, and so the next window's training,
    # only when a payload is missing: a withholding trainer costs everyone at most this.
    payload_fetch_seconds: float = 20.0
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
