//! The typed resources of one run: the Job, its token Secret and its NetworkPolicy.
//!
//! The pod has three steps (see [`super::pod`]): `stage` and `algorithm` as init
//! containers, `publish` as the main container. Volumes are per container, so the
//! token Secret is mounted in `stage` and `publish` only, and the algorithm container
//! sees `/data` read-only, `/work` (the module) read-only and `/out`.
//!
//! Hardening, on every container: non-root, read-only root filesystem, no privilege
//! escalation, every capability dropped, the runtime's default seccomp profile. On the
//! pod: no service account token, no service links in the environment, and a
//! NetworkPolicy that denies all ingress and all egress but the provider's gateway.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::settings::KubeSettings;
use crate::job::JobId;
use crate::limits::SandboxLimits;

/// Label on everything insitu creates, to find its runs after a restart.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "insitu");
/// Label carrying the run's job id.
pub const JOB_LABEL: &str = "insitu.io/job";
/// Where the token Secret is mounted in the stage and publish containers.
pub const TOKEN_DIR: &str = "/run/insitu";
/// The key (and file name) of the token in the Secret.
pub const TOKEN_KEY: &str = "token";
/// Non-root user and group of every container.
const RUN_AS: i64 = 65532;

/// One run as the manifests need it: one algorithm step per entry of `steps` (its
/// arguments), run in order, each reading the previous one's output as its `/data`.
#[derive(Debug, Clone)]
pub struct PodPlan {
    pub id: JobId,
    pub steps: Vec<Vec<String>>,
    pub limits: SandboxLimits,
}

impl PodPlan {
    /// A run of one algorithm.
    pub fn single(id: JobId, args: Vec<String>, limits: SandboxLimits) -> Self {
        PodPlan {
            id,
            steps: vec![args],
            limits,
        }
    }
}

/// The name of the run's Job (and NetworkPolicy): DNS-1123, under 63 characters.
pub fn job_name(id: JobId) -> String {
    format!("insitu-job-{id}")
}

/// The name of the run's token Secret.
pub fn secret_name(id: JobId) -> String {
    format!("insitu-job-{id}-token")
}

pub fn labels(id: JobId) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (JOB_LABEL.to_string(), id.to_string()),
    ])
}

fn meta(name: String, s: &KubeSettings, id: JobId) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(s.namespace.clone()),
        labels: Some(labels(id)),
        ..ObjectMeta::default()
    }
}

/// The hardening every container gets.
pub(crate) fn container_security() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(seccomp()),
        ..SecurityContext::default()
    }
}

fn seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

pub(crate) fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(seccomp()),
        ..PodSecurityContext::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

fn quantities(pairs: &[(&str, String)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), Quantity(v.clone())))
        .collect()
}

fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// Resources of the small transfer containers.
fn transfer_resources() -> ResourceRequirements {
    ResourceRequirements {
        limits: Some(quantities(&[
            ("cpu", "500m".into()),
            ("memory", "256Mi".into()),
        ])),
        requests: Some(quantities(&[
            ("cpu", "100m".into()),
            ("memory", "64Mi".into()),
        ])),
        ..ResourceRequirements::default()
    }
}

/// Resources of the algorithm container: the module's memory limit plus the runner.
pub(crate) fn algorithm_resources(
    s: &KubeSettings,
    limits: &SandboxLimits,
) -> ResourceRequirements {
    let memory = format!("{}Mi", mib(limits.memory_bytes) + s.memory_overhead_mib);
    ResourceRequirements {
        limits: Some(quantities(&[
            ("cpu", s.cpu.clone()),
            ("memory", memory.clone()),
        ])),
        requests: Some(quantities(&[("cpu", s.cpu.clone()), ("memory", memory)])),
        ..ResourceRequirements::default()
    }
}

