//! # insitu-compute
//!
//! Compute to the data. A consumer with a `compute` agreement sends an algorithm; it
//! runs where the data is, in an ephemeral sandbox, and its output becomes a new asset
//! the consumer owns. The data itself never leaves.
//!
//! Layout: `job` (ids, states, records), `store` (every transition, in sqlx),
//! `algorithm` (content hashes and the allow-list), `limits`, `backend` (the
//! `ComputeBackend` seam), `wasm/` (the default WASI sandbox), `kubernetes/` (Jobs or Argo Workflows on the
//! provider's cluster, for heavier runs), `staging` (inputs as
//! Arrow IPC plus `manifest.json`), `service` (the lifecycle: submit, run, publish,
//! recover), `actions` (the Flight `DoAction`s), `client` (their caller).

pub mod actions;
mod algorithm;
mod backend;
mod client;
mod error;
mod job;
pub mod kubernetes;
mod limits;
mod lineage;
mod service;
pub mod staging;
mod store;
pub mod wasm;

pub use actions::{COMPUTE_SCOPE, ComputeActions};
pub use algorithm::{
    AlgorithmApproval, AllowList, SignedApproval, algorithm_hash, approve, parse_hash,
};
pub use backend::{ComputeBackend, RunOutcome, RunSpec};
pub use client::ComputeClient;
pub use error::{ComputeError, Result};
pub use job::{JobEvent, JobId, JobRecord, JobState};
pub use limits::SandboxLimits;
pub use lineage::TrainingRun;
pub use service::{
    ComputeService, ComputeServiceBuilder, JobStatus, LocalRun, ResultAsset, SubmitRequest,
};
pub use store::{JobStore, NewJob};
pub use wasm::{RunTimings, WasmBackend};
