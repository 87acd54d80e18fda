//! Domain types the rest of insitu uses instead of the generated binding structs, so that
//! a change of contract layout stays inside this crate.

use std::fmt;

use alloy::primitives::{Address, B256, U256};
use serde::{Deserialize, Serialize};

use crate::bindings::{AgreementManager, AssetRegistry};
use crate::did::{AgreementId, Did};
use crate::error::LedgerError;

/// What a service sells. The numbers are the contract's `SERVICE_*` constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    /// Stream the asset's rows.
    Download,
    /// Run policy-constrained SQL where the data lives.
    Query,
    /// Run an algorithm where the data lives.
    Compute,
    /// Take part in a federated training job.
    Train,
}

impl ServiceType {
    pub fn code(self) -> u8 {
        match self {
            ServiceType::Download => 0,
            ServiceType::Query => 1,
            ServiceType::Compute => 2,
            ServiceType::Train => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(ServiceType::Download),
            1 => Some(ServiceType::Query),
            2 => Some(ServiceType::Compute),
            3 => Some(ServiceType::Train),
            _ => None,
        }
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceType::Download => "download",
            ServiceType::Query => "query",
            ServiceType::Compute => "compute",
            ServiceType::Train => "train",
        })
    }
}

impl std::str::FromStr for ServiceType {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "download" => Ok(ServiceType::Download),
            "query" => Ok(ServiceType::Query),
            "compute" => Ok(ServiceType::Compute),
            "train" => Ok(ServiceType::Train),
            other => Err(LedgerError::Invalid(format!(
                "unknown service type '{other}' (expected download, query, compute or train)"
            ))),
        }
    }
}

/// The priced terms of one service of an asset, as registered on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOffer {
    pub service_type: ServiceType,
    /// ERC-20 used for payment; `None` means the chain's native currency.
    pub token: Option<Address>,
    pub price: U256,
    /// Seconds of access granted at fulfilment.
    pub access_duration: u64,
    /// Seconds the provider has to fulfil before the consumer may refund.
    pub fulfill_timeout: u64,
}

impl ServiceOffer {
    pub(crate) fn to_sol(&self) -> AssetRegistry::Service {
        AssetRegistry::Service {
            serviceType: self.service_type.code(),
            token: self.token.unwrap_or(Address::ZERO),
            price: self.price,
            accessDuration: self.access_duration,
            fulfillTimeout: self.fulfill_timeout,
        }
    }

    pub(crate) fn from_sol(s: &AssetRegistry::Service) -> Result<Self, LedgerError> {
        Ok(ServiceOffer {
            service_type: ServiceType::from_code(s.serviceType).ok_or_else(|| {
                LedgerError::Invalid(format!("unknown service type code {}", s.serviceType))
            })?,
            token: (s.token != Address::ZERO).then_some(s.token),
            price: s.price,
            access_duration: s.accessDuration,
            fulfill_timeout: s.fulfillTimeout,
        })
    }
}

/// What to register for a new asset.
#[derive(Debug, Clone)]
pub struct RegisterAsset {
    /// Any 32 bytes; with the owner it determines the DID.
    pub seed: B256,
    /// keccak256 of the canonical public metadata (DDO).
    pub metadata_hash: B256,
    /// Where the public metadata can be read (the provider's catalog endpoint).
    pub metadata_url: String,
    pub providers: Vec<Address>,
    pub services: Vec<ServiceOffer>,
}

/// An asset as the registry reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetRecord {
    pub did: Did,
    pub owner: Address,
    pub metadata_hash: B256,
    pub metadata_url: String,
    pub providers: Vec<Address>,
    pub services: Vec<ServiceOffer>,
}

impl AssetRecord {
    /// The registry's `getAsset` answer, in domain types.
    pub(crate) fn from_sol(
        did: Did,
        a: AssetRegistry::getAssetReturn,
    ) -> Result<Self, LedgerError> {
        Ok(AssetRecord {
            did,
            owner: a.owner,
            metadata_hash: a.metadataHash,
            metadata_url: a.metadataUrl,
            services: a
                .services
                .iter()
                .map(ServiceOffer::from_sol)
                .collect::<Result<Vec<_>, _>>()?,
            providers: a.providers,
        })
    }
}

/// Where an agreement stands on chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgreementState {
    /// Ordered, payment locked in escrow, not yet fulfilled.
    Locked,
    /// Fulfilled: access granted until `access_end`, payment released.
    Fulfilled,
    /// Refunded to the consumer; can never be fulfilled.
    Refunded,
}

impl AgreementState {
    /// The contract's `State` enum value; `Ok(None)` for `None` (no such agreement).
    pub(crate) fn from_code(id: AgreementId, code: u8) -> Result<Option<Self>, LedgerError> {
        match code {
            0 => Ok(None),
            1 => Ok(Some(AgreementState::Locked)),
            2 => Ok(Some(AgreementState::Fulfilled)),
            3 => Ok(Some(AgreementState::Refunded)),
            other => Err(LedgerError::Invalid(format!(
                "agreement {id} has unknown state {other}"
            ))),
        }
    }
}

