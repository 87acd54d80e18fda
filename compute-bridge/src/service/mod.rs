//! The job lifecycle a provider runs: submit (policy, allow-list, store), run (staging,
//! backend, limits), publish (results as the consumer's assets), and recovery after a
//! restart. Every caller-facing operation checks the caller on every call: a job is
//! visible to its consumer only, and another consumer's job id reads as unknown.

mod driver;
mod local;

pub use local::LocalRun;
mod results;

use std::path::PathBuf;
use std::sync::Arc;

use alloy::primitives::Address;
use alloy::sol_types::Eip712Domain;
use insitu_catalog::AssetStore;
use insitu_flight::StorageOptions;
use insitu_ledger::{AgreementId, Did, Ledger};
use insitu_policy::{Action, Decision, PolicyEngine, Principal};
use serde::{Deserialize, Serialize};

use crate::algorithm::{AllowList, SignedApproval, algorithm_hash};
use crate::backend::ComputeBackend;
use crate::error::{ComputeError, Result};
use crate::job::{JobEvent, JobId, JobRecord, JobState};
use crate::limits::SandboxLimits;
use crate::lineage::ComputeLineage;
use crate::store::{JobStore, NewJob};

/// Largest module accepted (a release build of a Rust algorithm is a few MiB).
pub const DEFAULT_MAX_MODULE_BYTES: usize = 16 << 20;
/// Arguments per job, and bytes per argument.
pub const MAX_ARGS: usize = 64;
pub const MAX_ARG_BYTES: usize = 1024;

/// A consumer's submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitRequest {
    pub did: Did,
    pub agreement: AgreementId,
    /// The module's bytes.
    #[serde(with = "base64_bytes")]
    pub algorithm: Vec<u8>,
    #[serde(default)]
    pub args: Vec<String>,
    /// A trusted publisher's approval of the module, if the provider does not list its
    /// hash itself.
    #[serde(default)]
    pub approval: Option<SignedApproval>,
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("algorithm is not base64: {e}")))
    }
}

/// What `status` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    pub job: JobRecord,
    pub events: Vec<JobEvent>,
    /// Log bytes so far (live while the job runs).
    pub log_bytes: u64,
    /// The run's deadline, in milliseconds from its start.
    pub deadline_ms: u64,
}

/// A result asset, as `result` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultAsset {
    pub did: Did,
    pub name: String,
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    /// The free download service the owner orders to read it.
    pub service_index: u64,
}

pub(crate) struct Inner {
    pub(crate) engine: Arc<PolicyEngine>,
    pub(crate) ledger: Arc<dyn Ledger>,
    pub(crate) catalog: AssetStore,
    pub(crate) storage: Arc<StorageOptions>,
    pub(crate) store: JobStore,
    pub(crate) backend: Arc<dyn ComputeBackend>,
    pub(crate) allow: AllowList,
    pub(crate) domain: Eip712Domain,
    pub(crate) limits: SandboxLimits,
    pub(crate) work_dir: PathBuf,
    pub(crate) max_module_bytes: usize,
    pub(crate) slots: tokio::sync::Semaphore,
    pub(crate) lineage: Option<ComputeLineage>,
    pub(crate) metadata_url: String,
    pub(crate) result_access_secs: u64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputeService")
            .field("backend", &self.backend.name())
            .field("limits", &self.limits)
            .finish()
    }
}

/// The compute service of one provider. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ComputeService {
    pub(crate) inner: Arc<Inner>,
}

/// Builder for [`ComputeService`].
#[derive(Debug)]
pub struct ComputeServiceBuilder {
    engine: Arc<PolicyEngine>,
    catalog: AssetStore,
    store: JobStore,
    backend: Arc<dyn ComputeBackend>,
    work_dir: PathBuf,
    allow: AllowList,
    limits: SandboxLimits,
    storage: StorageOptions,
    max_module_bytes: usize,
    concurrency: usize,
    lineage: bool,
    metadata_url: String,
    result_access_secs: u64,
}

impl ComputeServiceBuilder {
    /// The algorithms this provider runs. Without it, none.
    pub fn with_allow_list(mut self, allow: AllowList) -> Self {
        self.allow = allow;
        self
    }

