//! The consumer side of the compute actions: what `insitu compute` and embedders call.

use futures::TryStreamExt;
use serde::de::DeserializeOwned;

use crate::actions::{CANCEL, JobRef, LOGS, RESULT, STATUS, SUBMIT};
use crate::error::{ComputeError, Result};
use crate::job::{JobId, JobRecord};
use crate::service::{JobStatus, ResultAsset, SubmitRequest};

/// A connected client holding a token signed for scope `compute`.
#[derive(Debug)]
pub struct ComputeClient {
    inner: arrow_flight::FlightClient,
}

fn remote(e: insitu_flight::FlightError) -> ComputeError {
    ComputeError::Unavailable(e.to_string())
}

/// The provider's answer, back in the variant it was sent as.
fn from_status(e: arrow_flight::error::FlightError) -> ComputeError {
    let arrow_flight::error::FlightError::Tonic(status) = e else {
        return ComputeError::Unavailable(e.to_string());
    };
    let m = status.message().to_string();
    match status.code() {
        tonic::Code::InvalidArgument => {
            ComputeError::Invalid(m.trim_start_matches("invalid request: ").to_string())
        }
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
            ComputeError::Denied(m.trim_start_matches("refused: ").to_string())
        }
        tonic::Code::NotFound => {
            ComputeError::NotFound(m.trim_start_matches("no such job: ").to_string())
        }
        tonic::Code::FailedPrecondition => ComputeError::Conflict(m),
        _ => ComputeError::Unavailable(m),
    }
}

impl ComputeClient {
    /// Connects to `endpoint`; `ca_pem` is trusted for `https://` endpoints.
    pub async fn connect(endpoint: &str, token: &str, ca_pem: Option<Vec<u8>>) -> Result<Self> {
        Ok(ComputeClient {
            inner: insitu_flight::client::authenticated(endpoint, token, ca_pem)
                .await
                .map_err(remote)?,
        })
    }

    async fn call(&mut self, kind: &'static str, body: Vec<u8>) -> Result<Vec<u8>> {
        let mut results = self
            .inner
            .do_action(arrow_flight::Action::new(kind, body))
            .await
            .map_err(from_status)?;
        let first = results
            .try_next()
            .await
            .map_err(from_status)?
            .ok_or_else(|| ComputeError::Unavailable("the provider sent no answer".into()))?;
        Ok(first.to_vec())
    }

    async fn call_json<T: DeserializeOwned>(
        &mut self,
        kind: &'static str,
        body: Vec<u8>,
    ) -> Result<T> {
        let bytes = self.call(kind, body).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ComputeError::Unavailable(format!("unreadable answer to {kind}: {e}")))
    }

    fn job_ref(job: JobId) -> Result<Vec<u8>> {
        serde_json::to_vec(&JobRef { job }).map_err(|e| ComputeError::Internal(e.to_string()))
    }

    pub async fn submit(&mut self, req: &SubmitRequest) -> Result<JobRecord> {
        let body = serde_json::to_vec(req).map_err(|e| ComputeError::Internal(e.to_string()))?;
        self.call_json(SUBMIT, body).await
    }

    pub async fn status(&mut self, job: JobId) -> Result<JobStatus> {
        self.call_json(STATUS, Self::job_ref(job)?).await
    }

    pub async fn logs(&mut self, job: JobId) -> Result<Vec<u8>> {
        self.call(LOGS, Self::job_ref(job)?).await
    }

    pub async fn cancel(&mut self, job: JobId) -> Result<JobRecord> {
        self.call_json(CANCEL, Self::job_ref(job)?).await
    }

    pub async fn result(&mut self, job: JobId) -> Result<Vec<ResultAsset>> {
        self.call_json(RESULT, Self::job_ref(job)?).await
    }
}
