// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title Attacker
/// @notice Test-only: a hostile participant of a TrainingRun. Its owner makes it join (as trainer or validator) and
/// act through `forward`; whenever the run pays it (claim, withdrawStake), its receive hook calls back into the run
/// with the armed calldata. Strict: a refused re-entry reverts the payment (the run must then refuse the payout as a
/// whole). Lenient: the refusal is recorded and the payment accepted, so a test can read why it was refused.
contract Attacker {
    address public immutable target;
    address public immutable owner;
    bytes public reentry;
    bool public strict;
    uint256 public reentries; // re-entries that succeeded
    bytes public reentryError; // revert data of the last refused re-entry
    uint256 public received;

    constructor(address target_) {
        target = target_;
        owner = msg.sender;
    }

    function forward(bytes calldata data) external payable returns (bytes memory) {
        require(msg.sender == owner, "not owner");
        (bool ok, bytes memory out) = target.call{value: msg.value}(data);
        if (!ok) {
            assembly {
                revert(add(out, 32), mload(out))
            }
        }
        return out;
    }

    function arm(bytes calldata data, bool strict_) external {
        require(msg.sender == owner, "not owner");
        reentry = data;
        strict = strict_;
    }

    receive() external payable {
        received += msg.value;
        if (reentry.length == 0) return;
        (bool ok, bytes memory out) = target.call(reentry);
        if (ok) {
            reentries += 1;
            return;
        }
        reentryError = out;
        if (strict) {
            assembly {
                revert(add(out, 32), mload(out))
            }
        }
    }
}
