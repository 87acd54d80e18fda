// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {AssetRegistry} from "./AssetRegistry.sol";

/// @title AgreementManager
/// @notice Escrowed, time-bounded access agreements between a consumer and an asset.
///
/// Gas is a product metric (two transactions per paid access), so an agreement keeps one
/// storage word: who ordered, its state and the end of its access window. The agreement id
/// *is* the keccak256 of its full terms (with this contract, the chain id and a sequence
/// number), so the terms need no storage of their own: they travel in the `Ordered` event
/// and are passed back as calldata to `fulfill` and `refund`, which re-hash them and compare
/// with the id. Nobody can change price, receivers or timing after the order, and nobody
/// pays to store what an event already records. The reentrancy guard is transient (EIP-1153).
contract AgreementManager is Ownable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    enum State {
        None,
        Locked,
        Fulfilled,
        Refunded
    }

    /// Everything both parties agreed to at order time. Hashed into the agreement.
    struct Terms {
        bytes32 did;
        uint256 serviceIndex;
        uint8 serviceType;
        address consumer;
        address token;
        uint256 price;
        /// Part of `price` paid to `feeReceiver`; the rest goes to `receiver` (the owner).
        uint256 fee;
        address receiver;
        address feeReceiver;
        uint64 orderedAt;
        /// After this time the consumer may refund if the provider has not fulfilled.
        uint64 refundAfter;
        /// Length of the access window that starts at fulfilment.
        uint64 accessDuration;
        /// Order sequence number, so identical terms in one block still get distinct ids.
        uint64 seq;
    }

    /// One storage word: who ordered, where the agreement stands and until when access lasts.
    struct Agreement {
        address consumer;
        State state;
        uint64 accessEnd;
    }

    AssetRegistry public immutable registry;
    /// Marketplace fee in basis points, taken out of the price at order time.
    uint16 public feeBps;
    address public feeReceiver;
    uint256 public nonce;

    uint16 public constant MAX_FEE_BPS = 1000;

    mapping(bytes32 => Agreement) private agreements;
    /// keccak256(consumer, did, serviceIndex) => end of the latest access window.
    mapping(bytes32 => uint64) private entitlements;

    /// A federated training job: the consumer who runs it, the key its coordinator signs
    /// with, the agreements it trains under, and once it ends, the model it produced.
    /// Providers check the coordinator's key here before they answer it, so a consumer's
    /// wallet key never has to sit on the machine that coordinates; and they admit to a
    /// round only the providers of the job's agreements, so a coordinator cannot fill a
    /// round with identities of its own.
    struct TrainingJob {
        address consumer;
        address coordinator;
        bytes32 modelDid;
        bytes32 modelHash;
        bytes32[] agreementIds;
    }

    mapping(bytes32 => TrainingJob) private trainingJobs;
    /// agreementId => the training job it was committed to (at most one).
    mapping(bytes32 => bytes32) private jobOfAgreement;

    event Ordered(bytes32 indexed agreementId, bytes32 indexed did, address indexed consumer, Terms terms);
    event Fulfilled(
        bytes32 indexed agreementId, bytes32 indexed did, address indexed provider, uint64 accessStart, uint64 accessEnd
    );
    event Refunded(bytes32 indexed agreementId, bytes32 indexed did, address indexed consumer, uint256 amount);
    event FeeChanged(uint16 feeBps, address feeReceiver);
    event TrainingOpened(
        bytes32 indexed jobId, address indexed consumer, address coordinator, string endpoint, bytes32[] agreementIds
    );
    event ModelPublished(bytes32 indexed jobId, bytes32 indexed modelDid, bytes32 modelHash);

    error UnknownAgreement(bytes32 agreementId);
    error WrongState(bytes32 agreementId, State state);
    error TermsMismatch(bytes32 agreementId);
        error NotProvider(bytes32 did, address caller);
    error NotConsumer(bytes32 agreementId, address caller);
    error WrongPayment(uint256 expected, uint256 sent);
    error RefundTooEarly(bytes32 agreementId, uint64 refundAfter);
    error FulfillTooLate(bytes32 agreementId, uint64 refundAfter);
    error FeeTooHigh(uint16 feeBps);
    error TransferFailed();
    error JobExists(bytes32 jobId);
    error UnknownJob(bytes32 jobId);
    error NotJobConsumer(bytes32 jobId, address caller);
    error AgreementInJob(bytes32 agreementId, bytes32 jobId);
    error NoCoordinator();
    error ModelPublishedAlready(bytes32 jobId);

    constructor(AssetRegistry registry_, uint16 feeBps_, address feeReceiver_) Ownable(msg.sender) {
        registry = registry_;
        _setFee(feeBps_, feeReceiver_);
    }

    function setFee(uint16 feeBps_, address feeReceiver_) external onlyOwner {
        _setFee(feeBps_, feeReceiver_);
    }

    function _setFee(uint16 feeBps_, address feeReceiver_) internal {
        if (feeBps_ > MAX_FEE_BPS) revert FeeTooHigh(feeBps_);
        feeBps = feeBps_;
        feeReceiver = feeReceiver_;
        emit FeeChanged(feeBps_, feeReceiver_);
    }

    /// Creates the agreement and locks the payment in escrow, in one transaction. A price of
    /// zero is a free order: it still creates an agreement, which is what grants access.
    function order(bytes32 did, uint256 serviceIndex) external payable nonReentrant returns (bytes32 agreementId) {
        (address owner, AssetRegistry.Service memory s) = registry.getService(did, serviceIndex);
        uint256 fee = feeReceiver == address(0) ? 0 : (s.price * feeBps) / 10_000;
        Terms memory t = Terms({
            did: did,
            serviceIndex: serviceIndex,
            serviceType: s.serviceType,
            consumer: msg.sender,
            token: s.token,
            price: s.price,
            fee: fee,
            receiver: owner,
            feeReceiver: fee == 0 ? address(0) : feeReceiver,
            orderedAt: uint64(block.timestamp),
            refundAfter: uint64(block.timestamp) + s.fulfillTimeout,
            accessDuration: s.accessDuration,
            seq: uint64(nonce++)
        });
        agreementId = agreementIdOf(t);
        agreements[agreementId] = Agreement({consumer: msg.sender, state: State.Locked, accessEnd: 0});

        if (s.token == address(0)) {
            if (msg.value != s.price) revert WrongPayment(s.price, msg.value);
        } else {
            if (msg.value != 0) revert WrongPayment(0, msg.value);
            if (s.price > 0) IERC20(s.token).safeTransferFrom(msg.sender, address(this), s.price);
        }
        emit Ordered(agreementId, did, msg.sender, t);
    }

    /// Grants access for the agreement's window and releases the escrow to the owner (and
    /// the marketplace fee), in one transaction. Only a provider of the asset may call it,
    /// and only while the payment is locked and the refund deadline has not passed.
    function fulfill(bytes32 agreementId, Terms calldata t) external nonReentrant {
        Agreement storage a = _checked(agreementId, t);
        if (a.state != State.Locked) revert WrongState(agreementId, a.state);
        if (!registry.isProvider(t.did, msg.sender)) revert NotProvider(t.did, msg.sender);
        if (block.timestamp >= t.refundAfter) revert FulfillTooLate(agreementId, t.refundAfter);

        uint64 accessEnd = uint64(block.timestamp) + t.accessDuration;
        a.state = State.Fulfilled;
        a.accessEnd = accessEnd;
        bytes32 key = entitlementKey(t.consumer, t.did, t.serviceIndex);
        if (entitlements[key] < accessEnd) entitlements[key] = accessEnd;

        _pay(t.token, t.receiver, t.price - t.fee);
        _pay(t.token, t.feeReceiver, t.fee);
        emit Fulfilled(agreementId, t.did, msg.sender, uint64(block.timestamp), accessEnd);
    }

    /// Returns the payment to the consumer once the fulfilment deadline has passed unfulfilled.
    function refund(bytes32 agreementId, Terms calldata t) external nonReentrant {
        Agreement storage a = _checked(agreementId, t);
        if (a.state != State.Locked) revert WrongState(agreementId, a.state);
        if (msg.sender != t.consumer) revert NotConsumer(agreementId, msg.sender);
        if (block.timestamp < t.refundAfter) revert RefundTooEarly(agreementId, t.refundAfter);
        a.state = State.Refunded;
        _pay(t.token, t.consumer, t.price);
        emit Refunded(agreementId, t.did, t.consumer, t.price);
    }

    function _checked(bytes32 agreementId, Terms calldata t) internal view returns (Agreement storage a) {
        a = agreements[agreementId];
        if (a.state == State.None) revert UnknownAgreement(agreementId);
        if (agreementIdOf(t) != agreementId) revert TermsMismatch(agreementId);
    }

    /// The id of the agreement with terms `t`: a commitment to every term, bound to this
    /// deployment and chain.
    function agreementIdOf(Terms memory t) public view returns (bytes32) {
        return keccak256(abi.encode(address(this), block.chainid, t));
    }

    function _pay(address token, address to, uint256 amount) internal {
        if (amount == 0) return;
        if (token == address(0)) {
            (bool ok,) = to.call{value: amount}("");
            if (!ok) revert TransferFailed();
        } else {
            IERC20(token).safeTransfer(to, amount);
        }
    }

    function entitlementKey(address consumer, bytes32 did, uint256 serviceIndex) public pure returns (bytes32) {
        return keccak256(abi.encode(consumer, did, serviceIndex));
    }

    /// Whether `consumer` holds a fulfilled agreement for this service whose window is open.
    function isEntitled(address consumer, bytes32 did, uint256 serviceIndex) external view returns (bool) {
        return entitlements[entitlementKey(consumer, did, serviceIndex)] > block.timestamp;
    }

    /// Opens a training job over the caller's own `train` agreements and publishes the
    /// coordinator's key and endpoint. Each agreement joins at most one job, so a job's
    /// coordinator cannot be swapped after providers have checked it. The service type is
    /// in the agreement's terms (its `Ordered` event), which providers check off chain.
    function openTraining(
        bytes32 jobId,
        address coordinator,
        string calldata endpoint,
        bytes32[] calldata agreementIds
    ) external {
        if (coordinator == address(0)) revert NoCoordinator();
        if (trainingJobs[jobId].consumer != address(0)) revert JobExists(jobId);
        for (uint256 i = 0; i < agreementIds.length; i++) {
            bytes32 id = agreementIds[i];
            Agreement storage a = agreements[id];
            if (a.state == State.None) revert UnknownAgreement(id);
            if (a.consumer != msg.sender) revert NotConsumer(id, msg.sender);
            if (a.state == State.Refunded) revert WrongState(id, a.state);
            if (jobOfAgreement[id] != bytes32(0)) revert AgreementInJob(id, jobOfAgreement[id]);
            jobOfAgreement[id] = jobId;
        }
        trainingJobs[jobId] = TrainingJob({
            consumer: msg.sender,
            coordinator: coordinator,
            modelDid: 0,
            modelHash: 0,
            agreementIds: agreementIds
        });
        emit TrainingOpened(jobId, msg.sender, coordinator, endpoint, agreementIds);
    }

    /// Records the model a training job produced (an asset the consumer registered), once.
    function publishModel(bytes32 jobId, bytes32 modelDid, bytes32 modelHash) external {
        TrainingJob storage j = trainingJobs[jobId];
        if (j.consumer == address(0)) revert UnknownJob(jobId);
        if (j.consumer != msg.sender) revert NotJobConsumer(jobId, msg.sender);
        if (j.modelHash != bytes32(0)) revert ModelPublishedAlready(jobId);
        j.modelDid = modelDid;
        j.modelHash = modelHash;
        emit ModelPublished(jobId, modelDid, modelHash);
    }

    function getTrainingJob(bytes32 jobId)
        external
        view
        returns (address consumer, address coordinator, bytes32 modelDid, bytes32 modelHash)
    {
        TrainingJob storage j = trainingJobs[jobId];
        return (j.consumer, j.coordinator, j.modelDid, j.modelHash);
    }

    /// The agreements a training job was opened over.
    function trainingAgreements(bytes32 jobId) external view returns (bytes32[] memory) {
        return trainingJobs[jobId].agreementIds;
    }

    function trainingJobOf(bytes32 agreementId) external view returns (bytes32) {
        return jobOfAgreement[agreementId];
    }

    function getAgreement(bytes32 agreementId) external view returns (address consumer, State state, uint64 accessEnd) {
        Agreement storage a = agreements[agreementId];
        return (a.consumer, a.state, a.accessEnd);
    }
}
