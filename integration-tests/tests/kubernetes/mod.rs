//! The Kubernetes backend at the HTTP level: kube's client talks through `tower-test`
//! to an in-memory API server ([`FakeCluster`]), and a fake kubelet runs each Job's
//! containers as the real `insitu` binary with the Job's own arguments. So the tests
//! see the exact requests (create, watch, logs, delete), and the pod steps really
//! stage through the gateway, run the sandbox and publish.
//!
//! `manifests` holds the golden and schema tests; `real_cluster` runs against a real
//! cluster when `KUBECONFIG` is set.

mod manifests;
mod real_cluster;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use insitu_compute::kubernetes::{
    Flavor, KubeSettings, KubernetesBackend, PodGateway, job_name, secret_name,
};
use insitu_compute::{ComputeBackend, JobId, JobState, RunOutcome, RunSpec, SandboxLimits};
use insitu_integration_tests::compute::{ComputeScene, attack_module, example_algorithm, follow};
use insitu_integration_tests::kube_fake::{FakeCluster, FakeKubelet};
use insitu_integration_tests::{CONSUMER, account, insitu_bin};
use serde_json::{Value, json};

/// A gateway served on 127.0.0.1 and settings pointing pods at it.
async fn gateway(flavor: Flavor) -> (PodGateway, KubeSettings) {
    let gw = PodGateway::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(gw.clone().serve(listener));
    let mut b = KubeSettings::builder(
        "registry.example/insitu:test",
        format!("http://{addr}/").parse().expect("url"),
    )
    .namespace("jobs")
    .gateway_selector(BTreeMap::from([("app".into(), "insitu-provider".into())]))
    .flavor(flavor);
    if flavor == Flavor::Workflow {
        b = b
            .executor_service_account("argo-executor")
            .api_server_egress("10.96.0.1/32", 443);
    }
    (gw, b.build().expect("settings"))
}

/// A staged input like the compute service's: an Arrow file and its manifest.
fn staged(dir: &std::path::Path, id: JobId) -> RunSpec {
    let data = dir.join("data");
    let out = dir.join("out");
    std::fs::create_dir_all(&data).expect("data");
    std::fs::create_dir_all(&out).expect("out");
    let csv = dir.join("breast_cancer.csv");
    let (rows, _) =
        insitu_integration_tests::data::sklearn_table("breast_cancer.csv", &csv).expect("dataset");
    let batches = insitu_integration_tests::data::read_csv(&csv).expect("read");
    let schema = batches[0].schema();
    let file = std::fs::File::create(data.join("input.arrow")).expect("create");
    let mut w = arrow::ipc::writer::FileWriter::try_new(file, &schema).expect("writer");
    for b in &batches {
        w.write(b).expect("write");
    }
    w.finish().expect("finish");
    let manifest = json!({
        "job": id.to_string(),
        "inputs": [{
            "did": "did:insitu:test", "name": "breast cancer", "path": "/data/input.arrow",
            "format": "arrow-ipc-file", "rows": rows,
            "bytes": std::fs::metadata(data.join("input.arrow")).expect("meta").len(),
            "columns": schema.fields().iter().map(|f| json!({
                "name": f.name(), "data_type": f.data_type().to_string(), "nullable": f.is_nullable()
            })).collect::<Vec<_>>(),
        }],
        "args": [], "output_dir": "/out",
    });
    std::fs::write(data.join("manifest.json"), manifest.to_string()).expect("manifest");
    let (module, _) = example_algorithm().expect("example");
    RunSpec {
        id,
        algorithm: insitu_compute::algorithm_hash(&module).1,
        module: module.into(),
        args: vec![],
        data_dir: data,
        out_dir: out,
        limits: SandboxLimits::default(),
    }
}

fn kubelet(dir: &std::path::Path) -> FakeKubelet {
    FakeKubelet {
        root: dir.join("node"),
        insitu: insitu_bin().expect("insitu binary"),
    }
}

