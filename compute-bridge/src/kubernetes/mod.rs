//! `KubernetesBackend`: runs jobs on the provider's cluster, for algorithms that need
//! more than the provider's own machine.
//!
//! One run is one Job (or one Argo Workflow) whose pod stages the input from the
//! provider's [`PodGateway`], runs the module in the same WASI sandbox as the default
//! backend, and publishes `/out` back through the gateway. Layout: `settings` (what a
//! provider configures), `manifest` (the typed Job, Secret and NetworkPolicy), `argo`
//! (the Workflow variant), `gateway` (the provider's side of staging and publishing),
//! `pod` (the steps inside the pod), `outcome` (reading how a run ended).
//!
//! Order of creation matters: the Job is created suspended, then its Secret and
//! NetworkPolicy (owned by it), then it is resumed. So the pod never runs without its
//! egress rule, and deleting the Job removes everything the run had.

mod argo;
mod gateway;
mod manifest;
mod outcome;
pub mod pod;
mod settings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams, PostParams,
};

pub use argo::{workflow, workflow_resource};
pub use gateway::{InputFile, Inputs, PodGateway, RunToken};
pub use manifest::{
    JOB_LABEL, MANAGED_BY, PodPlan, job, job_name, network_policy, secret, secret_name, step_name,
};
pub use settings::{Flavor, KubeSettings, KubeSettingsBuilder};

use crate::backend::{ComputeBackend, RunOutcome, RunSpec};
use crate::error::{ComputeError, Result};
use crate::job::JobId;

/// What the backend remembers of a run it started.
#[derive(Debug, Clone, Copy)]
struct Run {
    cancelled: bool,
    steps: usize,
    log_bytes: u64,
}

/// The Kubernetes (and Argo) backend.
#[derive(Clone)]
pub struct KubernetesBackend {
    client: kube::Client,
    settings: Arc<KubeSettings>,
    gateway: PodGateway,
    runs: Arc<Mutex<HashMap<JobId, Run>>>,
}

impl std::fmt::Debug for KubernetesBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesBackend")
            .field("namespace", &self.settings.namespace)
            .field("flavor", &self.settings.flavor)
            .finish_non_exhaustive()
    }
}

/// Turns a cluster error into a compute error, with what was being done. API errors
/// carry the server's message (resource names, never tokens: none is in a request
/// path, and Secret contents are never echoed by the API server).
fn cluster(action: &'static str) -> impl FnOnce(kube::Error) -> ComputeError {
    move |e| ComputeError::Unavailable(format!("{action}: {e}"))
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

fn internal(e: impl std::fmt::Display) -> ComputeError {
    ComputeError::Internal(e.to_string())
}

impl KubernetesBackend {
    /// A backend on `client` (from `kube::Client::try_default()` in a provider, or a
    /// mock in tests), serving its pods through `gateway`.
    pub fn new(client: kube::Client, settings: KubeSettings, gateway: PodGateway) -> Self {
        KubernetesBackend {
            client,
            settings: Arc::new(settings),
            gateway,
            runs: Arc::default(),
        }
    }

    /// The gateway the pods talk to; the provider serves its router.
    pub fn gateway(&self) -> &PodGateway {
        &self.gateway
    }

    fn ns(&self) -> &str {
        &self.settings.namespace
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    fn workflows(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), self.ns(), &argo::workflow_resource())
    }

    fn run(&self, id: JobId) -> Result<Run> {
        self.runs
            .lock()
            .map_err(internal)?
            .get(&id)
            .copied()
            .ok_or_else(|| ComputeError::NotFound(id.to_string()))
    }

    /// Creates the run's objects in the safe order; see the module documentation.
    async fn create(&self, plan: &PodPlan, token: &RunToken) -> Result<()> {
        let id = plan.id;
        let name = job_name(id);
        let post = PostParams::default();
        let owner = match self.settings.flavor {
            Flavor::Job => {
                let created = self
                    .jobs()
                    .create(&post, &manifest::job(&self.settings, plan))
                    .await
                    .map_err(cluster("creating the run's Job"))?;
                manifest::owner_of("batch/v1", "Job", &created.metadata)
            }
            Flavor::Workflow => {
                let mut wf = argo::workflow(&self.settings, plan)?;
                if let Some(spec) = wf.data.get_mut("spec").and_then(|s| s.as_object_mut()) {
                    spec.insert("suspend".into(), serde_json::Value::Bool(true));
                }
                let created = self
                    .workflows()
                    .create(&post, &wf)
                    .await
                    .map_err(cluster("creating the run's Workflow"))?;
                manifest::owner_of("argoproj.io/v1alpha1", "Workflow", &created.metadata)
            }
        };
        if owner.is_none() {
            return Err(ComputeError::Unavailable(
                "the cluster returned the run without a uid".into(),
            ));
        }
        Api::<Secret>::namespaced(self.client.clone(), self.ns())
            .create(
                &post,
                &manifest::secret(&self.settings, id, token.expose(), owner.clone()),
            )
            .await
            .map_err(cluster("creating the run's Secret"))?;
        Api::<NetworkPolicy>::namespaced(self.client.clone(), self.ns())
            .create(&post, &manifest::network_policy(&self.settings, id, owner))
            .await
            .map_err(cluster("creating the run's NetworkPolicy"))?;
        let resume = Patch::Merge(serde_json::json!({ "spec": { "suspend": false } }));
        let params = PatchParams::default();
        match self.settings.flavor {
            Flavor::Job => self
                .jobs()
                .patch(&name, &params, &resume)
                .await
                .map(drop)
                .map_err(cluster("starting the run's Job")),
            Flavor::Workflow => self
                .workflows()
                .patch(&name, &params, &resume)
                .await
                .map(drop)
                .map_err(cluster("starting the run's Workflow")),
        }
    }

    /// Deletes the run's Job or Workflow; its Secret, NetworkPolicy and pods go with
    /// it (owner references). `Ok` when it was already gone.
    async fn delete(&self, id: JobId, params: &DeleteParams) -> Result<()> {
        let name = job_name(id);
        let res = match self.settings.flavor {
            Flavor::Job => self.jobs().delete(&name, params).await.map(drop),
            Flavor::Workflow => self.workflows().delete(&name, params).await.map(drop),
        };
        match res {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(cluster("deleting the run")(e)),
        }
    }

    /// The run's pod, if it has one yet.
    async fn pod(&self, id: JobId) -> Result<Option<Pod>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), self.ns());
        let lp = ListParams::default().labels(&format!("{JOB_LABEL}={id}"));
        let list = pods
            .list(&lp)
            .await
            .map_err(cluster("finding the run's pod"))?;
        Ok(list.items.into_iter().next())
    }
}

