//! The one error type of `insitu-compute`. Every variant carries what a consumer or an
//! operator needs to act, and none carries a storage location or a secret.

/// Why a compute operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The request is malformed (bad DID, oversized module, too many arguments…).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The policy or the provider's allow-list refused.
    #[error("refused: {0}")]
    Denied(String),
    /// No such job for this caller (unknown ids and other consumers' jobs look alike).
    #[error("no such job: {0}")]
    NotFound(String),
    /// The job exists but cannot do this now (a result before the job succeeded…).
    #[error("{0}")]
    Conflict(String),
    /// The job store or a backend could not answer; try again later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or an environment fault on the provider's side.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = ComputeError> = std::result::Result<T, E>;

/// Wraps a database error with what was being done.
pub(crate) fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> ComputeError {
    move |e| ComputeError::Unavailable(format!("{action}: {e}"))
}

impl From<ComputeError> for tonic::Status {
    fn from(e: ComputeError) -> Self {
        match e {
            ComputeError::Invalid(m) => tonic::Status::invalid_argument(m),
            ComputeError::Denied(m) => tonic::Status::permission_denied(m),
            ComputeError::NotFound(m) => tonic::Status::not_found(format!("no such job: {m}")),
            ComputeError::Conflict(m) => tonic::Status::failed_precondition(m),
            ComputeError::Unavailable(m) => tonic::Status::unavailable(m),
            ComputeError::Internal(m) => {
                tracing::error!(error = %m, "compute internal error");
                tonic::Status::internal("internal error (logged by the provider)")
            }
        }
    }
}
