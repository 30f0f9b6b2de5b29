"""Client helpers against the contract's own hashing and revert decoding; re-entrancy through a hostile receiver
contract (tests/contracts/solidity/Attacker.sol) on every payout path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address
from eth_utils.abi import abi_to_signature, function_abi_to_4byte_selector
from web3.exceptions import Web3RPCError

from base.commitments import commitment_hash, report_commitment, weights_commitment
from contracts.client import TrainingRunClient, pack_weights, unpack_weights
from contracts.compile import compile_artifact, load_artifact
from contracts.errors import ContractReverted
from contracts.sending import send_transaction
from contracts.tx import NONCES, ErrorDecoder
from contracts.views import TrainingRunViews

from .cids import cid
from .conftest import (
    ETH,
    Chain,
    commit_cid,
    make_run,
    publish_epoch,
    reveal_reports,
    reverts,
    salt_for,
    settle_unvoted,
    to_epoch_end,
    to_reveal_period,
    weight_salt,
)


def test_commitment_hash_matches_what_the_contract_accepts(chain: Chain, run_id: int) -> None:
    trainer = chain.trainers[0]
    content = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    trainer.commit(run_id, 0, commitment_hash(content, salt_for("x"), run_id, 0, trainer.account.address))
    to_reveal_period(chain, run_id, 0)
    trainer.reveal(run_id, 0, content, salt_for("x"))  # the contract recomputed the same hash
    with pytest.raises(ValueError):
        commitment_hash(content, b"short", run_id, 0, trainer.account.address)


def test_weights_commitment_matches_what_the_contract_accepts(chain: Chain, run_id: int) -> None:
    validator = chain.validators[0]
    publish_epoch(chain, run_id, 0, chain.validators[:2])
    to_epoch_end(chain, run_id, 0)
    packed, salt = pack_weights([5, 0, 9]), weight_salt(validator, 0)
    commitment = weights_commitment(packed, salt, run_id, 0, validator.account.address)
    validator._tx(validator.contract.functions.commitWeights(run_id, 0, commitment), "commitWeights")
    chain.mine_to(chain.sponsor.settlement_of(run_id, 0).reveals_from)
    validator.reveal_weights(run_id, 0, [5, 0, 9], salt)  # the contract recomputed the same hash
    with pytest.raises(ValueError):
        weights_commitment(packed, b"short", run_id, 0, validator.account.address)


def test_pack_weights_is_big_endian_uint16() -> None:
    assert pack_weights([1, 0x0203, 65535]) == b"\xff\xff\x00\x01\x02\x03\xff\xff"  # payout header: all of it
    assert pack_weights([7], payout=0x0102) == b"\x01\x02\x00\x07"
    assert unpack_weights(pack_weights([1, 2], payout=3)) == (3, [1, 2])
    with pytest.raises(ValueError, match="payout"):
        pack_weights([1], payout=65536)
    with pytest.raises(ValueError, match="2-byte payout"):
        unpack_weights(b"\x00")
    with pytest.raises(ValueError):
        pack_weights([-1])


def test_revert_names_the_error_and_reads_as_a_sentence(chain: Chain, run_id: int) -> None:
    commit_cid(chain, chain.trainers[0], run_id, 0, "a")
    with pytest.raises(ContractReverted) as info:
        commit_cid(chain, chain.trainers[0], run_id, 0, "a")
    err = info.value
    assert (err.error_name, err.function) == ("AlreadyCommitted", "commit")
    assert err.error_args == {"runId": run_id, "window": 0, "trainer": chain.trainers[0].account.address}
    assert err.plain().startswith("The contract refused commit: already committed (")


def _sample(abi_type: str, n: int) -> Any:
    """A value of `abi_type` that differs per argument position `n` (so swapped arguments are seen)."""
    if abi_type.startswith("uint"):
        return 1_000_003 * (n + 1)
    if abi_type == "address":
        return to_checksum_address(keccak(text=f"address-{n}")[:20])
    if abi_type == "string":
        return f"bafk-sample-{n}"
    raise AssertionError(f"no sample for {abi_type}: extend _sample for the contract's new error argument type")


def test_decoder_knows_every_custom_error_in_the_abi() -> None:
    """Every custom error the contract can revert with, encoded the way the EVM does (selector of the signature,
    then its ABI-encoded arguments), decodes to its own name with every argument under its own name."""
    abi = load_artifact()["abi"]
    decoder = ErrorDecoder(abi)
    errors = [item for item in abi if item["type"] == "error"]
    assert len(errors) >= 25
    for error in errors:
        types = [i["type"] for i in error["inputs"]]
        values = [_sample(t, n) for n, t in enumerate(types)]
        data = function_abi_to_4byte_selector(error) + abi_encode(types, values)
        expected = (error["name"], {i["name"]: v for i, v in zip(error["inputs"], values, strict=True)})
        assert decoder.decode(data) == expected, abi_to_signature(error)
    assert decoder.decode(b"\xde\xad\xbe\xef") is None
    assert decoder.decode(keccak(text="Error(string)")[:4] + abi_encode(["string"], ["plain"])) == (
        "Error", {"message": "plain"})
    assert decoder.decode(keccak(text="Panic(uint256)")[:4] + abi_encode(["uint256"], [0x11])) == (
        "Panic", {"code": 0x11})


# ------------------------------------------------------------------ re-entrancy through a hostile receiver

ATTACKER_SOURCE = Path(__file__).resolve().parent / "solidity" / "Attacker.sol"
REENTRANT_CALL = keccak(text="ReentrantCall()")[:4]
Payout = Literal["claim", "withdrawStake"]


@pytest.fixture(scope="session")
def attacker_artifact() -> dict[str, Any]:
    return compile_artifact(ATTACKER_SOURCE, "Attacker")  # ~2 s: once per session


@dataclass
class Hostile:
    """An Attacker contract deployed by `owner` (dev account 9), acting in run `run_id` through `forward`."""

    chain: Chain
    owner: TrainingRunClient
    contract: Any
    run_id: int

    @property
    def address(self) -> str:
        return str(self.contract.address)

    def _send(self, fn: Any, value: int = 0) -> None:
        params: Any = {"to": self.contract.address, "data": fn._encode_transaction_data(), "value": value}
        send_transaction(self.chain.web3, self.owner.account, params, fn.fn_name, self.owner.decoder)

    def forward(self, name: str, *args: Any, value: int = 0) -> None:
        """Make the attacker call `name(*args)` on the run (reverts come back as the run's custom errors)."""
        data = getattr(self.owner.contract.functions, name)(*args)._encode_transaction_data()
        self._send(self.contract.functions.forward(data), value)

    def arm(self, reentry: Payout | None, strict: bool) -> None:
        data = b"" if reentry is None else bytes.fromhex(
            getattr(self.owner.contract.functions, reentry)(self.run_id)._encode_transaction_data()[2:]
        )
        self._send(self.contract.functions.arm(data, strict))

    def read(self, name: str) -> Any:
        return getattr(self.contract.functions, name)().call()


def deploy_attacker(chain: Chain, artifact: dict[str, Any], run_id: int) -> Hostile:
    owner = chain.trainers[5]
    factory = chain.web3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx = factory.constructor(chain.deployment.address).build_transaction({"from": owner.account.address})
    receipt = send_transaction(chain.web3, owner.account, tx, "deploy Attacker")
    contract = chain.web3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])
    return Hostile(chain, owner, contract, run_id)


