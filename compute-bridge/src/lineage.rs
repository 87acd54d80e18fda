//! Compute jobs as OpenLineage runs: START when the algorithm starts, then COMPLETE
//! with the result assets as outputs, FAIL with the job's error, or ABORT when the
//! consumer cancels. Input and outputs are named by physical location, with their DIDs
//! as symlinks, like every other insitu dataset. Events go into the catalog database's
//! outbox, addressed to every receiver; delivery happens elsewhere.
//!
//! A provider's part in a federated training job is a run too ([`TrainingRun`]): the
//! training service drives it, since a training session is not a compute job.

use alloy::primitives::{Address, B256};
use insitu_catalog::lineage::{
    Dataset, DatasetFacets, EVERY_RECEIVER, InsituAgreementRunFacet, Outbox, RunEvent,
    RunLifecycle, SymlinksDatasetFacet, gated_name_of, physical_name,
};
use insitu_ledger::{AgreementId, Did};

use crate::job::{JobId, now_ms};

/// A dataset named by its location, with its DID as a symlink.
pub(crate) fn dataset(location_url: &str, chain_id: u64, did: Did) -> Dataset {
    let (namespace, name) = physical_name(location_url);
    Dataset {
        namespace,
        name,
        facets: DatasetFacets {
            symlinks: Some(SymlinksDatasetFacet::new(vec![gated_name_of(
                chain_id, did,
            )])),
            ..DatasetFacets::default()
        },
    }
}

/// Where a provider's compute runs are recorded.
#[derive(Debug, Clone)]
pub(crate) struct ComputeLineage {
    pub(crate) outbox: Outbox,
    pub(crate) provider: Address,
    pub(crate) chain_id: u64,
    pub(crate) contract: Address,
}

impl ComputeLineage {
    pub(crate) fn run(
        &self,
        job: JobId,
        algorithm: &str,
        input: Dataset,
        agreement: AgreementId,
        consumer: Address,
    ) -> RunLifecycle {
        RunLifecycle::compute(
            format!("insitu://provider/{:#x}", self.provider),
            job.0,
            algorithm,
            vec![input],
            Some(InsituAgreementRunFacet::new(
                self.chain_id,
                format!("{:#x}", self.contract),
                agreement.to_string(),
                None,
                format!("{consumer:#x}"),
            )),
        )
    }

    /// Records an event. A failure is logged, never fatal to the job: lineage is
    /// "later", not "no".
    pub(crate) async fn record(&self, event: RunEvent) {
        if let Err(e) = self
            .outbox
            .enqueue(&event, &[EVERY_RECEIVER.to_string()], now_ms())
            .await
        {
            tracing::error!(error = %e, "could not record a compute lineage event");
        }
    }
}

/// This provider's part in one federated training job, as an OpenLineage run: START
/// once it has joined and staged its shard, then COMPLETE with what left it (one masked
/// update a round, and their bytes), ABORT when the coordinator leaves early, or FAIL.
#[derive(Debug, Clone)]
pub struct TrainingRun {
    lineage: ComputeLineage,
    run: RunLifecycle,
}

impl TrainingRun {
    pub(crate) fn new(
        lineage: &ComputeLineage,
        job: B256,
        algorithm: &str,
        input: Dataset,
        agreement: AgreementId,
        consumer: Address,
    ) -> Self {
        let run = RunLifecycle::training(
            format!("insitu://provider/{:#x}", lineage.provider),
            job.0,
            lineage.provider.0.0,
            algorithm,
            vec![input],
            Some(InsituAgreementRunFacet::new(
                lineage.chain_id,
                format!("{:#x}", lineage.contract),
                agreement.to_string(),
                None,
                format!("{consumer:#x}"),
            )),
        );
        TrainingRun {
            lineage: lineage.clone(),
            run,
        }
    }

    /// The run's id, the same for this provider and job across restarts.
    pub fn run_id(&self) -> uuid::Uuid {
        self.run.run_id()
    }

    pub async fn started(&self) {
        self.lineage.record(self.run.start()).await;
    }

    /// The job finished; `updates` updates of `bytes` bytes in all left this provider.
    pub async fn completed(&self, updates: u64, bytes: u64) {
        self.lineage.record(self.run.complete(updates, bytes)).await;
    }

    /// The coordinator left before the job finished.
    pub async fn abandoned(&self, updates: u64, bytes: u64) {
        self.lineage.record(self.run.abort(updates, bytes)).await;
    }

    /// The session failed here; `message` is what the coordinator was told.
    pub async fn failed(&self, message: &str) {
        self.lineage.record(self.run.fail(message)).await;
    }
}
