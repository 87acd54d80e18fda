//! Drives one job from `queued` to its end, and ends what a previous process left.
//!
//! Each step is a conditional transition in the job store. When a transition finds the
//! job elsewhere (the consumer cancelled it meanwhile), the driver stops and cleans up.
//! Whatever happens, the job's working directory (staged input and raw output) is
//! removed at the end: only published results outlive a job.

use std::path::PathBuf;

use insitu_catalog::lineage::RunLifecycle;

use super::ComputeService;
use super::results::PublishedResult;

/// How a run ended, with what it published; `None` when the job was moved elsewhere
/// (cancelled) before its end.
type Ended = Option<(RunOutcome, Vec<PublishedResult>)>;
use crate::backend::{RunOutcome, RunSpec};
use crate::error::{ComputeError, Result};
use crate::job::{JobId, JobRecord, JobState};

impl ComputeService {
    fn job_dir(&self, id: JobId) -> PathBuf {
        self.inner.work_dir.join("jobs").join(id.to_string())
    }

    /// Runs a queued job to its end. Errors are recorded on the job, never lost.
    pub(crate) async fn drive(&self, id: JobId) {
        let Ok(_permit) = self.inner.slots.acquire().await else {
            return;
        };
        let job = match self.inner.store.get(id).await {
            Ok(Some(job)) if job.state == JobState::Queued => job,
            Ok(_) => return,
            Err(e) => {
                tracing::error!(job = %id, error = %e, "cannot read the job to start it");
                return;
            }
        };
        let mut run = None;
        let outcome = self.run_job(&job, &mut run).await;
        let logs = self.inner.backend.logs(id).await.unwrap_or_default();
        self.settle(&job, outcome, logs, run.as_ref()).await;
        self.clean(id).await;
    }

    async fn run_job(&self, job: &JobRecord, run: &mut Option<RunLifecycle>) -> Result<Ended> {
        let inner = &self.inner;
        let store = &inner.store;
        if !store
            .transition(job.id, &[JobState::Queued], JobState::Staging, None)
            .await?
        {
            return Ok(None);
        }
        let dir = self.job_dir(job.id);
        let (data, out) = (dir.join("data"), dir.join("out"));
        for d in [&data, &out] {
            tokio::fs::create_dir_all(d)
                .await
                .map_err(|e| ComputeError::Internal(format!("creating the job directory: {e}")))?;
        }
        let asset = inner
            .catalog
            .get(job.did)
            .await
            .map_err(|e| ComputeError::Unavailable(format!("reading the catalog: {e}")))?
            .ok_or_else(|| ComputeError::Denied(format!("{} is no longer served here", job.did)))?;
        let location = inner
            .catalog
            .location(job.did)
            .await
            .map_err(|e| ComputeError::Unavailable(format!("reading the catalog: {e}")))?
            .ok_or_else(|| ComputeError::Denied(format!("{} is no longer served here", job.did)))?;
        crate::staging::stage(
            job.id,
            &asset.ddo,
            &location,
            &inner.storage,
            &job.args,
            &data,
        )
        .await?;
        let module_path = inner.work_dir.join("algorithms").join(format!(
            "{}.wasm",
            job.algorithm.trim_start_matches("sha256:")
        ));
        let module = tokio::fs::read(&module_path)
            .await
            .map_err(|e| ComputeError::Internal(format!("reading the stored module: {e}")))?;
        if !store
            .transition(job.id, &[JobState::Staging], JobState::Running, None)
            .await?
        {
            return Ok(None);
        }
        if let Some(l) = &inner.lineage {
            let input = crate::lineage::dataset(&location.url, asset.ddo.chain_id, job.did);
            let lifecycle = l.run(job.id, &job.algorithm, input, job.agreement, job.consumer);
            l.record(lifecycle.start()).await;
            *run = Some(lifecycle);
        }
        inner
            .backend
            .start(RunSpec {
                id: job.id,
                module: module.into(),
                algorithm: job.algorithm.clone(),
                args: job.args.clone(),
                data_dir: data,
                out_dir: out.clone(),
                limits: inner.limits.clone(),
            })
            .await?;
        let outcome = inner.backend.wait(job.id).await?;
        if outcome != RunOutcome::Succeeded {
            return Ok(Some((outcome, Vec::new())));
        }
        if !store
            .transition(job.id, &[JobState::Running], JobState::Publishing, None)
            .await?
        {
            return Ok(None);
        }
        let published = super::results::publish(self, job, &out).await?;
        Ok(Some((RunOutcome::Succeeded, published)))
    }