@dataclass
class Arena:
    """A settled epoch in which a hostile trainer and a hostile validator are owed rewards and, after unbonding,
    their stakes: every payout path of the run is open to a contract receiver."""

    run_id: int
    trainer: Hostile
    validator: Hostile


@pytest.fixture
def arena(chain: Chain, attacker_artifact: dict[str, Any]) -> Arena:
    rid = make_run(chain, windows_per_epoch=1, validator_share_bps=5000)
    honest = chain.validators[0]
    chain.trainers[0].register_trainer(rid, ETH)
    honest.register_validator(rid, 2 * ETH)
    trainer = deploy_attacker(chain, attacker_artifact, rid)
    validator = deploy_attacker(chain, attacker_artifact, rid)
    trainer.forward("registerTrainer", rid, value=ETH)
    validator.forward("registerValidator", rid, value=2 * ETH)
    publish_epoch(chain, rid, 0, [honest])
    validator.forward("publishWindow", rid, 0, cid("model-0"), report_commitment(cid("report-0"), validator.address))
    to_epoch_end(chain, rid, 0)
    weights, salt = pack_weights([1, 1]), salt_for("hostile")
    honest.commit_weights(rid, 0, [1, 1], weight_salt(honest, 0))
    validator.forward("commitWeights", rid, 0, weights_commitment(weights, salt, rid, 0, validator.address))
    reveal_reports(chain, rid, 0, honest)  # every vote committed: reveals are open
    honest.reveal_weights(rid, 0, [1, 1], weight_salt(honest, 0))
    validator.forward("revealReports", rid, 0, [cid("report-0")])
    validator.forward("revealWeights", rid, 0, weights, salt)
    chain.sponsor.finalize_epoch(rid, 0)
    trainer.forward("requestUnstake", rid)
    validator.forward("requestUnstake", rid)
    t_info = chain.sponsor.trainer_info(rid, trainer.address)
    v_info = chain.sponsor.validator_info(rid, validator.address)
    settle_unvoted(chain, rid, max(t_info.until_epoch, v_info.until_epoch))  # the epochs they took part in
    chain.mine_to(max(t_info.unbonding_at, v_info.unbonding_at, chain.node.block_number() + 1))
    return Arena(rid, trainer, validator)


