"""The trainer's side of the payload format (tensors/payload.py, tensors/codecs.py): encode a contribution
with the run's codec, decode a global model fetched by CID, and the CID a payload will have before it is
published (so the commitment can go on chain first)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from base.model import ModelSpec
from base.run_config import RunConfig
from ipfs.cid import content_cid
from tensors.codecs import codec_from
from tensors.payload import Manifest, decode_model, encode_contribution, encode_model


@dataclass(frozen=True)
class EncodedUpdate:
    data: bytes  # the safetensors payload, as committed and published
    estimate: dict[str, Tensor]  # what a receiver decodes: error feedback keeps acc − estimate


class RunPayloads:
    """The run's codec and payload format, bound to its config."""

    def __init__(self, config: RunConfig, run_id: int, spec: ModelSpec) -> None:
        self.config = config
        self.run_id = run_id
        self.spec = spec
        self.codec = codec_from(config.codec, dict(config.codec_params))

    def encode_contribution(
        self, acc: dict[str, Tensor], trainer: str, window: int, base_model_cid: str
    ) -> EncodedUpdate:
        manifest = Manifest(
            kind="contribution", run_id=self.run_id, window=window, trainer=trainer, base_model_cid=base_model_cid,
            codec=self.codec.name, codec_params=self.codec.params(), spec=self.spec,
        )
        encoded = encode_contribution(acc, self.codec, manifest)
        return EncodedUpdate(data=bytes(encoded.data), estimate=dict(encoded.estimate))

    def encode_initial_model(self, params: dict[str, Tensor]) -> bytes:
        """The seeded initial model, for runs whose config names none (normally the sponsor publishes it)."""
        manifest = Manifest(
            kind="model", run_id=self.run_id, window=0, trainer="", base_model_cid="", codec="", spec=self.spec
        )
        return encode_model(params, manifest)

    def decode_model(self, data: bytes) -> dict[str, Tensor]:
        """A global model fetched from the network: size-capped, header pre-parsed, shapes and finiteness checked."""
        _, params = decode_model(data, self.spec, self.config.max_model_bytes)
        return params


def payload_cid(data: bytes) -> str:
    """The CID `ipfs add` will report for `data` (CIDv1, raw leaves, the project's fixed chunker), computed
    locally: the commitment must exist before anything is published."""
    return content_cid(data)
