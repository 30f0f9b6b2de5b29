"""Read-only side of the TrainingRun client: typed views and event queries (reveals, commits, publications)."""

from __future__ import annotations

from typing import Any

from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, ContractPanicError, Web3Exception

from contracts.compile import load_artifact
from contracts.errors import ChainUnreachable
from contracts.tx import ErrorDecoder, as_reverted
from contracts.types import (
    Commit,
    CommitStatus,
    EpochInfo,
    Publication,
    Reveal,
    RunInfo,
    TrainerInfo,
    ValidatorInfo,
    WindowBounds,
)


class TrainingRunViews:
    """Typed reads of a deployed TrainingRun. `from_block` bounds event queries (the deployment block)."""

    def __init__(self, web3: Web3, address: str, from_block: int = 0) -> None:
        artifact = load_artifact()
        self.web3 = web3
        self.contract = web3.eth.contract(address=Web3.to_checksum_address(address), abi=artifact["abi"])
        self.decoder = ErrorDecoder(artifact["abi"])
        self.from_block = from_block

    @property
    def rpc_url(self) -> str:
        return str(getattr(self.web3.provider, "endpoint_uri", ""))

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self.contract.functions, name)(*args).call()
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
        return int(self._call("windowOfBlock", run_id, block))

    def current_window(self, run_id: int) -> int:
        """The window a transaction sent now lands in (the next block's)."""
        return self.window_of_block(run_id, self.block_number() + 1)

    def window_bounds(self, run_id: int, window: int) -> WindowBounds:
        return WindowBounds(*self._call("windowBounds", run_id, window))

    def epoch_of_window(self, run_id: int, window: int) -> int:
        return window // self.get_run(run_id).windows_per_epoch

    def epoch_end_block(self, run_id: int, epoch: int) -> int:
        """First block in which weights for `epoch` may be submitted (its last reveal period is over)."""
        run = self.get_run(run_id)
        return self.window_bounds(run_id, (epoch + 1) * run.windows_per_epoch - 1).reveal_end

    # ------------------------------------------------------------------ participants

    def trainers(self, run_id: int) -> list[str]:
        """Trainer addresses in index (registration) order."""
        count = self.get_run(run_id).trainer_count
        return [str(self._call("trainerAt", run_id, i)) for i in range(count)]

    def trainer_info(self, run_id: int, trainer: str) -> TrainerInfo:
        return TrainerInfo(*self._call("trainerInfo", run_id, Web3.to_checksum_address(trainer)))

    def validator_info(self, run_id: int, validator: str) -> ValidatorInfo:
        return ValidatorInfo(*self._call("validatorInfo", run_id, Web3.to_checksum_address(validator)))

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
        """(first, second, cid) for every duplicate reveal flagged in `window`."""
        logs = self._logs("DuplicateRevealed", {"runId": run_id, "window": window})
        return [(str(g["args"]["first"]), str(g["args"]["second"]), str(g["args"]["cid"])) for g in logs]

    # ------------------------------------------------------------------ validators and settlement

    def publications(self, run_id: int, window: int) -> dict[str, Publication]:
        """validator → what it published for `window`."""
        logs = self._logs("WindowPublished", {"runId": run_id, "window": window})
        return {
            str(g["args"]["validator"]): Publication(
                str(g["args"]["validator"]),
                window,
                str(g["args"]["modelCid"]),
                str(g["args"]["reportCid"]),
                g["blockNumber"],
            )
            for g in logs
        }

    def latest_model_cid(self, run_id: int, validator: str) -> tuple[str, int] | None:
        """(model CID, window) a validator published last, or None."""
        cid, window_plus_one = self._call("latestModel", run_id, Web3.to_checksum_address(validator))
        return (str(cid), int(window_plus_one) - 1) if window_plus_one else None

    def epoch_info(self, run_id: int, epoch: int) -> EpochInfo:
        return EpochInfo(*self._call("epochInfo", run_id, epoch))

    def consensus_weight(self, run_id: int, epoch: int, index: int) -> int:
        """Stored consensus of trainer `index` (uint16, scaled so the epoch's largest is 65535)."""
        return int(self._call("consensusWeight", run_id, epoch, index))

    def _logs(self, event: str, filters: dict[str, Any]) -> list[Any]:
        try:
            found = getattr(self.contract.events, event).get_logs(
                argument_filters=filters, from_block=self.from_block, to_block="latest"
            )
        except (Web3Exception, OSError) as err:
            raise ChainUnreachable(self.rpc_url, str(err)) from err
        return sorted(found, key=lambda g: (g["blockNumber"], g["logIndex"]))
