// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @notice A CID that is empty, too long, or not a CID.
error InvalidCid(uint256 length);

/// @title CidKey
/// @notice The content a CID names, as a key: keccak256 of its multihash. A CIDv0 ("Qm…", base58btc), and a
/// CIDv1 in base32 ("b…"/"B…"), base16 ("f…"/"F…") or base58btc ("z…") of the same multihash give the same key,
/// whatever the CIDv1's codec: re-encoding a CID does not make it other content. Anything else reverts InvalidCid.
/// @dev Decodes into scratch memory past the free memory pointer (nothing is allocated). Decoded CIDs are at most
/// 64 bytes (base58) or MAX_CID_BYTES·5/8 (base32).
library CidKey {
    function multihashKey(string calldata cid, uint256 maxLength) internal pure returns (bytes32 key) {
        uint256 length = bytes(cid).length;
        if (length < 2 || length > maxLength) revert InvalidCid(length);
        bool ok;
        assembly ("memory-safe") {
            // LEB128 varint at [p, end): value, the position after it, and whether it was complete (≤ 9 bytes).
            function varint(p, end) -> value, next, done {
                let shift := 0
                for { next := p } lt(next, end) {} {
                    let b := byte(0, mload(next))
                    next := add(next, 1)
                    value := or(value, shl(shift, and(b, 0x7f)))
                    if iszero(and(b, 0x80)) {
                        done := 1
                        break
                    }
                    shift := add(shift, 7)
                    if gt(shift, 56) { break }
                }
            }
            // RFC 4648 base32 without padding, either case: chars [from, len) of src → bytes at out. The path every
            // reveal takes, so 32 chars are decoded at once (SWAR: every byte lane of a word in the same operations;
            // chars are ASCII, so adding a per-lane threshold below 0x80 never carries into the next lane).
            function base32(src, from, len, out) -> n, good {
                let lanes := 0x8080808080808080808080808080808080808080808080808080808080808080
                let bad := 0
                let o := out
                for { let i := from } lt(i, len) { i := add(i, 32) } {
                    let w := calldataload(add(src, i))
                    let left := sub(len, i)
                    if lt(left, 32) {
                        let keep := not(sub(shl(shl(3, sub(32, left)), 1), 1))
                        w := or(and(w, keep), and(0x6161616161616161616161616161616161616161616161616161616161616161, not(keep))) // past the end: 'a' (0)
                    }
                    bad := or(bad, and(w, lanes)) // not ASCII
                    // per lane: x >= t  <=>  x + (0x80 - t) has bit 7
                    let upper := and(and(add(w, 0x3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f), lanes), not(add(w, 0x2525252525252525252525252525252525252525252525252525252525252525)))
                    w := add(w, shr(2, upper)) // A-Z → a-z
                    let letter := and(and(add(w, 0x1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f), lanes), not(add(w, 0x0505050505050505050505050505050505050505050505050505050505050505)))
                    let digit := and(and(add(w, 0x4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e), lanes), not(add(w, 0x4848484848484848484848484848484848484848484848484848484848484848)))
                    bad := or(bad, xor(or(letter, digit), lanes)) // neither a-z nor 2-7
                    // a-z → 0..25, 2-7 → 26..31
                    w := sub(sub(w, 0x1818181818181818181818181818181818181818181818181818181818181818), mul(shr(7, letter), 0x49))
                    // pack the 5-bit lanes: 10 bits per 16-bit lane, 20 per 32, 40 (8 chars) per 64
                    w := or(shl(5, and(shr(8, w), 0x00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff)), and(w, 0x00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff))
                    w := or(shl(10, and(shr(16, w), 0x0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff)), and(w, 0x0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff))
                    w := or(shl(20, and(shr(32, w), 0x00000000ffffffff00000000ffffffff00000000ffffffff00000000ffffffff)), and(w, 0x00000000ffffffff00000000ffffffff00000000ffffffff00000000ffffffff))
                    mstore(o, shl(24, w))
                    mstore(add(o, 5), shl(88, w))
                    mstore(add(o, 10), shl(152, w))
                    mstore(add(o, 15), shl(216, w))
                    o := add(o, 20)
                }
                n := shr(3, mul(5, sub(len, from)))
                good := iszero(bad)
            }
            // base16, either case: chars [from, len) of src → bytes at out.
            function base16(src, from, len, out) -> n, good {
                good := iszero(and(sub(len, from), 1))
                let acc := 0
                for { let i := from } lt(i, len) { i := add(i, 1) } {
                    let c := byte(0, calldataload(add(src, i)))
                    let v := sub(c, 48) // 0-9
                    if iszero(lt(v, 10)) {
                        v := sub(c, 87) // a-f
                        if iszero(lt(sub(c, 97), 6)) {
                            v := sub(c, 55) // A-F
                            if iszero(lt(sub(c, 65), 6)) { good := 0 }
                        }
                    }
                    acc := or(shl(4, acc), and(v, 0xf))
                    if and(sub(i, from), 1) {
                        mstore8(add(out, n), acc)
                        n := add(n, 1)
                    }
                }
            }
            // base58btc alphabet (no 0, O, I, l): the digit of char c; the ranges are disjoint.
            function digit58(c) -> d, good {
                if lt(sub(c, 49), 9) { d := sub(c, 49) good := 1 } // 1-9
                if lt(sub(c, 65), 8) { d := sub(c, 56) good := 1 } // A-H
                if lt(sub(c, 74), 5) { d := sub(c, 57) good := 1 } // J-N
                if lt(sub(c, 80), 11) { d := sub(c, 58) good := 1 } // P-Z
                if lt(sub(c, 97), 11) { d := sub(c, 64) good := 1 } // a-k
                if lt(sub(c, 109), 14) { d := sub(c, 65) good := 1 } // m-z
            }
            // base58btc: chars [from, len) of src as a number (512 bits: hi, lo), leading '1's as zero bytes.
            // Returns where its big-endian bytes start (in the 64 bytes ending at out + 128) and how many.
            function base58(src, from, len, out) -> start, n, good {
                good := 1
                let hi := 0
                let lo := 0
                let zeros := 0
                let leading := 1
                for { let i := from } lt(i, len) { i := add(i, 1) } {
                    let c := byte(0, calldataload(add(src, i)))
                    let d, digit := digit58(c)
                    if iszero(digit) { good := 0 }
                    if and(leading, iszero(d)) { zeros := add(zeros, 1) }
                    if d { leading := 0 }
                    if shr(249, hi) { good := 0 }
                    let product := mul(lo, 58)
                    let mm := mulmod(lo, 58, not(0))
                    let carry := sub(sub(mm, product), lt(mm, product))
                    lo := add(product, d)
                    carry := add(carry, lt(lo, product))
                    hi := add(mul(hi, 58), carry)
                }
                let size := 0
                for { let x := lo } x { x := shr(8, x) } { size := add(size, 1) }
                if hi {
                    size := 32
                    for { let x := hi } x { x := shr(8, x) } { size := add(size, 1) }
                }
                n := add(size, zeros)
                if gt(n, 64) { good := 0 }
                mstore(add(out, 64), hi)
                mstore(add(out, 96), lo)
                start := sub(add(out, 128), n)
            }

            let src := cid.offset
            let out := mload(0x40)
            let start := out
            let n := 0
            let prefix := byte(0, calldataload(src))
            let v1 := 1
            switch prefix
            case 0x51 { // 'Q': CIDv0 is the base58btc multihash itself
                start, n, ok := base58(src, 0, length, out)
                v1 := 0
            }
            case 0x7a { start, n, ok := base58(src, 1, length, out) } // 'z'
            case 0x62 { n, ok := base32(src, 1, length, out) } // 'b'
            case 0x42 { n, ok := base32(src, 1, length, out) } // 'B'
            case 0x66 { n, ok := base16(src, 1, length, out) } // 'f'
            case 0x46 { n, ok := base16(src, 1, length, out) } // 'F'
            default { ok := 0 }
            let end := add(start, n)
            let mh := start
            if and(ok, v1) {
                // CIDv1: version 1, a codec varint, then the multihash
                ok := and(gt(n, 1), eq(byte(0, mload(start)), 1))
                let codecOk := 0
                let skip := 0
                skip, mh, codecOk := varint(add(start, 1), end)
                ok := and(ok, codecOk)
            }
            if ok {
                // multihash: code varint, digest length varint, then exactly that many digest bytes
                let code, p1, ok1 := varint(mh, end) // any hash function: only the bytes matter
                let size, p2, ok2 := varint(p1, end)
                ok := and(and(ok1, ok2), and(eq(sub(end, p2), size), gt(size, 0)))
                key := keccak256(mh, sub(end, mh))
            }
        }
        if (!ok) revert InvalidCid(length);
    }
}

