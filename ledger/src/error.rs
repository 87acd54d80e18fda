use crate::did::{AgreementId, Did};

/// Everything that can go wrong talking to the chain. Messages name the asset, agreement
/// or account involved and never contain RPC URLs (they often embed API keys).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The RPC endpoint could not be reached or answered garbage. Callers must fail closed.
    #[error("chain RPC unavailable ({endpoint}) while {action}: {reason}")]
    Unavailable {
        endpoint: String,
        action: String,
        reason: String,
    },
    /// The chain executed the call and refused it.
    #[error("{action} was refused by the contract: {reason}")]
    Reverted { action: String, reason: String },
    #[error("malformed DID '{input}': expected did:insitu:0x followed by 64 hex digits")]
    MalformedDid { input: String },
    #[error("malformed agreement id '{input}': expected 0x followed by 64 hex digits")]
    MalformedAgreementId { input: String },
    #[error("asset {0} is not registered on this chain")]
    UnknownAsset(Did),
    #[error("agreement {0} does not exist on this chain")]
    UnknownAgreement(AgreementId),
    #[error("asset {did} has no service with index {index}")]
    UnknownService { did: Did, index: u64 },
    #[error("the chain reports id {actual}, but the configuration expects {expected}")]
    WrongChain { expected: u64, actual: u64 },
    #[error("key error: {0}")]
    Key(String),
    #[error("invalid input: {0}")]
    Invalid(String),
}

/// Result alias for this crate.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;
