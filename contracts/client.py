"""The typed Python client of the TrainingRun contract, used by trainers, validators, the demo and the tests.
Transactions are signed locally with the client's account (contracts/tx.py) and sent by contracts/sending.py;
reverts come back as `ContractReverted` naming the custom error and its arguments. The steps a role must take
at most once (commit, reveal, publish, the ballot) take `once=`: see contracts/sending.py. Read-only views live
in contracts/views.py."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.logs import DISCARD
from web3.types import TxParams, TxReceipt, Wei

from base.commitments import report_commitment, weights_commitment
from contracts.errors import TransactionFailed
from contracts.sending import Once, send_batch, send_transaction
from contracts.tx import sign_transaction
from contracts.types import RunParams
from contracts.views import TrainingRunViews

MAX_WEIGHT = 0xFFFF


def pack_weights(weights: Sequence[int], payout: int = MAX_WEIGHT) -> bytes:
    """A validator's weight vector as the contract reads it: the payout (the fraction, of 65535, of the epoch's
    trainer reward the vector assigns; the rest stays in the pool), then big-endian uint16 per trainer index."""
    if not 0 <= payout <= MAX_WEIGHT:
        raise ValueError(f"payout {payout} is outside 0..{MAX_WEIGHT}")
    for index, weight in enumerate(weights):
        if not 0 <= weight <= MAX_WEIGHT:
            raise ValueError(f"weight {weight} of trainer {index} is outside 0..{MAX_WEIGHT}")
    return b"".join(int(w).to_bytes(2, "big") for w in (payout, *weights))


def unpack_weights(packed: bytes) -> tuple[int, list[int]]:
    """`pack_weights` reversed: (payout, uint16 per trainer index)."""
    if len(packed) < 2 or len(packed) % 2:
        raise ValueError(f"a packed weight vector has a 2-byte payout and 2 bytes per trainer, got {len(packed)} bytes")
    values = [int.from_bytes(packed[i:i + 2], "big") for i in range(0, len(packed), 2)]
    return values[0], values[1:]


class TrainingRunClient(TrainingRunViews):
    """One account's handle on a deployed TrainingRun contract: typed transactions plus all views."""

    def __init__(self, web3: Web3, address: str, account: LocalAccount, from_block: int = 0) -> None:
        super().__init__(web3, address, from_block)
        self.account = account

    @property
    def address_of_account(self) -> str:
        return str(self.account.address)

    def with_account(self, account: LocalAccount) -> TrainingRunClient:
        """The same contract seen by another account (sharing the contract object: building one from the ABI
        costs ~30 ms)."""
        clone = copy.copy(self)
        clone.account = account
        return clone

    # ------------------------------------------------------------------ plumbing

    def _tx(self, call: ContractFunction, name: str, value: int = 0) -> TxReceipt:
        return send_transaction(self.web3, self.account, self._params(call, value), name, self.decoder,
                                sign=lambda params: self._sign(params, name))

    def _tx_once(self, call: ContractFunction, name: str, once: Once | None) -> TxReceipt | None:
        """`_tx`, or with `once` at most once across crashes; None when the effect was on chain already."""
        if once is None:
            return self._tx(call, name)
        return send_transaction(self.web3, self.account, self._params(call, 0), name, self.decoder, once=once,
                                sign=lambda params: self._sign(params, name))

    def send_batch(self, calls: Sequence[ContractFunction], name: str, skip: Sequence[str] = ()) -> list[bool]:
        """Send all of `calls` together and await them (contracts.sending.send_batch): per call, whether it was
        mined and succeeded; a call whose estimate reverts with an error named in `skip` is not sent."""
        return send_batch(self.web3, self.account, [self._params(c, 0) for c in calls], name, self.decoder, skip,
                          sign=lambda params: self._sign(params, name))

    def _params(self, call: ContractFunction, value: int) -> TxParams:
        params: TxParams = {"to": self.contract.address, "data": call._encode_transaction_data()}
        if value:
            params["value"] = Wei(value)
        return params

    def signed(self, call: ContractFunction, name: str, value: int = 0, gas: int | None = None) -> bytes:
        """A signed raw transaction without sending it (benchmarks batch these). With `gas`, nothing is
        estimated, so it can be signed ahead of the state it needs."""
        params = self._params(call, value)
        if gas is not None:
            params["gas"] = gas
        return self._sign(params, name)

    def _sign(self, params: TxParams, name: str) -> bytes:
        """Every transaction of this client is signed here (a subclass observes the chain head at signing)."""
        return sign_transaction(self.web3, self.account, params, name, self.decoder)

    def _event_arg(self, receipt: TxReceipt, event: str, arg: str) -> int:
        for log in getattr(self.contract.events, event)().process_receipt(receipt, errors=DISCARD):
            return int(log["args"][arg])
        raise TransactionFailed(event, receipt["transactionHash"].hex(), f"no {event} event in the receipt")

    # ------------------------------------------------------------------ runs and membership

    def create_run(self, params: RunParams, value: int = 0) -> int:
        """Create a run (optionally seeding its pool with `value` wei); returns the run id."""
        receipt = self._tx(self.contract.functions.createRun(params.as_tuple()), "createRun", value)
        return self._event_arg(receipt, "RunCreated", "runId")

    def fund(self, run_id: int, amount: int) -> TxReceipt:
        return self._tx(self.contract.functions.fund(run_id), "fund", amount)

    def register_trainer(self, run_id: int, stake: int) -> TxReceipt:
        return self._tx(self.contract.functions.registerTrainer(run_id), "registerTrainer", stake)

    def add_stake(self, run_id: int, amount: int) -> TxReceipt:
        return self._tx(self.contract.functions.addStake(run_id), "addStake", amount)

    def register_validator(self, run_id: int, stake: int) -> TxReceipt:
        return self._tx(self.contract.functions.registerValidator(run_id), "registerValidator", stake)

    def end_run(self, run_id: int) -> TxReceipt:
        """Sponsor: the current epoch is the run's last."""
        return self._tx(self.contract.functions.endRun(run_id), "endRun")

    def reclaim(self, run_id: int) -> int:
        """Sponsor: take back an ended run's pool once its epochs are settled; returns the amount (wei)."""
        receipt = self._tx(self.contract.functions.reclaim(run_id), "reclaim")
        return self._event_arg(receipt, "PoolReclaimed", "amount")

    def eject_validator(self, run_id: int, validator: str) -> TxReceipt:
        call = self.contract.functions.ejectValidator(run_id, Web3.to_checksum_address(validator))
        return self._tx(call, "ejectValidator")

    def request_unstake(self, run_id: int) -> TxReceipt:
        return self._tx(self.contract.functions.requestUnstake(run_id), "requestUnstake")

    def withdraw_stake(self, run_id: int) -> TxReceipt:
        return self._tx(self.contract.functions.withdrawStake(run_id), "withdrawStake")

    # ------------------------------------------------------------------ commit–reveal

    def commit(self, run_id: int, window: int, commitment: bytes, once: Once | None = None) -> TxReceipt | None:
        return self._tx_once(self.contract.functions.commit(run_id, window, commitment), "commit", once)

    def reveal(self, run_id: int, window: int, cid: str, salt: bytes, once: Once | None = None) -> TxReceipt | None:
        return self._tx_once(self.contract.functions.reveal(run_id, window, cid, salt), "reveal", once)

    def report_missed_reveal(self, run_id: int, window: int, trainer: str) -> TxReceipt:
        call = self.contract.functions.reportMissedReveal(run_id, window, Web3.to_checksum_address(trainer))
        return self._tx(call, "reportMissedReveal")

    def report_unavailable(self, run_id: int, window: int, trainer: str) -> TxReceipt:
        call = self.contract.functions.reportUnavailable(run_id, window, Web3.to_checksum_address(trainer))
        return self._tx(call, "reportUnavailable")

    def report_missed_reveals(self, run_id: int, window: int, trainers: Sequence[str],
                              skip: Sequence[str] = ()) -> list[bool]:
        """`report_missed_reveal` for each of `trainers`, sent together (see `send_batch`)."""
        calls = [self.contract.functions.reportMissedReveal(run_id, window, Web3.to_checksum_address(t))
                 for t in trainers]
        return self.send_batch(calls, "reportMissedReveal", skip)

    def report_unavailable_all(self, run_id: int, window: int, trainers: Sequence[str],
                               skip: Sequence[str] = ()) -> list[bool]:
        """`report_unavailable` for each of `trainers`, sent together (see `send_batch`)."""
        calls = [self.contract.functions.reportUnavailable(run_id, window, Web3.to_checksum_address(t))
                 for t in trainers]
        return self.send_batch(calls, "reportUnavailable", skip)

    # ------------------------------------------------------------------ validators and settlement

    def publish_window(self, run_id: int, window: int, model_cid: str, report_cid: str,
                       once: Once | None = None) -> TxReceipt | None:
        """Publish `model_cid` and seal `report_cid` (only its commitment goes on chain; see `reveal_reports`)."""
        commitment = report_commitment(report_cid, self.address_of_account)
        call = self.contract.functions.publishWindow(run_id, window, model_cid, commitment)
        return self._tx_once(call, "publishWindow", once)

    def reveal_reports(self, run_id: int, epoch: int, report_cids: Sequence[str],
                       once: Once | None = None) -> TxReceipt | None:
        """Reveal the report CIDs sealed for every window of `epoch`, in window order."""
        call = self.contract.functions.revealReports(run_id, epoch, list(report_cids))
        return self._tx_once(call, "revealReports", once)

    def commit_weights(self, run_id: int, epoch: int, weights: Sequence[int], salt: bytes,
                       payout: int = MAX_WEIGHT, once: Once | None = None) -> TxReceipt | None:
        """Commit to uint16 weights indexed by trainer slot (any scale: the contract normalises) and a payout."""
        packed = pack_weights(weights, payout)
        commitment = weights_commitment(packed, salt, run_id, epoch, self.address_of_account)
        return self._tx_once(self.contract.functions.commitWeights(run_id, epoch, commitment), "commitWeights", once)

    def reveal_weights(self, run_id: int, epoch: int, weights: Sequence[int], salt: bytes,
                       payout: int = MAX_WEIGHT, once: Once | None = None) -> TxReceipt | None:
        call = self.contract.functions.revealWeights(run_id, epoch, pack_weights(weights, payout), salt)
        return self._tx_once(call, "revealWeights", once)

    def finalize_epoch(self, run_id: int, epoch: int) -> TxReceipt:
        """Settle `epoch` with the vectors revealed for it (read from the WeightsRevealed events)."""
        vectors = [r.weights for r in self.revealed_weights(run_id, epoch)]
        return self._tx(self.contract.functions.finalizeEpoch(run_id, epoch, vectors), "finalizeEpoch")

    def dispute_ballot(self, run_id: int, epoch: int, accused: str, once: Once | None = None) -> TxReceipt | None:
        """Say `accused`'s ballot for settled `epoch` does not follow from its own revealed reports."""
        call = self.contract.functions.disputeBallot(run_id, epoch, Web3.to_checksum_address(accused))
        return self._tx_once(call, "disputeBallot", once)

    def skip_epoch(self, run_id: int, epoch: int) -> TxReceipt:
        return self._tx(self.contract.functions.skipEpoch(run_id, epoch), "skipEpoch")

    def claim(self, run_id: int) -> int:
        """Withdraw everything due in `run_id`; returns the amount paid (wei)."""
        receipt = self._tx(self.contract.functions.claim(run_id), "claim")
        return self._event_arg(receipt, "Claimed", "amount")
