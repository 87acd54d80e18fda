//! The seam between the job lifecycle and where jobs run. The WASI sandbox on the
//! provider's own machine is the default; Kubernetes is the other implementation.

use std::path::PathBuf;

use crate::error::Result;
use crate::job::JobId;
use crate::limits::SandboxLimits;

/// What a backend needs to run one job. The inputs are already staged in `data_dir`;
/// the backend leaves the outputs in `out_dir` (uploading them there, for remote
/// backends) before it reports success.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub id: JobId,
    /// The WASI module's bytes. Every backend runs modules: the Kubernetes backend runs
    /// them in the same sandbox, inside a container.
    pub module: std::sync::Arc<[u8]>,
    /// `sha256:<hex>` of `module`.
    pub algorithm: String,
    pub args: Vec<String>,
    pub data_dir: PathBuf,
    pub out_dir: PathBuf,
    pub limits: SandboxLimits,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    Succeeded,
    /// Why, in words for the consumer.
    Failed(String),
    Cancelled,
}

/// Where jobs run. Implementations must be safe to call from many tasks at once.
#[async_trait::async_trait]
pub trait ComputeBackend: Send + Sync + std::fmt::Debug {
    /// A short name recorded with each job (`wasm`, `kubernetes`).
    fn name(&self) -> &'static str;
    /// Starts a run and returns once it is under way.
    async fn start(&self, spec: RunSpec) -> Result<()>;
    /// Waits for the run to end.
    async fn wait(&self, id: JobId) -> Result<RunOutcome>;
    /// The run's log so far, bounded by its limits.
    async fn logs(&self, id: JobId) -> Result<Vec<u8>>;
    /// Asks the run to stop; `wait` then reports `Cancelled`.
    async fn cancel(&self, id: JobId) -> Result<()>;
    /// Releases what the run holds. Idempotent.
    async fn cleanup(&self, id: JobId) -> Result<()>;
    /// Runs this backend still has (after a provider restart, remote backends may).
    async fn active(&self) -> Result<Vec<JobId>>;
}