def due(chain: Chain, run_id: int, who: str, payout: Payout) -> int:
    """What `payout` would send `who` now: claim its rewards; withdrawStake its stake and those rewards."""
    rewards = chain.sponsor.claimable(run_id, who)
    if payout == "claim":
        return rewards
    trainer = chain.sponsor.trainer_info(run_id, who)
    return rewards + (trainer.stake if trainer.registered else chain.sponsor.validator_info(run_id, who).bond)


def held(chain: Chain) -> int:
    return int(chain.web3.eth.get_balance(chain.deployment.address))


PAYOUT_CASES = [
    (role, payout, reentry)
    for role in ("trainer", "validator")
    for payout in ("claim", "withdrawStake")
    for reentry in ("claim", "withdrawStake")
]


@pytest.mark.parametrize(("role", "payout", "reentry"), PAYOUT_CASES, ids=["-".join(c) for c in PAYOUT_CASES])
def test_reentry_from_every_payout_is_refused(
    chain: Chain, arena: Arena, role: str, payout: Payout, reentry: Payout
) -> None:
    """A receiver that calls claim/withdrawStake again while being paid by claim/withdrawStake: the lock refuses
    the inner call (ReentrantCall), so the run pays each due exactly once, whatever the receiver does. (A
    withdrawal pays the stake together with the rewards still due, and ends the membership.)"""
    hostile = arena.trainer if role == "trainer" else arena.validator
    rid, who = arena.run_id, hostile.address
    owed = {p: due(chain, rid, who, p) for p in ("claim", "withdrawStake")}
    assert owed["claim"] > 0 and owed["withdrawStake"] > 0, owed
    before = held(chain)

    # Strict receiver: its hook reverts when the re-entry is refused, so the payout fails as a whole.
    snapshot = chain.node.snapshot()
    hostile.arm(reentry, strict=True)
    with reverts("TransferFailed", to=who, amount=owed[payout]):
        hostile.forward(payout, rid)
    assert held(chain) == before
    assert {p: due(chain, rid, who, p) for p in owed} == owed
    chain.node.revert(snapshot)
    NONCES.reset()

    # Lenient receiver: the payout goes through once; the inner call was refused by the lock itself.
    hostile.arm(reentry, strict=False)
    hostile.forward(payout, rid)
    assert hostile.read("reentryError")[:4] == REENTRANT_CALL
    assert hostile.read("reentries") == 0
    assert hostile.read("received") == owed[payout]
    assert held(chain) == before - owed[payout]
    # Disarmed: after a claim the withdrawal still pays the stake in full; after a withdrawal nothing is left.
    hostile.arm(None, strict=False)
    if payout == "claim":
        with reverts("NothingToClaim"):
            hostile.forward("claim", rid)
        hostile.forward("withdrawStake", rid)
    with reverts("NothingToClaim"):
        hostile.forward("claim", rid)
    with reverts("NotMember"):
        hostile.forward("withdrawStake", rid)
    assert hostile.read("received") == owed["withdrawStake"]
    assert held(chain) == before - owed["withdrawStake"]


# ------------------------------------------------------------------ paginated event queries


def test_event_queries_read_the_chain_in_chunks(chain: Chain, run_id: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A public RPC refuses wide eth_getLogs ranges: reads go in chunks, and a refused chunk is split until the
    node answers; the logs found are the same as in one query."""
    for window in range(3):
        chain.mine_to(max(chain.node.block_number() + 1, chain.sponsor.window_bounds(run_id, window).start))
        commit_cid(chain, chain.trainers[window], run_id, window, f"w{window}")
    everything = [c for w in range(3) for c in chain.sponsor.commits(run_id, w)]
    assert len(everything) == 3
    small = TrainingRunViews(chain.web3, chain.deployment.address, chain.deployment.block, log_chunk_blocks=3)
    assert [c for w in range(3) for c in small.commits(run_id, w)] == everything

    wide = TrainingRunViews(chain.web3, chain.deployment.address, chain.deployment.block, log_chunk_blocks=1000)
    event = wide.contract.events.Committed
    original = event.get_logs
    ranges: list[int] = []

    def picky(*args: Any, **kwargs: Any) -> Any:  # a node that answers at most 4 blocks at a time
        span = kwargs["to_block"] - kwargs["from_block"] + 1
        ranges.append(span)
        if span > 4:
            raise Web3RPCError("query exceeds max block range 4")
        return original(*args, **kwargs)

    monkeypatch.setattr(event, "get_logs", picky)
    assert [c for w in range(3) for c in wide.commits(run_id, w)] == everything
    assert max(ranges) > 4 and ranges[-1] <= 4  # refused, then split
