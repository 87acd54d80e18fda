//! Runs for other insitu services on this provider (federated training): the same
//! allow-list, staging, sandbox, limits and concurrency slots as a compute job, without
//! a job record or published results. The caller owns the directories and reads the
//! outputs itself; what leaves the provider is the caller's concern (secure aggregation,
//! for training).

use std::path::Path;
use std::sync::Arc;

use alloy::primitives::{Address, B256};
use insitu_ledger::{AgreementId, Did};

use crate::algorithm::{SignedApproval, algorithm_hash};
use crate::backend::{RunOutcome, RunSpec};
use crate::error::{ComputeError, Result};
use crate::job::JobId;
use crate::lineage::TrainingRun;
use crate::service::ComputeService;
use crate::staging::Manifest;

/// How one local run ended, with its log.
#[derive(Debug, Clone)]
pub struct LocalRun {
    pub outcome: RunOutcome,
    pub logs: Vec<u8>,
}

impl ComputeService {
    /// Checks a module against this provider's allow-list and size limit, as `submit`
    /// does. Returns its `sha256:` hash.
    pub fn check_module(&self, module: &[u8], approval: Option<&SignedApproval>) -> Result<String> {
        let inner = &self.inner;
        if module.is_empty() || module.len() > inner.max_module_bytes {
            return Err(ComputeError::Invalid(format!(
                "the module is {} bytes; 1 to {} are accepted",
                module.len(),
                inner.max_module_bytes
            )));
        }
        let (code_hash, shown) = algorithm_hash(module);
        inner.allow.check(
            code_hash,
            approval,
            &inner.domain,
            crate::job::now_ms() / 1000,
        )?;
        Ok(shown)
    }

    /// Stages an asset this provider serves into `dir` (Arrow IPC plus the manifest), as
    /// a compute job's input is staged. The asset's location never leaves this process.
    pub async fn stage_asset(&self, did: Did, args: &[String], dir: &Path) -> Result<Manifest> {
        let inner = &self.inner;
        let asset = inner
            .catalog
            .get(did)
            .await
            .map_err(|e| ComputeError::Unavailable(format!("reading the catalog: {e}")))?
            .filter(|a| a.registered)
            .ok_or_else(|| ComputeError::Denied(format!("{did} is not served here")))?;
        let location = self.location_of(did).await?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| ComputeError::Internal(format!("creating the staging directory: {e}")))?;
        crate::staging::stage(
            JobId::random(),
            &asset.ddo,
            &location,
            &inner.storage,
            args,
            dir,
        )
        .await
    }

    /// The lineage run of this provider's part in training job `job` over `did` under
    /// `agreement` for `consumer`, or `None` when lineage is off. The input is named by
    /// the asset's location, like a compute job's; the location stays in the event
    /// outbox, as it does for every run this provider records.
    pub async fn training_run(
        &self,
        job: B256,
        did: Did,
        agreement: AgreementId,
        consumer: Address,
        algorithm: &str,
    ) -> Result<Option<TrainingRun>> {
        let inner = &self.inner;
        let Some(lineage) = &inner.lineage else {
            return Ok(None);
        };
        let location = self.location_of(did).await?;
        let input = crate::lineage::dataset(&location.url, inner.ledger.chain_id(), did);
        Ok(Some(TrainingRun::new(
            lineage, job, algorithm, input, agreement, consumer,
        )))
    }

    /// Where `did` is stored, if this provider serves it. Never leaves this process.
    async fn location_of(&self, did: Did) -> Result<insitu_catalog::StorageLocation> {
        self.inner
            .catalog
            .location(did)
            .await
            .map_err(|e| ComputeError::Unavailable(format!("reading the catalog: {e}")))?
            .ok_or_else(|| ComputeError::Denied(format!("{did} is not served here")))
    }

    /// Runs `module` once on `data_dir` through this provider's backend, under its limits
    /// and in one of its slots, leaving the outputs in `out_dir`.
    pub async fn run_module(
        &self,
        module: Arc<[u8]>,
        args: Vec<String>,
        data_dir: &Path,
        out_dir: &Path,
    ) -> Result<LocalRun> {
        let inner = &self.inner;
        let _permit = inner
            .slots
            .acquire()
            .await
            .map_err(|_| ComputeError::Unavailable("the compute service is stopping".into()))?;
        let id = JobId::random();
        let (_, algorithm) = algorithm_hash(&module);
        inner
            .backend
            .start(RunSpec {
                id,
                module,
                algorithm,
                args,
                data_dir: data_dir.to_path_buf(),
                out_dir: out_dir.to_path_buf(),
                limits: inner.limits.clone(),
            })
            .await?;
        let outcome = inner.backend.wait(id).await;
        let logs = inner.backend.logs(id).await.unwrap_or_default();
        if let Err(e) = inner.backend.cleanup(id).await {
            tracing::warn!(run = %id, error = %e, "backend cleanup failed");
        }
        Ok(LocalRun {
            outcome: outcome?,
            logs,
        })
    }
}