/// @title TrainingRunBase
/// @notice Storage, types, errors, events and internal logic shared by TrainingRun and the TrainingRunExtension it
/// delegates to (both run against TrainingRun's storage; see TrainingRun).
abstract contract TrainingRunBase {
    // ------------------------------------------------------------------ types

    /// @notice Parameters a sponsor fixes when creating a run (bounds: README, "Parameters").
    struct RunParams {
        bytes32 configDigest; // digest of the protocol/model configuration
        uint32 windowBlocks; // blocks per window
        uint32 revealBlocks; // blocks after a window during which its commitments can be revealed
        uint32 windowsPerEpoch; // windows per settlement epoch
        uint32 gracePeriodBlocks; // length of each settlement phase: weight commits, then weight reveals
        uint32 unbondingBlocks; // delay between requestUnstake and withdrawStake
        uint16 validatorShareBps; // share of an epoch's reward for validators, basis points
        uint16 slashBps; // fraction of a stake slashed per fault, basis points
        uint16 missThreshold; // trainer: missed reveals that trigger a slash; validator: unserved epochs to eject
        uint128 minTrainerStake;
        uint128 minValidatorStake;
        uint128 rewardPerEpoch;
        uint32 maxTrainers; // trainer slots (indices) of the run
        uint16 maxValidators; // active validators at once; maxTrainers × maxValidators <= MAX_WEIGHT_ENTRIES
        uint32 publishBlocks; // publications of a window within this many blocks after its reveals set its canonical model
        uint32 startDelayBlocks; // the run's window 0 starts this many blocks after creation
    }

    /// @notice A run as stored. Slot 0 is what commit and reveal read.
    struct Run {
        uint64 startBlock;
        uint32 windowBlocks;
        uint32 revealBlocks;
        uint32 windowsPerEpoch;
        uint32 endEpoch; // type(uint32).max while open; else no window of this or a later epoch takes commits
        uint16 missThreshold;
        uint16 slashBps;
        uint32 trainerCount; // trainer indices handed out so far (a weight vector has at most this many entries)
        uint96 minTrainerStake;
        uint96 minValidatorStake;
        uint32 maxTrainers;
        uint16 maxValidators;
        uint16 validatorCount; // active validators (not leaving)
        uint32 gracePeriodBlocks;
        uint32 unbondingBlocks;
        uint32 publishBlocks;
        uint32 freeSlots; // trainer indices given back by trainers that left, reused first
        uint32 nextEpoch; // epochs [0, nextEpoch) are settled (finalised or skipped)
        uint16 validatorShareBps;
        uint128 rewardPerEpoch;
        uint256 pool; // unassigned reward
        address sponsor;
        bytes32 configDigest;
    }

    /// @notice A trainer's state in one run (one slot).
    struct Trainer {
        uint88 stake;
        uint32 index; // slot in weight vectors; reused by a later trainer once this one has withdrawn
        uint16 misses; // missed reveals since the last miss slash
        uint8 slashCount; // saturating
        bool registered;
        uint40 unbondingAt; // 0 = active; else the block from which the stake can be withdrawn
        uint32 nextClaimEpoch; // epochs before this one are already paid
        uint32 untilEpoch; // while unbonding: the first epoch it could not work in
    }

    /// @notice A validator's state in one run (two slots).
    struct Validator {
        uint96 stake; // voting stake, fixed at registration
        uint96 bond; // what withdrawStake returns: the stake less slashes
        uint32 fromEpoch; // first epoch it votes on
        uint32 untilEpoch; // first epoch it no longer votes on (type(uint32).max while active)
        uint96 credit; // rewards not yet claimed
        uint40 unbondingAt; // 0 = active; else the block from which the bond can be withdrawn
        uint32 pubEpoch; // the epoch of its latest publication
        uint16 pubCount; // windows of `pubEpoch` it published
        uint32 fullMask; // bit k set: it published every window of epoch `pubEpoch - k`
        uint32 servedPlusOne; // the last epoch it revealed weights for, + 1
        bool registered;
    }

    /// @notice Counters of the epoch being settled (one slot, reused every epoch).
    struct Ballots {
        uint64 settleFrom; // block of the last settlement: the next epoch's settlement opens no earlier
        uint32 epochPlusOne; // the epoch these counters belong to (+1); other epochs read as zero
        uint16 commits;
        uint16 reveals;
        uint128 committedStake;
    }

    /// @notice Settlement record of an epoch.
    struct Epoch {
        uint128 rewardPerWeight; // wei per unit of stored consensus weight (trainer i earns q_i × this)
        uint64 weightSum; // sum of the stored (quantised) consensus weights
        uint16 submissions; // weight vectors revealed
        bool finalized; // settled (finalised or skipped)
        bool skipped; // settled without rewards by skipEpoch
    }

    /// @dev Working set of one epoch's settlement.
    struct Tally {
        uint256[] consensus;
        uint256[] agreement;
        uint256 maxConsensus;
    }

    /// @notice Why a stake was slashed.
    enum SlashReason {
        DuplicateCid,
        MissedReveals
    }

    /// @notice Status of a commitment slot (trainer contributions and validator ballots).
    enum CommitStatus {
        None,
        Committed,
        Revealed,
        Missed
    }

    // ------------------------------------------------------------------ constants

    /// @notice Commitment ring length per trainer; `revealBlocks <= (RING - 2) * windowBlocks` keeps a window's
    /// slot alive for at least one window after its reveal period, when unavailability is reported.
    uint256 public constant RING = 4;
    /// @notice Cap on a run's active validators (and so on the weight vectors revealed per epoch).
    uint256 public constant MAX_VALIDATORS = 16;
    /// @notice Cap on a run's trainer slots.
    uint256 public constant MAX_TRAINERS = 2048;
    /// @notice Cap on maxTrainers × maxValidators: the consensus work of one finalizeEpoch (bench.gas measures
    /// the worst case at this size).
    uint256 public constant MAX_WEIGHT_ENTRIES = 8192;
    /// @notice A revealed weight vector starts with its payout: a big-endian uint16, the fraction (of 65535) of the
    /// epoch's trainer reward that the vector assigns; the rest stays in the pool.
    uint256 public constant PAYOUT_BYTES = 2;
    uint256 internal constant PAYOUT_SCALE = 0xffff;
    /// @notice Shortest settlement phase: an epoch can never be finalised in the block its settlement opens.
    uint256 public constant MIN_GRACE_BLOCKS = 2;
    /// @notice Epochs one claim (or a trainer's withdrawal) pays at most.
    uint256 public constant MAX_CLAIM_EPOCHS = 64;
    /// @notice Cap on a revealed or published CID's length in bytes.
    uint256 public constant MAX_CID_BYTES = 128;
    /// @notice Cap on windowsPerEpoch: `revealReports` takes every report CID of an epoch in one transaction.
    uint256 public constant MAX_WINDOWS_PER_EPOCH = 256;
    /// @notice Epochs whose report seals a validator keeps (a ring, like its full-publication record).
    uint256 public constant SEAL_EPOCHS = 32;
    /// @notice Fixed-point scale of normalised weights.
    uint256 public constant SCALE = 1e12;
    uint256 internal constant BPS = 10_000;
    uint256 internal constant OPEN = type(uint32).max;
    uint256 internal constant STATUS_MASK = 0x7f;
    uint256 internal constant RING_ALLOCATED = 0x80; // keeps an empty ring slot non-zero
    uint256 internal constant WINDOW_MASK = (1 << 56) - 1;
    uint256 internal constant TOTAL_MASK = (1 << 224) - 1;
    uint256 internal constant FORFEITED = 1 << 128;

    // ------------------------------------------------------------------ storage

    /// @notice Number of runs created; run ids are 0..runCount-1.
    uint256 public runCount;
    mapping(uint256 => Run) internal _runs;
    mapping(uint256 => Ballots) internal _ballots;
    mapping(uint256 => mapping(address => Trainer)) internal _trainers;
    mapping(uint256 => mapping(uint256 => address)) internal _trainerAt;
    mapping(uint256 => mapping(uint256 => uint32)) internal _freeIndex;
    mapping(uint256 => mapping(address => Validator)) internal _validators;
    mapping(uint256 => uint256[]) internal _stakeCheckpoints; // epoch << 224 | electorate stake from that epoch on
    mapping(uint256 => mapping(address => uint256[RING])) internal _commitRing;
    // A validator's ballot for the epoch being settled: hash prefix (commitment, then the revealed vector's
    // hash) << 64 | epoch + 1 << 8 | CommitStatus. The revealers of that epoch, in reveal order: address << 96 | stake.
    mapping(uint256 => mapping(address => uint256)) internal _ballot;
    mapping(uint256 => mapping(uint256 => uint256)) internal _revealers;
    mapping(bytes32 => address) internal _firstRevealer; // (run, window, multihash) → who revealed it first
    mapping(bytes32 => uint256) internal _unavailableStake; // (run, window, trainer) → stake reporting it; bit 255: decided
    mapping(bytes32 => bool) internal _unavailableReported; // (run, window, trainer, validator)
    mapping(bytes32 => uint256) internal _modelTally; // (run, window, model multihash) → on-time publishing stake
    mapping(uint256 => mapping(uint256 => uint256)) internal _canonical; // run → window → publisher << 96 | stake
    mapping(uint256 => mapping(address => uint256)) internal _nextPublishWindow;
    mapping(uint256 => mapping(uint256 => Epoch)) internal _epochs;
    mapping(uint256 => mapping(uint256 => mapping(uint256 => uint256))) internal _consensusWords;
    // run → word → bit i % 256 set while trainer slot i is held: consensus given to a vacant slot is never credited
    mapping(uint256 => mapping(uint256 => uint256)) internal _occupiedSlots;
    // A validator's sealed reports per epoch (ring of SEAL_EPOCHS): chain hash prefix over the epoch's report
    // commitments in window order << 64 | epoch + 1 << 8 | 1 once revealed.
    mapping(uint256 => mapping(address => uint256[SEAL_EPOCHS])) internal _reportSeals;
    // A validator's credit of the last epoch it was credited for, held while that epoch's ballots can be disputed:
    // amount (uint96) | epoch + 1 << 96 | FORFEITED. Set for every validator credited at a settlement (amount 0
    // included), so it also says who voted on the epoch in dispute.
    mapping(uint256 => mapping(address => uint256)) internal _heldCredit;
    mapping(bytes32 => uint256) internal _disputeStake; // (run, epoch, accused) → stake of its disputers so far
    mapping(bytes32 => bool) internal _disputed; // (run, epoch, accused, disputer)
    uint256 internal _lock = 1;

    // ------------------------------------------------------------------ errors

    /// @notice No run with this id.
    error UnknownRun(uint256 runId);
    /// @notice A run parameter is outside [min, max].
    error InvalidRunParams(string field, uint256 value, uint256 min, uint256 max);
    /// @notice The call needed a non-zero ETH value.
    error ZeroValue();
    /// @notice A stake below the run's minimum.
    error StakeTooLow(uint256 runId, address account, uint256 stake, uint256 required);
    /// @notice The account already has a role in this run.
    error AlreadyRegistered(uint256 runId, address account);
    /// @notice The account is not a registered trainer of the run.
    error NotTrainer(uint256 runId, address account);
    /// @notice The caller is not a registered validator of the run.
    error NotValidator(uint256 runId, address account);
    /// @notice The caller holds no role (trainer or validator) in the run.
    error NotMember(uint256 runId, address account);
    /// @notice Only the run's sponsor may do this.
    error NotSponsor(uint256 runId, address account);
    /// @notice The run already has the maximum number of trainers or active validators.
    error RunFull(uint256 runId, uint256 limit);
    /// @notice The run's window 0 has not started.
    error RunNotStarted(uint256 runId, uint256 startBlock);
    /// @notice The sponsor ended the run: nothing of epoch `endEpoch` or later happens.
    error RunEnded(uint256 runId, uint256 endEpoch);
    /// @notice The account has requested to unstake and may no longer take part.
    error Unbonding(uint256 runId, address account);
    /// @notice A commit for a window other than the current one.
    error WrongWindow(uint256 runId, uint256 window, uint256 currentWindow);
    /// @notice The trainer already committed in this window.
    error AlreadyCommitted(uint256 runId, uint256 window, address trainer);
    /// @notice A reveal outside the window's reveal blocks.
    error NotInRevealPeriod(uint256 runId, uint256 window, uint256 opensAt, uint256 closesAt);
    /// @notice There is no commitment for this window (or its ring slot was reused).
    error NoCommitment(uint256 runId, uint256 window, address trainer);
    /// @notice The commitment was already revealed or reported missed.
    error AlreadyRevealed(uint256 runId, uint256 window, address trainer);
    /// @notice The commitment is not (or no longer) in the revealed state.
    error NotRevealed(uint256 runId, uint256 window, address trainer);
    /// @notice keccak256(cid, salt, runId, window, trainer) does not match the commitment.
    error CommitmentMismatch(uint256 runId, uint256 window, address trainer);
    /// @notice The window's reveal period has not ended.
    error RevealPeriodNotOver(uint256 runId, uint256 window, uint256 endsAt);
    /// @notice The validator already published this (or a later) window.
    error AlreadyPublished(uint256 runId, uint256 window, address validator);
    /// @notice The validator already reported this payload unavailable.
    error AlreadyReported(uint256 runId, uint256 window, address trainer, address validator);
    /// @notice The epoch's settlement has not opened (its last reveal period, or the previous epoch, is not over).
    error EpochNotOver(uint256 runId, uint256 epoch, uint256 endsAt);
    /// @notice Epochs are settled in order; only the oldest unsettled one takes ballots.
    error EpochOutOfOrder(uint256 runId, uint256 epoch, uint256 expected);
    /// @notice The validator was not bonded when the epoch began, or left before it.
    error NotEligible(uint256 runId, uint256 epoch, address validator);
    /// @notice The validator has not published its evaluation report for every window of the epoch.
    error ReportsMissing(uint256 runId, uint256 epoch, address validator);
    /// @notice The epoch's weight commit phase is over.
    error CommitPhaseOver(uint256 runId, uint256 epoch, uint256 closedAt);
    /// @notice The validator already committed weights for this epoch.
    error WeightsAlreadyCommitted(uint256 runId, uint256 epoch, address validator);
    /// @notice The validator committed no weights for this epoch.
    error NoWeightsCommitment(uint256 runId, uint256 epoch, address validator);
    /// @notice The validator already revealed its weights for this epoch.
    error WeightsAlreadyRevealed(uint256 runId, uint256 epoch, address validator);
    /// @notice Weight reveals open once the commit phase is over (or every eligible validator committed).
    error RevealPhaseNotOpen(uint256 runId, uint256 epoch, uint256 opensAt);
    /// @notice The epoch's weight reveal phase is over.
    error RevealPhaseOver(uint256 runId, uint256 epoch, uint256 closedAt);
    /// @notice keccak256(weights, salt, runId, epoch, validator) does not match the validator's commitment.
    error WeightsMismatch(uint256 runId, uint256 epoch, address validator);
    /// @notice A weight vector without its payout header, of odd length, or with more entries than trainer slots.
    error InvalidWeights(uint256 runId, uint256 length, uint256 trainerCount);
    /// @notice finalizeEpoch was given a different number of vectors than were revealed.
    error WrongRevealCount(uint256 runId, uint256 epoch, uint256 given, uint256 expected);
    /// @notice finalizeEpoch was given a vector that is not the one revealed in this slot.
    error RevealedWeightsMismatch(uint256 runId, uint256 epoch, uint256 slot);
    /// @notice Ballots may still arrive: some committed stake has not revealed, or the commit phase is open.
    error EpochNotFinalizable(uint256 runId, uint256 epoch, uint256 commits, uint256 reveals, uint256 closesAt);
    /// @notice An epoch can be skipped only a grace period after it became finalisable by anyone.
    error EpochNotSkippable(uint256 runId, uint256 epoch, uint256 skippableAt);
    /// @notice Nothing is due to the account.
    error NothingToClaim(uint256 runId, address account);
    /// @notice More than MAX_CLAIM_EPOCHS epochs are unclaimed: claim first, then withdraw.
    error ClaimFirst(uint256 runId, address account, uint256 nextClaimEpoch, uint256 settledEpochs);
    /// @notice The account has not requested to unstake.
    error NotUnbonding(uint256 runId, address account);
    /// @notice The unbonding delay has not passed.
    error UnbondingNotOver(uint256 runId, address account, uint256 availableAt);
    /// @notice An epoch the account took part in (or voted on) is not settled yet.
    error EpochsNotSettled(uint256 runId, address account, uint256 untilEpoch, uint256 nextEpoch);
    /// @notice The validator served recently enough: it cannot be ejected.
    error NotEjectable(uint256 runId, address validator, uint256 unservedEpochs, uint256 required);
    /// @notice The ended run still has epochs to settle before its pool can be reclaimed.
    error EpochsPending(uint256 runId, uint256 nextEpoch, uint256 endEpoch);
    /// @notice An amount too large for the packed storage field that holds it.
    error AmountTooLarge(uint256 amount, uint256 max);
    /// @notice Sending ETH failed.
    error TransferFailed(address to, uint256 amount);
    /// @notice Reports of `epoch` cannot be revealed before its weight commits are closed (`opensAt`, a lower
    /// bound while an earlier epoch is unsettled).
    error ReportsSealed(uint256 runId, uint256 epoch, uint256 opensAt);
    /// @notice `validator` has no report commitments recorded for `epoch` (none published, or older than the ring).
    error NoReportCommitments(uint256 runId, uint256 epoch, address validator);
    /// @notice The revealed report CIDs do not hash to the commitments `validator` published for `epoch`.
    error ReportsMismatch(uint256 runId, uint256 epoch, address validator);
    /// @notice Report CIDs are revealed once per epoch.
    error ReportsAlreadyRevealed(uint256 runId, uint256 epoch, address validator);
    /// @notice A report reveal names every window of the epoch (`expected`), in window order.
    error WrongReportCount(uint256 runId, uint256 epoch, uint256 given, uint256 expected);
    /// @notice `disputer` did not vote on `epoch` (no revealed ballot credited at its settlement), or the dispute
    /// period of `epoch` is over (`disputeBallot`).
    error NotDisputer(uint256 runId, uint256 epoch, address disputer);
    /// @notice `accused` has no ballot of `epoch` whose credit is still held (it did not vote, or the period is over).
    error NothingToDispute(uint256 runId, uint256 epoch, address accused);
    /// @notice A validator disputes a given ballot once, and never its own.
    error AlreadyDisputed(uint256 runId, uint256 epoch, address accused, address disputer);
    /// @notice The credit of `accused` for `epoch` was already forfeited.
    error CreditForfeited(uint256 runId, uint256 epoch, address accused);
    /// @notice The credit of `account` for `epoch` is held until the epoch's dispute period is over.
    error CreditHeld(uint256 runId, address account, uint256 epoch);
    /// @notice A guarded function was re-entered.
    error ReentrantCall();

    // ------------------------------------------------------------------ events

    /// @notice A run was created; window 0 starts at `startBlock`.
    event RunCreated(uint256 indexed runId, address indexed sponsor, bytes32 configDigest, uint256 startBlock);
    /// @notice The reward pool was funded.
    event RunFunded(uint256 indexed runId, address indexed funder, uint256 amount, uint256 pool);
    /// @notice The sponsor ended the run: epochs from `endEpoch` on take no commits.
    event RunClosed(uint256 indexed runId, uint256 endEpoch);
    /// @notice The sponsor took back what was left in the pool of an ended run.
    event PoolReclaimed(uint256 indexed runId, address indexed sponsor, uint256 amount);
    /// @notice A trainer registered with its index and stake.
    event TrainerRegistered(uint256 indexed runId, address indexed trainer, uint256 index, uint256 stake);
    /// @notice A validator registered with its stake; it votes from `fromEpoch` on.
    event ValidatorRegistered(uint256 indexed runId, address indexed validator, uint256 stake, uint256 fromEpoch);
    /// @notice A trainer added stake.
    event StakeAdded(uint256 indexed runId, address indexed trainer, uint256 amount, uint256 stake);
    /// @notice A trainer committed to a contribution for a window.
    event Committed(uint256 indexed runId, uint256 indexed window, address indexed trainer, bytes32 commitment);
    /// @notice A trainer revealed its contribution's CID.
    event Revealed(uint256 indexed runId, uint256 indexed window, address indexed trainer, string cid);
    /// @notice `second` revealed the same content (multihash) as `first` in a window, and was slashed.
    event DuplicateRevealed(uint256 indexed runId, uint256 indexed window, address first, address second, string cid);
    /// @notice A commitment was missed: not revealed in time, or its payload unavailable to a stake quorum
    /// (`reporter` is the trainer itself when its ring slot was reused).
    event RevealMissed(uint256 indexed runId, uint256 indexed window, address indexed trainer, address reporter, uint256 misses);
    /// @notice A stake was slashed into the reward pool.
    event TrainerSlashed(uint256 indexed runId, address indexed trainer, uint256 amount, SlashReason reason);
    /// @notice A validator could not fetch a revealed payload; `stake` of `totalStake` reported it so far.
    event UnavailabilityReported(
        uint256 indexed runId, uint256 indexed window, address indexed trainer, address validator, uint256 stake, uint256 totalStake
    );
    /// @notice Validators holding more than half the epoch's stake could not fetch the payload: a miss.
    event PayloadUnavailable(uint256 indexed runId, uint256 indexed window, address indexed trainer, uint256 stake);
    /// @notice A validator published its aggregated model for a window, and sealed its evaluation report:
    /// `reportCommitment` = keccak256(abi.encode(reportCid, validator)), revealed by `revealReports`.
    event WindowPublished(
        uint256 indexed runId,
        uint256 indexed window,
        address indexed validator,
        string modelCid,
        bytes32 reportCommitment
    );
    /// @notice A validator revealed the evaluation report it sealed for a window.
    event ReportRevealed(uint256 indexed runId, uint256 indexed window, address indexed validator, string reportCid);
    /// @notice `modelCid` (as published by `validator`) now leads the window's on-time publications with `stake`.
    event CanonicalModelChanged(
        uint256 indexed runId, uint256 indexed window, address indexed validator, string modelCid, uint256 stake
    );
    /// @notice A validator committed to its weight vector for an epoch.
    event WeightsCommitted(uint256 indexed runId, uint256 indexed epoch, address indexed validator, bytes32 commitment);
    /// @notice A validator revealed its weight vector for an epoch (`slot`: its position in finalizeEpoch's input).
    event WeightsRevealed(
        uint256 indexed runId, uint256 indexed epoch, address indexed validator, uint256 slot, bytes weights
    );
    /// @notice An epoch was settled.
    event EpochFinalized(
        uint256 indexed runId, uint256 indexed epoch, uint256 trainerReward, uint256 validatorReward, uint256 submissions
    );
    /// @notice An epoch that nobody finalised in time was settled without rewards (they stay in the pool).
    event EpochSkipped(uint256 indexed runId, uint256 indexed epoch);
    /// @notice A validator was credited for an epoch; `agreement` is its clipped weight mass (SCALE = full).
    event ValidatorCredited(
        uint256 indexed runId, uint256 indexed epoch, address indexed validator, uint256 amount, uint256 agreement
    );
    /// @notice `disputer` (a voter of `epoch`) said `accused`'s ballot for the epoch does not follow from its own
    /// revealed reports; disputers holding `stake` of the epoch's `epochStake` say so now.
    event BallotDisputed(
        uint256 indexed runId,
        uint256 indexed epoch,
        address indexed accused,
        address disputer,
        uint256 stake,
        uint256 epochStake
    );
    /// @notice Disputers holding more than half the epoch's stake disputed `validator`'s ballot: its held credit for
    /// the epoch (`amount`) went back to the pool.
    event ValidatorCreditForfeited(uint256 indexed runId, uint256 indexed epoch, address indexed validator, uint256 amount);
    /// @notice A validator that served none of its last `unservedEpochs` epochs was removed and slashed.
    event ValidatorEjected(uint256 indexed runId, address indexed validator, uint256 slashed, uint256 unservedEpochs);
    /// @notice An account withdrew its rewards.
    event Claimed(uint256 indexed runId, address indexed account, uint256 amount);
    /// @notice An account asked to leave; its stake is withdrawable from `availableAt`.
    event UnstakeRequested(uint256 indexed runId, address indexed account, uint256 availableAt);
    /// @notice An account withdrew its stake and left the run.
    event StakeWithdrawn(uint256 indexed runId, address indexed account, uint256 amount);

    // ------------------------------------------------------------------ modifiers

    /// @dev A plain two-state lock (transient storage would need Cancun; we target Shanghai for Ganache).
    modifier nonReentrant() {
        if (_lock != 1) revert ReentrantCall();
        _lock = 2;
        _;
        _lock = 1;
    }

    // ------------------------------------------------------------------ runs

    // ------------------------------------------------------------------ internals

    function _existingRun(uint256 runId) internal view returns (Run storage run) {
        run = _runs[runId];
        if (run.windowBlocks == 0) revert UnknownRun(runId);
    }

    function _openRun(uint256 runId) internal view returns (Run storage run) {
        run = _existingRun(runId);
        if (run.endEpoch != OPEN) revert RunEnded(runId, run.endEpoch);
    }

    function _notMember(uint256 runId) internal view {
        if (_trainers[runId][msg.sender].registered || _validators[runId][msg.sender].registered) {
            revert AlreadyRegistered(runId, msg.sender);
        }
    }

    function _activeTrainer(uint256 runId) internal view returns (Trainer storage t) {
        t = _trainers[runId][msg.sender];
        if (!t.registered) revert NotTrainer(runId, msg.sender);
        if (t.unbondingAt != 0) revert Unbonding(runId, msg.sender);
    }

    /// @dev The first epoch that has not begun: what a registration or a departure takes effect from.
    function _nextEpochStart(Run storage run) internal view returns (uint256) {
        if (block.number < run.startBlock) return 0;
        return (block.number - run.startBlock) / (uint256(run.windowBlocks) * run.windowsPerEpoch) + 1;
    }

    function _votingStake(Validator storage v, uint256 epoch) internal view returns (uint256) {
        return v.registered && v.fromEpoch <= epoch && epoch < v.untilEpoch ? v.stake : 0;
    }

    /// @dev Stop voting from the next epoch to begin; start unbonding. Returns when the bond is withdrawable.
    function _leave(Run storage run, uint256 runId, Validator storage v) internal returns (uint256 availableAt) {
        availableAt = block.number + run.unbondingBlocks;
        uint256 until = _nextEpochStart(run);
        v.unbondingAt = uint40(availableAt);
        v.untilEpoch = _u32(until);
        run.validatorCount -= 1;
        _moveStake(runId, until, v.stake, false);
    }

    function _checkWithdrawable(Run storage run, uint256 runId, uint256 unbondingAt, uint256 untilEpoch) internal view {
        if (unbondingAt == 0) revert NotUnbonding(runId, msg.sender);
        if (block.number < unbondingAt) revert UnbondingNotOver(runId, msg.sender, unbondingAt);
        bool endedAndSettled = run.endEpoch != OPEN && run.nextEpoch >= run.endEpoch;
        if (run.nextEpoch < untilEpoch && !endedAndSettled) {
            revert EpochsNotSettled(runId, msg.sender, untilEpoch, run.nextEpoch);
        }
    }

    /// @dev Add (or remove) `amount` to the electorate's stake from `fromEpoch` on. Changes only ever take effect
    /// at the next epoch to begin, so checkpoints are appended in epoch order.
    function _moveStake(uint256 runId, uint256 fromEpoch, uint256 amount, bool add) internal {
        uint256[] storage points = _stakeCheckpoints[runId];
        uint256 length = points.length;
        uint256 last = length == 0 ? 0 : points[length - 1];
        uint256 total = add ? (last & TOTAL_MASK) + amount : (last & TOTAL_MASK) - amount;
        uint256 entry = fromEpoch << 224 | total;
        if (length > 0 && last >> 224 == fromEpoch) points[length - 1] = entry;
        else points.push(entry);
    }

    /// @dev The electorate's stake for `epoch`: the last checkpoint at or before it (binary search).
    function _totalStake(uint256 runId, uint256 epoch) internal view returns (uint256) {
        uint256[] storage points = _stakeCheckpoints[runId];
        uint256 high = points.length;
        if (high == 0) return 0;
        uint256 last = points[high - 1];
        if (last >> 224 <= epoch) return last & TOTAL_MASK;
        uint256 low;
        high -= 1; // points[high] is after `epoch`
        while (low < high) {
            uint256 mid = (low + high) / 2;
            if (points[mid] >> 224 <= epoch) low = mid + 1;
            else high = mid;
        }
        return low == 0 ? 0 : points[low - 1] & TOTAL_MASK;
    }

    /// @dev Publications arrive in window order, so per validator a count for its latest epoch and a bit mask of
    /// the 32 epochs before it say which epochs it published in full.
    function _countPublication(Validator storage v, uint256 epoch, uint256 windowsPerEpoch) internal {
        uint256 pubEpoch = v.pubEpoch;
        uint256 count = v.pubCount;
        uint256 mask = v.fullMask;
        if (epoch != pubEpoch || count == 0) {
            uint256 shift = epoch - pubEpoch;
            mask = shift >= 32 ? 0 : (mask << shift) & type(uint32).max;
            count = 0;
            v.pubEpoch = _u32(epoch);
        }
        count += 1;
        if (count == windowsPerEpoch) mask |= 1;
        v.pubCount = uint16(count > type(uint16).max ? type(uint16).max : count);
        v.fullMask = uint32(mask);
    }

    function _reportsComplete(Validator storage v, uint256 epoch) internal view returns (bool) {
        uint256 pubEpoch = v.pubEpoch;
        if (epoch > pubEpoch || pubEpoch - epoch >= 32) return false;
        return (v.fullMask >> (pubEpoch - epoch)) & 1 == 1;
    }

    /// @dev The seal of a validator's reports for `epoch` after one more commitment (window order).
    function _sealNext(uint256 seal, uint256 epoch, bytes32 reportCommitment) internal pure returns (uint256) {
        bytes32 previous = (seal >> 8) & type(uint32).max == epoch + 1 ? bytes32(seal >> 64) : bytes32(0);
        return uint256(keccak256(abi.encode(previous, reportCommitment))) >> 64 << 64 | (epoch + 1) << 8;
    }

    /// @dev Whether `validator` revealed its report CIDs of `epoch`.
    function _reportsRevealed(uint256 runId, address validator, uint256 epoch) internal view returns (bool) {
        uint256 seal = _reportSeals[runId][validator][epoch % SEAL_EPOCHS];
        return seal & 1 == 1 && (seal >> 8) & type(uint32).max == epoch + 1;
    }

    /// @dev What `msg.sender` must have committed to reveal `cid` with `salt` for `window` of `runId`.
    function _commitment(string calldata cid, bytes32 salt, uint256 runId, uint256 window)
        internal
        view
        returns (uint256)
    {
        return uint256(keccak256(abi.encodePacked(cid, salt, runId, window, msg.sender)));
    }

    function _revealEnd(Run storage run, uint256 window) internal view returns (uint256) {
        return run.startBlock + (window + 1) * run.windowBlocks + run.revealBlocks;
    }

    function _epochEnd(Run storage run, uint256 epoch) internal view returns (uint256) {
        return _revealEnd(run, (epoch + 1) * run.windowsPerEpoch - 1);
    }

    function _countMiss(
        Run storage run,
        uint256 runId,
        uint256 window,
        address trainer,
        Trainer storage t,
        address reporter
    ) internal {
        uint256 misses = t.misses + 1;
        emit RevealMissed(runId, window, trainer, reporter, misses);
        if (misses >= run.missThreshold) {
            t.misses = 0;
            _slash(run, runId, trainer, t, SlashReason.MissedReveals);
        } else {
            t.misses = uint16(misses);
        }
    }

    function _slash(Run storage run, uint256 runId, address trainer, Trainer storage t, SlashReason reason) internal {
        uint256 amount = uint256(t.stake) * run.slashBps / BPS;
        t.stake -= uint88(amount);
        if (t.slashCount < type(uint8).max) t.slashCount += 1;
        run.pool += amount;
        emit TrainerSlashed(runId, trainer, amount, reason);
    }

    /// @dev Epoch settlement is in order, never for an epoch at or after the run's end.
    function _checkSettling(Run storage run, uint256 runId, uint256 epoch) internal view {
        if (epoch != run.nextEpoch) revert EpochOutOfOrder(runId, epoch, run.nextEpoch);
        if (epoch >= run.endEpoch) revert RunEnded(runId, run.endEpoch);
    }

    function _ballotsOf(uint256 runId, uint256 epoch) internal view returns (Ballots memory b) {
        b = _ballots[runId];
        if (b.epochPlusOne != epoch + 1) {
            b.epochPlusOne = _u32(epoch + 1);
            (b.commits, b.reveals, b.committedStake) = (0, 0, 0);
        }
    }

    /// @dev An epoch's settlement opens when its last reveal period is over and the previous epoch is settled.
    function _settleOpensAt(Run storage run, Ballots memory b, uint256 epoch) internal view returns (uint256) {
        uint256 end = _epochEnd(run, epoch);
        return b.settleFrom > end ? b.settleFrom : end;
    }

    function _closeEpoch(Run storage run, uint256 runId, uint256 epoch) internal {
        run.nextEpoch = _u32(epoch + 1);
        _epochs[runId][epoch].finalized = true;
        Ballots storage b = _ballots[runId];
        b.settleFrom = uint64(block.number);
    }

    /// @dev Rewards of [nextClaimEpoch, upTo) where upTo is at most MAX_CLAIM_EPOCHS further; `more` if epochs
    /// beyond upTo are settled too.
    function _claimWindow(uint256 runId, Trainer storage t) internal view returns (uint256 due, uint256 upTo, bool more) {
        uint256 from = t.nextClaimEpoch;
        uint256 settled = _runs[runId].nextEpoch;
        if (from >= settled) return (0, from, false); // it registered during an epoch not settled yet
        upTo = settled - from > MAX_CLAIM_EPOCHS ? from + MAX_CLAIM_EPOCHS : settled;
        more = upTo < settled;
        due = _trainerDue(runId, t.index, from, upTo);
    }

    function _consensusWeight(uint256 runId, uint256 epoch, uint256 index) internal view returns (uint256) {
        return (_consensusWords[runId][epoch][index / 16] >> (240 - 16 * (index % 16))) & 0xffff;
    }

    function _trainerDue(uint256 runId, uint256 index, uint256 from, uint256 upTo)
        internal
        view
        returns (uint256 amount)
    {
        for (uint256 epoch = from; epoch < upTo; ++epoch) {
            uint256 unit = _epochs[runId][epoch].rewardPerWeight;
            if (unit == 0) continue;
            amount += unit * _consensusWeight(runId, epoch, index);
        }
    }

    /// @dev Per trainer: each revealed weight normalised to its vector's sum (SCALE = the whole vector), the
    /// consensus (the largest value that validators holding more than half of `total` give at least), and each
    /// validator's weight clipped to the consensus added to its agreement (Σ min(w, c) = 1 − ½·L1 for
    /// normalised vectors).
    function _tally(bytes[] calldata weights, uint256[] memory stakes, uint256 total)
        internal
        pure
        returns (Tally memory tally)
    {
        uint256 n = weights.length;
        // Per validator a record of eight words (a power of two: addressed by a shift), five used: calldata offset of
        // its vector, its entries, their sum, its stake, its agreement.
        uint256[] memory meta = new uint256[](8 * n);
        uint256 entries;
        for (uint256 v; v < n; ++v) {
            bytes calldata w = weights[v][PAYOUT_BYTES:];
            uint256 offset;
            assembly ("memory-safe") {
                offset := w.offset
            }
            (meta[8 * v], meta[8 * v + 1], meta[8 * v + 2], meta[8 * v + 3]) = (offset, w.length / 2, _sum(w), stakes[v]);
            if (w.length / 2 > entries) entries = w.length / 2;
        }
        tally.consensus = new uint256[](entries);
        tally.maxConsensus = _consensusLoop(meta, n, entries, total, tally.consensus);
        tally.agreement = new uint256[](n);
        for (uint256 v; v < n; ++v) tally.agreement[v] = meta[8 * v + 4];
    }

    /// @dev Assembly because this runs (trainers × validators) times. Per trainer the non-zero normalised weights
    /// are insertion-sorted descending as keys (value << 8 | validator) in scratch memory, validators taken in
    /// descending order so that equal values need no move; zero weights are never sorted (they belong at the end).
    function _consensusLoop(uint256[] memory meta, uint256 n, uint256 entries, uint256 total, uint256[] memory consensus)
        internal
        pure
        returns (uint256 maxConsensus)
    {
        assembly ("memory-safe") {
            let base := add(meta, 32)
            // a sentinel above every key ends each insertion without a bounds check
            mstore(mload(0x40), not(0))
            let keyBase := add(mload(0x40), 32)
            for { let i := 0 } lt(i, entries) { i := add(i, 1) } {
                let count := 0
                for { let v := n } v {} {
                    v := sub(v, 1)
                    let rec := add(base, shl(8, v))
                    if lt(i, mload(add(rec, 32))) {
                        let w := shr(240, calldataload(add(mload(rec), shl(1, i))))
                        if w {
                            let key := or(shl(8, div(mul(w, SCALE), mload(add(rec, 64)))), v)
                            let p := add(keyBase, shl(5, count))
                            let q := sub(p, 32)
                            for { let prev := mload(q) } lt(prev, key) { prev := mload(q) } {
                                mstore(p, prev)
                                p := q
                                q := sub(q, 32)
                            }
                            mstore(p, key)
                            count := add(count, 1)
                        }
                    }
                }
                // the largest value that more than half of the epoch's stake gives at least
                let c := 0
                let cumulative := 0
                for { let k := 0 } lt(k, count) { k := add(k, 1) } {
                    let key := mload(add(keyBase, shl(5, k)))
                    cumulative := add(cumulative, mload(add(add(base, shl(8, and(key, 0xff))), 96)))
                    if gt(shl(1, cumulative), total) {
                        c := shr(8, key)
                        break
                    }
                }
                if c {
                    mstore(add(consensus, shl(5, add(i, 1))), c)
                    if gt(c, maxConsensus) { maxConsensus := c }
                    for { let k := 0 } lt(k, count) { k := add(k, 1) } {
                        let key := mload(add(keyBase, shl(5, k)))
                        let value := shr(8, key)
                        if gt(value, c) { value := c }
                        let cell := add(add(base, shl(8, and(key, 0xff))), 128)
                        mstore(cell, add(mload(cell), value))
                    }
                }
            }
        }
    }

    /// @dev Stores the quantised consensus; trainers earn a whole number of wei per weight unit, so what they
    /// can ever claim is exactly weightSum × rewardPerWeight (the remainder, < weightSum wei, stays in the pool).
    function _creditTrainers(
        uint256 runId,
        uint256 epoch,
        uint256[] memory consensus,
        uint256 maxConsensus,
        uint256 trainerReward
    ) internal returns (uint256 paid) {
        mapping(uint256 => uint256) storage words = _consensusWords[runId][epoch];
        uint256 entries = consensus.length;
        uint256 weightSum;
        for (uint256 base; base < entries; base += 16) {
            uint256 word;
            uint256 sum;
            assembly ("memory-safe") {
                let end := add(base, 16)
                if gt(end, entries) { end := entries }
                for { let i := base } lt(i, end) { i := add(i, 1) } {
                    let q := div(mul(mload(add(add(consensus, 32), shl(5, i))), 0xffff), maxConsensus)
                    sum := add(sum, q)
                    word := or(word, shl(sub(240, shl(4, sub(i, base))), q))
                }
            }
            weightSum += sum;
            if (word != 0) words[base / 16] = word;
        }
        if (weightSum == 0) return 0;
        uint256 unit = trainerReward / weightSum;
        Epoch storage e = _epochs[runId][epoch];
        e.rewardPerWeight = uint128(unit);
        e.weightSum = uint64(weightSum);
        paid = unit * weightSum;
    }

    /// @dev Clears the stored consensus of vacant slots (their trainer withdrew) after crediting: the reward per
    /// weight unit was set over every slot, so what validators gave a vacant one stays in the pool rather than going
    /// to nobody or to the other trainers. Returns the weight units cleared.
    function _forfeitVacant(uint256 runId, uint256 epoch, uint256 entries) internal returns (uint256 dropped) {
        mapping(uint256 => uint256) storage words = _consensusWords[runId][epoch];
        uint256 occupied;
        for (uint256 i; i < entries; ++i) {
            if (i % 256 == 0) occupied = _occupiedSlots[runId][i / 256];
            if ((occupied >> (i % 256)) & 1 != 0) continue;
            uint256 shift = 240 - 16 * (i % 16);
            uint256 word = words[i / 16];
            uint256 q = (word >> shift) & 0xffff;
            if (q == 0) continue;
            words[i / 16] = word & ~(uint256(0xffff) << shift);
            dropped += q;
        }
        if (dropped != 0) _epochs[runId][epoch].weightSum -= uint64(dropped);
    }

    /// @dev The payout the epoch's voters agree on, by the rule of the trainers' consensus: the largest value that
    /// validators holding more than half of `total` give at least (a validator that revealed nothing gives 0).
    function _payoutConsensus(bytes[] calldata weights, uint256[] memory stakes, uint256 total)
        internal
        pure
        returns (uint256 payout)
    {
        uint256 n = weights.length;
        for (uint256 v; v < n; ++v) {
            uint256 candidate = uint16(bytes2(weights[v][:PAYOUT_BYTES]));
            if (candidate <= payout) continue;
            uint256 giving;
            for (uint256 u; u < n; ++u) {
                if (uint16(bytes2(weights[u][:PAYOUT_BYTES])) >= candidate) giving += stakes[u];
            }
            if (2 * giving > total) payout = candidate;
        }
    }

    /// @dev Validators share `validatorReward` by stake × agreement; the share of one that has not revealed its
    /// epoch's reports (`revealReports`) stays in the pool (it is credited 0; nobody else gets more).
    function _creditValidators(
        uint256 runId,
        uint256 epoch,
        address[] memory who,
        uint256[] memory stakes,
        uint256[] memory agreement,
        uint256 validatorReward
    ) internal returns (uint256 paid) {
        (uint256[] memory shares, uint256 total) = _shares(stakes, agreement);
        if (total == 0 || validatorReward == 0) return 0;
        for (uint256 v; v < who.length; ++v) {
            uint256 amount = _reportsRevealed(runId, who[v], epoch) ? validatorReward * shares[v] / total : 0;
            paid += _credit(runId, epoch, who[v], amount, agreement[v]);
        }
    }

    /// @dev stake × agreement per validator (< 2^137 each), scaled down together while their sum exceeds 2^128 so
    /// that reward × share never overflows.
    function _shares(uint256[] memory stakes, uint256[] memory agreement)
        internal
        pure
        returns (uint256[] memory shares, uint256 total)
    {
        uint256 n = stakes.length;
        shares = new uint256[](n);
        for (uint256 v; v < n; ++v) {
            shares[v] = stakes[v] * agreement[v];
            total += shares[v];
        }
        uint256 shift;
        while (total >> shift > type(uint128).max) shift += 8;
        if (shift == 0) return (shares, total);
        for (uint256 v; v < n; ++v) shares[v] >>= shift;
        total >>= shift;
    }

    /// @dev Holds `amount` as `who`'s credit for `epoch` until the epoch's dispute period is over. What it held
    /// before is of an earlier epoch, whose dispute period closed when this later epoch was settled: it joins the
    /// claimable credit (a forfeited one holds 0).
    function _credit(uint256 runId, uint256 epoch, address who, uint256 amount, uint256 agreement)
        internal
        returns (uint256)
    {
        Validator storage val = _validators[runId][who];
        uint256 released = uint96(_heldCredit[runId][who]);
        uint256 credit = val.credit + released;
        // Beyond uint96 the excess stays in the pool rather than blocking settlement.
        uint256 room = type(uint96).max - credit;
        if (amount > room) amount = room;
        if (released != 0) val.credit = uint96(credit);
        _heldCredit[runId][who] = (epoch + 1) << 96 | amount;
        emit ValidatorCredited(runId, epoch, who, amount, agreement);
        return amount;
    }

    /// @dev Whether the dispute period of settled `epoch` is over: the next epoch is settled too, or `epoch` is the
    /// last of an ended run and one epoch's worth of blocks passed since its settlement (no next one will come).
    function _disputeOver(Run storage run, uint256 runId, uint256 epoch) internal view returns (bool) {
        if (run.nextEpoch > epoch + 1) return true;
        if (epoch + 1 < run.endEpoch) return false;
        return block.number >= uint256(_ballots[runId].settleFrom) + uint256(run.windowBlocks) * run.windowsPerEpoch;
    }

    /// @dev `who`'s held credit, the epoch it is for, and whether that epoch's ballots can still be disputed (the
    /// credit is claimable once they cannot).
    function _heldOf(Run storage run, uint256 runId, address who)
        internal
        view
        returns (uint256 amount, uint256 epoch, bool disputable)
    {
        uint256 held = _heldCredit[runId][who];
        uint256 tag = (held >> 96) & type(uint32).max;
        if (tag == 0) return (0, 0, false);
        return (uint96(held), tag - 1, !_disputeOver(run, runId, tag - 1));
    }

    /// @dev Sum of a packed uint16 vector: whole words are folded lane-wise (16 entries in ~20 operations).
    function _sum(bytes calldata w) internal pure returns (uint256 total) {
        assembly ("memory-safe") {
            let start := w.offset
            let end := add(start, w.length)
            let fullEnd := add(start, and(w.length, not(31)))
            let m16 := 0x0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff
            let m32 := 0x00000000ffffffff00000000ffffffff00000000ffffffff00000000ffffffff
            let m64 := 0x0000000000000000ffffffffffffffff0000000000000000ffffffffffffffff
            for { let p := start } lt(p, fullEnd) { p := add(p, 32) } {
                let x := calldataload(p)
                x := add(and(x, m16), and(shr(16, x), m16))
                x := add(and(x, m32), and(shr(32, x), m32))
                x := add(and(x, m64), and(shr(64, x), m64))
                total := add(total, add(and(x, 0xffffffffffffffffffffffffffffffff), shr(128, x)))
            }
            for { let p := fullEnd } lt(p, end) { p := add(p, 2) } { total := add(total, shr(240, calldataload(p))) }
        }
    }

    /// @dev SafeCast: epochs, windows and counts stored in 32 bits.
    function _u32(uint256 value) internal pure returns (uint32) {
        if (value > type(uint32).max) revert AmountTooLarge(value, type(uint32).max);
        return uint32(value);
    }

    function _send(address to, uint256 amount) internal {
        (bool ok,) = payable(to).call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }

}