fn methods(cluster: &FakeCluster) -> Vec<(Method, String)> {
    cluster
        .seen()
        .into_iter()
        .map(|s| {
            let last = s.path.rsplit('/').next().unwrap_or_default().to_string();
            (s.method, last)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_created_suspended_watched_to_success_logged_and_cleaned_up() {
    let cluster = FakeCluster::default();
    let (gw, settings) = gateway(Flavor::Job).await;
    let backend = KubernetesBackend::new(cluster.client(), settings, gw.clone());
    let tmp = tempfile::tempdir().expect("tmp");
    let id = JobId::random();
    let spec = staged(tmp.path(), id);
    let out = spec.out_dir.clone();
    let name = job_name(id);

    backend.start(spec).await.expect("start");
    // Created in the safe order: the Job suspended, then its Secret and NetworkPolicy
    // owned by it, then the Job resumed.
    let seen = cluster.seen();
    let writes: Vec<_> = seen.iter().filter(|s| s.method != Method::GET).collect();
    assert_eq!(writes.len(), 4, "{writes:#?}");
    assert_eq!(
        (writes[0].method.clone(), writes[0].path.as_str()),
        (Method::POST, "/apis/batch/v1/namespaces/jobs/jobs")
    );
    assert_eq!(writes[0].body["spec"]["suspend"], json!(true));
    let uid = cluster.get("jobs", &name).expect("job")["metadata"]["uid"].clone();
    assert_eq!(writes[1].path, "/api/v1/namespaces/jobs/secrets");
    assert_eq!(writes[1].body["metadata"]["ownerReferences"][0]["uid"], uid);
    assert_eq!(
        writes[2].path,
        "/apis/networking.k8s.io/v1/namespaces/jobs/networkpolicies"
    );
    assert_eq!(writes[2].body["metadata"]["ownerReferences"][0]["uid"], uid);
    assert_eq!(writes[3].method, Method::PATCH);
    assert_eq!(writes[3].body, json!({"spec": {"suspend": false}}));

    // The node runs the pod while the backend watches.
    let waiting = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.wait(id).await })
    };
    let ran = kubelet(tmp.path())
        .run_job(&cluster, &name)
        .await
        .expect("pod");
    let steps: Vec<_> = ran
        .iter()
        .map(|r| (r.container.as_str(), r.exit_code))
        .collect();
    assert_eq!(
        steps,
        [("stage", 0), ("algorithm", 0), ("publish", 0)],
        "{ran:#?}"
    );
    let outcome = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("wait ends")
        .expect("join")
        .expect("wait");
    assert_eq!(outcome, RunOutcome::Succeeded);
    // It waited by watching the one Job, not by polling.
    let watch = cluster
        .seen()
        .into_iter()
        .find(|s| s.query.get("watch").map(String::as_str) == Some("true"))
        .expect("a watch");
    assert_eq!(watch.path, "/apis/batch/v1/namespaces/jobs/jobs");
    assert_eq!(
        watch.query.get("fieldSelector").map(String::as_str),
        Some(format!("metadata.name={name}").as_str())
    );
    // The outputs came back through the gateway.
    let summary = std::fs::read_to_string(out.join("summary.csv")).expect("summary.csv");
    assert!(summary.lines().count() > 1, "{summary}");

    // Logs: the algorithm container's, by the run's label, bounded by the limit.
    let logs = backend.logs(id).await.expect("logs");
    let text = String::from_utf8_lossy(&logs);
    assert!(!text.is_empty());
    let log_req = cluster
        .seen()
        .into_iter()
        .find(|s| s.path.ends_with("/log"))
        .expect("a log request");
    assert_eq!(
        log_req.query.get("container").map(String::as_str),
        Some("algorithm")
    );
    assert_eq!(
        log_req.query.get("limitBytes").map(String::as_str),
        Some((1u64 << 20).to_string().as_str())
    );
    let pods = cluster
        .seen()
        .into_iter()
        .find(|s| s.path == "/api/v1/namespaces/jobs/pods")
        .expect("a pod lookup");
    assert_eq!(
        pods.query.get("labelSelector").map(String::as_str),
        Some(format!("insitu.io/job={id}").as_str())
    );

    // Cleanup is one delete; owner references take the rest.
    assert_eq!(backend.active().await.expect("active"), vec![id]);
    backend.cleanup(id).await.expect("cleanup");
    let delete = cluster
        .seen()
        .into_iter()
        .find(|s| s.method == Method::DELETE)
        .expect("a delete");
    assert_eq!(
        delete.path,
        format!("/apis/batch/v1/namespaces/jobs/jobs/{name}")
    );
    assert_eq!(delete.body["propagationPolicy"], json!("Background"));
    for plural in ["jobs", "secrets", "networkpolicies", "pods"] {
        assert!(
            cluster.names(plural).is_empty(),
            "{plural} left: {:?}",
            cluster.names(plural)
        );
    }
    assert!(backend.active().await.expect("active").is_empty());
    // The token died with the run.
    assert!(!gw.published(id));
    backend.cleanup(id).await.expect("cleanup is idempotent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_algorithm_fails_the_run_with_the_sandbox_s_own_reason() {
    let cluster = FakeCluster::default();
    let (gw, settings) = gateway(Flavor::Job).await;
    let backend = KubernetesBackend::new(cluster.client(), settings, gw);
    let tmp = tempfile::tempdir().expect("tmp");
    let id = JobId::random();
    let mut spec = staged(tmp.path(), id);
    let socket = attack_module("socket").expect("module");
    spec.algorithm = insitu_compute::algorithm_hash(&socket).1;
    spec.module = socket.into();
    backend.start(spec).await.expect("start");
    let waiting = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.wait(id).await })
    };
    let ran = kubelet(tmp.path())
        .run_job(&cluster, &job_name(id))
        .await
        .expect("pod");
    // The publish step never ran: init containers stop the pod at the first failure.
    let steps: Vec<_> = ran.iter().map(|r| r.container.as_str()).collect();
    assert_eq!(steps, ["stage", "algorithm"]);
    let outcome = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("wait ends")
        .expect("join")
        .expect("wait");
    match outcome {
        RunOutcome::Failed(why) => assert!(why.contains("network access denied"), "{why}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    backend.cleanup(id).await.expect("cleanup");
    assert!(cluster.names("secrets").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_deletes_the_run_in_the_foreground_and_wait_reports_cancelled() {
    let cluster = FakeCluster::default();
    let (gw, settings) = gateway(Flavor::Job).await;
    let backend = KubernetesBackend::new(cluster.client(), settings, gw);
    let tmp = tempfile::tempdir().expect("tmp");
    let id = JobId::random();
    backend.start(staged(tmp.path(), id)).await.expect("start");
    let waiting = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.wait(id).await })
    };
    // The watch is open before the cancel.
    for _ in 0..500 {
        if cluster.seen().iter().any(|s| s.query.contains_key("watch")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    backend.cancel(id).await.expect("cancel");
    let outcome = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("wait ends")
        .expect("join")
        .expect("wait");
    assert_eq!(outcome, RunOutcome::Cancelled);
    let delete = cluster
        .seen()
        .into_iter()
        .find(|s| s.method == Method::DELETE)
        .expect("a delete");
    assert_eq!(delete.body["propagationPolicy"], json!("Foreground"));
    assert!(cluster.names("jobs").is_empty());
    assert!(cluster.names("secrets").is_empty());
    backend.cleanup(id).await.expect("cleanup after cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_cannot_be_created_leaves_nothing_behind() {
    let cluster = FakeCluster::default();
    let (gw, settings) = gateway(Flavor::Job).await;
    let backend = KubernetesBackend::new(cluster.client(), settings, gw);
    let tmp = tempfile::tempdir().expect("tmp");
    let id = JobId::random();
    // Someone else's object already holds the NetworkPolicy's name.
    cluster
        .put(
            "networkpolicies",
            json!({"metadata": {"name": job_name(id), "namespace": "jobs"}}),
        )
        .expect("put");
    let err = backend
        .start(staged(tmp.path(), id))
        .await
        .expect_err("start must fail");
    assert!(err.to_string().contains("NetworkPolicy"), "{err}");
    assert!(cluster.names("jobs").is_empty(), "the Job was removed");
    assert!(
        cluster.get("secrets", &secret_name(id)).is_none(),
        "the Secret went with its owner"
    );
    // Nothing was ever resumed.
    assert!(!methods(&cluster).iter().any(|(m, _)| *m == Method::PATCH));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workflow_flavor_runs_as_an_argo_workflow_and_reports_its_failure() {
    let cluster = FakeCluster::default();
    let (gw, settings) = gateway(Flavor::Workflow).await;
    let backend = KubernetesBackend::new(cluster.client(), settings, gw);
    let tmp = tempfile::tempdir().expect("tmp");
    let id = JobId::random();
    backend.start(staged(tmp.path(), id)).await.expect("start");
    let name = job_name(id);
    let wf = cluster.get("workflows", &name).expect("workflow");
    assert_eq!(wf["kind"], json!("Workflow"));
    assert_eq!(
        wf["spec"]["suspend"],
        json!(false),
        "resumed after its guards"
    );
    let uid = wf["metadata"]["uid"].clone();
    for plural in ["secrets", "networkpolicies"] {
        let owned = cluster.names(plural);
        assert_eq!(owned.len(), 1);
        let o = cluster.get(plural, &owned[0]).expect("object");
        assert_eq!(
            o["metadata"]["ownerReferences"][0]["kind"],
            json!("Workflow")
        );
        assert_eq!(o["metadata"]["ownerReferences"][0]["uid"], uid);
    }
    let waiting = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.wait(id).await })
    };
    cluster
        .set_status("workflows", &name, json!({"phase": "Running"}))
        .expect("status");
    cluster
        .set_status(
            "workflows",
            &name,
            json!({"phase": "Failed", "message": "child 'algorithm' failed"}),
        )
        .expect("status");
    let outcome = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("wait ends")
        .expect("join")
        .expect("wait");
    match outcome {
        RunOutcome::Failed(why) => assert!(why.contains("child 'algorithm' failed"), "{why}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    backend.cleanup(id).await.expect("cleanup");
    for plural in ["workflows", "secrets", "networkpolicies"] {
        assert!(cluster.names(plural).is_empty(), "{plural} left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_a_run_only_with_its_token_and_holds_outputs_to_the_quota() {
    let gw = PodGateway::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(gw.clone().serve(listener));
    let tmp = tempfile::tempdir().expect("tmp");
    let (data, out) = (tmp.path().join("data"), tmp.path().join("out"));
    std::fs::create_dir_all(&data).expect("data");
    std::fs::create_dir_all(&out).expect("out");
    std::fs::write(data.join("input.arrow"), b"0123456789").expect("input");
    let id = JobId::random();
    let limits = SandboxLimits::default()
        .with_output_bytes(100)
        .with_output_files(3);
    let token = gw
        .open(
            id,
            data,
            out.clone(),
            vec![Arc::from(&b"\0asm"[..])],
            limits,
        )
        .expect("open");
    let http = reqwest::Client::new();
    let url = |tail: &str| format!("{base}/v1/runs/{id}/{tail}");
    let get = |tail: &str, token: &str| http.get(url(tail)).bearer_auth(token.to_string()).send();

    let ok = get("inputs", token.expose()).await.expect("list");
    assert_eq!(ok.status(), 200);
    let listed: Value = serde_json::from_slice(&ok.bytes().await.expect("body")).expect("json");
    assert_eq!(listed["modules"], json!(1));
    assert_eq!(
        listed["files"][0],
        json!({"name": "input.arrow", "bytes": 10})
    );
    // A wrong token, no token and an unknown run all read the same.
    for resp in [
        get("inputs", "not-the-token").await.expect("wrong"),
        http.get(url("inputs")).send().await.expect("none"),
        http.get(format!("{base}/v1/runs/{}/inputs", JobId::random()))
            .bearer_auth(token.expose().to_string())
            .send()
            .await
            .expect("other run"),
    ] {
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.text().await.expect("text"), "no such run");
    }
    // Inputs by flat name only.
    let escape = get("inputs/..%2F..%2Fetc%2Fpasswd", token.expose())
        .await
        .expect("escape");
    assert_eq!(escape.status(), 400);
    let put = |name: &str, body: Vec<u8>| {
        http.put(url(&format!("outputs/{name}")))
            .bearer_auth(token.expose().to_string())
            .body(body)
            .send()
    };
    assert_eq!(put(".hidden", vec![1]).await.expect("put").status(), 400);
    assert_eq!(
        put("a.csv", vec![b'x'; 60]).await.expect("put").status(),
        201
    );
    assert_eq!(
        put("a.csv", vec![b'x'; 1]).await.expect("put").status(),
        409
    );
    let over = put("b.csv", vec![b'y'; 60]).await.expect("put");
    assert_eq!(over.status(), 413);
    assert!(
        over.text()
            .await
            .expect("text")
            .contains("100-byte output quota")
    );
    assert!(!out.join("b.csv").exists(), "a refused output is not kept");
    assert_eq!(std::fs::read(out.join("a.csv")).expect("a.csv").len(), 60);
    // The file count includes refused attempts: a pod cannot probe the limit.
    assert_eq!(
        put("c.csv", vec![b'z'; 1]).await.expect("put").status(),
        409
    );
    gw.close(id);
    assert_eq!(
        get("inputs", token.expose())
            .await
            .expect("closed")
            .status(),
        404
    );
}

/// The compute service end to end on the Kubernetes backend: a consumer's job goes
/// through the same Flight actions, runs as a Job on the (fake) cluster with the real
/// pod steps, and its output becomes the consumer's asset. Nothing stays on the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compute_job_runs_on_the_cluster_and_publishes_its_result() {
    let cluster = FakeCluster::default();
    let (gw, settings) = gateway(Flavor::Job).await;
    let backend = Arc::new(KubernetesBackend::new(cluster.client(), settings, gw));
    let scene = ComputeScene::start_on(SandboxLimits::default(), false, vec![], Some(backend))
        .await
        .expect("scene");
    let agreement = scene.order(CONSUMER, scene.asset).await.expect("order");
    let mut client = scene.client(CONSUMER).await.expect("client");
    let job = scene
        .submit(&mut client, agreement, &scene.example)
        .await
        .expect("submit");
    let tmp = tempfile::tempdir().expect("tmp");
    let node = kubelet(tmp.path());
    let name = job_name(job.id);
    let c = cluster.clone();
    let pod = tokio::spawn(async move { node.run_job(&c, &name).await });
    let (_, done) = follow(&mut client, job.id, Duration::from_secs(180))
        .await
        .expect("follow");
    assert_eq!(done.state, JobState::Succeeded, "{:?}", done.error);
    let ran = pod.await.expect("join").expect("pod");
    assert!(ran.iter().all(|r| r.exit_code == 0), "{ran:#?}");
    let results = client.result(job.id).await.expect("result");
    assert_eq!(results.len(), 1);
    assert_eq!(
        insitu_integration_tests::compute::owner_of(&scene.world, results[0].did)
            .await
            .expect("owner"),
        account(CONSUMER).address()
    );
    let logs = client.logs(job.id).await.expect("logs");
    if scene.example_is_rust {
        let logs = String::from_utf8_lossy(&logs);
        assert!(
            logs.contains("summarised 569 rows"),
            "the algorithm's log comes from the pod: {logs}"
        );
    }
    for plural in ["jobs", "secrets", "networkpolicies", "pods"] {
        assert!(
            cluster.names(plural).is_empty(),
            "{plural} left on the cluster"
        );
    }
    assert_eq!(scene.job_dirs().expect("dirs"), 0);
}

/// Fail closed: a Job the cluster reports complete, whose publish step never told the
/// gateway it finished, is a failed run, not a success with missing outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_complete_without_its_publish_step_fails() {
    let cluster = FakeCluster::default();
    let (gw, settings) = gateway(Flavor::Job).await;
    let backend = KubernetesBackend::new(cluster.client(), settings, gw);
    let tmp = tempfile::tempdir().expect("tmp");
    let id = JobId::random();
    backend.start(staged(tmp.path(), id)).await.expect("start");
    cluster
        .set_status(
            "jobs",
            &job_name(id),
            json!({"conditions": [{"type": "Complete", "status": "True"}]}),
        )
        .expect("status");
    let outcome = tokio::time::timeout(Duration::from_secs(30), backend.wait(id))
        .await
        .expect("wait ends")
        .expect("wait");
    assert_eq!(
        outcome,
        RunOutcome::Failed("the run ended without publishing its outputs".into())
    );
    backend.cleanup(id).await.expect("cleanup");
}
