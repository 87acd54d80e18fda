//! The compute service as Flight `DoAction`s, mounted on the provider's one Flight
//! service. Requests and answers are JSON; `logs` answers raw bytes.
//!
//! Every action needs a token signed for scope [`COMPUTE_SCOPE`] (so a download or
//! query token cannot start jobs), and every action checks the caller again: submit
//! through the policy engine, the others by job ownership.

use arrow_flight::Action;
use insitu_policy::Principal;
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::job::JobId;
use crate::service::{ComputeService, SubmitRequest};

/// The token scope compute actions need.
pub const COMPUTE_SCOPE: &str = "compute";
pub const SUBMIT: &str = "insitu.compute.submit";
pub const STATUS: &str = "insitu.compute.status";
pub const LOGS: &str = "insitu.compute.logs";
pub const CANCEL: &str = "insitu.compute.cancel";
pub const RESULT: &str = "insitu.compute.result";

/// The body of every action but `submit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    pub job: JobId,
}

/// Serves [`ComputeService`] over Flight.
#[derive(Debug, Clone)]
pub struct ComputeActions {
    service: ComputeService,
}

impl ComputeActions {
    pub fn new(service: ComputeService) -> Self {
        ComputeActions { service }
    }
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, Status> {
    serde_json::from_slice(body).map_err(|e| Status::invalid_argument(format!("bad {what}: {e}")))
}

#[tonic::async_trait]
impl insitu_flight::ActionHandler for ComputeActions {
    fn actions(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                SUBMIT,
                "Runs an algorithm on an asset under a compute agreement (JSON in, job out; scope `compute`).",
            ),
            (STATUS, "A compute job's state and history."),
            (LOGS, "A compute job's stdout and stderr (bounded)."),
            (CANCEL, "Cancels a compute job."),
            (
                RESULT,
                "The assets a finished compute job published for you.",
            ),
        ]
    }

    fn max_request_bytes(&self) -> usize {
        // Base64 of the largest module, plus the JSON around it.
        self.service.max_module_bytes() / 3 * 4 + (64 << 10)
    }

    async fn handle(&self, principal: Principal, action: Action) -> Result<Vec<u8>, Status> {
        if principal.scope != COMPUTE_SCOPE {
            return Err(Status::permission_denied(format!(
                "compute needs a token signed for scope `{COMPUTE_SCOPE}` (`insitu compute` signs one)"
            )));
        }
        let body = action.body.as_ref();
        match action.r#type.as_str() {
            SUBMIT => {
                let req: SubmitRequest = parse(body, "submission")?;
                json(&self.service.submit(&principal, req).await?)
            }
            STATUS => {
                let r: JobRef = parse(body, "job reference")?;
                json(&self.service.status(&principal, r.job).await?)
            }
            LOGS => {
                let r: JobRef = parse(body, "job reference")?;
                Ok(self.service.logs(&principal, r.job).await?)
            }
            CANCEL => {
                let r: JobRef = parse(body, "job reference")?;
                json(&self.service.cancel(&principal, r.job).await?)
            }
            RESULT => {
                let r: JobRef = parse(body, "job reference")?;
                json(&self.service.result(&principal, r.job).await?)
            }
            other => Err(Status::unimplemented(format!(
                "unknown compute action {other}"
            ))),
        }
    }
}