    pub fn with_limits(mut self, limits: SandboxLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Options for reading input assets from object stores.
    pub fn with_storage_options(mut self, storage: StorageOptions) -> Self {
        self.storage = storage;
        self
    }

    pub fn with_max_module_bytes(mut self, bytes: usize) -> Self {
        self.max_module_bytes = bytes;
        self
    }

    /// Jobs running at once; the rest wait as `queued`.
    pub fn with_concurrency(mut self, jobs: usize) -> Self {
        self.concurrency = jobs.max(1);
        self
    }

    /// Records every job as an OpenLineage run in the catalog's outbox.
    pub fn with_lineage(mut self, on: bool) -> Self {
        self.lineage = on;
        self
    }

    /// Where consumers read result assets' metadata (this provider's endpoint).
    pub fn with_metadata_url(mut self, url: impl Into<String>) -> Self {
        self.metadata_url = url.into();
        self
    }

    /// How long a result's owner may read it after ordering its download service.
    pub fn with_result_access_secs(mut self, secs: u64) -> Self {
        self.result_access_secs = secs.max(1);
        self
    }

    pub fn build(self) -> Result<ComputeService> {
        let ledger = self.engine.ledger().clone();
        let contracts = ledger.contracts();
        let domain = insitu_ledger::eip712::insitu_domain(ledger.chain_id(), contracts.agreements);
        for sub in ["jobs", "algorithms", "results"] {
            std::fs::create_dir_all(self.work_dir.join(sub)).map_err(|e| {
                ComputeError::Internal(format!("creating the compute work directory: {e}"))
            })?;
        }
        let lineage = self.lineage.then(|| ComputeLineage {
            outbox: self.catalog.lineage_outbox(),
            provider: self.engine.provider(),
            chain_id: ledger.chain_id(),
            contract: contracts.agreements,
        });
        if self.allow.is_empty() {
            tracing::warn!("compute is on with an empty allow-list: every algorithm is refused");
        }
        Ok(ComputeService {
            inner: Arc::new(Inner {
                engine: self.engine,
                ledger,
                catalog: self.catalog,
                storage: Arc::new(self.storage),
                store: self.store,
                backend: self.backend,
                allow: self.allow,
                domain,
                limits: self.limits,
                work_dir: self.work_dir,
                max_module_bytes: self.max_module_bytes,
                slots: tokio::sync::Semaphore::new(self.concurrency),
                lineage,
                metadata_url: self.metadata_url,
                result_access_secs: self.result_access_secs,
            }),
        })
    }
}

impl ComputeService {
    /// `work_dir` holds staged inputs, outputs and results; it must be on the provider's
    /// own disk, never shared with consumers.
    pub fn builder(
        engine: Arc<PolicyEngine>,
        catalog: AssetStore,
        store: JobStore,
        backend: Arc<dyn ComputeBackend>,
        work_dir: impl Into<PathBuf>,
    ) -> ComputeServiceBuilder {
        ComputeServiceBuilder {
            engine,
            catalog,
            store,
            backend,
            work_dir: work_dir.into(),
            allow: AllowList::new(),
            limits: SandboxLimits::default(),
            storage: StorageOptions::default(),
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            concurrency: 2,
            lineage: false,
            metadata_url: String::new(),
            result_access_secs: 365 * 24 * 3600,
        }
    }

    /// Accepts a job: checks the request, the allow-list, then the agreement (through
    /// the policy engine, like every other use), records the job and starts it.
    pub async fn submit(&self, principal: &Principal, req: SubmitRequest) -> Result<JobRecord> {
        let inner = &self.inner;
        validate(&req, inner.max_module_bytes)?;
        // The allow-list first: a refused algorithm must not open (and pay out) the
        // agreement, which the first granted use does. Which algorithms a provider runs
        // is no secret; consumers need to know it to write one.
        let (code_hash, shown) = algorithm_hash(&req.algorithm);
        inner.allow.check(
            code_hash,
            req.approval.as_ref(),
            &inner.domain,
            crate::job::now_ms() / 1000,
        )?;
        let grant = match inner
            .engine
            .decide(principal, Action::Compute, req.did, req.agreement)
            .await
        {
            Decision::Allow(g) => g,
            Decision::Deny(reason) if reason.is_unavailable() => {
                return Err(ComputeError::Unavailable(reason.to_string()));
            }
            Decision::Deny(reason) => return Err(ComputeError::Denied(reason.to_string())),
        };
        let asset = inner
            .catalog
            .get(grant.did)
            .await
            .map_err(|e| ComputeError::Unavailable(format!("reading the catalog: {e}")))?
            .filter(|a| a.registered)
            .ok_or_else(|| ComputeError::Denied(format!("{} is not served here", grant.did)))?;
        drop(asset);
        let module_path = inner
            .work_dir
            .join("algorithms")
            .join(format!("{}.wasm", hex::encode(code_hash)));
        if !module_path.exists() {
            let tmp = module_path.with_extension("tmp");
            tokio::fs::write(&tmp, &req.algorithm)
                .await
                .map_err(|e| ComputeError::Internal(format!("storing the module: {e}")))?;
            tokio::fs::rename(&tmp, &module_path)
                .await
                .map_err(|e| ComputeError::Internal(format!("storing the module: {e}")))?;
        }
        let id = JobId::random();
        inner
            .store
            .insert(&NewJob {
                id,
                consumer: principal.consumer,
                did: grant.did,
                agreement: grant.agreement,
                algorithm: shown.clone(),
                args: req.args.clone(),
                backend: inner.backend.name().to_string(),
            })
            .await?;
        tracing::info!(job = %id, consumer = %principal.consumer, did = %grant.did, algorithm = %shown, "compute job accepted");
        let service = self.clone();
        tokio::spawn(async move { service.drive(id).await });
        self.own_job(principal.consumer, id).await
    }