#[async_trait::async_trait]
impl ComputeBackend for KubernetesBackend {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    async fn start(&self, spec: RunSpec) -> Result<()> {
        let id = spec.id;
        let token = self.gateway.open(
            id,
            spec.data_dir.clone(),
            spec.out_dir.clone(),
            vec![spec.module.clone()],
            spec.limits.clone(),
        )?;
        let plan = PodPlan::single(id, spec.args.clone(), spec.limits.clone());
        self.runs.lock().map_err(internal)?.insert(
            id,
            Run {
                cancelled: false,
                steps: plan.steps.len(),
                log_bytes: spec.limits.log_bytes,
            },
        );
        if let Err(e) = self.create(&plan, &token).await {
            // Leave nothing behind: whatever was created is owned by the run.
            if let Err(cleanup) = self.delete(id, &DeleteParams::background()).await {
                tracing::warn!(job = %id, error = %cleanup, "could not remove a half-created run");
            }
            self.gateway.close(id);
            return Err(e);
        }
        tracing::info!(job = %id, namespace = %self.ns(), flavor = ?self.settings.flavor, "run started on the cluster");
        Ok(())
    }

    async fn wait(&self, id: JobId) -> Result<RunOutcome> {
        let run = self.run(id)?;
        let ended = match self.settings.flavor {
            Flavor::Job => outcome::wait_job(&self.jobs(), &job_name(id)).await?,
            Flavor::Workflow => outcome::wait_workflow(&self.workflows(), &job_name(id)).await?,
        };
        if self.run(id).map(|r| r.cancelled).unwrap_or(run.cancelled) {
            return Ok(RunOutcome::Cancelled);
        }
        Ok(match ended {
            outcome::Ended::Gone => {
                RunOutcome::Failed("the run was deleted from the cluster outside insitu".into())
            }
            outcome::Ended::Succeeded if self.gateway.published(id) => RunOutcome::Succeeded,
            outcome::Ended::Succeeded => {
                RunOutcome::Failed("the run ended without publishing its outputs".into())
            }
            outcome::Ended::Failed(why) => {
                let pod = self.pod(id).await.ok().flatten();
                RunOutcome::Failed(outcome::explain(why, pod.as_ref()))
            }
        })
    }

    async fn logs(&self, id: JobId) -> Result<Vec<u8>> {
        let run = self.run(id)?;
        let Some(pod) = self.pod(id).await? else {
            return Ok(Vec::new());
        };
        let Some(name) = pod.metadata.name else {
            return Ok(Vec::new());
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), self.ns());
        let mut out = Vec::new();
        for i in 0..run.steps {
            let left = run.log_bytes.saturating_sub(out.len() as u64);
            if left == 0 {
                break;
            }
            let lp = LogParams {
                container: Some(step_name(i, run.steps)),
                limit_bytes: Some(i64::try_from(left).unwrap_or(i64::MAX)),
                ..LogParams::default()
            };
            match pods.logs(&name, &lp).await {
                Ok(text) => {
                    let bytes = text.into_bytes();
                    let keep = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    out.extend_from_slice(&bytes[..keep]);
                }
                // A container that never started has no log yet.
                Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 400) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(cluster("reading the run's log")(e)),
            }
        }
        Ok(out)
    }

    async fn cancel(&self, id: JobId) -> Result<()> {
        if let Some(run) = self.runs.lock().map_err(internal)?.get_mut(&id) {
            run.cancelled = true;
        }
        // Foreground: the Job is gone only once its pod is, so `wait` ends after the
        // algorithm has stopped.
        self.delete(id, &DeleteParams::foreground()).await
    }

    async fn cleanup(&self, id: JobId) -> Result<()> {
        self.gateway.close(id);
        if let Ok(mut runs) = self.runs.lock() {
            runs.remove(&id);
        }
        self.delete(id, &DeleteParams::background()).await
    }

    async fn active(&self) -> Result<Vec<JobId>> {
        let lp = ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
        let labels: Vec<_> = match self.settings.flavor {
            Flavor::Job => self
                .jobs()
                .list(&lp)
                .await
                .map_err(cluster("listing runs"))?
                .items
                .into_iter()
                .map(|j| j.metadata.labels)
                .collect(),
            Flavor::Workflow => self
                .workflows()
                .list(&lp)
                .await
                .map_err(cluster("listing runs"))?
                .items
                .into_iter()
                .map(|w| w.metadata.labels)
                .collect(),
        };
        Ok(labels
            .into_iter()
            .flatten()
            .filter_map(|l| l.get(JOB_LABEL).and_then(|v| v.parse().ok()))
            .collect())
    }
}
