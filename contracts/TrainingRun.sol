// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title TrainingRun
/// @notice Stakes, the block clock, commit–reveal of trainers' contributions, validators' publications and
/// the per-epoch settlement of rewards for many training runs (keyed by `runId`), paid in native ETH.
/// @dev Gas shapes the storage layout:
/// - A trainer's commitment lives in a ring of `RING` slots per (run, trainer); a trainer that commits every
///   window rewrites a warm-value slot (5k gas) instead of allocating a fresh one (22k). The slot packs the
///   top 192 bits of the commitment hash, the window and a status. Overwriting a commitment that was never
///   revealed counts the miss, so nothing escapes the miss counter when the ring wraps. Registration writes
///   a non-zero marker into every ring slot, so even a trainer's first commit rewrites a live slot.
/// - Validators' weights are packed uint16 per trainer index. One SSTORE per (validator, trainer) would cost
///   ~22k gas per trainer per validator; packed, 16 trainers share a slot, and the slots are reused every epoch
///   (weights are accepted only for the epoch being settled).
/// - Finalisation stores the consensus once (packed uint16, scaled to the epoch's maximum) with its sum;
///   a trainer's reward is computed lazily by `claim`/`claimable` from those words, so settlement never writes
///   one slot per trainer.
contract TrainingRun {
    // ------------------------------------------------------------------ types

    /// @notice Parameters a sponsor fixes when creating a run.
    struct RunParams {
        bytes32 configDigest; // digest of the protocol/model configuration
        uint32 windowBlocks; // blocks per window
        uint32 revealBlocks; // blocks after a window during which its commitments can be revealed
        uint32 windowsPerEpoch; // windows per settlement epoch
        uint32 gracePeriodBlocks; // after this many blocks past an epoch's last reveal, anyone may finalise
        uint32 unbondingBlocks; // delay between requestUnstake and withdrawStake
        uint16 validatorShareBps; // share of an epoch's reward for validators, basis points
        uint16 slashBps; // fraction of a trainer's stake slashed per fault, basis points
        uint16 missThreshold; // missed reveals that trigger a slash
        uint128 minTrainerStake;
        uint128 minValidatorStake;
        uint128 rewardPerEpoch;
    }

    /// @notice A run as stored (slot-packed for the hot paths: commit and reveal read slot 0 only).
    struct Run {
        uint64 startBlock;
        uint32 windowBlocks;
        uint32 revealBlocks;
        uint128 minTrainerStake;
        uint32 windowsPerEpoch;
        uint32 gracePeriodBlocks;
        uint32 unbondingBlocks;
        uint16 validatorShareBps;
        uint16 slashBps;
        uint16 missThreshold;
        uint32 trainerCount;
        uint16 validatorCount; // active (not unbonding) validators
        uint32 nextEpoch; // epochs [0, nextEpoch) are finalised
        uint128 minValidatorStake;
        uint128 rewardPerEpoch;
        uint256 pool; // unassigned reward
        address sponsor;
        bytes32 configDigest;
    }

    /// @notice A trainer's state in one run (one slot).
    struct Trainer {
        uint96 stake;
        uint32 index; // registration order within the run
        uint16 misses; // missed reveals since the last miss slash
        uint8 slashCount; // saturating
        bool registered;
        uint64 unbondingAt; // 0 = active; else the block from which the stake can be withdrawn
        uint32 nextClaimEpoch; // epochs before this one are already paid
    }

    /// @notice A validator's state in one run. One slot, credit included, so finalisation credits a validator
    /// by rewriting a live slot (~5k gas) instead of allocating one (~22k).
    struct Validator {
        uint88 stake;
        uint88 credit; // rewards not yet claimed
        uint40 unbondingAt; // 0 = active; else the block from which the stake can be withdrawn
        uint32 nextSubmitEpoch; // epochs before this one are already submitted
        bool registered;
    }

    /// @notice Who submitted weights for the epoch being settled, in submission order.
    struct Submitter {
        address validator;
        uint96 stake; // the validator's stake when it submitted
    }

    /// @notice Settlement state of an epoch.
    struct Epoch {
        uint128 rewardPerWeight; // wei per unit of stored consensus weight (trainer i earns q_i × this)
        uint64 weightSum; // sum of the stored (quantised) consensus weights
        uint16 submissions;
        bool finalized;
    }

    /// @notice Why a trainer was slashed.
    enum SlashReason {
        DuplicateCid,
        MissedReveals
    }

    /// @notice Status of a commitment slot.
    enum CommitStatus {
        None,
        Committed,
        Revealed,
        Missed
    }

    // ------------------------------------------------------------------ constants

    /// @notice Commitment ring length per trainer; `revealBlocks <= (RING - 1) * windowBlocks` keeps a
    /// window's reveal period closed before its slot is reused.
    uint256 public constant RING = 4;
    /// @notice Cap on active validators (bounds finalisation gas).
    uint256 public constant MAX_VALIDATORS = 16;
    /// @notice Cap on trainers per run (bounds finalisation gas: ~10k gas per trainer).
    uint256 public constant MAX_TRAINERS = 2048;
    /// @notice Cap on a revealed CID's length in bytes.
    uint256 public constant MAX_CID_BYTES = 128;
    /// @notice Fixed-point scale of normalised weights.
    uint256 public constant SCALE = 1e12;
    uint256 private constant BPS = 10_000;
    uint256 private constant STATUS_MASK = 0x7f;
    uint256 private constant RING_ALLOCATED = 0x80; // keeps an empty ring slot non-zero
    uint256 private constant WINDOW_MASK = (1 << 56) - 1;

    // ------------------------------------------------------------------ storage

    /// @notice Number of runs created; run ids are 0..runCount-1.
    uint256 public runCount;
    mapping(uint256 => Run) private _runs;
    mapping(uint256 => mapping(address => Trainer)) private _trainers;
    mapping(uint256 => mapping(uint256 => address)) private _trainerAt;
    mapping(uint256 => mapping(address => Validator)) private _validators;
    mapping(uint256 => mapping(address => uint256[RING])) private _commitRing;
    mapping(bytes32 => address) private _firstRevealer;
    mapping(bytes32 => bool) private _firstRevealerSlashed;
    mapping(uint256 => mapping(address => string)) private _latestModelCid;
    mapping(uint256 => mapping(uint256 => Epoch)) private _epochs;
    // Only the epoch being settled has live submissions, so each validator's weight buffer and the submitter
    // list are rewritten every epoch (non-zero → non-zero SSTOREs: ~5k instead of ~22k gas per slot).
    // The WeightsSubmitted event keeps every vector for audits.
    mapping(uint256 => mapping(address => bytes)) private _weightBuffer;
    mapping(uint256 => mapping(uint256 => Submitter)) private _submitters;
    mapping(uint256 => mapping(uint256 => mapping(uint256 => uint256))) private _consensusWords;
    mapping(uint256 => mapping(address => uint256)) private _nextPublishWindow;
    uint256 private _lock = 1;

    // ------------------------------------------------------------------ errors

    /// @notice No run with this id.
    error UnknownRun(uint256 runId);
    /// @notice A run parameter is out of range.
    error InvalidRunParams(string field);
    /// @notice The call needed a non-zero ETH value.
    error ZeroValue();
    /// @notice A stake below the run's minimum.
    error StakeTooLow(uint256 runId, address account, uint256 stake, uint256 required);
    /// @notice The account already has a role in this run.
    error AlreadyRegistered(uint256 runId, address account);
    /// @notice The caller is not a registered trainer of the run.
    error NotTrainer(uint256 runId, address account);
    /// @notice The caller is not an active validator of the run.
    error NotValidator(uint256 runId, address account);
    /// @notice The run already has the maximum number of trainers or validators.
    error RunFull(uint256 runId, uint256 limit);
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
    /// @notice keccak256(cid, salt, runId, window, trainer) does not match the commitment.
    error CommitmentMismatch(uint256 runId, uint256 window, address trainer);
    /// @notice A CID that is empty or longer than MAX_CID_BYTES.
    error InvalidCid(uint256 length);
    /// @notice The window's reveal period has not ended.
    error RevealPeriodNotOver(uint256 runId, uint256 window, uint256 endsAt);
    /// @notice The validator already published this (or a later) window.
    error AlreadyPublished(uint256 runId, uint256 window, address validator);
    /// @notice The epoch's last reveal period has not ended.
    error EpochNotOver(uint256 runId, uint256 epoch, uint256 endsAt);
    /// @notice The validator already submitted weights for this (or a later) epoch.
    error AlreadySubmitted(uint256 runId, uint256 epoch, address validator);
    /// @notice A weight vector of odd length or with more entries than trainers.
    error InvalidWeights(uint256 runId, uint256 length, uint256 trainerCount);
    /// @notice Epochs are finalised in order.
    error EpochOutOfOrder(uint256 runId, uint256 epoch, uint256 expected);
    /// @notice Not every validator submitted and the grace period has not passed.
    error EpochNotFinalizable(uint256 runId, uint256 epoch, uint256 submissions, uint256 required, uint256 graceEndsAt);
    /// @notice Nothing is due to the account.
    error NothingToClaim(uint256 runId, address account);
    /// @notice The account has not requested to unstake.
    error NotUnbonding(uint256 runId, address account);
    /// @notice The unbonding delay has not passed.
    error UnbondingNotOver(uint256 runId, address account, uint256 availableAt);
    /// @notice There is no stake left to withdraw.
    error NothingToWithdraw(uint256 runId, address account);
    /// @notice An ETH amount too large for the packed storage field that holds it.
    error AmountTooLarge(uint256 amount, uint256 max);
    /// @notice Sending ETH failed.
    error TransferFailed(address to, uint256 amount);
    /// @notice A guarded function was re-entered.
    error ReentrantCall();

    // ------------------------------------------------------------------ events

    /// @notice A run was created.
    event RunCreated(uint256 indexed runId, address indexed sponsor, bytes32 configDigest, uint256 startBlock);
    /// @notice The reward pool was funded.
    event RunFunded(uint256 indexed runId, address indexed funder, uint256 amount, uint256 pool);
    /// @notice A trainer registered with its index and stake.
    event TrainerRegistered(uint256 indexed runId, address indexed trainer, uint256 index, uint256 stake);
    /// @notice A validator registered with its stake.
    event ValidatorRegistered(uint256 indexed runId, address indexed validator, uint256 stake);
    /// @notice A trainer added stake.
    event StakeAdded(uint256 indexed runId, address indexed trainer, uint256 amount, uint256 stake);
    /// @notice A trainer committed to a contribution for a window.
    event Committed(uint256 indexed runId, uint256 indexed window, address indexed trainer, bytes32 commitment);
    /// @notice A trainer revealed its contribution's CID.
    event Revealed(uint256 indexed runId, uint256 indexed window, address indexed trainer, string cid);
    /// @notice Two trainers revealed the same CID in a window.
    event DuplicateRevealed(uint256 indexed runId, uint256 indexed window, address first, address second, string cid);
    /// @notice A commitment was not revealed in time (`reporter` is the trainer itself when its ring slot was reused).
    event RevealMissed(uint256 indexed runId, uint256 indexed window, address indexed trainer, address reporter, uint256 misses);
    /// @notice A trainer's stake was slashed into the reward pool.
    event TrainerSlashed(uint256 indexed runId, address indexed trainer, uint256 amount, SlashReason reason);
    /// @notice A validator published its aggregated model and evaluation report for a window.
    event WindowPublished(
        uint256 indexed runId, uint256 indexed window, address indexed validator, string modelCid, string reportCid
    );
    /// @notice A validator submitted its weight vector for an epoch.
    event WeightsSubmitted(uint256 indexed runId, uint256 indexed epoch, address indexed validator, bytes weights);
    /// @notice An epoch was settled.
    event EpochFinalized(
        uint256 indexed runId, uint256 indexed epoch, uint256 trainerReward, uint256 validatorReward, uint256 submissions
    );
    /// @notice A validator was credited for an epoch; `agreement` is its clipped weight mass (SCALE = full).
    event ValidatorCredited(
        uint256 indexed runId, uint256 indexed epoch, address indexed validator, uint256 amount, uint256 agreement
    );
    /// @notice An account withdrew its rewards.
    event Claimed(uint256 indexed runId, address indexed account, uint256 amount);
    /// @notice An account asked to leave; its stake is withdrawable from `availableAt`.
    event UnstakeRequested(uint256 indexed runId, address indexed account, uint256 availableAt);
    /// @notice An account withdrew its stake.
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

    /// @notice Create a run; any ETH sent seeds its reward pool.
    /// @return runId the new run's id
    function createRun(RunParams calldata p) external payable returns (uint256 runId) {
        if (p.windowBlocks == 0) revert InvalidRunParams("windowBlocks");
        if (p.revealBlocks == 0 || p.revealBlocks > uint256(p.windowBlocks) * (RING - 1)) {
            revert InvalidRunParams("revealBlocks");
        }
        if (p.windowsPerEpoch == 0) revert InvalidRunParams("windowsPerEpoch");
        if (p.validatorShareBps > BPS) revert InvalidRunParams("validatorShareBps");
        if (p.slashBps > BPS) revert InvalidRunParams("slashBps");
        if (p.missThreshold == 0) revert InvalidRunParams("missThreshold");
        if (p.minTrainerStake == 0) revert InvalidRunParams("minTrainerStake");
        if (p.minValidatorStake == 0) revert InvalidRunParams("minValidatorStake");
        runId = runCount++;
        Run storage run = _runs[runId];
        run.startBlock = uint64(block.number);
        run.windowBlocks = p.windowBlocks;
        run.revealBlocks = p.revealBlocks;
        run.minTrainerStake = p.minTrainerStake;
        run.windowsPerEpoch = p.windowsPerEpoch;
        run.gracePeriodBlocks = p.gracePeriodBlocks;
        run.unbondingBlocks = p.unbondingBlocks;
        run.validatorShareBps = p.validatorShareBps;
        run.slashBps = p.slashBps;
        run.missThreshold = p.missThreshold;
        run.minValidatorStake = p.minValidatorStake;
        run.rewardPerEpoch = p.rewardPerEpoch;
        run.pool = msg.value;
        run.sponsor = msg.sender;
        run.configDigest = p.configDigest;
        emit RunCreated(runId, msg.sender, p.configDigest, block.number);
        if (msg.value > 0) emit RunFunded(runId, msg.sender, msg.value, msg.value);
    }

    /// @notice Add ETH to a run's reward pool (anyone).
    function fund(uint256 runId) external payable {
        Run storage run = _existingRun(runId);
        if (msg.value == 0) revert ZeroValue();
        run.pool += msg.value;
        emit RunFunded(runId, msg.sender, msg.value, run.pool);
    }

    // ------------------------------------------------------------------ membership

    /// @notice Register the caller as a trainer with `msg.value` as stake; it gets the next trainer index.
    function registerTrainer(uint256 runId) external payable {
        Run storage run = _existingRun(runId);
        if (_trainers[runId][msg.sender].registered || _validators[runId][msg.sender].registered) {
            revert AlreadyRegistered(runId, msg.sender);
        }
        if (msg.value < run.minTrainerStake) revert StakeTooLow(runId, msg.sender, msg.value, run.minTrainerStake);
        if (msg.value > type(uint96).max) revert AmountTooLarge(msg.value, type(uint96).max);
        uint32 index = run.trainerCount;
        if (index >= MAX_TRAINERS) revert RunFull(runId, MAX_TRAINERS);
        run.trainerCount = index + 1;
        _trainerAt[runId][index] = msg.sender;
        uint256[RING] storage ring = _commitRing[runId][msg.sender];
        for (uint256 k; k < RING; ++k) ring[k] = RING_ALLOCATED;
        // A late joiner is not paid for epochs that were settled before it existed.
        _trainers[runId][msg.sender] = Trainer({
            stake: uint96(msg.value),
            index: index,
            misses: 0,
            slashCount: 0,
            registered: true,
            unbondingAt: 0,
            nextClaimEpoch: run.nextEpoch
        });
        emit TrainerRegistered(runId, msg.sender, index, msg.value);
    }

    /// @notice Add `msg.value` to the caller's trainer stake (e.g. to get back above the minimum after a slash).
    function addStake(uint256 runId) external payable {
        Trainer storage t = _activeTrainer(runId);
        if (msg.value == 0) revert ZeroValue();
        if (msg.value > type(uint96).max - t.stake) revert AmountTooLarge(msg.value, type(uint96).max - t.stake);
        t.stake += uint96(msg.value);
        emit StakeAdded(runId, msg.sender, msg.value, t.stake);
    }

    /// @notice Register the caller as a validator with `msg.value` as stake.
    function registerValidator(uint256 runId) external payable {
        Run storage run = _existingRun(runId);
        if (_trainers[runId][msg.sender].registered || _validators[runId][msg.sender].registered) {
            revert AlreadyRegistered(runId, msg.sender);
        }
        if (msg.value < run.minValidatorStake) {
            revert StakeTooLow(runId, msg.sender, msg.value, run.minValidatorStake);
        }
        if (run.validatorCount >= MAX_VALIDATORS) revert RunFull(runId, MAX_VALIDATORS);
        run.validatorCount += 1;
        if (msg.value > type(uint88).max) revert AmountTooLarge(msg.value, type(uint88).max);
        _validators[runId][msg.sender] = Validator({
            stake: uint88(msg.value),
            credit: 0,
            unbondingAt: 0,
            nextSubmitEpoch: run.nextEpoch,
            registered: true
        });
        emit ValidatorRegistered(runId, msg.sender, msg.value);
    }

    /// @notice Start leaving the run (trainer or validator); the stake is withdrawable after the unbonding delay
    /// and stays slashable until then.
    function requestUnstake(uint256 runId) external {
        Run storage run = _existingRun(runId);
        uint64 availableAt = uint64(block.number + run.unbondingBlocks);
        Trainer storage t = _trainers[runId][msg.sender];
        if (t.registered) {
            if (t.unbondingAt != 0) revert Unbonding(runId, msg.sender);
            t.unbondingAt = availableAt;
        } else {
            Validator storage v = _validators[runId][msg.sender];
            if (!v.registered) revert NotTrainer(runId, msg.sender);
            if (v.unbondingAt != 0) revert Unbonding(runId, msg.sender);
            v.unbondingAt = uint40(availableAt);
            run.validatorCount -= 1;
        }
        emit UnstakeRequested(runId, msg.sender, availableAt);
    }

    /// @notice Withdraw the caller's whole stake once its unbonding delay has passed.
    function withdrawStake(uint256 runId) external nonReentrant {
        _existingRun(runId);
        Trainer storage t = _trainers[runId][msg.sender];
        uint256 amount;
        uint256 availableAt;
        if (t.registered) {
            availableAt = t.unbondingAt;
            amount = t.stake;
            if (availableAt == 0) revert NotUnbonding(runId, msg.sender);
            if (block.number < availableAt) revert UnbondingNotOver(runId, msg.sender, availableAt);
            if (amount == 0) revert NothingToWithdraw(runId, msg.sender);
            t.stake = 0;
        } else {
            Validator storage v = _validators[runId][msg.sender];
            if (!v.registered) revert NotTrainer(runId, msg.sender);
            availableAt = v.unbondingAt;
            amount = v.stake;
            if (availableAt == 0) revert NotUnbonding(runId, msg.sender);
            if (block.number < availableAt) revert UnbondingNotOver(runId, msg.sender, availableAt);
            if (amount == 0) revert NothingToWithdraw(runId, msg.sender);
            v.stake = 0;
        }
        emit StakeWithdrawn(runId, msg.sender, amount);
        _send(msg.sender, amount);
    }

    // ------------------------------------------------------------------ commit–reveal

    /// @notice Commit to a contribution for the current window: `commitment` =
    /// keccak256(abi.encodePacked(cid, salt, runId, window, trainer)). One commitment per trainer per window.
    /// @dev The run, window and trainer are inside the hash so a commitment is worthless to anyone else: a copier
    /// who commits the same hash and then front-runs (or follows) the trainer's reveal with the same (cid, salt)
    /// fails CommitmentMismatch instead of becoming the CID's first revealer and getting the trainer slashed as a
    /// duplicate; nor can a revealed (cid, salt) be replayed against the same hash in another window or run.
    function commit(uint256 runId, uint256 window, bytes32 commitment) external {
        Run storage run = _runs[runId];
        Trainer storage t = _activeTrainer(runId);
        uint256 start = run.startBlock;
        uint256 current = (block.number - start) / run.windowBlocks;
        if (window != current) revert WrongWindow(runId, window, current);
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

    /// @notice Reveal the CID committed for `window` during its reveal blocks. A CID already revealed by another
    /// trainer in this window flags and slashes both.
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
            uint256 length = bytes(cid).length;
            if (length == 0 || length > MAX_CID_BYTES) revert InvalidCid(length);
        }
        uint256[RING] storage ring = _commitRing[runId][msg.sender];
        uint256 slot = ring[window % RING];
        if ((slot >> 8) & WINDOW_MASK != window + 1) revert NoCommitment(runId, window, msg.sender);
        if (slot & STATUS_MASK != uint256(CommitStatus.Committed)) revert AlreadyRevealed(runId, window, msg.sender);
        if (_commitment(cid, salt, runId, window) >> 64 != slot >> 64) {
            revert CommitmentMismatch(runId, window, msg.sender);
        }
        ring[window % RING] = (slot & ~STATUS_MASK) | uint256(CommitStatus.Revealed);
        emit Revealed(runId, window, msg.sender, cid);

        _flagDuplicate(run, runId, window, cid, t);
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

    // ------------------------------------------------------------------ validators

    /// @notice Publish the validator's aggregated model CID and evaluation report CID for a window whose reveal
    /// period is over. Once per validator per window, in increasing window order.
    function publishWindow(uint256 runId, uint256 window, string calldata modelCid, string calldata reportCid)
        external
    {
        Run storage run = _existingRun(runId);
        Validator storage v = _activeValidator(runId);
        uint256 endsAt = _revealEnd(run, window);
        if (block.number < endsAt) revert RevealPeriodNotOver(runId, window, endsAt);
        if (window < _nextPublishWindow[runId][msg.sender]) revert AlreadyPublished(runId, window, msg.sender);
        uint256 length = bytes(modelCid).length;
        if (length == 0 || length > MAX_CID_BYTES) revert InvalidCid(length);
        length = bytes(reportCid).length;
        if (length == 0 || length > MAX_CID_BYTES) revert InvalidCid(length);
        _nextPublishWindow[runId][msg.sender] = window + 1;
        _latestModelCid[runId][msg.sender] = modelCid;
        emit WindowPublished(runId, window, msg.sender, modelCid, reportCid);
    }

    /// @notice Submit the validator's weights for `epoch`: big-endian uint16 per trainer index (trailing trainers
    /// may be omitted: weight 0). Only after the epoch's last reveal period, only for the epoch being settled
    /// (the oldest not finalised), once per epoch.
    function submitWeights(uint256 runId, uint256 epoch, bytes calldata packedWeights) external {
        Run storage run = _existingRun(runId);
        Validator storage v = _activeValidator(runId);
        uint256 endsAt = _epochEnd(run, epoch);
        if (block.number < endsAt) revert EpochNotOver(runId, epoch, endsAt);
        if (epoch != run.nextEpoch) revert EpochOutOfOrder(runId, epoch, run.nextEpoch);
        if (epoch < v.nextSubmitEpoch) revert AlreadySubmitted(runId, epoch, msg.sender);
        uint256 length = packedWeights.length;
        if (length % 2 != 0 || length / 2 > run.trainerCount) {
            revert InvalidWeights(runId, length, run.trainerCount);
        }
        v.nextSubmitEpoch = uint32(epoch + 1);
        Epoch storage e = _epochs[runId][epoch];
        uint256 slot = e.submissions;
        e.submissions = uint16(slot + 1);
        _submitters[runId][slot] = Submitter({validator: msg.sender, stake: v.stake});
        _weightBuffer[runId][msg.sender] = packedWeights;
        emit WeightsSubmitted(runId, epoch, msg.sender, packedWeights);
    }

    // ------------------------------------------------------------------ settlement

    /// @notice Settle `epoch` (anyone): once every active validator submitted, or after the grace period.
    /// Consensus per trainer is the stake-weighted median of the validators' normalised weights; trainers are
    /// credited pro rata to consensus, validators by stake × clipped agreement. Rounding dust and unassigned
    /// reward stay in the pool.
    function finalizeEpoch(uint256 runId, uint256 epoch) external {
        Run storage run = _existingRun(runId);
        if (epoch != run.nextEpoch) revert EpochOutOfOrder(runId, epoch, run.nextEpoch);
        uint256 endsAt = _epochEnd(run, epoch);
        if (block.number < endsAt) revert EpochNotOver(runId, epoch, endsAt);
        Epoch storage e = _epochs[runId][epoch];
        uint256 n = e.submissions;
        uint256 graceEndsAt = endsAt + run.gracePeriodBlocks;
        if (n < run.validatorCount && block.number < graceEndsAt) {
            revert EpochNotFinalizable(runId, epoch, n, run.validatorCount, graceEndsAt);
        }
        run.nextEpoch = uint32(epoch + 1);
        e.finalized = true;
        uint256 reward = run.rewardPerEpoch < run.pool ? run.rewardPerEpoch : run.pool;
        uint256 trainerPaid;
        uint256 validatorPaid;
        if (n > 0 && reward > 0) {
            uint256 validatorReward = reward * run.validatorShareBps / BPS;
            (trainerPaid, validatorPaid) = _settle(runId, epoch, n, reward - validatorReward, validatorReward);
            run.pool -= trainerPaid + validatorPaid;
        }
        emit EpochFinalized(runId, epoch, trainerPaid, validatorPaid, n);
    }

    /// @notice Pay the caller everything due to it in this run (trainer rewards of settled epochs, or validator
    /// credits).
    function claim(uint256 runId) external nonReentrant {
        Trainer storage t = _trainers[runId][msg.sender];
        uint256 amount;
        if (t.registered) {
            uint256 upTo = _runs[runId].nextEpoch;
            amount = _trainerDue(runId, t.index, t.nextClaimEpoch, upTo);
            if (amount == 0) revert NothingToClaim(runId, msg.sender);
            t.nextClaimEpoch = uint32(upTo);
        } else {
            Validator storage v = _validators[runId][msg.sender];
            amount = v.credit;
            if (amount == 0) revert NothingToClaim(runId, msg.sender);
            v.credit = 0;
        }
        emit Claimed(runId, msg.sender, amount);
        _send(msg.sender, amount);
    }

    // ------------------------------------------------------------------ views

    /// @notice The stored run.
    function getRun(uint256 runId) external view returns (Run memory) {
        _existingRun(runId);
        return _runs[runId];
    }

    /// @notice A trainer's state (registered = false when unknown).
    function trainerInfo(uint256 runId, address trainer) external view returns (Trainer memory) {
        return _trainers[runId][trainer];
    }

    /// @notice The trainer with registration index `index`.
    function trainerAt(uint256 runId, uint256 index) external view returns (address) {
        return _trainerAt[runId][index];
    }

    /// @notice A validator's state (registered = false when unknown).
    function validatorInfo(uint256 runId, address validator) external view returns (Validator memory) {
        return _validators[runId][validator];
    }

    /// @notice The window containing block `blockNumber`.
    function windowOfBlock(uint256 runId, uint256 blockNumber) external view returns (uint256) {
        Run storage run = _existingRun(runId);
        if (blockNumber < run.startBlock) revert WrongWindow(runId, 0, 0);
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

    /// @notice The model CID a validator published last, and its window (+1; 0 = never published).
    function latestModel(uint256 runId, address validator)
        external
        view
        returns (string memory modelCid, uint256 windowPlusOne)
    {
        return (_latestModelCid[runId][validator], _nextPublishWindow[runId][validator]);
    }

    /// @notice Settlement state of an epoch.
    function epochInfo(uint256 runId, uint256 epoch) external view returns (Epoch memory) {
        return _epochs[runId][epoch];
    }

    /// @notice The stored consensus weight (uint16, scaled to the epoch's maximum) of trainer `index`.
    function consensusWeight(uint256 runId, uint256 epoch, uint256 index) public view returns (uint256) {
        return (_consensusWords[runId][epoch][index / 16] >> (240 - 16 * (index % 16))) & 0xffff;
    }

    /// @notice The `slot`-th submitter for the epoch being settled and its weights (stale once that epoch is
    /// finalised; the WeightsSubmitted events hold the history).
    function submissionAt(uint256 runId, uint256 slot) external view returns (Submitter memory, bytes memory) {
        Submitter memory submitter = _submitters[runId][slot];
        return (submitter, _weightBuffer[runId][submitter.validator]);
    }

    /// @notice What `claim(runId)` would pay `account` now.
    function claimable(uint256 runId, address account) external view returns (uint256) {
        Trainer storage t = _trainers[runId][account];
        if (t.registered) return _trainerDue(runId, t.index, t.nextClaimEpoch, _runs[runId].nextEpoch);
        return _validators[runId][account].credit;
    }

    // ------------------------------------------------------------------ internals

    function _existingRun(uint256 runId) private view returns (Run storage run) {
        run = _runs[runId];
        if (run.windowBlocks == 0) revert UnknownRun(runId);
    }

    function _activeTrainer(uint256 runId) private view returns (Trainer storage t) {
        t = _trainers[runId][msg.sender];
        if (!t.registered) revert NotTrainer(runId, msg.sender);
        if (t.unbondingAt != 0) revert Unbonding(runId, msg.sender);
    }

    function _activeValidator(uint256 runId) private view returns (Validator storage v) {
        v = _validators[runId][msg.sender];
        if (!v.registered || v.unbondingAt != 0) revert NotValidator(runId, msg.sender);
    }

    /// @dev What `msg.sender` must have committed to reveal `cid` with `salt` for `window` of `runId` (a function of
    /// its own: inline, the five operands overflow reveal's stack).
    function _commitment(string calldata cid, bytes32 salt, uint256 runId, uint256 window)
        private
        view
        returns (uint256)
    {
        return uint256(keccak256(abi.encodePacked(cid, salt, runId, window, msg.sender)));
    }

    function _revealEnd(Run storage run, uint256 window) private view returns (uint256) {
        return run.startBlock + (window + 1) * run.windowBlocks + run.revealBlocks;
    }

    function _epochEnd(Run storage run, uint256 epoch) private view returns (uint256) {
        return _revealEnd(run, (epoch + 1) * run.windowsPerEpoch - 1);
    }

    function _countMiss(
        Run storage run,
        uint256 runId,
        uint256 window,
        address trainer,
        Trainer storage t,
        address reporter
    ) private {
        uint256 misses = t.misses + 1;
        emit RevealMissed(runId, window, trainer, reporter, misses);
        if (misses >= run.missThreshold) {
            t.misses = 0;
            _slash(run, runId, trainer, t, SlashReason.MissedReveals);
        } else {
            t.misses = uint16(misses);
        }
    }

    /// @dev The first revealer of a CID in a window is remembered; a later revealer of the same CID is slashed,
    /// and so is the first one (once per CID and window).
    function _flagDuplicate(Run storage run, uint256 runId, uint256 window, string calldata cid, Trainer storage t)
        private
    {
        bytes32 key = keccak256(abi.encode(runId, window, keccak256(bytes(cid))));
        address first = _firstRevealer[key];
        if (first == address(0)) {
            _firstRevealer[key] = msg.sender;
            return;
        }
        emit DuplicateRevealed(runId, window, first, msg.sender, cid);
        _slash(run, runId, msg.sender, t, SlashReason.DuplicateCid);
        if (!_firstRevealerSlashed[key]) {
            _firstRevealerSlashed[key] = true;
            _slash(run, runId, first, _trainers[runId][first], SlashReason.DuplicateCid);
        }
    }

    function _slash(Run storage run, uint256 runId, address trainer, Trainer storage t, SlashReason reason) private {
        uint256 amount = uint256(t.stake) * run.slashBps / BPS;
        t.stake -= uint96(amount);
        if (t.slashCount < type(uint8).max) t.slashCount += 1;
        run.pool += amount;
        emit TrainerSlashed(runId, trainer, amount, reason);
    }

    function _trainerDue(uint256 runId, uint256 index, uint256 from, uint256 upTo)
        private
        view
        returns (uint256 amount)
    {
        for (uint256 epoch = from; epoch < upTo; ++epoch) {
            Epoch storage e = _epochs[runId][epoch];
            uint256 unit = e.rewardPerWeight;
            if (unit == 0) continue;
            amount += unit * consensusWeight(runId, epoch, index);
        }
    }

    /// @dev Working set of one epoch's settlement (a memory struct keeps the stack shallow).
    struct Tally {
        bytes[] vectors;
        uint256[] stakes;
        uint256[] sums;
        uint256 totalStake;
        uint256[] consensus;
        uint256[] agreement;
        uint256 maxConsensus;
    }

    /// @dev Loads the submissions, computes consensus and agreement, stores the packed consensus, credits
    /// validators. Returns what was assigned to trainers (exact sum of their future claims) and validators.
    function _settle(uint256 runId, uint256 epoch, uint256 n, uint256 trainerReward, uint256 validatorReward)
        private
        returns (uint256 trainerPaid, uint256 validatorPaid)
    {
        Tally memory tally = _loadSubmissions(runId, n);
        _consensus(tally);
        if (tally.maxConsensus > 0) {
            trainerPaid = _creditTrainers(runId, epoch, tally.consensus, tally.maxConsensus, trainerReward);
        }
        validatorPaid = _creditValidators(runId, epoch, n, tally.stakes, tally.agreement, validatorReward);
    }

    function _loadSubmissions(uint256 runId, uint256 n) private view returns (Tally memory tally) {
        tally.vectors = new bytes[](n);
        tally.stakes = new uint256[](n);
        tally.sums = new uint256[](n);
        tally.agreement = new uint256[](n);
        uint256 entries;
        for (uint256 v; v < n; ++v) {
            Submitter storage s = _submitters[runId][v];
            bytes memory w = _weightBuffer[runId][s.validator];
            tally.vectors[v] = w;
            tally.stakes[v] = s.stake;
            tally.totalStake += s.stake;
            uint256 len = w.length / 2;
            if (len > entries) entries = len;
            tally.sums[v] = _sum(w);
        }
        tally.consensus = new uint256[](entries);
    }

    /// @dev Stores the quantised consensus; trainers earn a whole number of wei per weight unit, so what they
    /// can ever claim is exactly weightSum × rewardPerWeight (the remainder, < weightSum wei, stays in the pool).
    function _creditTrainers(
        uint256 runId,
        uint256 epoch,
        uint256[] memory consensus,
        uint256 maxConsensus,
        uint256 trainerReward
    ) private returns (uint256 paid) {
        uint256 weightSum = _storeConsensus(runId, epoch, consensus, maxConsensus);
        if (weightSum == 0) return 0;
        uint256 unit = trainerReward / weightSum;
        _epochs[runId][epoch].rewardPerWeight = uint128(unit);
        _epochs[runId][epoch].weightSum = uint64(weightSum);
        paid = unit * weightSum;
    }

    function _creditValidators(
        uint256 runId,
        uint256 epoch,
        uint256 n,
        uint256[] memory stakes,
        uint256[] memory agreement,
        uint256 validatorReward
    ) private returns (uint256 paid) {
        uint256 total;
        for (uint256 v; v < n; ++v) total += stakes[v] * agreement[v];
        if (total == 0 || validatorReward == 0) return 0;
        for (uint256 v; v < n; ++v) {
            uint256 amount = validatorReward * (stakes[v] * agreement[v]) / total;
            address who = _submitters[runId][v].validator;
            Validator storage val = _validators[runId][who];
            // Beyond uint88 (3e8 ETH) the excess stays in the pool rather than blocking settlement.
            uint256 room = type(uint88).max - val.credit;
            if (amount > room) amount = room;
            val.credit += uint88(amount);
            paid += amount;
            emit ValidatorCredited(runId, epoch, who, amount, agreement[v]);
        }
    }

    /// @dev Per trainer: normalise each validator's weight (SCALE = its whole vector), take the Yuma-style
    /// consensus (the largest weight that a strict stake majority gives at least), and add each validator's
    /// weight clipped to the consensus to its agreement (for normalised vectors Σ min(w, c) = 1 − ½·L1).
    function _consensus(Tally memory tally) private pure {
        uint256 n = tally.vectors.length;
        uint256[] memory values = new uint256[](n);
        uint256[] memory order = new uint256[](n);
        // Assembly because this loop runs (trainers × validators) times: checked array access and internal calls
        // made it ~5k gas per trainer. Tally fields are read by offset (0 vectors, 32 stakes, 64 sums,
        // 96 totalStake, 128 consensus, 160 agreement, 192 maxConsensus); writes stay inside those arrays.
        assembly ("memory-safe") {
            let entries := mload(mload(add(tally, 128)))
            let vecs := add(mload(tally), 32)
            let vals := add(values, 32)
            let ords := add(order, 32)
            let maxConsensus := 0
            for { let i := 0 } lt(i, entries) { i := add(i, 1) } {
                // gather normalised weights, insertion-sorted descending (n <= MAX_VALIDATORS)
                for { let v := 0 } lt(v, n) { v := add(v, 1) } {
                    let w := mload(add(vecs, shl(5, v)))
                    let value := 0
                    if lt(shl(1, i), mload(w)) {
                        value := shr(240, mload(add(add(w, 32), shl(1, i))))
                        if value {
                            value := div(mul(value, SCALE), mload(add(add(mload(add(tally, 64)), 32), shl(5, v))))
                        }
                    }
                    let j := v
                    for {} gt(j, 0) {} {
                        let prev := mload(add(vals, shl(5, sub(j, 1))))
                        if iszero(lt(prev, value)) { break }
                        mstore(add(vals, shl(5, j)), prev)
                        mstore(add(ords, shl(5, j)), mload(add(ords, shl(5, sub(j, 1)))))
                        j := sub(j, 1)
                    }
                    mstore(add(vals, shl(5, j)), value)
                    mstore(add(ords, shl(5, j)), v)
                }
                // the largest value that a strict stake majority gives at least
                let c := 0
                {
                    let stakes := add(mload(add(tally, 32)), 32)
                    let half := mload(add(tally, 96))
                    let cumulative := 0
                    for { let k := 0 } lt(k, n) { k := add(k, 1) } {
                        cumulative := add(cumulative, mload(add(stakes, shl(5, mload(add(ords, shl(5, k)))))))
                        if gt(shl(1, cumulative), half) {
                            c := mload(add(vals, shl(5, k)))
                            break
                        }
                    }
                }
                mstore(add(add(mload(add(tally, 128)), 32), shl(5, i)), c)
                if gt(c, maxConsensus) { maxConsensus := c }
                if c {
                    let agreement := add(mload(add(tally, 160)), 32)
                    for { let k := 0 } lt(k, n) { k := add(k, 1) } {
                        let value := mload(add(vals, shl(5, k)))
                        if gt(value, c) { value := c }
                        let cell := add(agreement, shl(5, mload(add(ords, shl(5, k)))))
                        mstore(cell, add(mload(cell), value))
                    }
                }
            }
            mstore(add(tally, 192), maxConsensus)
        }
    }

    function _storeConsensus(uint256 runId, uint256 epoch, uint256[] memory consensus, uint256 maxConsensus)
        private
        returns (uint256 weightSum)
    {
        mapping(uint256 => uint256) storage words = _consensusWords[runId][epoch];
        uint256 entries = consensus.length;
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
    }

    /// @dev Sum of a packed uint16 vector: whole words are folded lane-wise (16 entries in ~20 operations).
    function _sum(bytes memory w) private pure returns (uint256 total) {
        assembly ("memory-safe") {
            let start := add(w, 32)
            let end := add(start, mload(w))
            let fullEnd := add(start, and(mload(w), not(31)))
            let m16 := 0x0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff
            let m32 := 0x00000000ffffffff00000000ffffffff00000000ffffffff00000000ffffffff
            let m64 := 0x0000000000000000ffffffffffffffff0000000000000000ffffffffffffffff
            for { let p := start } lt(p, fullEnd) { p := add(p, 32) } {
                let x := mload(p)
                x := add(and(x, m16), and(shr(16, x), m16))
                x := add(and(x, m32), and(shr(32, x), m32))
                x := add(and(x, m64), and(shr(64, x), m64))
                total := add(total, add(and(x, 0xffffffffffffffffffffffffffffffff), shr(128, x)))
            }
            for { let p := fullEnd } lt(p, end) { p := add(p, 2) } { total := add(total, shr(240, mload(p))) }
        }
    }

    function _send(address to, uint256 amount) private {
        (bool ok,) = payable(to).call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }
}