/// @title TrainingRunExtension
/// @notice Run administration, the rarely-called membership and settlement paths, and every view of TrainingRun.
/// @dev Only ever executed by TrainingRun's fallback through DELEGATECALL, on TrainingRun's storage; called
/// directly it sees its own empty storage and changes nothing that matters.
contract TrainingRunExtension is TrainingRunBase {
    using CidKey for string;

    /// @notice Create a run; any ETH sent seeds its reward pool. Every parameter is checked against the bound
    /// that protects it (InvalidRunParams names the field and its range).
    /// @return runId the new run's id
    function createRun(RunParams calldata p) external payable returns (uint256 runId) {
        _checkParams(p);
        runId = runCount++;
        Run storage run = _runs[runId];
        uint256 start = block.number + p.startDelayBlocks;
        run.startBlock = uint64(start);
        run.windowBlocks = p.windowBlocks;
        run.revealBlocks = p.revealBlocks;
        run.windowsPerEpoch = p.windowsPerEpoch;
        run.endEpoch = uint32(OPEN);
        run.missThreshold = p.missThreshold;
        run.slashBps = p.slashBps;
        run.minTrainerStake = uint96(p.minTrainerStake);
        run.minValidatorStake = uint96(p.minValidatorStake);
        run.maxTrainers = p.maxTrainers;
        run.maxValidators = p.maxValidators;
        run.gracePeriodBlocks = p.gracePeriodBlocks;
        run.unbondingBlocks = p.unbondingBlocks;
        run.publishBlocks = p.publishBlocks;
        run.validatorShareBps = p.validatorShareBps;
        run.rewardPerEpoch = p.rewardPerEpoch;
        run.pool = msg.value;
        run.sponsor = msg.sender;
        run.configDigest = p.configDigest;
        emit RunCreated(runId, msg.sender, p.configDigest, start);
        if (msg.value > 0) emit RunFunded(runId, msg.sender, msg.value, msg.value);
    }

    function _checkParams(RunParams calldata p) private pure {
        _bound("windowBlocks", p.windowBlocks, 1, OPEN);
        _bound("revealBlocks", p.revealBlocks, 1, uint256(p.windowBlocks) * (RING - 2));
        _bound("windowsPerEpoch", p.windowsPerEpoch, 1, MAX_WINDOWS_PER_EPOCH); // one revealReports per epoch
        _bound("gracePeriodBlocks", p.gracePeriodBlocks, MIN_GRACE_BLOCKS, OPEN);
        // A leaver's stake stays slashable until its last commitment's reveal period and an epoch's settlement
        // (when misses and unavailability are reported) are over.
        uint256 minUnbonding = uint256(p.windowsPerEpoch) * p.windowBlocks + p.revealBlocks + 2 * uint256(p.gracePeriodBlocks);
        _bound("unbondingBlocks", p.unbondingBlocks, minUnbonding, OPEN);
        _bound("validatorShareBps", p.validatorShareBps, 0, BPS);
        _bound("slashBps", p.slashBps, 0, BPS);
        _bound("missThreshold", p.missThreshold, 1, type(uint16).max);
        _bound("minTrainerStake", p.minTrainerStake, 1, type(uint88).max);
        _bound("minValidatorStake", p.minValidatorStake, 1, type(uint96).max);
        _bound("rewardPerEpoch", p.rewardPerEpoch, 1, type(uint128).max);
        _bound("maxValidators", p.maxValidators, 1, MAX_VALIDATORS);
        uint256 maxTrainers = MAX_WEIGHT_ENTRIES / p.maxValidators;
        _bound("maxTrainers", p.maxTrainers, 1, maxTrainers < MAX_TRAINERS ? maxTrainers : MAX_TRAINERS);
        _bound("publishBlocks", p.publishBlocks, 1, OPEN);
    }

    function _bound(string memory field, uint256 value, uint256 min, uint256 max) private pure {
        if (value < min || value > max) revert InvalidRunParams(field, value, min, max);
    }

    /// @notice End the run (sponsor): the current epoch is its last; later windows take no commits. Once every
    /// epoch before the end is settled, `reclaim` returns the pool to the sponsor.
    function endRun(uint256 runId) external {
        Run storage run = _openRun(runId);
        if (msg.sender != run.sponsor) revert NotSponsor(runId, msg.sender);
        uint256 endEpoch = _nextEpochStart(run);
        run.endEpoch = _u32(endEpoch);
        emit RunClosed(runId, endEpoch);
    }

    /// @notice Pay what is left in an ended run's pool (slashes included) to its sponsor, once every epoch before
    /// the end is settled. Stakes and credited rewards are not part of the pool: their owners keep them.
    function reclaim(uint256 runId) external nonReentrant {
        Run storage run = _existingRun(runId);
        if (msg.sender != run.sponsor) revert NotSponsor(runId, msg.sender);
        if (run.endEpoch == OPEN || run.nextEpoch < run.endEpoch) {
            revert EpochsPending(runId, run.nextEpoch, run.endEpoch);
        }
        uint256 amount = run.pool;
        if (amount == 0) revert NothingToClaim(runId, msg.sender);
        run.pool = 0;
        emit PoolReclaimed(runId, msg.sender, amount);
        _send(msg.sender, amount);
    }

    /// @notice Remove an active validator that revealed no weights for the last `missThreshold` settled epochs it
    /// could vote on (anyone). It loses `slashBps` of its bond to the pool, stops voting from the next epoch to
    /// begin, and unbonds like a validator that asked to leave; its seat is free at once.
    function ejectValidator(uint256 runId, address validator) external {
        Run storage run = _existingRun(runId);
        Validator storage v = _validators[runId][validator];
        if (!v.registered) revert NotValidator(runId, validator);
        if (v.unbondingAt != 0) revert Unbonding(runId, validator);
        uint256 since = v.servedPlusOne > v.fromEpoch ? v.servedPlusOne : v.fromEpoch;
        uint256 unserved = run.nextEpoch > since ? run.nextEpoch - since : 0;
        if (unserved < run.missThreshold) revert NotEjectable(runId, validator, unserved, run.missThreshold);
        _leave(run, runId, v);
        uint256 amount = uint256(v.bond) * run.slashBps / BPS;
        v.bond -= uint96(amount);
        run.pool += amount;
        emit UnstakeRequested(runId, validator, v.unbondingAt);
        emit ValidatorEjected(runId, validator, amount, unserved);
    }

    /// @notice Report that the caller (a validator that votes on the window's epoch) could not fetch the payload
    /// `trainer` revealed for `window`. Once reporters holding more than half of the epoch's stake agree, the
    /// commitment is a miss, counted and slashed like a missing reveal. Reports must land while the trainer's ring
    /// slot still holds the window (at least one window after its reveal period).
    function reportUnavailable(uint256 runId, uint256 window, address trainer) external {
        Run storage run = _existingRun(runId);
        uint256 epoch = window / run.windowsPerEpoch;
        uint256 stake = _votingStake(_validators[runId][msg.sender], epoch);
        if (stake == 0) revert NotEligible(runId, epoch, msg.sender);
        Trainer storage t = _trainers[runId][trainer];
        if (!t.registered) revert NotTrainer(runId, trainer);
        uint256 endsAt = _revealEnd(run, window);
        if (block.number < endsAt) revert RevealPeriodNotOver(runId, window, endsAt);
        uint256[RING] storage ring = _commitRing[runId][trainer];
        uint256 slot = ring[window % RING];
        if ((slot >> 8) & WINDOW_MASK != window + 1) revert NoCommitment(runId, window, trainer);
        if (slot & STATUS_MASK != uint256(CommitStatus.Revealed)) revert NotRevealed(runId, window, trainer);
        bytes32 reportKey = keccak256(abi.encode(runId, window, trainer, msg.sender));
        if (_unavailableReported[reportKey]) revert AlreadyReported(runId, window, trainer, msg.sender);
        _unavailableReported[reportKey] = true;
        bytes32 key = keccak256(abi.encode(runId, window, trainer));
        uint256 reported = _unavailableStake[key] + stake;
        uint256 total = _totalStake(runId, epoch);
        emit UnavailabilityReported(runId, window, trainer, msg.sender, reported, total);
        if (2 * reported > total) {
            ring[window % RING] = (slot & ~STATUS_MASK) | uint256(CommitStatus.Missed);
            emit PayloadUnavailable(runId, window, trainer, reported);
            _countMiss(run, runId, window, trainer, t, msg.sender);
        }
        _unavailableStake[key] = reported;
    }

    /// @notice Reveal the caller's evaluation report CIDs of every window of `epoch`, in window order; each must
    /// hash to the commitment it published (`publishWindow`). Opens when the epoch's weight commits are closed
    /// (the commit phase is over, or every vote is committed) and stays open; the epoch's validator share pays
    /// only the voters that revealed before its finalisation.
    function revealReports(uint256 runId, uint256 epoch, string[] calldata reportCids) external {
        Run storage run = _existingRun(runId);
        if (epoch >= run.nextEpoch) {
            Ballots memory b = _ballotsOf(runId, epoch);
            uint256 opensAt = _settleOpensAt(run, b, epoch);
            // Once every vote is in there is nothing left to copy; else the commit phase must be over.
            bool allIn = epoch == run.nextEpoch && b.committedStake >= _totalStake(runId, epoch);
            if (!allIn) opensAt += run.gracePeriodBlocks;
            if (epoch > run.nextEpoch || epoch >= run.endEpoch || block.number < opensAt) {
                revert ReportsSealed(runId, epoch, opensAt);
            }
        }
        uint256 windows = run.windowsPerEpoch;
        if (reportCids.length != windows) revert WrongReportCount(runId, epoch, reportCids.length, windows);
        uint256[SEAL_EPOCHS] storage seals = _reportSeals[runId][msg.sender];
        uint256 stored = seals[epoch % SEAL_EPOCHS];
        if ((stored >> 8) & type(uint32).max != epoch + 1) revert NoReportCommitments(runId, epoch, msg.sender);
        if (stored & 1 == 1) revert ReportsAlreadyRevealed(runId, epoch, msg.sender);
        uint256 seal;
        for (uint256 i; i < windows; ++i) {
            reportCids[i].multihashKey(MAX_CID_BYTES); // reverts InvalidCid for anything that is not a CID
            seal = _sealNext(seal, epoch, keccak256(abi.encode(reportCids[i], msg.sender)));
        }
        if (seal != stored) revert ReportsMismatch(runId, epoch, msg.sender);
        seals[epoch % SEAL_EPOCHS] = stored | 1;
        for (uint256 i; i < windows; ++i) {
            emit ReportRevealed(runId, epoch * windows + i, msg.sender, reportCids[i]);
        }
    }

    /// @notice Settle `epoch` without rewards (anyone), a grace period after it became finalisable by anyone: the
    /// escape for an epoch whose revealed vectors nobody can supply. Its reward stays in the pool.
    function skipEpoch(uint256 runId, uint256 epoch) external {
        Run storage run = _existingRun(runId);
        _checkSettling(run, runId, epoch);
        uint256 skippableAt = _settleOpensAt(run, _ballotsOf(runId, epoch), epoch) + 3 * uint256(run.gracePeriodBlocks);
        if (block.number < skippableAt) revert EpochNotSkippable(runId, epoch, skippableAt);
        _closeEpoch(run, runId, epoch);
        _epochs[runId][epoch].skipped = true;
        emit EpochSkipped(runId, epoch);
    }

    /// @notice Dispute `accused`'s ballot for settled `epoch`: the caller (a validator whose own ballot for the epoch
    /// was credited at its settlement) says the ballot does not follow from `accused`'s own revealed evaluation
    /// reports of the epoch (`validator audit`: a report missing, unreadable or not recomputing, or a ballot that
    /// the reports do not give). Allowed while the epoch's dispute period is open: until the next epoch is settled
    /// (for the last epoch of an ended run, one epoch's worth of blocks after its settlement); a validator's credit
    /// of the epoch is held, not claimable, until then. Once the disputers hold more than half of the epoch's
    /// snapshotted stake (the accused's own included, so neither of two validators can remove the other and a
    /// minority cannot remove anyone), the accused's credit for the epoch is forfeited to the pool.
    function disputeBallot(uint256 runId, uint256 epoch, address accused) external {
        Run storage run = _existingRun(runId);
        (, uint256 voted, bool open) = _heldOf(run, runId, msg.sender);
        if (!open || voted != epoch) revert NotDisputer(runId, epoch, msg.sender);
        uint256 held = _heldCredit[runId][accused];
        if ((held >> 96) & type(uint32).max != epoch + 1) revert NothingToDispute(runId, epoch, accused);
        if (held & FORFEITED != 0) revert CreditForfeited(runId, epoch, accused);
        bytes32 vote = keccak256(abi.encode(runId, epoch, accused, msg.sender));
        if (accused == msg.sender || _disputed[vote]) revert AlreadyDisputed(runId, epoch, accused, msg.sender);
        _disputed[vote] = true;
        bytes32 key = keccak256(abi.encode(runId, epoch, accused));
        uint256 stake = _disputeStake[key] + _votingStake(_validators[runId][msg.sender], epoch);
        _disputeStake[key] = stake;
        uint256 total = _totalStake(runId, epoch);
        bool forfeit = 2 * stake > total;
        if (forfeit) {
            _heldCredit[runId][accused] = held >> 96 << 96 | FORFEITED;
            run.pool += uint96(held);
        }
        emit BallotDisputed(runId, epoch, accused, msg.sender, stake, total);
        if (forfeit) emit ValidatorCreditForfeited(runId, epoch, accused, uint96(held));
    }

    /// @notice The stored run.
    function getRun(uint256 runId) external view returns (Run memory) {
        _existingRun(runId);
        return _runs[runId];
    }

    /// @notice A trainer's state (registered = false when unknown).
    function trainerInfo(uint256 runId, address trainer) external view returns (Trainer memory) {
        return _trainers[runId][trainer];
    }

    /// @notice The trainer in slot `index` (the zero address while the slot is free).
    function trainerAt(uint256 runId, uint256 index) external view returns (address) {
        return _trainerAt[runId][index];
    }

    /// @notice A validator's state (registered = false when unknown).
    function validatorInfo(uint256 runId, address validator) external view returns (Validator memory) {
        return _validators[runId][validator];
    }

    /// @notice The stake `validator` votes with on `epoch` (0 if it does not vote on it).
    function votingStake(uint256 runId, address validator, uint256 epoch) external view returns (uint256) {
        return _votingStake(_validators[runId][validator], epoch);
    }

    /// @notice The stake of every validator that votes on `epoch`: fixed once the epoch has begun.
    function totalStake(uint256 runId, uint256 epoch) external view returns (uint256) {
        return _totalStake(runId, epoch);
    }

    /// @notice Whether `validator` published every window of `epoch` (tracked for its last 32 epochs).
    function reportsComplete(uint256 runId, address validator, uint256 epoch) external view returns (bool) {
        return _reportsComplete(_validators[runId][validator], epoch);
    }

    /// @notice Whether `validator` revealed its report CIDs of `epoch` (tracked for its last SEAL_EPOCHS epochs).
    function reportsRevealed(uint256 runId, address validator, uint256 epoch) external view returns (bool) {
        return _reportsRevealed(runId, validator, epoch);
    }

    /// @notice The window containing block `blockNumber`.
    function windowOfBlock(uint256 runId, uint256 blockNumber) external view returns (uint256) {
        Run storage run = _existingRun(runId);
        if (blockNumber < run.startBlock) revert RunNotStarted(runId, run.startBlock);
        return (blockNumber - run.startBlock) / run.windowBlocks;
    }

    /// @notice Block bounds of a window: commits in [start, end), reveals in [end, revealEnd).
    function windowBounds(uint256 runId, uint256 window)
        external
        view
        returns (uint256 start, uint256 end, uint256 revealEnd)
    {
        Run storage run = _existingRun(runId);
        start = run.startBlock + window * run.windowBlocks;
        end = start + run.windowBlocks;
        revealEnd = end + run.revealBlocks;
    }

    /// @notice A trainer's commitment for a window: top 192 bits of the hash and its status (None once the
    /// trainer's ring slot was reused RING windows later; events keep the history).
    function commitmentOf(uint256 runId, uint256 window, address trainer)
        external
        view
        returns (bytes32 hashPrefix, CommitStatus status)
    {
        uint256 slot = _commitRing[runId][trainer][window % RING];
        if ((slot >> 8) & WINDOW_MASK != window + 1) return (bytes32(0), CommitStatus.None);
        return (bytes32(slot >> 64 << 64), CommitStatus(slot & STATUS_MASK));
    }

    /// @notice Schedule and counters of `epoch`'s settlement (meaningful while it is the oldest unsettled epoch):
    /// commits in [opensAt, revealsFrom) (reveals may open earlier: once committedStake == totalStake), reveals
    /// until closesAt; finalizeEpoch from then on (or as soon as every commit is revealed and no more can come).
    function settlementOf(uint256 runId, uint256 epoch)
        external
        view
        returns (
            uint256 opensAt,
            uint256 revealsFrom,
            uint256 closesAt,
            uint256 commits,
            uint256 reveals,
            uint256 committedStake,
            uint256 epochStake
        )
    {
        Run storage run = _existingRun(runId);
        Ballots memory b = _ballotsOf(runId, epoch);
        opensAt = _settleOpensAt(run, b, epoch);
        revealsFrom = opensAt + run.gracePeriodBlocks;
        closesAt = revealsFrom + run.gracePeriodBlocks;
        (commits, reveals, committedStake) = (b.commits, b.reveals, b.committedStake);
        epochStake = _totalStake(runId, epoch);
    }

    /// @notice A validator's ballot: hash prefix (of its commitment, or of its revealed vector), epoch, status.
    function ballotOf(uint256 runId, address validator)
        external
        view
        returns (bytes32 hashPrefix, uint256 epoch, CommitStatus status)
    {
        uint256 ballot = _ballot[runId][validator];
        uint256 tag = (ballot >> 8) & type(uint32).max;
        if (tag == 0) return (bytes32(0), 0, CommitStatus.None);
        return (bytes32(ballot >> 64 << 64), tag - 1, CommitStatus(ballot & STATUS_MASK));
    }

    /// @notice The `slot`-th revealer of the epoch being settled and its voting stake.
    function revealerAt(uint256 runId, uint256 slot) external view returns (address validator, uint256 stake) {
        uint256 entry = _revealers[runId][slot];
        return (address(uint160(entry >> 96)), uint96(entry));
    }

    /// @notice The canonical model of `window`: among the window's publications made before `deadline` by
    /// validators that vote on its epoch, the model (compared by multihash) with the most of their stake; a tie
    /// stays with the model that reached that stake first. `validator` published it (its WindowPublished event
    /// for the window carries the CID); `stake` of `epochStake` published it; final once block >= deadline.
    function canonicalModel(uint256 runId, uint256 window)
        external
        view
        returns (address validator, uint256 stake, uint256 epochStake, uint256 deadline)
    {
        Run storage run = _existingRun(runId);
        uint256 entry = _canonical[runId][window];
        epochStake = _totalStake(runId, window / run.windowsPerEpoch);
        return (address(uint160(entry >> 96)), uint96(entry), epochStake, _revealEnd(run, window) + run.publishBlocks);
    }

    /// @notice Stake that reported `trainer`'s payload of `window` unavailable so far.
    function unavailableStake(uint256 runId, uint256 window, address trainer) external view returns (uint256) {
        return _unavailableStake[keccak256(abi.encode(runId, window, trainer))];
    }

    /// @notice The content key the duplicate rule and canonical models compare: keccak256 of the CID's multihash
    /// (reverts InvalidCid for anything that is not a CID).
    function cidKey(string calldata cid) external pure returns (bytes32) {
        return cid.multihashKey(MAX_CID_BYTES);
    }

    /// @notice Settlement record of an epoch.
    function epochInfo(uint256 runId, uint256 epoch) external view returns (Epoch memory) {
        return _epochs[runId][epoch];
    }

    /// @notice The stored consensus weight (uint16, scaled to the epoch's maximum) of trainer `index`.
    function consensusWeight(uint256 runId, uint256 epoch, uint256 index) external view returns (uint256) {
        return _consensusWeight(runId, epoch, index);
    }

    /// @notice What `claim(runId)` would pay `account` now (trainers: up to MAX_CLAIM_EPOCHS epochs).
    function claimable(uint256 runId, address account) external view returns (uint256) {
        Trainer storage t = _trainers[runId][account];
        if (t.registered) {
            (uint256 due,,) = _claimWindow(runId, t);
            return due;
        }
        (uint256 held,, bool disputable) = _heldOf(_runs[runId], runId, account);
        return _validators[runId][account].credit + (disputable ? 0 : held);
    }

    /// @notice A validator's credit of the last epoch it was credited for: `amount` (0 once forfeited), that
    /// `epoch`, and whether its ballot for the epoch can still be disputed (the credit is not claimable until then).
    function heldCredit(uint256 runId, address validator)
        external
        view
        returns (uint256 amount, uint256 epoch, bool disputable, bool forfeited)
    {
        (amount, epoch, disputable) = _heldOf(_runs[runId], runId, validator);
        forfeited = _heldCredit[runId][validator] & FORFEITED != 0;
    }

    /// @notice Stake that disputed `accused`'s ballot for `epoch` so far, and whether `disputer` is among it.
    function disputeOf(uint256 runId, uint256 epoch, address accused, address disputer)
        external
        view
        returns (uint256 stake, bool disputed)
    {
        stake = _disputeStake[keccak256(abi.encode(runId, epoch, accused))];
        disputed = _disputed[keccak256(abi.encode(runId, epoch, accused, disputer))];
    }

}

