"""Pure parts of the loop's chain view: the window clock, which global model a window trains from, and the
plain sentences for decoded reverts."""

from __future__ import annotations

from base.clock import WindowClock
from contracts.errors import ContractReverted
from node.chain_view import base_model_for
from node.session import explain_revert


def test_clock_matches_the_contract_arithmetic() -> None:
    clock = WindowClock(start_block=7, window_blocks=10, reveal_blocks=5)
    assert clock.window_of(7) == 0 and clock.window_of(16) == 0 and clock.window_of(17) == 1
    assert (clock.start(2), clock.end(2), clock.reveal_end(2)) == (27, 37, 42)
    assert clock.can_commit(2, 27) and clock.can_commit(2, 36) and not clock.can_commit(2, 37)
    assert not clock.can_reveal(2, 36) and clock.can_reveal(2, 37) and clock.can_reveal(2, 41)
    assert not clock.can_reveal(2, 42)


def test_base_model_is_the_latest_publication_before_the_window() -> None:
    published = {0: "m0", 1: "m1", 4: "m4"}
    assert base_model_for(published, "init", 0) == ("init", None)
    assert base_model_for(published, "init", 1) == ("m0", 0)
    assert base_model_for(published, "init", 4) == ("m1", 1)
    # A node far behind jumps to the latest model, no replay.
    assert base_model_for(published, "init", 9) == ("m4", 4)
    assert base_model_for({}, "init", 9) == ("init", None)


def test_reverts_become_sentences() -> None:
    low = ContractReverted("StakeTooLow", {"runId": 0, "account": "0xA", "stake": 10**17, "required": 10**18},
                           "registerTrainer")
    assert explain_revert(low) == (
        "the contract refused registerTrainer: insufficient stake: 0.1 ETH offered or staked, the run requires 1 ETH"
    )
    not_trainer = ContractReverted("NotTrainer", {"runId": 2, "account": "0xB"}, "claim")
    assert "not registered in run 2" in explain_revert(not_trainer)
    other = ContractReverted("RunFull", {"runId": 1, "limit": 4}, "registerTrainer")
    assert explain_revert(other) == "The contract refused registerTrainer: run full (runId=1, limit=4)."
