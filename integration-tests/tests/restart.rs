//! Killing `insitu serve` on the embedded chain and starting it again keeps every asset,
//! agreement and balance: the real binary, killed with SIGKILL, no graceful shutdown.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use alloy::primitives::U256;
use insitu_integration_tests::{CONSUMER, PROVIDER, TEST_MNEMONIC, account, insitu_bin};
use insitu_ledger::embedded::EmbeddedChain;
use insitu_ledger::{AgreementId, AgreementState, Did, Ledger};
use tokio::process::{Child, Command};

fn insitu(dir: &Path) -> Command {
    let mut c = Command::new(insitu_bin().expect("binary"));
    c.env("INSITU_CHAIN", "embedded")
        .env("INSITU_DATA_DIR", dir)
        .env(
            "INSITU_CATALOG",
            format!("sqlite://{}", dir.join("catalog.db").display()),
        )
        .env("TEST_MNEMONIC", TEST_MNEMONIC)
        .env("INSITU_MNEMONIC_ENV", "TEST_MNEMONIC")
        .current_dir(dir);
    c
}

async fn run(dir: &Path, args: &[&str]) -> String {
    let out = insitu(dir).args(args).output().await.expect("run insitu");
    assert!(
        out.status.success(),
        "insitu {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

async fn serve(dir: &Path, port: u16) -> Child {
    serve_with(dir, port, &[]).await
}

/// `insitu serve` with `extra` arguments, once it listens on `port`.
async fn serve_with(dir: &Path, port: u16, extra: &[&str]) -> Child {
    serve_env(dir, port, extra, &[]).await
}

/// Like [`serve_with`], with environment variables.
async fn serve_env(dir: &Path, port: u16, extra: &[&str], env: &[(&str, &Path)]) -> Child {
    let child = insitu(dir)
        .envs(env.iter().copied())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start serve");
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("insitu serve did not listen on {port}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test]
async fn killing_serve_on_the_embedded_chain_keeps_assets_agreements_and_balances() {
    let work = tempfile::tempdir().expect("dir");
    let dir = work.path();
    let exports = run(dir, &["dev", "deploy", "--test-token"]).await;
    let token = exports
        .lines()
        .find_map(|l| l.strip_prefix("export INSITU_TEST_TOKEN="))
        .expect("the test token address")
        .to_string();
    std::fs::write(dir.join("people.csv"), "id,name\n1,ada\n2,grace\n3,linus\n").expect("csv");
    let did = run(
        dir,
        &[
            "publish",
            "people.csv",
            "--name",
            "people",
            "--price",
            "700",
            "--token",
            &token,
        ],
    )
    .await;
    let consumer = account(CONSUMER).address().to_string();
    run(
        dir,
        &[
            "dev", "mint", "--token", &token, "--to", &consumer, "--amount", "1000",
        ],
    )
    .await;
    let agreement = run(dir, &["order", &did, "--account-index", "1"]).await;

    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut server = serve(dir, port).await;
    let provider = account(PROVIDER).address().to_string();
    let get = |out: &'static str| {
        let endpoint = endpoint.clone();
        let did = did.clone();
        let agreement = agreement.clone();
        let provider = provider.clone();
        async move {
            run(
                dir,
                &[
                    "get",
                    &did,
                    "--agreement",
                    &agreement,
                    "--endpoint",
                    &endpoint,
                    "--provider",
                    &provider,
                    "-o",
                    out,
                    "--account-index",
                    "1",
                ],
            )
            .await
        }
    };
    get("first.csv").await;
    // While serve holds the chain, a second writer is refused with a clear message.
    let busy = insitu(dir)
        .args(["order", &did, "--account-index", "1"])
        .output()
        .await
        .expect("run insitu");
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("in use by another process"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("first.csv"))
            .expect("read")
            .lines()
            .count(),
        4
    );
    server.kill().await.expect("SIGKILL serve");
    server.wait().await.expect("reaped");

    // The state on disk has everything, as a fresh process reads it.
    {
        let (chain, genesis) = EmbeddedChain::open(Some(&dir.join("chain"))).expect("reopen");
        assert!(genesis.resumed);
        let l = chain.ledger(account(PROVIDER).address()).expect("ledger");
        let did: Did = did.parse().expect("did");
        let id: AgreementId = agreement.parse().expect("agreement");
        assert!(l.asset(did).await.expect("asset").is_some(), "asset kept");
        let ag = l
            .agreement(id)
            .await
            .expect("read")
            .expect("agreement kept");
        assert_eq!(ag.state, AgreementState::Fulfilled, "fulfilment kept");
        let token = genesis.test_token;
        assert_eq!(
            l.balance(account(CONSUMER).address(), Some(token))
                .await
                .expect("b"),
            U256::from(300u64)
        );
        assert_eq!(
            l.balance(account(PROVIDER).address(), Some(token))
                .await
                .expect("b"),
            U256::from(700u64)
        );
    }

    // A restarted provider serves the same agreement again, without a second payment.
    let mut server = serve(dir, port).await;
    get("second.csv").await;
    assert_eq!(
        std::fs::read_to_string(dir.join("first.csv")).expect("first"),
        std::fs::read_to_string(dir.join("second.csv")).expect("second")
    );
    server.kill().await.expect("SIGKILL serve");
    let (chain, genesis) = EmbeddedChain::open(Some(&dir.join("chain"))).expect("reopen");
    let l = chain.ledger(account(PROVIDER).address()).expect("ledger");
    assert_eq!(
        l.balance(account(PROVIDER).address(), Some(genesis.test_token))
            .await
            .expect("b"),
        U256::from(700u64),
        "paid exactly once"
    );
}

#[tokio::test]
async fn configured_assets_are_published_once_across_restarts() {
    let work = tempfile::tempdir().expect("dir");
    let dir = work.path();
    std::fs::write(dir.join("stock.csv"), "sku,qty\nA,1\nB,2\n").expect("csv");
    std::fs::write(
        dir.join("insitu.toml"),
        "[chain]\nkind = \"embedded\"\n\n[[assets]]\nsource = \"stock.csv\"\nname = \"stock\"\ntags = [\"inventory\"]\n",
    )
    .expect("config");
    let port = free_port();
    for _ in 0..2 {
        let child = insitu(dir)
            .args([
                "serve",
                "--config",
                "insitu.toml",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--admin-listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start serve");
        let mut child = child;
        let up = insitu_integration_tests::provider::wait_for_port(port).await;
        assert!(up, "serve did not start");
        child.kill().await.expect("kill");
        child.wait().await.expect("reap");
    }
    let catalog =
        insitu_catalog::AssetStore::open(&format!("sqlite://{}", dir.join("catalog.db").display()))
            .await
            .expect("catalog");
    let assets = catalog.list().await.expect("list");
    assert_eq!(assets.len(), 1, "published exactly once");
    assert!(assets[0].registered);
    assert_eq!(assets[0].ddo.name, "stock");
    let (chain, _) = EmbeddedChain::open_read_only(&dir.join("chain")).expect("chain");
    let l = chain.ledger(account(PROVIDER).address()).expect("ledger");
    assert!(
        l.asset(assets[0].ddo.did).await.expect("asset").is_some(),
        "registered on chain"
    );
}

/// Kills `insitu serve` with SIGKILL while a compute job runs, starts it again, and
/// checks that the job ends in a terminal state with nothing left of it on disk.
#[tokio::test]
async fn a_job_running_when_serve_is_killed_ends_and_leaves_nothing() {
    let work = tempfile::tempdir().expect("dir");
    let dir = work.path();
    let (job, mut server) = kill_serve_during_a_job(dir, "", &[], |_| async {}).await;
    assert!(!dir.join("compute/jobs").join(&job).exists());
    server.kill().await.expect("kill");
}

/// The same on the Kubernetes backend: `insitu serve` reads a kubeconfig naming an
/// API server (the in-memory fake, over HTTP on 127.0.0.1). Killed while its Job is on
/// the cluster, the restarted provider fails the job and deletes the Job, and with it
/// (owner references) the Secret and NetworkPolicy: nothing is orphaned on the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_job_running_when_serve_is_killed_is_removed_from_the_cluster() {
    use insitu_integration_tests::kube_fake::FakeCluster;
    let work = tempfile::tempdir().expect("dir");
    let dir = work.path();
    let cluster = FakeCluster::default();
    let api = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api_port = api.local_addr().expect("addr").port();
    tokio::spawn(cluster.clone().serve_http(api));
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{api_port}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: jobs\n\
             current-context: fake\nusers:\n- name: fake\n  user:\n    token: not-a-real-token\n"
        ),
    )
    .expect("kubeconfig");
    let gateway = free_port();
    let block = format!(
        "\n[compute.kubernetes]\nnamespace = \"jobs\"\nimage = \"registry.example/insitu:test\"\n\
         gateway_listen = \"127.0.0.1:{gateway}\"\ngateway_url = \"http://127.0.0.1:{gateway}/\"\n\
         gateway_selector = {{ app = \"insitu-provider\" }}\n"
    );
    let on_cluster = cluster.clone();
    let (job, mut server) = kill_serve_during_a_job(
        dir,
        &block,
        &[("KUBECONFIG", kubeconfig.as_path())],
        move |job| async move {
            // `running` is recorded as the backend starts; the Job follows at once.
            let j = on_cluster
                .wait_for("jobs", &format!("insitu-job-{job}"), |j| {
                    j["spec"]["suspend"] == serde_json::json!(false)
                })
                .await
                .expect("the Job is on the cluster, resumed");
            assert!(j["metadata"]["uid"].is_string());
            assert_eq!(on_cluster.names("secrets").len(), 1);
            assert_eq!(on_cluster.names("networkpolicies").len(), 1);
        },
    )
    .await;
    for plural in ["jobs", "secrets", "networkpolicies"] {
        assert!(
            cluster.names(plural).is_empty(),
            "{plural} orphaned: {:?}",
            cluster.names(plural)
        );
    }
    assert!(
        cluster
            .seen()
            .iter()
            .any(|r| r.method == http::Method::DELETE && r.path.ends_with(&job)),
        "the restarted provider deleted the Job"
    );
    server.kill().await.expect("kill");
}

/// Publishes a compute asset, runs a never-ending job under `insitu serve` (with
/// `extra_config` in its `[compute]`), SIGKILLs serve while the job runs (after
/// `while_running` looked), starts serve again and checks that the job failed with the
/// restart as its reason and that no job directory is left. Returns the job id and the
/// running server.
async fn kill_serve_during_a_job<Fut>(
    dir: &Path,
    extra_config: &str,
    env: &[(&str, &Path)],
    while_running: impl FnOnce(String) -> Fut,
) -> (String, Child)
where
    Fut: std::future::Future<Output = ()>,
{
    run(dir, &["dev", "deploy", "--test-token"]).await;
    std::fs::write(dir.join("grid.csv"), "x,y\n1,2\n3,4\n").expect("csv");
    let did = run(
        dir,
        &[
            "publish",
            "grid.csv",
            "--name",
            "grid",
            "--service",
            "compute",
        ],
    )
    .await;
    let agreement = run(dir, &["order", &did, "--account-index", "1"]).await;
    let spin = insitu_integration_tests::compute::attack_module("infinite_loop").expect("module");
    std::fs::write(dir.join("spin.wat"), &spin).expect("module");
    let hash = insitu_integration_tests::compute::hash_of(&spin);
    std::fs::write(
        dir.join("insitu.toml"),
        format!(
            "[chain]\nkind = \"embedded\"\n\n[compute]\nallow = [\"{hash}\"]\ndeadline_secs = 600\n{extra_config}"
        ),
    )
    .expect("config");
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let provider = account(PROVIDER).address().to_string();
    let config = ["--config", "insitu.toml"];
    let mut server = serve_env(dir, port, &config, env).await;
    let remote = [
        "--endpoint",
        &endpoint,
        "--provider",
        &provider,
        "--account-index",
        "1",
    ];
    let submitted = run(
        dir,
        &[
            &[
                "compute",
                "submit",
                &did,
                "--agreement",
                &agreement,
                "--algorithm",
                "spin.wat",
            ][..],
            &remote[..],
        ]
        .concat(),
    )
    .await;
    let job = submitted
        .split_whitespace()
        .nth(1)
        .expect("job id")
        .to_string();
    loop {
        let s = job_status(dir, &job, &endpoint, &provider).await;
        match s["job"]["state"].as_str() {
            Some("running") => break,
            Some("queued" | "staging") => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("unexpected state {other:?}: {s}"),
        }
    }
    let job_dir = dir.join("compute/jobs").join(&job);
    assert!(
        job_dir.exists(),
        "the running job's staged input is on disk"
    );
    while_running(job.clone()).await;
    server.kill().await.expect("SIGKILL serve");
    server.wait().await.expect("reaped");

    let server = serve_env(dir, port, &config, env).await;
    let s = job_status(dir, &job, &endpoint, &provider).await;
    assert_eq!(s["job"]["state"], "failed", "{s}");
    assert!(
        s["job"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("provider restarted"),
        "{s}"
    );
    assert!(!job_dir.exists(), "the job's directory was removed");
    let left = std::fs::read_dir(dir.join("compute/jobs"))
        .expect("jobs")
        .count();
    assert_eq!(left, 0, "no orphaned job directories");
    (job, server)
}

/// `insitu compute status JOB --json`, as the consumer.
async fn job_status(dir: &Path, job: &str, endpoint: &str, provider: &str) -> serde_json::Value {
    let out = run(
        dir,
        &[
            "compute",
            "status",
            job,
            "--json",
            "--endpoint",
            endpoint,
            "--provider",
            provider,
            "--account-index",
            "1",
        ],
    )
    .await;
    serde_json::from_str(&out).expect("status json")
}