impl fmt::Display for AgreementState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AgreementState::Locked => "locked (ordered, payment in escrow)",
            AgreementState::Fulfilled => "fulfilled",
            AgreementState::Refunded => "refunded",
        })
    }
}

/// The terms hashed into an agreement at order time. Nobody can change them afterwards:
/// `fulfill` and `refund` re-hash these and compare with the stored hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgreementTerms {
    pub did: Did,
    pub service_index: u64,
    pub service_type: ServiceType,
    pub consumer: Address,
    pub token: Option<Address>,
    pub price: U256,
    pub fee: U256,
    pub receiver: Address,
    pub fee_receiver: Option<Address>,
    pub ordered_at: u64,
    pub refund_after: u64,
    pub access_duration: u64,
    /// The contract's order sequence number.
    pub seq: u64,
}

impl AgreementTerms {
    pub(crate) fn to_sol(&self) -> AgreementManager::Terms {
        AgreementManager::Terms {
            did: self.did.0,
            serviceIndex: U256::from(self.service_index),
            serviceType: self.service_type.code(),
            consumer: self.consumer,
            token: self.token.unwrap_or(Address::ZERO),
            price: self.price,
            fee: self.fee,
            receiver: self.receiver,
            feeReceiver: self.fee_receiver.unwrap_or(Address::ZERO),
            orderedAt: self.ordered_at,
            refundAfter: self.refund_after,
            accessDuration: self.access_duration,
            seq: self.seq,
        }
    }

    pub(crate) fn from_sol(t: &AgreementManager::Terms) -> Result<Self, LedgerError> {
        Ok(AgreementTerms {
            did: Did(t.did),
            service_index: u64::try_from(t.serviceIndex)
                .map_err(|_| LedgerError::Invalid("service index out of range".into()))?,
            service_type: ServiceType::from_code(t.serviceType).ok_or_else(|| {
                LedgerError::Invalid(format!("unknown service type code {}", t.serviceType))
            })?,
            consumer: t.consumer,
            token: (t.token != Address::ZERO).then_some(t.token),
            price: t.price,
            fee: t.fee,
            receiver: t.receiver,
            fee_receiver: (t.feeReceiver != Address::ZERO).then_some(t.feeReceiver),
            ordered_at: t.orderedAt,
            refund_after: t.refundAfter,
            access_duration: t.accessDuration,
            seq: t.seq,
        })
    }

    /// The id of the agreement with these terms on deployment `contract` of `chain_id`:
    /// keccak256(abi.encode(contract, chainid, terms)), exactly as
    /// `AgreementManager.agreementIdOf` computes it. The id commits to every term.
    pub fn agreement_id(&self, contract: Address, chain_id: u64) -> AgreementId {
        AgreementId(sol_agreement_id(&self.to_sol(), contract, chain_id))
    }
}

pub(crate) fn sol_agreement_id(
    t: &AgreementManager::Terms,
    contract: Address,
    chain_id: u64,
) -> B256 {
    use alloy::sol_types::SolValue;
    alloy::primitives::keccak256((contract, U256::from(chain_id), t.clone()).abi_encode_params())
}

/// An agreement with everything needed to judge it: its on-chain state, its terms (from
/// the `Ordered` event, verified against the stored hash) and how deeply it is confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    pub id: AgreementId,
    pub state: AgreementState,
    /// End of the access window (chain time, seconds); zero until fulfilled.
    pub access_end: u64,
    pub terms: AgreementTerms,
    /// Block that included the order.
    pub ordered_block: u64,
    /// Blocks on top of (and including) the order's block.
    pub confirmations: u64,
}

/// A federated training job as the chain records it: who runs it, the key its
/// coordinator signs with, and the model it published (once it has).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingJob {
    pub id: B256,
    pub consumer: Address,
    pub coordinator: Address,
    /// The model asset and the SHA-256 of its file, once published.
    pub model: Option<(Did, B256)>,
}

/// What a sent transaction cost and where it landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxOutcome {
    pub hash: B256,
    pub gas_used: u64,
    pub block: u64,
}

/// A successful order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderOutcome {
    pub agreement_id: AgreementId,
    /// The ERC-20 approval sent before the order, if one was needed.
    pub approval: Option<TxOutcome>,
    pub tx: TxOutcome,
}

/// Addresses of the deployed insitu contracts on one chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractAddresses {
    pub registry: Address,
    pub agreements: Address,
}

/// A job as `getTrainingJob` returns it; `None` when the consumer is zero (never opened).
pub(crate) fn training_job_from(
    id: B256,
    consumer: Address,
    coordinator: Address,
    model_did: B256,
    model_hash: B256,
) -> Option<TrainingJob> {
    (consumer != Address::ZERO).then(|| TrainingJob {
        id,
        consumer,
        coordinator,
        model: (model_hash != B256::ZERO).then_some((Did(model_did), model_hash)),
    })
}