/// @title TrainingRun
/// @notice Stakes, the block clock, commit–reveal of trainers' contributions, validators' publications, the
/// commit–reveal of validators' weights and the per-epoch settlement of rewards for many training runs (keyed by
/// `runId`), paid in native ETH. contracts/README.md states the threat model and what each bound protects.
/// @dev Who votes on an epoch is fixed when the epoch begins: a validator registered in epoch k votes from epoch
/// k + 1 (from epoch 0 when it registered before the run started), with the stake it registered; one that asks to
/// leave in epoch k still votes on epochs up to k and cannot withdraw before they are settled. The electorate's
/// total stake per epoch is a checkpoint list, so every quorum is a share of the stake that was bonded when the
/// epoch began, whatever joins or leaves later.
///
/// Gas shapes the storage layout:
/// - A trainer's commitment lives in a ring of `RING` slots per (run, trainer), rewritten every window (5k gas
///   instead of 22k). Overwriting a commitment that was never revealed counts the miss.
/// - Validators' weight vectors are never stored: `revealWeights` keeps the top 192 bits of their hash and emits
///   the vector; `finalizeEpoch` takes the vectors back as calldata and checks each against its hash.
/// - Finalisation stores the consensus once (packed uint16, scaled to the epoch's maximum) with one
///   `rewardPerWeight`; a trainer's reward is computed lazily by `claim` from those words.
contract TrainingRun is TrainingRunBase {
    using CidKey for string;

    /// @notice Where the functions this contract does not implement itself live (deployed with it).
    address public immutable extension;

    constructor() {
        extension = address(new TrainingRunExtension());
    }

    /// @notice Everything else (createRun, endRun, reclaim, ejectValidator, reportUnavailable, skipEpoch and the
    /// views) runs in TrainingRunExtension's code on this contract's storage: one contract would exceed the
    /// 24 KiB code size limit (EIP-170). msg.sender and msg.value carry over.
    fallback() external payable {
        address target = extension;
        assembly {
            calldatacopy(0, 0, calldatasize())
            let ok := delegatecall(gas(), target, 0, calldatasize(), 0, 0)
            returndatacopy(0, 0, returndatasize())
            if iszero(ok) { revert(0, returndatasize()) }
            return(0, returndatasize())
        }
    }

    /// @notice Add ETH to a run's reward pool (anyone, while the run is open).
    function fund(uint256 runId) external payable {
        Run storage run = _openRun(runId);
        if (msg.value == 0) revert ZeroValue();
        run.pool += msg.value;
        emit RunFunded(runId, msg.sender, msg.value, run.pool);
    }

    /// @notice Register the caller as a trainer with `msg.value` as stake. It takes a slot that a trainer who left
    /// gave back, else the next one.
    function registerTrainer(uint256 runId) external payable {
        Run storage run = _openRun(runId);
        _notMember(runId);
        if (msg.value < run.minTrainerStake) revert StakeTooLow(runId, msg.sender, msg.value, run.minTrainerStake);
        if (msg.value > type(uint88).max) revert AmountTooLarge(msg.value, type(uint88).max);
        uint32 index;
        uint32 free = run.freeSlots;
        if (free > 0) {
            index = _freeIndex[runId][free - 1];
            run.freeSlots = free - 1;
        } else {
            index = run.trainerCount;
            if (index >= run.maxTrainers) revert RunFull(runId, run.maxTrainers);
            run.trainerCount = index + 1;
        }
        _trainerAt[runId][index] = msg.sender;
        _occupiedSlots[runId][index / 256] |= 1 << (index % 256);
        uint256[RING] storage ring = _commitRing[runId][msg.sender];
        for (uint256 k; k < RING; ++k) ring[k] = RING_ALLOCATED;
        // A late joiner is paid from the current epoch on: never for one that was settled, or that ended, before it
        // registered (a freed slot's weight in such an epoch was its previous holder's).
        uint256 current = _nextEpochStart(run);
        current = current == 0 ? 0 : current - 1;
        _trainers[runId][msg.sender] = Trainer({
            stake: uint88(msg.value),
            index: index,
            misses: 0,
            slashCount: 0,
            registered: true,
            unbondingAt: 0,
            nextClaimEpoch: _u32(current > run.nextEpoch ? current : run.nextEpoch),
            untilEpoch: 0
        });
        emit TrainerRegistered(runId, msg.sender, index, msg.value);
    }

    /// @notice Add `msg.value` to the caller's trainer stake (e.g. to get back above the minimum after a slash).
    function addStake(uint256 runId) external payable {
        Trainer storage t = _activeTrainer(runId);
        if (msg.value == 0) revert ZeroValue();
        if (msg.value > type(uint88).max - t.stake) revert AmountTooLarge(msg.value, type(uint88).max - t.stake);
        t.stake += uint88(msg.value);
        emit StakeAdded(runId, msg.sender, msg.value, t.stake);
    }

    /// @notice Register the caller as a validator with `msg.value` as stake. It votes from the next epoch to begin
    /// (from epoch 0 if the run has not started), with this stake.
    function registerValidator(uint256 runId) external payable {
        Run storage run = _openRun(runId);
        _notMember(runId);
        if (msg.value < run.minValidatorStake) {
            revert StakeTooLow(runId, msg.sender, msg.value, run.minValidatorStake);
        }
        if (msg.value > type(uint96).max) revert AmountTooLarge(msg.value, type(uint96).max);
        if (run.validatorCount >= run.maxValidators) revert RunFull(runId, run.maxValidators);
        run.validatorCount += 1;
        uint256 from = _nextEpochStart(run);
        _validators[runId][msg.sender] = Validator({
            stake: uint96(msg.value),
            bond: uint96(msg.value),
            fromEpoch: _u32(from),
            untilEpoch: uint32(OPEN),
            credit: 0,
            unbondingAt: 0,
            pubEpoch: 0,
            pubCount: 0,
            fullMask: 0,
            servedPlusOne: 0,
            registered: true
        });
        _moveStake(runId, from, msg.value, true);
        emit ValidatorRegistered(runId, msg.sender, msg.value, from);
    }

    /// @notice Start leaving the run. A trainer can no longer commit; a validator stops voting from the next epoch
    /// to begin. The stake stays slashable and is withdrawable after the unbonding delay, once every epoch the
    /// account took part in is settled.
    function requestUnstake(uint256 runId) external {
        Run storage run = _existingRun(runId);
        Trainer storage t = _trainers[runId][msg.sender];
        uint256 availableAt;
        if (t.registered) {
            if (t.unbondingAt != 0) revert Unbonding(runId, msg.sender);
            availableAt = block.number + run.unbondingBlocks;
            t.unbondingAt = uint40(availableAt);
            t.untilEpoch = _u32(_nextEpochStart(run));
        } else {
            Validator storage v = _validators[runId][msg.sender];
            if (!v.registered) revert NotMember(runId, msg.sender);
            if (v.unbondingAt != 0) revert Unbonding(runId, msg.sender);
            availableAt = _leave(run, runId, v);
        }
        emit UnstakeRequested(runId, msg.sender, availableAt);
    }

    /// @notice Withdraw the caller's whole stake (trainers: with the rewards still due; validators: with their
    /// credit, once the dispute period of the last epoch they were credited for is over) and leave the run. A
    /// trainer's slot is then free for the next trainer.
    function withdrawStake(uint256 runId) external nonReentrant {
        Run storage run = _existingRun(runId);
        Trainer storage t = _trainers[runId][msg.sender];
        uint256 amount;
        uint256 rewards;
        if (t.registered) {
            _checkWithdrawable(run, runId, t.unbondingAt, t.untilEpoch);
            uint256 settled = run.nextEpoch;
            if (settled > t.nextClaimEpoch && settled - t.nextClaimEpoch > MAX_CLAIM_EPOCHS) {
                revert ClaimFirst(runId, msg.sender, t.nextClaimEpoch, settled);
            }
            rewards = _trainerDue(runId, t.index, t.nextClaimEpoch, settled);
            amount = t.stake;
            uint32 free = run.freeSlots;
            _freeIndex[runId][free] = t.index;
            run.freeSlots = free + 1;
            delete _trainerAt[runId][t.index];
            _occupiedSlots[runId][t.index / 256] &= ~(1 << (t.index % 256));
            delete _trainers[runId][msg.sender];
        } else {
            Validator storage v = _validators[runId][msg.sender];
            if (!v.registered) revert NotMember(runId, msg.sender);
            _checkWithdrawable(run, runId, v.unbondingAt, v.fromEpoch < v.untilEpoch ? v.untilEpoch : 0);
            (uint256 held, uint256 heldEpoch, bool disputable) = _heldOf(run, runId, msg.sender);
            if (disputable && held != 0) revert CreditHeld(runId, msg.sender, heldEpoch);
            amount = v.bond;
            rewards = v.credit + held;
            delete _validators[runId][msg.sender];
            delete _heldCredit[runId][msg.sender];
        }
        emit StakeWithdrawn(runId, msg.sender, amount);
        if (rewards > 0) emit Claimed(runId, msg.sender, rewards);
        _send(msg.sender, amount + rewards);
    }

    /// @notice Commit to a contribution for the current window: `commitment` =
    /// keccak256(abi.encodePacked(cid, salt, runId, window, trainer)). One commitment per trainer per window.
    /// @dev The run, window and trainer are inside the hash so a commitment is worthless to anyone else.
    function commit(uint256 runId, uint256 window, bytes32 commitment) external {
        Run storage run = _runs[runId];
        Trainer storage t = _activeTrainer(runId);
        uint256 start = run.startBlock;
        if (block.number < start) revert RunNotStarted(runId, start);
        uint256 current = (block.number - start) / run.windowBlocks;
        if (window != current) revert WrongWindow(runId, window, current);
        if (current / run.windowsPerEpoch >= run.endEpoch) revert RunEnded(runId, run.endEpoch);
        if (t.stake < run.minTrainerStake) revert StakeTooLow(runId, msg.sender, t.stake, run.minTrainerStake);
        uint256[RING] storage ring = _commitRing[runId][msg.sender];
        uint256 old = ring[window % RING];
        uint256 oldWindowPlusOne = (old >> 8) & WINDOW_MASK;
        if (oldWindowPlusOne == window + 1) revert AlreadyCommitted(runId, window, msg.sender);
        ring[window % RING] =
            (uint256(commitment) >> 64 << 64) | ((window + 1) << 8) | RING_ALLOCATED | uint256(CommitStatus.Committed);
        emit Committed(runId, window, msg.sender, commitment);
        if (old & STATUS_MASK == uint256(CommitStatus.Committed)) {
            // The reused slot held a commitment whose reveal period is over (see RING): a miss.
            _countMiss(run, runId, oldWindowPlusOne - 1, msg.sender, t, msg.sender);
        }
    }

    /// @notice Reveal the CID committed for `window` during its reveal blocks. The CID must be a CID (v0, or v1 in
    /// base32, base16 or base58btc); a CID whose multihash was already revealed in this window by another trainer
    /// gets this (later) revealer slashed.
    function reveal(uint256 runId, uint256 window, string calldata cid, bytes32 salt) external {
        Run storage run = _runs[runId];
        Trainer storage t = _trainers[runId][msg.sender];
        if (!t.registered) revert NotTrainer(runId, msg.sender);
        {
            uint256 opensAt = run.startBlock + (window + 1) * run.windowBlocks;
            uint256 closesAt = opensAt + run.revealBlocks;
            if (block.number < opensAt || block.number >= closesAt) {
                revert NotInRevealPeriod(runId, window, opensAt, closesAt);
            }
        }
        uint256[RING] storage ring = _commitRing[runId][msg.sender];
        uint256 slot = ring[window % RING];
        if ((slot >> 8) & WINDOW_MASK != window + 1) revert NoCommitment(runId, window, msg.sender);
        if (slot & STATUS_MASK != uint256(CommitStatus.Committed)) revert AlreadyRevealed(runId, window, msg.sender);
        if (_commitment(cid, salt, runId, window) >> 64 != slot >> 64) {
            revert CommitmentMismatch(runId, window, msg.sender);
        }
        bytes32 key = keccak256(abi.encode(runId, window, cid.multihashKey(MAX_CID_BYTES)));
        ring[window % RING] = (slot & ~STATUS_MASK) | uint256(CommitStatus.Revealed);
        emit Revealed(runId, window, msg.sender, cid);
        address first = _firstRevealer[key];
        if (first == address(0)) {
            _firstRevealer[key] = msg.sender;
        } else {
            emit DuplicateRevealed(runId, window, first, msg.sender, cid);
            _slash(run, runId, msg.sender, t, SlashReason.DuplicateCid);
        }
    }

    /// @notice Record that `trainer` did not reveal its commitment for `window` (anyone, after the reveal period).
    /// At the run's miss threshold the trainer is slashed.
    function reportMissedReveal(uint256 runId, uint256 window, address trainer) external {
        Run storage run = _existingRun(runId);
        Trainer storage t = _trainers[runId][trainer];
        if (!t.registered) revert NotTrainer(runId, trainer);
        uint256 endsAt = _revealEnd(run, window);
        if (block.number < endsAt) revert RevealPeriodNotOver(runId, window, endsAt);
        uint256[RING] storage ring = _commitRing[runId][trainer];
        uint256 slot = ring[window % RING];
        if ((slot >> 8) & WINDOW_MASK != window + 1) revert NoCommitment(runId, window, trainer);
        if (slot & STATUS_MASK != uint256(CommitStatus.Committed)) revert AlreadyRevealed(runId, window, trainer);
        ring[window % RING] = (slot & ~STATUS_MASK) | uint256(CommitStatus.Missed);
        _countMiss(run, runId, window, trainer, t, msg.sender);
    }

    /// @notice Publish the validator's aggregated model CID for a window whose reveal period is over, and seal its
    /// evaluation report: `reportCommitment` = keccak256(abi.encode(reportCid, validator)), revealed with the
    /// epoch's other reports by `revealReports` once the epoch's weight commits are closed (so no validator can
    /// rebuild its ballot from another's reports). Once per window, in increasing window order. Publishing every
    /// window of an epoch is what lets a validator vote on it; revealing their reports is what pays it.
    /// Publications within `publishBlocks` after the reveal period, by validators that vote on the window's epoch,
    /// count toward its canonical model (`canonicalModel`).
    function publishWindow(uint256 runId, uint256 window, string calldata modelCid, bytes32 reportCommitment)
        external
    {
        Run storage run = _existingRun(runId);
        Validator storage v = _validators[runId][msg.sender];
        if (!v.registered) revert NotValidator(runId, msg.sender);
        uint256 endsAt = _revealEnd(run, window);
        if (block.number < endsAt) revert RevealPeriodNotOver(runId, window, endsAt);
        if (window < _nextPublishWindow[runId][msg.sender]) revert AlreadyPublished(runId, window, msg.sender);
        bytes32 model = modelCid.multihashKey(MAX_CID_BYTES);
        _nextPublishWindow[runId][msg.sender] = window + 1;
        uint256 epoch = window / run.windowsPerEpoch;
        _countPublication(v, epoch, run.windowsPerEpoch);
        uint256[SEAL_EPOCHS] storage seals = _reportSeals[runId][msg.sender];
        seals[epoch % SEAL_EPOCHS] = _sealNext(seals[epoch % SEAL_EPOCHS], epoch, reportCommitment);
        emit WindowPublished(runId, window, msg.sender, modelCid, reportCommitment);
        if (block.number < endsAt + run.publishBlocks) _tallyModel(runId, window, model, _votingStake(v, epoch), modelCid);
    }

    /// @dev An on-time publication adds the publisher's voting stake to its model's tally for the window; the
    /// model leads once its tally is strictly above the leader's.
    function _tallyModel(uint256 runId, uint256 window, bytes32 model, uint256 stake, string calldata modelCid)
        private
    {
        if (stake == 0) return;
        bytes32 key = keccak256(abi.encode(runId, window, model));
        uint256 tally = _modelTally[key] + stake;
        _modelTally[key] = tally;
        if (tally > uint96(_canonical[runId][window])) {
            _canonical[runId][window] = uint256(uint160(msg.sender)) << 96 | tally;
            emit CanonicalModelChanged(runId, window, msg.sender, modelCid, tally);
        }
    }

    /// @notice Commit to this validator's weights for `epoch` (the oldest unsettled one): `commitment` =
    /// keccak256(abi.encodePacked(weights, salt, runId, epoch, validator)). Only a validator that votes on the
    /// epoch and published every one of its windows; only during the commit phase.
    function commitWeights(uint256 runId, uint256 epoch, bytes32 commitment) external {
        Run storage run = _existingRun(runId);
        _checkSettling(run, runId, epoch);
        Validator storage v = _validators[runId][msg.sender];
        uint256 stake = _votingStake(v, epoch);
        if (stake == 0) revert NotEligible(runId, epoch, msg.sender);
        if (!_reportsComplete(v, epoch)) revert ReportsMissing(runId, epoch, msg.sender);
        Ballots memory b = _ballotsOf(runId, epoch);
        uint256 opensAt = _settleOpensAt(run, b, epoch);
        if (block.number < opensAt) revert EpochNotOver(runId, epoch, opensAt);
        if (block.number >= opensAt + run.gracePeriodBlocks) {
            revert CommitPhaseOver(runId, epoch, opensAt + run.gracePeriodBlocks);
        }
        uint256 ballot = _ballot[runId][msg.sender];
        if ((ballot >> 8) & type(uint32).max == epoch + 1) revert WeightsAlreadyCommitted(runId, epoch, msg.sender);
        _ballot[runId][msg.sender] =
            (uint256(commitment) >> 64 << 64) | ((epoch + 1) << 8) | uint256(CommitStatus.Committed);
        b.commits += 1;
        b.committedStake += uint128(stake);
        _ballots[runId] = b;
        emit WeightsCommitted(runId, epoch, msg.sender, commitment);
    }

    /// @notice Reveal the weights committed for `epoch`: the payout (big-endian uint16, of 65535: the fraction of
    /// the epoch's trainer reward to assign), then big-endian uint16 per trainer index (trailing trainers may be
    /// omitted: weight 0). Reveals open when the commit phase is over, or as soon as every validator that votes
    /// on the epoch has committed; they close `gracePeriodBlocks` after the commit phase.
    function revealWeights(uint256 runId, uint256 epoch, bytes calldata weights, bytes32 salt) external {
        Run storage run = _existingRun(runId);
        _checkSettling(run, runId, epoch);
        uint256 ballot = _ballot[runId][msg.sender];
        if ((ballot >> 8) & type(uint32).max != epoch + 1) revert NoWeightsCommitment(runId, epoch, msg.sender);
        if (ballot & STATUS_MASK != uint256(CommitStatus.Committed)) {
            revert WeightsAlreadyRevealed(runId, epoch, msg.sender);
        }
        Ballots memory b = _ballotsOf(runId, epoch);
        {
            uint256 opensAt = _settleOpensAt(run, b, epoch);
            uint256 grace = run.gracePeriodBlocks;
            uint256 revealFrom = b.committedStake >= _totalStake(runId, epoch) ? opensAt : opensAt + grace;
            if (block.number < revealFrom) revert RevealPhaseNotOpen(runId, epoch, revealFrom);
            if (block.number >= opensAt + 2 * grace) revert RevealPhaseOver(runId, epoch, opensAt + 2 * grace);
        }
        uint256 length = weights.length;
        if (length < PAYOUT_BYTES || length % 2 != 0 || (length - PAYOUT_BYTES) / 2 > run.trainerCount) {
            revert InvalidWeights(runId, length, run.trainerCount);
        }
        if (uint256(keccak256(abi.encodePacked(weights, salt, runId, epoch, msg.sender))) >> 64 != ballot >> 64) {
            revert WeightsMismatch(runId, epoch, msg.sender);
        }
        Validator storage v = _validators[runId][msg.sender];
        uint256 slot = b.reveals;
        _ballot[runId][msg.sender] =
            (uint256(keccak256(weights)) >> 64 << 64) | ((epoch + 1) << 8) | uint256(CommitStatus.Revealed);
        _revealers[runId][slot] = uint256(uint160(msg.sender)) << 96 | v.stake;
        b.reveals += 1;
        _ballots[runId] = b;
        v.servedPlusOne = _u32(epoch + 1);
        emit WeightsRevealed(runId, epoch, msg.sender, slot, weights);
    }

    /// @notice Settle `epoch` (anyone) with the vectors revealed for it, in reveal order (the WeightsRevealed
    /// events; each is checked against its hash). Allowed once every committed vector is revealed and no more
    /// commits can come, or when the reveal phase is over. Consensus per trainer is the largest normalised weight
    /// that validators holding more than half of the epoch's snapshotted stake give at least (a validator that
    /// revealed nothing counts as giving 0); the payout (each vector's header) is agreed by the same rule. Trainers
    /// are credited payout × the trainers' reward, pro rata to consensus (what a vacant slot was given stays in the
    /// pool), revealing validators by stake × weight clipped to consensus × (1 − the distance of their payout from
    /// the agreed one). Rounding dust and unassigned reward stay in the pool.
    function finalizeEpoch(uint256 runId, uint256 epoch, bytes[] calldata weights) external {
        Run storage run = _existingRun(runId);
        _checkSettling(run, runId, epoch);
        Ballots memory b = _ballotsOf(runId, epoch);
        uint256 total = _totalStake(runId, epoch);
        {
            uint256 opensAt = _settleOpensAt(run, b, epoch);
            if (block.number < opensAt) revert EpochNotOver(runId, epoch, opensAt);
            uint256 closesAt = opensAt + 2 * uint256(run.gracePeriodBlocks);
            bool commitsClosed = block.number >= opensAt + run.gracePeriodBlocks || b.committedStake >= total;
            if (block.number < closesAt && !(commitsClosed && b.reveals == b.commits)) {
                revert EpochNotFinalizable(runId, epoch, b.commits, b.reveals, closesAt);
            }
        }
        uint256 n = b.reveals;
        if (weights.length != n) revert WrongRevealCount(runId, epoch, weights.length, n);
        (address[] memory who, uint256[] memory stakes) = _revealed(runId, epoch, weights);
        _closeEpoch(run, runId, epoch);
        _epochs[runId][epoch].submissions = uint16(n);
        (uint256 trainerPaid, uint256 validatorPaid) = _pay(run, runId, epoch, weights, who, stakes, total);
        emit EpochFinalized(runId, epoch, trainerPaid, validatorPaid, n);
    }

    /// @dev The revealers of the epoch being settled and their stakes; each given vector must hash to its ballot.
    function _revealed(uint256 runId, uint256 epoch, bytes[] calldata weights)
        private
        view
        returns (address[] memory who, uint256[] memory stakes)
    {
        uint256 n = weights.length;
        who = new address[](n);
        stakes = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            uint256 entry = _revealers[runId][i];
            who[i] = address(uint160(entry >> 96));
            stakes[i] = uint96(entry);
            if (uint256(keccak256(weights[i])) >> 64 != _ballot[runId][who[i]] >> 64) {
                revert RevealedWeightsMismatch(runId, epoch, i);
            }
        }
    }

    /// @dev Assign min(rewardPerEpoch, pool): trainers by consensus, validators by stake × agreement.
    function _pay(
        Run storage run,
        uint256 runId,
        uint256 epoch,
        bytes[] calldata weights,
        address[] memory who,
        uint256[] memory stakes,
        uint256 total
    ) private returns (uint256 trainerPaid, uint256 validatorPaid) {
        uint256 reward = run.rewardPerEpoch < run.pool ? run.rewardPerEpoch : run.pool;
        if (who.length == 0 || reward == 0) return (0, 0);
        uint256 validatorReward = reward * run.validatorShareBps / BPS;
        Tally memory tally = _tally(weights, stakes, total);
        uint256 payout = _payoutConsensus(weights, stakes, total);
        uint256 trainerReward = (reward - validatorReward) * payout / PAYOUT_SCALE;
        if (tally.maxConsensus > 0 && trainerReward > 0) {
            trainerPaid = _creditTrainers(runId, epoch, tally.consensus, tally.maxConsensus, trainerReward);
            trainerPaid -= _forfeitVacant(runId, epoch, tally.consensus.length) * _epochs[runId][epoch].rewardPerWeight;
        }
        // The payout is part of the ballot: a vote far from the agreed one earns less agreement.
        for (uint256 v; v < weights.length; ++v) {
            uint256 voted = uint16(bytes2(weights[v][:PAYOUT_BYTES]));
            uint256 distance = voted > payout ? voted - payout : payout - voted;
            tally.agreement[v] = tally.agreement[v] * (PAYOUT_SCALE - distance) / PAYOUT_SCALE;
        }
        validatorPaid = _creditValidators(runId, epoch, who, stakes, tally.agreement, validatorReward);
        run.pool -= trainerPaid + validatorPaid;
    }

    /// @notice Pay the caller what is due to it in this run: a trainer's rewards of up to MAX_CLAIM_EPOCHS settled
    /// epochs (call again for more), or a validator's credit (of an epoch whose dispute period is over: the
    /// credit of the last epoch settled is held until the next one is; see `disputeBallot`).
    function claim(uint256 runId) external nonReentrant {
        Trainer storage t = _trainers[runId][msg.sender];
        uint256 amount;
        if (t.registered) {
            (uint256 due, uint256 upTo, bool more) = _claimWindow(runId, t);
            if (due == 0 && !more) revert NothingToClaim(runId, msg.sender);
            t.nextClaimEpoch = uint32(upTo);
            amount = due;
        } else {
            Validator storage v = _validators[runId][msg.sender];
            (uint256 held,, bool disputable) = _heldOf(_runs[runId], runId, msg.sender);
            amount = v.credit;
            if (held != 0 && !disputable) {
                amount += held;
                delete _heldCredit[runId][msg.sender];
            }
            if (amount == 0) revert NothingToClaim(runId, msg.sender);
            v.credit = 0;
        }
        emit Claimed(runId, msg.sender, amount);
        if (amount > 0) _send(msg.sender, amount);
    }

}
