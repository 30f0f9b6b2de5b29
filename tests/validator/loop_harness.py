"""A small real network for the validator loop's tests: Anvil with the contract deployed and a run whose
config digest is a real `RunConfig`, a dataset and config on a real IPFS daemon, trainers that train the tiny
model in-process (node.train.train_inner), encode their Δ with the real payload codec, commit and reveal.

Blocks are mined explicitly; nothing sleeps on a clock."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from eth_account import Account
from eth_utils import keccak
from web3 import Web3

from base.commitments import commitment_hash
from base.model import build_model, model_spec
from base.run_config import RunConfig
from contracts.anvil import AnvilNode
from contracts.client import TrainingRunClient
from contracts.deploy import deploy
from contracts.types import RunParams
from ipfs.client import IpfsClient
from node.data import Dataset, assigned_batches, build_dataset, fetch_dataset, publish_dataset
from node.payloads import RunPayloads, payload_cid
from node.train import InnerLoopConfig, train_inner
from validator.context import IpfsPayloadFormat
from validator.domain import ParamDict
from validator.loop import ValidatorLoop
from validator.store import ValidatorStore
from validator.window_inputs import RunContext, sorted_params

ETH = 10**18

CONFIG = RunConfig(
    model_preset="tiny",
    model_overrides={"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 32},
    seq_len=16,
    inner_steps=2,
    seqs_per_step=4,
    inner_lr=3e-3,
    eval_own_seqs=4,
    eval_random_seqs=8,
    max_payload_bytes=1 << 20,
    payload_fetch_seconds=2.0,  # the absent payload's trainer is judged unavailable after this
)
# start_delay_blocks: the validators registered right after the run's creation vote from epoch 0 on
RUN = dict(window_blocks=30, reveal_blocks=10, windows_per_epoch=1, grace_period_blocks=8, unbonding_blocks=64,
           validator_share_bps=2000, slash_bps=1000, miss_threshold=3, min_trainer_stake=ETH,
           min_validator_stake=2 * ETH, reward_per_epoch=10 * ETH, start_delay_blocks=16)


def corpus() -> list[tuple[str, bytes]]:
    """Real text without a download: a few standard-library modules."""
    root = Path(json.__file__).parent.parent
    files = sorted(root.glob("*.py"))[:40]
    return [(p.name, p.read_bytes()) for p in files]


@dataclass
class Net:
    node: AnvilNode
    sponsor: TrainingRunClient
    run_id: int
    config: RunConfig
    config_cid: str
    blobs: IpfsClient
    payloads: IpfsPayloadFormat  # the validator's side of the payload format
    trainer_payloads: RunPayloads  # the trainer's side (node/payloads.py), as a real trainer encodes
    dataset: Dataset
    cache_dir: Path
    validators: list[TrainingRunClient] = field(default_factory=list)  # dev accounts 1..3
    trainers: list[TrainingRunClient] = field(default_factory=list)  # dev accounts 4..

    def ctx(self, client: TrainingRunClient) -> RunContext:
        return RunContext(views=client, run_id=self.run_id, config=self.config, dataset=self.dataset,
                          blobs=self.blobs, payloads=self.payloads, spec=self.payloads.spec)

    def mine_to(self, block: int) -> None:
        """Mine so that the chain's head is at least `block`."""
        missing = block - self.node.block_number()
        if missing > 0:
            self.node.mine(missing)

    def bounds(self, window: int) -> tuple[int, int, int]:
        b = self.sponsor.window_bounds(self.run_id, window)
        return b.start, b.end, b.reveal_end

    def loop(self, validator: TrainingRunClient, home: Path) -> ValidatorLoop:
        store = ValidatorStore(home / "state.sqlite3")
        return ValidatorLoop(self.ctx(validator), validator, store, home / "state")


