//! How a run on the cluster ended, read by watching (never polling) its Job or
//! Workflow, and why, read from its pod's container states.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, DynamicObject};
use kube::runtime::wait::{Condition, await_condition};

use super::argo;
use crate::error::{ComputeError, Result};

/// How a watched run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    Succeeded,
    /// The cluster's reason (a Job condition's or the Workflow's message).
    Failed(String),
    /// The object disappeared (a cancel, or someone deleted it).
    Gone,
}

/// Consecutive watch failures tolerated before the wait gives up: an API server
/// restart should not fail every running job.
const WATCH_RETRIES: u32 = 5;

/// Ends when the Job has a `Complete` or `Failed` condition, or is gone. The stock
/// `is_job_completed` waits for `Complete` only, so a failed Job would be waited on
/// until the deadline.
fn job_finished() -> impl Condition<Job> + Clone {
    |job: Option<&Job>| job.is_none_or(|j| job_end(j).is_some())
}

fn job_end(job: &Job) -> Option<Ended> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some(Ended::Succeeded),
            "Failed" => Some(Ended::Failed(
                c.message
                    .clone()
                    .or_else(|| c.reason.clone())
                    .unwrap_or_else(|| "the Job failed".into()),
            )),
            _ => None,
        })
}

fn workflow_end(wf: &DynamicObject) -> Option<Ended> {
    match argo::phase(wf)? {
        "Succeeded" => Some(Ended::Succeeded),
        "Failed" | "Error" => Some(Ended::Failed(
            argo::message(wf).unwrap_or_else(|| "the Workflow failed".into()),
        )),
        _ => None,
    }
}

/// Waits with `await_condition`, starting the watch again after a transient failure.
async fn watch<K, C>(api: &Api<K>, name: &str, cond: C) -> Result<Option<K>>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    C: Condition<K> + Clone,
{
    let mut failures = 0;
    loop {
        match await_condition(api.clone(), name, cond.clone()).await {
            Ok(found) => return Ok(found),
            Err(e) => {
                failures += 1;
                if failures > WATCH_RETRIES {
                    return Err(ComputeError::Unavailable(format!(
                        "watching the run on the cluster: {e}"
                    )));
                }
                tracing::warn!(run = name, error = %e, "watching the run failed; watching again");
                tokio::time::sleep(std::time::Duration::from_millis(200 << failures)).await;
            }
        }
    }
}

pub(crate) async fn wait_job(api: &Api<Job>, name: &str) -> Result<Ended> {
    let job = watch(api, name, job_finished()).await?;
    Ok(job.as_ref().and_then(job_end).unwrap_or(Ended::Gone))
}

pub(crate) async fn wait_workflow(api: &Api<DynamicObject>, name: &str) -> Result<Ended> {
    let cond = |wf: Option<&DynamicObject>| wf.is_none_or(|w| workflow_end(w).is_some());
    let wf = watch(api, name, cond).await?;
    Ok(wf.as_ref().and_then(workflow_end).unwrap_or(Ended::Gone))
}

/// The job's error in the consumer's words: the failing step's own message when the
/// pod has one (the sandbox writes its reason as the termination message), else the
/// cluster's reason.
pub(crate) fn explain(cluster_reason: String, pod: Option<&Pod>) -> String {
    let Some(status) = pod.and_then(|p| p.status.as_ref()) else {
        return reason_in_words(&cluster_reason);
    };
    let statuses = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for s in statuses {
        if let Some(why) = failed_step(s) {
            return why;
        }
    }
    reason_in_words(&cluster_reason)
}

fn failed_step(s: &ContainerStatus) -> Option<String> {
    let t = s.state.as_ref()?.terminated.as_ref()?;
    if t.exit_code == 0 {
        return None;
    }
    let said = t
        .message
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| {
            m.lines()
                .last()
                .unwrap_or(m)
                .chars()
                .take(500)
                .collect::<String>()
        });
    let step = match s.name.as_str() {
        "stage" => "staging the input",
        "publish" => "publishing the outputs",
        _ => "the algorithm",
    };
    Some(match (t.reason.as_deref(), said) {
        (Some("OOMKilled"), _) => format!("{step} ran out of memory (the container's limit)"),
        (_, Some(m)) => m,
        (reason, None) => format!(
            "{step} failed with exit code {}{}",
            t.exit_code,
            reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ),
    })
}

fn reason_in_words(reason: &str) -> String {
    if reason.contains("DeadlineExceeded") || reason.contains("active deadline") {
        "the run passed its deadline on the cluster".into()
    } else {
        format!("the run failed on the cluster: {reason}")
    }
}