/// The `insitu` arguments of the algorithm step: the limits, then the consumer's own
/// arguments after `--` (never flags to the runner).
fn exec_args(plan: &PodPlan, step: usize) -> Vec<String> {
    let l = &plan.limits;
    let mut args = vec![
        "compute".into(),
        "pod".into(),
        "exec".into(),
        "--module".into(),
        format!("/work/{}", super::pod::module_file(step)),
        "--data".into(),
        "/data".into(),
        "--out".into(),
        "/out".into(),
        "--deadline-secs".into(),
        l.deadline.as_secs().max(1).to_string(),
        "--memory-bytes".into(),
        l.memory_bytes.to_string(),
        "--output-bytes".into(),
        l.output_bytes.to_string(),
        "--output-files".into(),
        l.output_files.to_string(),
        "--log-bytes".into(),
        l.log_bytes.to_string(),
        "--termination-log".into(),
        "/dev/termination-log".into(),
        "--".into(),
    ];
    args.extend(plan.steps.get(step).into_iter().flatten().cloned());
    args
}

/// The volume step `i` reads as `/data` and the one it writes as `/out`: the staged
/// input for the first step, the final outputs for the last, scratch between.
fn step_volumes(i: usize, steps: usize) -> (String, String) {
    let input = if i == 0 {
        "data".to_string()
    } else {
        format!("mid-{}", i - 1)
    };
    let output = if i + 1 == steps {
        "out".to_string()
    } else {
        format!("mid-{i}")
    };
    (input, output)
}

/// The algorithm containers, in order: `algorithm` for a single step, else
/// `step-0`, `step-1`, … Each sees only its input, the modules and its output.
pub(crate) fn algorithm_containers(s: &KubeSettings, plan: &PodPlan) -> Vec<Container> {
    let n = plan.steps.len();
    (0..n)
        .map(|i| {
            let (input, output) = step_volumes(i, n);
            container(
                &step_name(i, n),
                s,
                exec_args(plan, i),
                vec![
                    mount(&input, "/data", true),
                    mount("work", "/work", true),
                    mount(&output, "/out", false),
                ],
                algorithm_resources(s, &plan.limits),
            )
        })
        .collect()
}

/// The container name of algorithm step `i` of `n`.
pub fn step_name(i: usize, n: usize) -> String {
    if n == 1 {
        "algorithm".into()
    } else {
        format!("step-{i}")
    }
}

/// The `insitu` arguments of a transfer step (`stage` or `publish`).
pub(crate) fn transfer_args(s: &KubeSettings, id: JobId, step: &str) -> Vec<String> {
    vec![
        "compute".into(),
        "pod".into(),
        step.into(),
        "--gateway".into(),
        s.gateway_url.to_string(),
        "--job".into(),
        id.to_string(),
        "--token-file".into(),
        format!("{TOKEN_DIR}/{TOKEN_KEY}"),
    ]
}

pub(crate) fn container(
    name: &str,
    s: &KubeSettings,
    args: Vec<String>,
    mounts: Vec<VolumeMount>,
    resources: ResourceRequirements,
) -> Container {
    Container {
        name: name.into(),
        image: Some(s.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["insitu".into()]),
        args: Some(args),
        volume_mounts: Some(mounts),
        resources: Some(resources),
        security_context: Some(container_security()),
        // A failed step's last words become the job's error.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

/// The pod's volumes: scratch space and the token.
pub(crate) fn volumes(plan: &PodPlan) -> Vec<Volume> {
    let (id, limits) = (plan.id, &plan.limits);
    let empty = |name: &str, limit: Option<u64>| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: limit.map(|b| Quantity(format!("{}Mi", mib(b).max(1)))),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    };
    // The output quota is enforced by the sandbox and the gateway; the volume limit
    // is a backstop at twice that.
    let backstop = Some(limits.output_bytes.saturating_mul(2));
    let mut v = vec![empty("data", None), empty("work", None)];
    v.extend((0..plan.steps.len().saturating_sub(1)).map(|i| empty(&format!("mid-{i}"), backstop)));
    v.push(empty("out", backstop));
    v.push(Volume {
        name: "token".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name(id)),
            default_mode: Some(0o400),
            optional: Some(false),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    });
    v
}