    /// Records how the job ended, with its logs and lineage.
    async fn settle(
        &self,
        job: &JobRecord,
        outcome: Result<Ended>,
        logs: Vec<u8>,
        run: Option<&RunLifecycle>,
    ) {
        let store = &self.inner.store;
        let live = [
            JobState::Queued,
            JobState::Staging,
            JobState::Running,
            JobState::Publishing,
        ];
        let (state, error, results, event) = match outcome {
            Ok(None) => return,
            Ok(Some((RunOutcome::Succeeded, published))) => {
                let dids: Vec<_> = published.iter().map(|p| p.did).collect();
                let event = run.map(|r| {
                    r.complete_with_outputs(
                        published
                            .iter()
                            .map(|p| {
                                (
                                    crate::lineage::dataset(
                                        &p.url,
                                        self.inner.ledger.chain_id(),
                                        p.did,
                                    ),
                                    p.rows,
                                    p.bytes,
                                )
                            })
                            .collect(),
                    )
                });
                (JobState::Succeeded, None, dids, event)
            }
            Ok(Some((RunOutcome::Cancelled, _))) => (
                JobState::Cancelled,
                None,
                vec![],
                run.map(|r| r.cancelled()),
            ),
            Ok(Some((RunOutcome::Failed(message), _))) => {
                let event = run.map(|r| r.fail(&message));
                (JobState::Failed, Some(message), vec![], event)
            }
            Err(e) => {
                let message = match e {
                    ComputeError::Internal(m) => {
                        tracing::error!(job = %job.id, error = %m, "compute job failed inside the provider");
                        "the provider failed while running the job (logged)".to_string()
                    }
                    other => other.to_string(),
                };
                let event = run.map(|r| r.fail(&message));
                (JobState::Failed, Some(message), vec![], event)
            }
        };
        match store
            .finish(job.id, &live, state, error.as_deref(), &results, &logs)
            .await
        {
            Ok(true) => {
                tracing::info!(job = %job.id, %state, error = error.as_deref().unwrap_or(""), "compute job ended");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(job = %job.id, error = %e, "could not record the end of a job")
            }
        }
        if let (Some(l), Some(event)) = (&self.inner.lineage, event) {
            l.record(event).await;
        }
    }

    /// Removes the job's working directory and the backend's hold on it.
    async fn clean(&self, id: JobId) {
        if let Err(e) = self.inner.backend.cleanup(id).await {
            tracing::warn!(job = %id, error = %e, "backend cleanup failed");
        }
        let dir = self.job_dir(id);
        if dir.exists() {
            make_writable(&dir);
            if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
                tracing::warn!(job = %id, error = %e, "could not remove the job directory");
            }
        }
    }
}

/// Staged files are read-only; removing them needs their directory writable, and on
/// some file systems the files too.
fn make_writable(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if let Ok(meta) = path.symlink_metadata() {
            if meta.is_dir() {
                make_writable(&path);
            }
            #[allow(clippy::permissions_set_readonly_false)]
            if !meta.file_type().is_symlink() {
                let mut perms = meta.permissions();
                perms.set_readonly(false);
                let _ = std::fs::set_permissions(&path, perms);
            }
        }
    }
}

/// Ends what a previous process left: queued jobs start again; a job that was staging,
/// running or publishing when the process died is failed with that reason: a WASI run
/// lives in the process, and a cluster run's gateway token did, so neither can be
/// resumed. Cluster runs are deleted, and the working directories of all of them are
/// removed.
pub(crate) async fn recover(service: &ComputeService) -> Result<usize> {
    let inner = &service.inner;
    let unfinished = inner.store.unfinished().await?;
    let active = inner.backend.active().await.unwrap_or_default();
    let mut n = 0;
    for job in unfinished {
        n += 1;
        if job.state == JobState::Queued {
            let s = service.clone();
            tokio::spawn(async move { s.drive(job.id).await });
            continue;
        }
        // A run still on a cluster cannot be resumed: its gateway token lived in the
        // old process, so it could never publish. It is stopped and removed below.
        let message = if active.contains(&job.id) {
            format!(
                "the provider restarted while the job was {}; the run was stopped and nothing was published",
                job.state
            )
        } else {
            format!(
                "the provider restarted while the job was {}; the run was lost and nothing was published",
                job.state
            )
        };
        let logs = inner.store.logs(job.id).await?.unwrap_or_default();
        inner
            .store
            .finish(
                job.id,
                &[job.state],
                JobState::Failed,
                Some(&message),
                &[],
                &logs,
            )
            .await?;
        if let Some(l) = &inner.lineage
            && let Ok(Some(location)) = inner.catalog.location(job.did).await
        {
            let input = crate::lineage::dataset(&location.url, inner.ledger.chain_id(), job.did);
            let run = l.run(job.id, &job.algorithm, input, job.agreement, job.consumer);
            l.record(run.fail(&message)).await;
        }
        service.clean(job.id).await;
        tracing::warn!(job = %job.id, "{message}");
    }
    // Runs a backend still has for jobs of this store that have ended (a crash between
    // a job's end and its cleanup) are removed, so nothing is orphaned on a cluster.
    // Runs the store does not know belong to another deployment sharing the namespace,
    // and are left alone.
    for id in active {
        match inner.store.get(id).await {
            Ok(Some(j)) if j.state.is_terminal() => service.clean(id).await,
            Ok(None) => {
                tracing::warn!(job = %id, "a run on the cluster that this provider's job store does not know; left alone")
            }
            _ => {}
        }
    }
    // Directories of jobs the store no longer lists as live (a crash between the end
    // and the cleanup) go too.
    if let Ok(mut dir) = tokio::fs::read_dir(inner.work_dir.join("jobs")).await {
        while let Ok(Some(entry)) = dir.next_entry().await {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|s| s.parse::<JobId>().ok()) else {
                continue;
            };
            let live = matches!(inner.store.get(id).await, Ok(Some(j)) if !j.state.is_terminal());
            if !live {
                service.clean(id).await;
            }
        }
    }
    Ok(n)
}
