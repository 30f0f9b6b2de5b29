"""The sponsor's setup of a run, shared by the devnet and the demo: a dataset of real text (no download) and the
initial model on IPFS, then the run config that names both."""

from __future__ import annotations

import sysconfig
from pathlib import Path

from base.model import build_model, model_spec
from base.run_config import RunConfig
from ipfs.client import IpfsClient
from node.data import build_dataset, collect_text, publish_dataset
from node.payloads import RunPayloads


def stdlib_corpus(max_bytes: int) -> list[tuple[str, bytes]]:
    """Real text with no download: the interpreter's own standard library, up to `max_bytes`."""
    texts: list[tuple[str, bytes]] = []
    total = 0
    for name, data in collect_text([Path(sysconfig.get_paths()["stdlib"])]):
        texts.append((name, data))
        total += len(data)
        if total >= max_bytes:
            break
    return texts


def publish_run_config(blobs: IpfsClient, base: RunConfig, corpus_bytes: int) -> tuple[RunConfig, str]:
    """Dataset and initial model to IPFS, then the config that names both; returns (config, config CID)."""
    built = build_dataset(stdlib_corpus(corpus_bytes), shard_bytes=256 * 1024, heldout_fraction=0.1)
    dataset_cid = publish_dataset(blobs, built)
    config = base.model_copy(update={"dataset_cid": dataset_cid})
    model = build_model(config)
    params = {name: p.detach().float().cpu() for name, p in model.named_parameters()}
    # The initial model exists before the run (its CID is part of the config the run fixes): run id 0.
    initial_cid = blobs.add(RunPayloads(config, 0, model_spec(model)).encode_initial_model(params))
    config = config.model_copy(update={"initial_model_cid": initial_cid})
    return config, blobs.add(config.to_json_bytes())