pub(crate) fn stage_container(s: &KubeSettings, id: JobId) -> Container {
    container(
        "stage",
        s,
        transfer_args(s, id, "stage"),
        vec![
            mount("data", "/data", false),
            mount("work", "/work", false),
            mount("token", TOKEN_DIR, true),
        ],
        transfer_resources(),
    )
}

pub(crate) fn publish_container(s: &KubeSettings, id: JobId) -> Container {
    container(
        "publish",
        s,
        transfer_args(s, id, "publish"),
        vec![mount("out", "/out", true), mount("token", TOKEN_DIR, true)],
        transfer_resources(),
    )
}

/// The whole run's deadline: every algorithm step's, plus the transfer allowance.
pub(crate) fn deadline_secs(s: &KubeSettings, plan: &PodPlan) -> i64 {
    let per_step = i64::try_from(plan.limits.deadline.as_secs()).unwrap_or(i64::MAX / 4);
    per_step
        .saturating_mul(i64::try_from(plan.steps.len()).unwrap_or(1))
        .saturating_add(s.transfer_allowance_secs)
}

/// The run's Job, created suspended: its pod starts only once the Secret and the
/// NetworkPolicy exist (see [`super::KubernetesBackend`]), so the algorithm never
/// runs a moment without its egress rule.
pub fn job(s: &KubeSettings, plan: &PodPlan) -> Job {
    let id = plan.id;
    let mut init = vec![stage_container(s, id)];
    init.extend(algorithm_containers(s, plan));
    Job {
        metadata: meta(job_name(id), s, id),
        spec: Some(JobSpec {
            suspend: Some(true),
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline_secs(s, plan)),
            ttl_seconds_after_finished: Some(s.ttl_after_finished_secs),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(id)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(pod_security()),
                    init_containers: Some(init),
                    containers: vec![publish_container(s, id)],
                    volumes: Some(volumes(plan)),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// The run's token, readable by its stage and publish containers only.
pub fn secret(s: &KubeSettings, id: JobId, token: &str, owner: Option<OwnerReference>) -> Secret {
    let mut metadata = meta(secret_name(id), s, id);
    metadata.owner_references = owner.map(|o| vec![o]);
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        immutable: Some(true),
        string_data: Some(BTreeMap::from([(TOKEN_KEY.to_string(), token.to_string())])),
        ..Secret::default()
    }
}

/// Denies the run's pod all ingress, and all egress but the gateway's pods and port.
pub fn network_policy(s: &KubeSettings, id: JobId, owner: Option<OwnerReference>) -> NetworkPolicy {
    let mut metadata = meta(job_name(id), s, id);
    metadata.owner_references = owner.map(|o| vec![o]);
    let namespace_selector = s.gateway_namespace.as_ref().map(|ns| LabelSelector {
        match_labels: Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            ns.clone(),
        )])),
        ..LabelSelector::default()
    });
    let egress = egress_rules(s, namespace_selector);
    NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(JOB_LABEL.to_string(), id.to_string())])),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(Vec::new()),
            egress: Some(egress),
        }),
    }
}

fn tcp(port: i32) -> Option<Vec<NetworkPolicyPort>> {
    Some(vec![NetworkPolicyPort {
        protocol: Some("TCP".into()),
        port: Some(IntOrString::Int(port)),
        ..NetworkPolicyPort::default()
    }])
}

fn egress_rules(
    s: &KubeSettings,
    namespace_selector: Option<LabelSelector>,
) -> Vec<NetworkPolicyEgressRule> {
    let mut rules = vec![NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: Some(s.gateway_selector.clone()),
                ..LabelSelector::default()
            }),
            namespace_selector,
            ..NetworkPolicyPeer::default()
        }]),
        ports: tcp(s.gateway_port()),
    }];
    if s.flavor == super::settings::Flavor::Workflow
        && let Some((cidr, port)) = &s.api_server
    {
        rules.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: cidr.clone(),
                    except: None,
                }),
                ..NetworkPolicyPeer::default()
            }]),
            ports: tcp(*port),
        });
    }
    rules
}

/// A reference making the Job the owner (the cluster deletes owned objects with it).
pub fn owner_of(api_version: &str, kind: &str, meta: &ObjectMeta) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: None,
    })
}
