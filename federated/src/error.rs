//! The one error type of `insitu-federated`.

/// Why a federated operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FederatedError {
    /// Malformed input: bad settings, a vector of the wrong length…
    #[error("invalid: {0}")]
    Invalid(String),
    /// A participant's message failed a check (signature, roster, consistency). The
    /// message names the participant.
    #[error("refused: {0}")]
    Refused(String),
    /// Too few participants are left to continue safely; the round is aborted.
    #[error("aborted: {0}")]
    Aborted(String),
    /// A message arrived in the wrong phase.
    #[error("out of phase: {0}")]
    Phase(String),
    /// A peer, the chain or the compute bridge could not be reached or did not answer.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = FederatedError> = std::result::Result<T, E>;
