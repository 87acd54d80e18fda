//! Against a real cluster, only when `KUBECONFIG` is set (CI has none). See
//! docs/compute.md, "Testing against a real cluster", for the setup:
//!
//! - `INSITU_K8S_IMAGE`: a runner image holding this build's `insitu` binary;
//! - `INSITU_K8S_GATEWAY_LISTEN`: where this test serves the pod gateway
//!   (e.g. `0.0.0.0:8817`);
//! - `INSITU_K8S_GATEWAY_URL`: the gateway as the cluster's pods reach it, by IP;
//! - `INSITU_K8S_GATEWAY_SELECTOR`: `key=value` labels of the pods allowed as egress
//!   (with a cluster outside the provider's, a NetworkPolicy-enforcing CNI needs an
//!   address the pods can reach; see the docs);
//! - `INSITU_K8S_NAMESPACE`: the namespace to run in (default `default`).

use std::collections::BTreeMap;
use std::time::Duration;

use insitu_compute::kubernetes::{KubeSettings, KubernetesBackend, PodGateway};
use insitu_compute::{ComputeBackend, JobId, RunOutcome};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("KUBECONFIG is set, so {name} must be too"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_on_a_real_cluster_when_kubeconfig_is_set() {
    if std::env::var_os("KUBECONFIG").is_none() {
        eprintln!("KUBECONFIG is not set: skipping the real-cluster test (see docs/compute.md)");
        return;
    }
    let selector: BTreeMap<String, String> = var("INSITU_K8S_GATEWAY_SELECTOR")
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let settings = KubeSettings::builder(
        var("INSITU_K8S_IMAGE"),
        var("INSITU_K8S_GATEWAY_URL").parse().expect("gateway url"),
    )
    .namespace(std::env::var("INSITU_K8S_NAMESPACE").unwrap_or_else(|_| "default".into()))
    .gateway_selector(selector)
    .build()
    .expect("settings");
    let gateway = PodGateway::new();
    let listener = tokio::net::TcpListener::bind(var("INSITU_K8S_GATEWAY_LISTEN"))
        .await
        .expect("bind the gateway");
    tokio::spawn(gateway.clone().serve(listener));
    let client = kube::Client::try_default().await.expect("cluster client");
    let backend = KubernetesBackend::new(client, settings, gateway);

    let tmp = tempfile::tempdir().expect("tmp");
    let id = JobId::random();
    let spec = super::staged(tmp.path(), id);
    let out = spec.out_dir.clone();
    backend.start(spec).await.expect("start");
    let outcome = tokio::time::timeout(Duration::from_secs(600), backend.wait(id))
        .await
        .expect("the run ends within 10 minutes")
        .expect("wait");
    let logs = backend.logs(id).await.expect("logs");
    assert_eq!(
        outcome,
        RunOutcome::Succeeded,
        "log: {}",
        String::from_utf8_lossy(&logs)
    );
    assert!(out.join("summary.csv").exists());
    backend.cleanup(id).await.expect("cleanup");
    // Owner references take the Secret and NetworkPolicy; the Job goes at once.
    for _ in 0..60 {
        if !backend.active().await.expect("active").contains(&id) {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("the run's Job is still on the cluster a minute after cleanup");
}
