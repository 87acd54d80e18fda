//! Errors of the flight server, and the one place they become `tonic::Status`.

use insitu_policy::DenyReason;
use tonic::Status;

/// Everything a Flight call can fail with. Messages are safe to show to the client: they
/// name assets and agreements, never storage URLs or internal paths.
#[derive(Debug, thiserror::Error)]
pub enum FlightError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Denied(DenyReason),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The provider (or the chain behind it) cannot answer now; retry later.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request (as a client sees it).
    #[error("refused by the provider: {0}")]
    Refused(String),
    #[error("invalid ticket: {0}")]
    InvalidTicket(String),
    #[error("asset {0} is not served by this provider")]
    UnknownAsset(String),
    /// A storage or decoding failure. The detail is logged, not sent.
    #[error("reading asset {did} failed")]
    Storage { did: String, detail: String },
    /// A per-query resource limit (memory, rows) was reached.
    #[error("limit reached: {0}")]
    Limit(String),
    #[error("{0}")]
    TimedOut(String),
    #[error("{0}")]
    Cancelled(String),
    #[error("internal error")]
    Internal(String),
}

/// Result alias for this crate.
pub type Result<T, E = FlightError> = std::result::Result<T, E>;

impl From<FlightError> for Status {
    fn from(e: FlightError) -> Status {
        match &e {
            FlightError::Unauthenticated(m) => Status::unauthenticated(m.clone()),
            FlightError::Denied(r) if r.is_unavailable() => Status::unavailable(r.to_string()),
            FlightError::Denied(r) => Status::permission_denied(r.to_string()),
            FlightError::InvalidRequest(_) => Status::invalid_argument(e.to_string()),
            FlightError::Refused(m) => Status::permission_denied(m.clone()),
            FlightError::Unavailable(m) => Status::unavailable(m.clone()),
            FlightError::InvalidTicket(_) => Status::permission_denied(e.to_string()),
            FlightError::UnknownAsset(_) => Status::not_found(e.to_string()),
            FlightError::Limit(_) => Status::resource_exhausted(e.to_string()),
            FlightError::TimedOut(m) => Status::deadline_exceeded(m.clone()),
            FlightError::Cancelled(m) => Status::cancelled(m.clone()),
            FlightError::Storage { did, detail } => {
                tracing::error!(%did, %detail, "storage failure");
                Status::internal(e.to_string())
            }
            FlightError::Internal(detail) => {
                tracing::error!(%detail, "internal failure");
                Status::internal("internal error")
            }
        }
    }
}