def start_net(tmp: Path, blobs: IpfsClient, n_trainers: int = 5, n_validators: int = 1) -> Net:
    built = build_dataset(corpus(), shard_bytes=64 * 1024, heldout_fraction=0.2)
    dataset_cid = publish_dataset(blobs, built)
    config = CONFIG.model_copy(update={"dataset_cid": dataset_cid})
    config_cid = blobs.add(config.to_json_bytes())
    node = AnvilNode().start()
    try:
        web3 = Web3(Web3.HTTPProvider(node.rpc_url))
        accounts = [Account.from_key(k) for k in node.private_keys]
        deployment = deploy(web3, accounts[0])
        sponsor = TrainingRunClient(web3, deployment.address, accounts[0], deployment.block)
        run_id = sponsor.create_run(RunParams(config_digest=config.digest(), **RUN), 100 * ETH)
        spec = model_spec(build_model(config))
        net = Net(node, sponsor, run_id, config, config_cid, blobs, IpfsPayloadFormat(run_id, config, spec),
                  RunPayloads(config, run_id, spec), fetch_dataset(blobs, dataset_cid, tmp / "datasets"),
                  tmp / "datasets")
        net.validators = [sponsor.with_account(a) for a in accounts[1:4]]
        net.trainers = [sponsor.with_account(a) for a in accounts[4:4 + n_trainers]]
        for trainer in net.trainers:
            trainer.register_trainer(run_id, ETH)
        for validator in net.validators[:n_validators]:
            validator.register_validator(run_id, 2 * ETH)
    except BaseException:
        node.stop()
        raise
    return net


def honest_delta(net: Net, trainer: str, window: int, base: ParamDict) -> ParamDict:
    model = build_model(net.config)
    model.load_state_dict(base, strict=False)
    cfg = net.config
    batches = assigned_batches(net.dataset, cfg.run_seed, trainer, window, cfg.inner_steps * cfg.seqs_per_step,
                               cfg.seq_len)
    result = train_inner(model, batches, InnerLoopConfig(steps=cfg.inner_steps, lr=cfg.inner_lr),
                         torch.device("cpu"))
    return result.pseudo_gradient


def play_window(net: Net, window: int, base_cid: str, base: ParamDict, garbage: int | None = None,
                silent: int | None = None, absent: int | None = None) -> dict[str, str]:
    """Every trainer commits in `window` and reveals after it; trainer index `garbage` publishes bytes that
    are no payload, `silent` commits but never reveals, `absent` reveals the CID of a payload it never put on
    IPFS. Leaves the chain at the window's reveal end."""
    start, end, reveal_end = net.bounds(window)
    net.mine_to(start)
    cids: dict[str, str] = {}
    for i, trainer in enumerate(net.trainers):
        address = trainer.address_of_account.lower()
        if i == garbage:
            data = b"not a safetensors payload " + address.encode()
        else:
            delta = honest_delta(net, address, window, base)
            data = net.trainer_payloads.encode_contribution(delta, address, window, base_cid).data
        cid = payload_cid(data) if i == absent else net.blobs.add(data)
        cids[address] = cid
        trainer.commit(net.run_id, window, commitment_hash(cid, salt(cid), net.run_id, window, trainer.account.address))
    assert net.node.block_number() < end, "commits spilled out of the window: raise window_blocks"
    net.mine_to(end - 1)
    for i, trainer in enumerate(net.trainers):
        if i != silent:
            cid = cids[trainer.address_of_account.lower()]
            trainer.reveal(net.run_id, window, cid, salt(cid))
    assert net.node.block_number() < reveal_end, "reveals spilled out of the reveal period"
    net.mine_to(reveal_end)
    return cids


def salt(cid: str) -> bytes:
    return keccak(text=f"salt-{cid}")


def initial_params(net: Net) -> ParamDict:
    return sorted_params(dict(build_model(net.config).named_parameters()))


def publish_initial_model(net: Net) -> tuple[str, ParamDict]:
    """The seeded initial model as trainers publish it (the config names none): (CID, params)."""
    params = initial_params(net)
    return net.blobs.add(net.trainer_payloads.encode_initial_model(params)), params


def reveal_reports(net: Net, loop: ValidatorLoop, epoch: int, steps: int = 8) -> None:
    """Run `loop` until its reports of `epoch` are revealed on chain: a report is sealed until its epoch's weight
    commits close, so this mines through the epoch's settlement phases as needed (validator/sealed_reports.py)."""
    me = loop.client.address_of_account
    for _ in range(steps):
        if net.sponsor.reports_revealed(net.run_id, me, epoch):
            return
        if net.sponsor.get_run(net.run_id).next_epoch <= epoch:
            net.mine_to(net.sponsor.settlement_of(net.run_id, epoch).reveals_from)
        loop.step()
    assert net.sponsor.reports_revealed(net.run_id, me, epoch), f"reports of epoch {epoch} still sealed"
