"""Every state-changing function of the ABI is either guarded by a role — and refused, with the role's error, to
each wrong caller while the right caller succeeds in the same state — or deliberately open to anyone. A new
function in the contract that is in neither table fails `test_every_mutating_function_is_classified`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from contracts.client import TrainingRunClient
from contracts.compile import load_artifact

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
    to_start,
    weight_salt,
)

# Open to anyone, and why that is safe.
PERMISSIONLESS = {
    "createRun": "anyone may sponsor a run; the caller only becomes that run's sponsor",
    "fund": "adds to a pool; only the sponsor takes it back, and only after the run ended",
    "registerTrainer": "joining costs the minimum stake; capped at the run's trainer slots",
    "registerValidator": "joining costs the minimum stake; capped at the run's maxValidators; votes from the "
                         "next epoch on",
    "reportMissedReveal": "records a fact the contract checks itself (no reveal in the reveal period)",
    "finalizeEpoch": "deterministic, and each given vector is checked against its revealed hash; only once no "
                     "more ballots can come",
    "skipEpoch": "only a grace period after anyone could have finalised; it assigns nothing",
    "ejectValidator": "only a validator that revealed nothing for missThreshold settled epochs it voted on",
}

# Guarded: function -> {wrong caller role: the custom error it gets}. The roles are set up in `Roles`.
GUARDED: dict[str, dict[str, str]] = {
    "commit": {"outsider": "NotTrainer", "sponsor": "NotTrainer", "validator": "NotTrainer",
               "unbonding_trainer": "Unbonding"},
    "addStake": {"outsider": "NotTrainer", "sponsor": "NotTrainer", "validator": "NotTrainer",
                 "unbonding_trainer": "Unbonding"},
    "reveal": {"outsider": "NotTrainer", "sponsor": "NotTrainer", "validator": "NotTrainer",
               "other_trainer": "NoCommitment"},
    # a leaving validator still publishes the windows of the epochs it votes on
    "publishWindow": {"outsider": "NotValidator", "sponsor": "NotValidator", "trainer": "NotValidator"},
    "reportUnavailable": {"outsider": "NotEligible", "sponsor": "NotEligible", "trainer": "NotEligible",
                          "late_validator": "NotEligible"},
    "commitWeights": {"outsider": "NotEligible", "sponsor": "NotEligible", "trainer": "NotEligible",
                      "late_validator": "NotEligible"},
    # a report commitment is stored per sender: nobody else has one to reveal
    "revealReports": {"outsider": "NoReportCommitments", "sponsor": "NoReportCommitments",
                      "trainer": "NoReportCommitments", "late_validator": "NoReportCommitments"},
    "revealWeights": {"outsider": "NoWeightsCommitment", "sponsor": "NoWeightsCommitment",
                      "trainer": "NoWeightsCommitment", "late_validator": "NoWeightsCommitment"},
    "requestUnstake": {"outsider": "NotMember", "sponsor": "NotMember", "unbonding_trainer": "Unbonding",
                       "unbonding_validator": "Unbonding"},
    "withdrawStake": {"outsider": "NotMember", "sponsor": "NotMember", "other_trainer": "NotUnbonding",
                      "validator": "NotUnbonding"},
    "disputeBallot": {"outsider": "NotDisputer", "sponsor": "NotDisputer", "trainer": "NotDisputer",
                      "late_validator": "NotDisputer"},
    "claim": {"outsider": "NothingToClaim", "sponsor": "NothingToClaim", "other_trainer": "NothingToClaim"},
    "endRun": {"outsider": "NotSponsor", "trainer": "NotSponsor", "validator": "NotSponsor"},
    "reclaim": {"outsider": "NotSponsor", "trainer": "NotSponsor", "validator": "NotSponsor"},
}


def mutating_functions() -> set[str]:
    abi = load_artifact()["abi"]
    return {item["name"] for item in abi
            if item["type"] == "function" and item["stateMutability"] not in ("view", "pure")}


def test_every_mutating_function_is_classified() -> None:
    functions = mutating_functions()
    assert not set(GUARDED) & set(PERMISSIONLESS)
    assert functions == set(GUARDED) | set(PERMISSIONLESS), (
        f"unclassified: {sorted(functions - set(GUARDED) - set(PERMISSIONLESS))}; "
        f"gone: {sorted(set(GUARDED) | set(PERMISSIONLESS) - functions)}"
    )


@dataclass
class Roles:
    chain: Chain
    run_id: int

    def __post_init__(self) -> None:
        c = self.chain
        self.by_name: dict[str, TrainingRunClient] = {
            "sponsor": c.sponsor,  # created the run, holds no role in it
            "trainer": c.trainers[0],
            "other_trainer": c.trainers[2],  # registered, but not the one whose data is at stake
            "unbonding_trainer": c.trainers[1],
            "validator": c.validators[0],
            "unbonding_validator": c.validators[1],
            "late_validator": c.validators[2],  # registered after epoch 0 began: it does not vote on it
            "outsider": c.trainers[4],
        }


Call = Callable[[TrainingRunClient], Any]


def check(roles: Roles, name: str, call: Call, right: str, tried: dict[str, set[str]]) -> None:
    """Every wrong role in GUARDED[name] is refused with its error; then the right role succeeds."""
    for role, error in GUARDED[name].items():
        with reverts(error):
            call(roles.by_name[role])
        tried.setdefault(name, set()).add(role)
    call(roles.by_name[right])


def test_every_guarded_function_refuses_every_wrong_role(chain: Chain) -> None:
    rid = make_run(chain, windows_per_epoch=1)
    roles = Roles(chain, rid)
    for client in chain.trainers[:3]:
        client.register_trainer(rid, ETH)
    for client in chain.validators[:2]:
        client.register_validator(rid, 2 * ETH)
    to_start(chain, rid)
    chain.validators[2].register_validator(rid, 2 * ETH)
    roles.by_name["unbonding_trainer"].request_unstake(rid)
    roles.by_name["unbonding_validator"].request_unstake(rid)  # still votes on epoch 0
    tried: dict[str, set[str]] = {}
    salt = salt_for("guarded")
    validator = roles.by_name["validator"]

    # window 0: commit and addStake
    check(roles, "commit", lambda c: commit_cid(chain, c, rid, 0, "guarded"), "trainer", tried)
    check(roles, "addStake", lambda c: c.add_stake(rid, ETH), "trainer", tried)
    # its reveal period
    to_reveal_period(chain, rid, 0)
    check(roles, "reveal", lambda c: c.reveal(rid, 0, cid("guarded"), salt), "trainer", tried)
    # after it: publish, unavailability, then the epoch's weights
    to_epoch_end(chain, rid, 0)
    model, report = cid("model"), cid("report")
    check(roles, "publishWindow", lambda c: c.publish_window(rid, 0, model, report), "validator", tried)
    publish_epoch(chain, rid, 0, [roles.by_name["unbonding_validator"]])
    trainer = roles.by_name["trainer"].address_of_account
    check(roles, "reportUnavailable", lambda c: c.report_unavailable(rid, 0, trainer), "validator", tried)
    weights = [1, 0, 0]
    check(roles, "commitWeights", lambda c: c.commit_weights(rid, 0, weights, weight_salt(c, 0)), "validator", tried)
    leaving = roles.by_name["unbonding_validator"]
    leaving.commit_weights(rid, 0, weights, weight_salt(leaving, 0))
    check(roles, "revealReports", lambda c: c.reveal_reports(rid, 0, [report]), "validator", tried)
    reveal_reports(chain, rid, 0, leaving)
    check(roles, "revealWeights", lambda c: c.reveal_weights(rid, 0, weights, weight_salt(c, 0)), "validator", tried)
    leaving.reveal_weights(rid, 0, weights, weight_salt(leaving, 0))
    chain.sponsor.finalize_epoch(rid, 0)
    accused = leaving.address_of_account  # a voter of epoch 0, disputed by the other one (half: no forfeit)
    check(roles, "disputeBallot", lambda c: c.dispute_ballot(rid, 0, accused), "validator", tried)
    check(roles, "claim", lambda c: c.claim(rid), "trainer", tried)
    check(roles, "requestUnstake", lambda c: c.request_unstake(rid), "trainer", tried)
    chain.mine_to(chain.sponsor.trainer_info(rid, roles.by_name["unbonding_trainer"].address_of_account).unbonding_at)
    check(roles, "withdrawStake", lambda c: c.withdraw_stake(rid), "unbonding_trainer", tried)
    check(roles, "endRun", lambda c: c.end_run(rid), "sponsor", tried)
    settle_unvoted(chain, rid, chain.sponsor.get_run(rid).end_epoch)  # through the ended run's last epoch
    check(roles, "reclaim", lambda c: c.reclaim(rid), "sponsor", tried)

    assert validator.claimable(rid, validator.address_of_account) > 0  # epoch 0's, released once epoch 1 settled
    assert tried == {name: set(wrong) for name, wrong in GUARDED.items()}
