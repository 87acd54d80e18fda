//! Jobs: their identity, their states and what the store keeps of each.

use std::fmt;
use std::str::FromStr;

use alloy::primitives::Address;
use insitu_ledger::{AgreementId, Did};
use serde::{Deserialize, Serialize};

use crate::error::ComputeError;

/// A job id: a random UUID, so ids reveal nothing about other consumers' jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub uuid::Uuid);

impl JobId {
    pub fn random() -> Self {
        JobId(uuid::Uuid::new_v4())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for JobId {
    type Err = ComputeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s.trim())
            .map(JobId)
            .map_err(|_| ComputeError::Invalid(format!("'{s}' is not a job id (a UUID)")))
    }
}

/// Where a job is in its life. Every transition is recorded in the job store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted, waiting for a sandbox.
    Queued,
    /// Inputs are being staged.
    Staging,
    /// The algorithm runs.
    Running,
    /// The outputs are being registered as the consumer's assets.
    Publishing,
    /// Done; the result assets are published.
    Succeeded,
    /// Ended with an error (the algorithm's, a limit, or the provider's).
    Failed,
    /// Cancelled by the consumer.
    Cancelled,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Staging => "staging",
            JobState::Running => "running",
            JobState::Publishing => "publishing",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = ComputeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => JobState::Queued,
            "staging" => JobState::Staging,
            "running" => JobState::Running,
            "publishing" => JobState::Publishing,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            other => return Err(ComputeError::Internal(format!("unknown job state {other}"))),
        })
    }
}

/// A job as the store keeps it and as its consumer sees it (`status`). Holds no
/// storage location: the input is named by DID, the outputs by their new DIDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub consumer: Address,
    pub did: Did,
    pub agreement: AgreementId,
    /// `sha256:<hex>` of the module.
    pub algorithm: String,
    pub args: Vec<String>,
    pub backend: String,
    pub state: JobState,
    /// Why the job failed, in words meant for the consumer.
    pub error: Option<String>,
    /// The assets published from the job's outputs, owned by the consumer.
    pub results: Vec<Did>,
    /// Unix milliseconds.
    pub created_at: u64,
    pub updated_at: u64,
    /// Bytes of log kept so far.
    pub log_bytes: u64,
}

/// One recorded transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    pub state: JobState,
    pub at: u64,
    pub detail: Option<String>,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_know_their_end() {
        for s in [
            JobState::Queued,
            JobState::Staging,
            JobState::Running,
            JobState::Publishing,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<JobState>().expect("parse"), s);
        }
        assert!(JobState::Cancelled.is_terminal());
        assert!(!JobState::Publishing.is_terminal());
        assert!("nope".parse::<JobId>().is_err());
    }
}
