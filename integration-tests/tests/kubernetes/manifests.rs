//! The generated manifests: golden files (a change to what insitu sends a cluster shows
//! up in review), the hardening each must carry whatever the goldens say, and every
//! generated Argo Workflow against Argo's own JSON Schema.
//!
//! Regenerate the goldens with `INSITU_UPDATE_GOLDEN=1` after an intended change.

use std::collections::BTreeMap;
use std::path::PathBuf;

use insitu_compute::kubernetes::{
    Flavor, KubeSettings, PodPlan, job, network_policy, secret, workflow,
};
use insitu_compute::{JobId, SandboxLimits};
use insitu_integration_tests::workspace_root;
use serde_json::{Value, json};

fn settings(flavor: Flavor) -> KubeSettings {
    let mut b = KubeSettings::builder(
        "registry.example/insitu:0.1",
        "http://10.96.12.7:8817/".parse().expect("url"),
    )
    .namespace("insitu-jobs")
    .gateway_namespace("insitu")
    .gateway_selector(BTreeMap::from([("app".into(), "insitu-provider".into())]))
    .flavor(flavor);
    if flavor == Flavor::Workflow {
        b = b
            .executor_service_account("argo-executor")
            .api_server_egress("10.96.0.1/32", 443);
    }
    b.build().expect("settings")
}

fn id() -> JobId {
    "6f1c2a9e-3b7d-4e58-9a41-0c2d8e5f7b13".parse().expect("id")
}

fn single() -> PodPlan {
    PodPlan::single(
        id(),
        vec!["--columns".into(), "f0,f1".into()],
        SandboxLimits::default(),
    )
}

fn pipeline() -> PodPlan {
    PodPlan {
        id: id(),
        steps: vec![vec!["--clean".into()], vec!["--summarise".into()]],
        limits: SandboxLimits::default(),
    }
}

fn golden(name: &str, value: &Value) {
    let path: PathBuf = workspace_root()
        .join("integration-tests/tests/kubernetes/golden")
        .join(name);
    let text = serde_json::to_string_pretty(value).expect("json") + "\n";
    if std::env::var_os("INSITU_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, &text).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (INSITU_UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(
        text,
        want,
        "{} differs; if the change is intended, regenerate with INSITU_UPDATE_GOLDEN=1",
        path.display()
    );
}

