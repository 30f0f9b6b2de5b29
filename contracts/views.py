"""Read-only side of the TrainingRun client: typed views and event queries (reveals, commits, publications,
revealed weights). Event queries are paginated: a public RPC refuses wide `eth_getLogs` ranges, so logs are read in
chunks of `log_chunk_blocks`, halved whenever the node says a range is too large."""

from __future__ import annotations

from typing import Any

from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, ContractPanicError, Web3Exception, Web3RPCError

from contracts.compile import load_artifact
from contracts.errors import ChainUnreachable
from contracts.tx import ErrorDecoder, as_reverted
from contracts.types import (
    Ballot,
    CanonicalModel,
    Commit,
    CommitStatus,
    EpochInfo,
    HeldCredit,
    Publication,
    Reveal,
    RevealedWeights,
    RunInfo,
    Settlement,
    TrainerInfo,
    ValidatorInfo,
    WindowBounds,
)

LOG_CHUNK_BLOCKS = 5_000  # many public RPCs cap eth_getLogs at 5k–10k blocks
# What nodes answer when an eth_getLogs range (or its result) is too large: retried with a smaller range.
RANGE_REFUSALS = ("range", "too many", "limit", "exceed", "10000 results", "response size")


class TrainingRunViews:
    """Typed reads of a deployed TrainingRun. `from_block` bounds event queries (the deployment block)."""

    def __init__(self, web3: Web3, address: str, from_block: int = 0,
                 log_chunk_blocks: int = LOG_CHUNK_BLOCKS) -> None:
        artifact = load_artifact()
        self.web3 = web3
        self.contract = web3.eth.contract(address=Web3.to_checksum_address(address), abi=artifact["abi"])
        self.decoder = ErrorDecoder(artifact["abi"])
        self.from_block = from_block
        self.log_chunk_blocks = log_chunk_blocks

    @property
    def rpc_url(self) -> str:
        return str(getattr(self.web3.provider, "endpoint_uri", ""))

    def _call(self, name: str, *args: Any, block: int | None = None) -> Any:
        try:
            call = getattr(self.contract.functions, name)(*args)
            return call.call() if block is None else call.call(block_identifier=block)
        except (ContractCustomError, ContractPanicError, ContractLogicError) as err:
            raise as_reverted(err, name, self.decoder) from None
        except (Web3Exception, OSError) as err:
            raise ChainUnreachable(self.rpc_url, str(err)) from err

    def block_number(self) -> int:
        try:
            return int(self.web3.eth.block_number)
        except (Web3Exception, OSError) as err:
            raise ChainUnreachable(self.rpc_url, str(err)) from err

    # ------------------------------------------------------------------ runs and clock

    def run_count(self) -> int:
        return int(self._call("runCount"))

    def get_run(self, run_id: int) -> RunInfo:
        return RunInfo(*self._call("getRun", run_id))

    def window_of_block(self, run_id: int, block: int) -> int:
        """The window of `block`; RunNotStarted (ContractReverted) before the run's start block."""
        return int(self._call("windowOfBlock", run_id, block))

    def current_window(self, run_id: int) -> int:
        """The window a transaction sent now lands in (the next block's)."""
        return self.window_of_block(run_id, self.block_number() + 1)

    def window_bounds(self, run_id: int, window: int) -> WindowBounds:
        return WindowBounds(*self._call("windowBounds", run_id, window))

    def epoch_of_window(self, run_id: int, window: int) -> int:
        return window // self.get_run(run_id).windows_per_epoch

    def epoch_end_block(self, run_id: int, epoch: int) -> int:
        """The block in which `epoch`'s last reveal period is over: its settlement opens then at the earliest."""
        run = self.get_run(run_id)
        return self.window_bounds(run_id, (epoch + 1) * run.windows_per_epoch - 1).reveal_end

    # ------------------------------------------------------------------ participants

    def trainers(self, run_id: int, block: int | None = None) -> list[str]:
        """Trainer addresses by slot index (the zero address for a slot freed by a trainer that left), now or as
        they were at `block`."""
        count = RunInfo(*self._call("getRun", run_id, block=block)).trainer_count
        return [str(self._call("trainerAt", run_id, i, block=block)) for i in range(count)]

    def trainer_info(self, run_id: int, trainer: str) -> TrainerInfo:
        return TrainerInfo(*self._call("trainerInfo", run_id, Web3.to_checksum_address(trainer)))

    def validator_info(self, run_id: int, validator: str) -> ValidatorInfo:
        return ValidatorInfo(*self._call("validatorInfo", run_id, Web3.to_checksum_address(validator)))

    def voting_stake(self, run_id: int, validator: str, epoch: int) -> int:
        """The stake `validator` votes with on `epoch` (0: it does not vote on it)."""
        return int(self._call("votingStake", run_id, Web3.to_checksum_address(validator), epoch))

    def total_stake(self, run_id: int, epoch: int) -> int:
        """The stake of every validator that votes on `epoch` (fixed once the epoch has begun)."""
        return int(self._call("totalStake", run_id, epoch))

    def reports_complete(self, run_id: int, validator: str, epoch: int) -> bool:
        """Whether `validator` published every window of `epoch` (a condition of voting on it)."""
        return bool(self._call("reportsComplete", run_id, Web3.to_checksum_address(validator), epoch))

    def claimable(self, run_id: int, account: str) -> int:
        return int(self._call("claimable", run_id, Web3.to_checksum_address(account)))

    # ------------------------------------------------------------------ commit–reveal

    def commitment_of(self, run_id: int, window: int, trainer: str) -> tuple[bytes, CommitStatus]:
        """(top 192 bits of the commitment, status); NONE once the trainer's ring slot was reused."""
        prefix, status = self._call("commitmentOf", run_id, window, Web3.to_checksum_address(trainer))
        return bytes(prefix), CommitStatus(status)

    def commits(self, run_id: int, window: int) -> list[Commit]:
        logs = self._logs("Committed", {"runId": run_id, "window": window})
        return [
            Commit(str(g["args"]["trainer"]), bytes(g["args"]["commitment"]), window, g["blockNumber"]) for g in logs
        ]

    def reveals(self, run_id: int, window: int) -> list[Reveal]:
        """Every accepted reveal of `window`, in chain order."""
        logs = self._logs("Revealed", {"runId": run_id, "window": window})
        return [Reveal(str(g["args"]["trainer"]), str(g["args"]["cid"]), window, g["blockNumber"]) for g in logs]

    def duplicates(self, run_id: int, window: int) -> list[tuple[str, str, str]]:
        """(first, second, cid) for every duplicate reveal flagged in `window` (the second one was slashed)."""
        logs = self._logs("DuplicateRevealed", {"runId": run_id, "window": window})
        return [(str(g["args"]["first"]), str(g["args"]["second"]), str(g["args"]["cid"])) for g in logs]

    def unavailable_stake(self, run_id: int, window: int, trainer: str) -> int:
        """Voting stake that reported `trainer`'s payload of `window` unavailable so far."""
        return int(self._call("unavailableStake", run_id, window, Web3.to_checksum_address(trainer)))

    def cid_key(self, cid: str) -> bytes:
        """keccak256 of the CID's multihash, as the contract compares content (InvalidCid if not a CID)."""
        return bytes(self._call("cidKey", cid))

    # ------------------------------------------------------------------ validators and settlement

    def publications(self, run_id: int, window: int, reports: bool = True) -> dict[str, Publication]:
        """validator → what it published for `window`; with `reports`, the report CIDs revealed so far (one more
        log query; a report stays sealed until its epoch's weight commits are closed)."""
        logs = self._logs("WindowPublished", {"runId": run_id, "window": window})
        revealed = self.revealed_reports(run_id, window) if reports and logs else {}
        return {
            str(g["args"]["validator"]): Publication(
                str(g["args"]["validator"]),
                window,
                str(g["args"]["modelCid"]),
                revealed.get(str(g["args"]["validator"])),
                g["blockNumber"],
                bytes(g["args"]["reportCommitment"]),
            )
            for g in logs
        }

    def revealed_reports(self, run_id: int, window: int) -> dict[str, str]:
        """validator → the report CID it revealed for `window` (checked by the contract against its seal)."""
        logs = self._logs("ReportRevealed", {"runId": run_id, "window": window})
        return {str(g["args"]["validator"]): str(g["args"]["reportCid"]) for g in logs}

    def reports_revealed(self, run_id: int, validator: str, epoch: int) -> bool:
        """Whether `validator` revealed its report CIDs of `epoch` (what its validator share requires)."""
        return bool(self._call("reportsRevealed", run_id, Web3.to_checksum_address(validator), epoch))

    def canonical_model(self, run_id: int, window: int) -> CanonicalModel:
        """The window's canonical model by the contract's rule (see CanonicalModel); `cid` is read from the
        counted publisher's WindowPublished event."""
        validator, stake, epoch_stake, deadline = self._call("canonicalModel", run_id, window)
        cid = None
        if int(stake) > 0:
            pub = self.publications(run_id, window, reports=False).get(str(validator))
            cid = pub.model_cid if pub is not None else None
        return CanonicalModel(window, cid, str(validator), int(stake), int(epoch_stake), int(deadline),
                              final=self.block_number() + 1 >= int(deadline))  # no tx can land before it

    def settlement_of(self, run_id: int, epoch: int) -> Settlement:
        """Schedule and counters of `epoch`'s settlement (meaningful while it is the run's next_epoch)."""
        return Settlement(*(int(x) for x in self._call("settlementOf", run_id, epoch)))

    def held_credit(self, run_id: int, validator: str) -> HeldCredit:
        amount, epoch, disputable, forfeited = self._call("heldCredit", run_id, Web3.to_checksum_address(validator))
        return HeldCredit(int(amount), int(epoch), bool(disputable), bool(forfeited))

    def dispute_of(self, run_id: int, epoch: int, accused: str, disputer: str) -> tuple[int, bool]:
        """(stake that disputed `accused`'s ballot for `epoch` so far, whether `disputer` is among it)."""
        stake, disputed = self._call("disputeOf", run_id, epoch, Web3.to_checksum_address(accused),
                                     Web3.to_checksum_address(disputer))
        return int(stake), bool(disputed)

    def ballot_of(self, run_id: int, validator: str) -> Ballot:
        prefix, epoch, status = self._call("ballotOf", run_id, Web3.to_checksum_address(validator))
        return Ballot(bytes(prefix), int(epoch), CommitStatus(status))

    def revealed_weights(self, run_id: int, epoch: int) -> list[RevealedWeights]:
        """The weight vectors revealed for `epoch`, in reveal (slot) order: finalizeEpoch's input."""
        start = max(self.from_block, self.epoch_end_block(run_id, epoch))
        logs = self._logs("WeightsRevealed", {"runId": run_id, "epoch": epoch}, from_block=start)
        found = {int(g["args"]["slot"]): RevealedWeights(str(g["args"]["validator"]), int(g["args"]["slot"]),
                                                         bytes(g["args"]["weights"]), int(g["blockNumber"]))
                 for g in logs}
        return [found[slot] for slot in sorted(found)]

    def epoch_info(self, run_id: int, epoch: int) -> EpochInfo:
        return EpochInfo(*self._call("epochInfo", run_id, epoch))

    def consensus_weight(self, run_id: int, epoch: int, index: int) -> int:
        """Stored consensus of trainer `index` (uint16, scaled so the epoch's largest is 65535)."""
        return int(self._call("consensusWeight", run_id, epoch, index))

    # ------------------------------------------------------------------ logs

    def _logs(self, event: str, filters: dict[str, Any], from_block: int | None = None,
              to_block: int | None = None) -> list[Any]:
        """Every `event` log matching `filters` in [from_block, to_block] (default: deployment to head), read in
        chunks; a chunk the node refuses as too large is split in two."""
        start = self.from_block if from_block is None else from_block
        end = self.block_number() if to_block is None else to_block
        found: list[Any] = []
        chunk = max(1, self.log_chunk_blocks)
        while start <= end:
            stop = min(end, start + chunk - 1)
            try:
                found += getattr(self.contract.events, event).get_logs(
                    argument_filters=filters, from_block=start, to_block=stop
                )
            except Web3RPCError as err:
                if chunk > 1 and any(words in str(err).lower() for words in RANGE_REFUSALS):
                    chunk = max(1, chunk // 2)
                    continue
                raise ChainUnreachable(self.rpc_url, str(err)) from err
            except (Web3Exception, OSError) as err:
                raise ChainUnreachable(self.rpc_url, str(err)) from err
            start = stop + 1
        return sorted(found, key=lambda g: (g["blockNumber"], g["logIndex"]))