    /// The job, if `consumer` owns it; otherwise "no such job".
    async fn own_job(&self, consumer: Address, id: JobId) -> Result<JobRecord> {
        match self.inner.store.get(id).await? {
            Some(job) if job.consumer == consumer => Ok(job),
            _ => Err(ComputeError::NotFound(id.to_string())),
        }
    }

    /// A job's state, history and live log size.
    pub async fn status(&self, principal: &Principal, id: JobId) -> Result<JobStatus> {
        let job = self.own_job(principal.consumer, id).await?;
        let events = self.inner.store.events(id).await?;
        let log_bytes = if job.state.is_terminal() {
            job.log_bytes
        } else {
            self.inner
                .backend
                .logs(id)
                .await
                .map(|l| l.len() as u64)
                .unwrap_or(0)
        };
        Ok(JobStatus {
            job,
            events,
            log_bytes,
            deadline_ms: self.inner.limits.deadline.as_millis() as u64,
        })
    }

    /// A job's stdout and stderr (bounded by the log limit).
    pub async fn logs(&self, principal: &Principal, id: JobId) -> Result<Vec<u8>> {
        let job = self.own_job(principal.consumer, id).await?;
        if job.state.is_terminal() {
            Ok(self.inner.store.logs(id).await?.unwrap_or_default())
        } else {
            Ok(self.inner.backend.logs(id).await.unwrap_or_default())
        }
    }

    /// Cancels a job that has not ended. Returns its state afterwards.
    pub async fn cancel(&self, principal: &Principal, id: JobId) -> Result<JobRecord> {
        let job = self.own_job(principal.consumer, id).await?;
        let store = &self.inner.store;
        match job.state {
            JobState::Queued | JobState::Staging => {
                // The driver notices at its next transition and cleans up.
                store
                    .finish(id, &[job.state], JobState::Cancelled, None, &[], &[])
                    .await?;
            }
            JobState::Running => self.inner.backend.cancel(id).await?,
            JobState::Publishing => {
                return Err(ComputeError::Conflict(
                    "the job is publishing its results and can no longer be cancelled".into(),
                ));
            }
            ended => {
                return Err(ComputeError::Conflict(format!(
                    "the job already ended ({ended})"
                )));
            }
        }
        self.own_job(principal.consumer, id).await
    }

    /// The result assets of a job that succeeded.
    pub async fn result(&self, principal: &Principal, id: JobId) -> Result<Vec<ResultAsset>> {
        let job = self.own_job(principal.consumer, id).await?;
        match job.state {
            JobState::Succeeded => {}
            JobState::Failed => {
                return Err(ComputeError::Conflict(format!(
                    "the job failed: {}",
                    job.error.unwrap_or_default()
                )));
            }
            other => {
                return Err(ComputeError::Conflict(format!(
                    "the job has no result: it is {other}"
                )));
            }
        }
        let mut out = Vec::with_capacity(job.results.len());
        for did in job.results {
            let asset = self
                .inner
                .catalog
                .get(did)
                .await
                .map_err(|e| ComputeError::Unavailable(format!("reading the catalog: {e}")))?
                .ok_or_else(|| {
                    ComputeError::Internal(format!("result {did} is not in the catalog"))
                })?;
            out.push(ResultAsset {
                did,
                name: asset.ddo.name,
                rows: asset.ddo.row_count,
                bytes: asset.ddo.byte_size,
                service_index: 0,
            });
        }
        Ok(out)
    }

    /// Resumes or ends every job a previous run of this provider left unfinished. Call
    /// once at start, before serving.
    pub async fn recover(&self) -> Result<usize> {
        driver::recover(self).await
    }

    /// The largest module accepted.
    pub fn max_module_bytes(&self) -> usize {
        self.inner.max_module_bytes
    }
}

fn validate(req: &SubmitRequest, max_module: usize) -> Result<()> {
    if req.algorithm.is_empty() {
        return Err(ComputeError::Invalid(
            "the algorithm module is empty".into(),
        ));
    }
    if req.algorithm.len() > max_module {
        return Err(ComputeError::Invalid(format!(
            "the algorithm module is {} bytes; this provider accepts at most {max_module}",
            req.algorithm.len()
        )));
    }
    if req.args.len() > MAX_ARGS {
        return Err(ComputeError::Invalid(format!(
            "{} arguments; at most {MAX_ARGS} are accepted",
            req.args.len()
        )));
    }
    if let Some(a) = req
        .args
        .iter()
        .find(|a| a.len() > MAX_ARG_BYTES || a.contains('\0'))
    {
        return Err(ComputeError::Invalid(format!(
            "an argument is longer than {MAX_ARG_BYTES} bytes or contains NUL ({} bytes)",
            a.len()
        )));
    }
    Ok(())
}