fn containers(pod_spec: &Value) -> Vec<Value> {
    let mut all: Vec<Value> = pod_spec["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    all.extend(
        pod_spec["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    );
    all
}

/// The hardening SECURITY.md asks of every container that runs a consumer's code or
/// touches its run.
fn assert_hardened(c: &Value) {
    let name = &c["name"];
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], json!(true), "{name}");
    assert_eq!(sc["readOnlyRootFilesystem"], json!(true), "{name}");
    assert_eq!(sc["allowPrivilegeEscalation"], json!(false), "{name}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
    assert_eq!(
        sc["seccompProfile"]["type"],
        json!("RuntimeDefault"),
        "{name}"
    );
    assert!(c["resources"]["limits"]["memory"].is_string(), "{name}");
    assert!(c["resources"]["limits"]["cpu"].is_string(), "{name}");
    assert!(
        c.get("env").is_none() && c.get("envFrom").is_none(),
        "{name} has an environment"
    );
}

/// No argument anywhere carries the token.
fn assert_no_secret_in_args(manifest: &Value, token: &str) {
    assert!(
        !manifest.to_string().contains(token),
        "the token leaked into a manifest"
    );
}

#[test]
fn the_job_secret_and_network_policy_match_their_goldens_and_are_hardened() {
    let s = settings(Flavor::Job);
    let job = serde_json::to_value(job(&s, &single())).expect("job");
    golden("job.json", &job);
    let spec = &job["spec"];
    assert_eq!(spec["suspend"], json!(true), "created suspended");
    assert_eq!(spec["backoffLimit"], json!(0));
    assert_eq!(spec["activeDeadlineSeconds"], json!(300 + 300));
    assert!(spec["ttlSecondsAfterFinished"].is_i64());
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], json!(false));
    assert_eq!(pod["enableServiceLinks"], json!(false));
    assert_eq!(pod["restartPolicy"], json!("Never"));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], json!(true));
    let all = containers(pod);
    let names: Vec<_> = all
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["stage", "algorithm", "publish"]);
    for c in &all {
        assert_hardened(c);
    }
    // Only the transfer steps mount the token; the algorithm sees its input read-only.
    let mounts = |c: &Value| -> Vec<(String, bool)> {
        c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or_default().to_string(),
                    m["readOnly"] == json!(true),
                )
            })
            .collect()
    };
    let algorithm = &all[1];
    assert_eq!(
        mounts(algorithm),
        [
            ("data".into(), true),
            ("work".into(), true),
            ("out".into(), false)
        ]
    );
    assert!(mounts(&all[0]).contains(&("token".into(), true)));
    assert!(mounts(&all[2]).contains(&("token".into(), true)));
    // The consumer's arguments come after `--`, never as the runner's flags.
    let args: Vec<&str> = algorithm["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let dashdash = args.iter().position(|a| *a == "--").expect("--");
    assert_eq!(&args[dashdash + 1..], ["--columns", "f0,f1"]);
    assert_eq!(algorithm["resources"]["limits"]["memory"], json!("768Mi"));

    let token = "a1b2c3-golden-token";
    let secret = serde_json::to_value(secret(&s, id(), token, None)).expect("secret");
    golden("secret.json", &secret);
    assert_eq!(secret["immutable"], json!(true));
    assert_no_secret_in_args(&job, token);

    let policy = serde_json::to_value(network_policy(&s, id(), None)).expect("policy");
    golden("network-policy.json", &policy);
    let p = &policy["spec"];
    assert_eq!(p["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(p["ingress"], json!([]), "no ingress at all");
    assert_eq!(
        p["podSelector"]["matchLabels"]["insitu.io/job"],
        json!(id().to_string())
    );
    let egress = p["egress"].as_array().expect("egress");
    assert_eq!(
        egress.len(),
        1,
        "the gateway is the only way out: {egress:?}"
    );
    assert_eq!(
        egress[0]["ports"],
        json!([{"port": 8817, "protocol": "TCP"}])
    );
    assert_eq!(
        egress[0]["to"][0]["podSelector"]["matchLabels"],
        json!({"app": "insitu-provider"})
    );
}

#[test]
fn the_workflow_matches_its_golden_and_carries_the_same_hardening() {
    let s = settings(Flavor::Workflow);
    let wf = serde_json::to_value(workflow(&s, &pipeline()).expect("workflow")).expect("json");
    golden("workflow.json", &wf);
    let spec = &wf["spec"];
    assert_eq!(spec["automountServiceAccountToken"], json!(false));
    assert_eq!(
        spec["executor"]["serviceAccountName"],
        json!("argo-executor")
    );
    assert_eq!(
        spec["podMetadata"]["labels"]["insitu.io/job"],
        json!(id().to_string())
    );
    let nodes = spec["templates"][0]["containerSet"]["containers"]
        .as_array()
        .expect("containers");
    let order: Vec<_> = nodes
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or_default(),
                n["dependencies"].clone(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("stage", Value::Null),
            ("step-0", json!(["stage"])),
            ("step-1", json!(["step-0"])),
            ("publish", json!(["step-1"])),
        ]
    );
    for n in nodes {
        assert_hardened(n);
    }
    // Step 1 reads step 0's output as its /data; only the last writes /out.
    let mount = |n: &Value, path: &str| {
        n["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["mountPath"] == json!(path))
            .map(|m| m["name"].clone())
    };
    assert_eq!(mount(&nodes[1], "/out"), Some(json!("mid-0")));
    assert_eq!(mount(&nodes[2], "/data"), Some(json!("mid-0")));
    assert_eq!(mount(&nodes[2], "/out"), Some(json!("out")));

    let policy = serde_json::to_value(network_policy(&s, id(), None)).expect("policy");
    golden("workflow-network-policy.json", &policy);
    let egress = policy["spec"]["egress"].as_array().expect("egress");
    assert_eq!(
        egress.len(),
        2,
        "the gateway, and the API server for Argo's executor"
    );
    assert_eq!(egress[1]["to"][0]["ipBlock"]["cidr"], json!("10.96.0.1/32"));
}

fn argo_validator() -> jsonschema::Validator {
    let path = workspace_root().join("../shared/k8s-schemas/argo-workflow-schema.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut schema: Value = serde_json::from_str(&text).expect("schema json");
    // The file's root accepts any of five kinds; a Workflow must be a Workflow.
    let root = schema.as_object_mut().expect("object");
    root.remove("oneOf");
    root.insert(
        "$ref".into(),
        json!("#/definitions/io.argoproj.workflow.v1alpha1.Workflow"),
    );
    jsonschema::options()
        .build(&schema)
        .expect("the Argo schema compiles")
}

fn errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_generated_workflow_validates_against_the_argo_schema() {
    let v = argo_validator();
    let s = settings(Flavor::Workflow);
    let mut docs = vec![
        serde_json::to_value(workflow(&s, &single()).expect("wf")).expect("json"),
        serde_json::to_value(workflow(&s, &pipeline()).expect("wf")).expect("json"),
    ];
    // And what the backend actually sends a cluster (suspended, then resumed).
    let cluster = insitu_integration_tests::kube_fake::FakeCluster::default();
    let backend = insitu_compute::kubernetes::KubernetesBackend::new(
        cluster.client(),
        s.clone(),
        insitu_compute::kubernetes::PodGateway::new(),
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = insitu_compute::RunSpec {
        id: JobId::random(),
        module: std::sync::Arc::from(&b"\0asm\x01\0\0\0"[..]),
        algorithm: "sha256:00".into(),
        args: vec!["x".into()],
        data_dir: tmp.path().to_path_buf(),
        out_dir: tmp.path().to_path_buf(),
        limits: SandboxLimits::default(),
    };
    use insitu_compute::ComputeBackend as _;
    backend.start(spec).await.expect("start");
    let sent = cluster
        .seen()
        .into_iter()
        .find(|r| r.method == http::Method::POST && r.path.ends_with("/workflows"))
        .expect("the workflow was posted");
    docs.push(sent.body);
    for doc in &docs {
        assert_eq!(errors(&v, doc), Vec::<String>::new(), "{doc:#}");
    }

    // The validator does catch a broken Workflow.
    let mut bad = docs[0].clone();
    bad["spec"]["activeDeadlineSeconds"] = json!("soon");
    assert!(!errors(&v, &bad).is_empty(), "a string deadline must fail");
    let mut bad = docs[0].clone();
    bad["spec"]["templates"][0]["containerSet"]["containers"][0]["securityContext"]["runAsNonRoot"] =
        json!("yes");
    assert!(!errors(&v, &bad).is_empty(), "a string boolean must fail");
    let mut bad = docs[0].clone();
    bad.as_object_mut().expect("object").remove("spec");
    assert!(
        !errors(&v, &bad).is_empty(),
        "a Workflow without spec must fail"
    );
}
