/// Errors of the policy crate. Authorization outcomes are not errors: they are
/// [`crate::Decision`]s. These are failures to even judge a request.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The bearer token is missing, malformed, forged, expired or addressed elsewhere.
    #[error("invalid access token: {0}")]
    InvalidToken(String),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("audit log: {0}")]
    Audit(String),
    /// Provider rules that do not parse, validate or load.
    #[error("provider rules: {0}")]
    Rules(String),
    /// The privacy budget store failed.
    #[error("privacy budget: {0}")]
    Budget(String),
}

/// Result alias for this crate.
pub type Result<T, E = PolicyError> = std::result::Result<T, E>;
