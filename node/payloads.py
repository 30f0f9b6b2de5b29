"""The trainer's side of the payload format (ipfs/payload.py, ipfs/codecs.py): encode a contribution
with the run's codec, decode a global model fetched by CID, and the CID a payload will have — computed
locally, so the commitment can be made before anything is published."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ipfs.cid import content_cid
from node.protocol import RunConfig
from trainmarket.errors import TrainmarketError

ModelSpec = dict[str, tuple[tuple[int, ...], str]]


class PayloadFormatMissing(TrainmarketError):
    """The payload/codec modules of ipfs/ cannot be imported."""


@dataclass(frozen=True)
class EncodedUpdate:
    data: bytes  # the safetensors payload, as committed and published
    estimate: dict[str, Tensor]  # what a receiver decodes: error feedback keeps acc − estimate


class RunPayloads:
    """The run's codec and payload format, bound to its config."""

    def __init__(self, config: RunConfig) -> None:
        try:
            from ipfs import codecs, payload
        except ImportError as err:
            raise PayloadFormatMissing(f"the payload format in ipfs/ is not available: {err}") from err
        self._payload: Any = payload
        self.config = config
        self.codec = codecs.codec_from(config.codec, dict(config.codec_params))
        self.errors: tuple[type[Exception], ...] = (payload.PayloadError,)

    def encode_contribution(
        self, acc: dict[str, Tensor], trainer: str, window: int, base_model_cid: str
    ) -> EncodedUpdate:
        manifest = self._payload.Manifest(trainer=trainer.lower(), window=window, base_model_cid=base_model_cid)
        encoded = self._payload.encode_contribution(acc, self.codec, manifest)
        return EncodedUpdate(data=bytes(encoded.data), estimate=dict(encoded.estimate))

    def encode_model(self, params: dict[str, Tensor]) -> bytes:
        return bytes(self._payload.encode_model(params))

    def decode_model(self, data: bytes, spec: ModelSpec) -> dict[str, Tensor]:
        return dict(self._payload.decode_model(data, spec, self.config.max_model_bytes))


def payload_cid(data: bytes) -> str:
    """The CID `ipfs add` (CIDv1, raw leaves, 256 KiB chunks) will report for `data`."""
    return content_cid(data)
