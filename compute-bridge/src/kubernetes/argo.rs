//! The Argo Workflow variant of a run, for providers that run pipelines through Argo.
//!
//! Argo's types are not in k8s-openapi, so the Workflow is a `DynamicObject`. Its
//! parts that are Kubernetes types (containers, volumes, security contexts) are built
//! by the same typed functions as the Job and serialised, so both flavors carry the
//! same hardening. The steps run as one `containerSet` (one pod): stage, the algorithm
//! steps in order, publish. One pod means one NetworkPolicy covers the whole run, and
//! intermediate outputs never leave the pod's scratch volumes.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use super::manifest::{self, PodPlan, job_name, labels};
use super::settings::KubeSettings;
use crate::error::{ComputeError, Result};

/// `argoproj.io/v1alpha1`, kind `Workflow`, plural `workflows`.
pub fn workflow_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Workflow"),
        "workflows",
    )
}

fn value<T: serde::Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| ComputeError::Internal(format!("building a workflow: {e}")))
}

/// A container as an Argo `ContainerNode`: the container plus what it waits for.
fn node(container: &k8s_openapi::api::core::v1::Container, after: Option<&str>) -> Result<Value> {
    let mut v = value(container)?;
    if let (Some(obj), Some(after)) = (v.as_object_mut(), after) {
        obj.insert("dependencies".into(), json!([after]));
    }
    Ok(v)
}

/// The run as an Argo Workflow.
pub fn workflow(s: &KubeSettings, plan: &PodPlan) -> Result<DynamicObject> {
    let id = plan.id;
    let mut nodes = Vec::new();
    let stage = manifest::stage_container(s, id);
    nodes.push(node(&stage, None)?);
    let mut previous = stage.name.clone();
    for c in manifest::algorithm_containers(s, plan) {
        nodes.push(node(&c, Some(&previous))?);
        previous = c.name.clone();
    }
    nodes.push(node(&manifest::publish_container(s, id), Some(&previous))?);

    let ar = workflow_resource();
    let mut wf = DynamicObject::new(&job_name(id), &ar).within(&s.namespace);
    wf.metadata.labels = Some(labels(id));
    wf.data = json!({
        "spec": {
            "entrypoint": "run",
            "activeDeadlineSeconds": manifest::deadline_secs(s, plan),
            "automountServiceAccountToken": false,
            "executor": { "serviceAccountName": s.executor_service_account },
            "securityContext": value(&manifest::pod_security())?,
            // The pod carries the run's labels, so its NetworkPolicy selects it.
            "podMetadata": { "labels": labels(id) },
            "podGC": { "strategy": "OnPodCompletion" },
            "ttlStrategy": { "secondsAfterCompletion": s.ttl_after_finished_secs },
            "volumes": value(&manifest::volumes(plan))?,
            "templates": [{
                "name": "run",
                "containerSet": { "containers": nodes },
            }],
        }
    });
    Ok(wf)
}

/// How a Workflow's `status.phase` reads: still going, or ended.
pub fn phase(wf: &DynamicObject) -> Option<&str> {
    wf.data.get("status")?.get("phase")?.as_str()
}

/// The Workflow's own account of why it ended, when it failed.
pub fn message(wf: &DynamicObject) -> Option<String> {
    wf.data
        .get("status")?
        .get("message")?
        .as_str()
        .map(str::to_string)
}
