//! N providers, each its own `insitu serve` process and account, each publishing one
//! shard with a free `train` service; and the consumer's CLI.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use alloy::primitives::Address;
use insitu_integration_tests::account;
use insitu_integration_tests::provider::World;
use tokio::process::{Child, Command};

/// The consumer's account.
pub(crate) const CONSUMER: u32 = 1;
/// Provider `i` acts as account `FIRST_PROVIDER + i`.
const FIRST_PROVIDER: u32 = 3;

/// One provider process.
pub(crate) struct Site {
    pub(crate) did: String,
    pub(crate) address: Address,
    pub(crate) endpoint: String,
    pub(crate) dir: PathBuf,
    pub(crate) server: Child,
}

pub(crate) struct Federation {
    pub(crate) sites: Vec<Site>,
    pub(crate) consumer_dir: tempfile::TempDir,
    _dirs: Vec<tempfile::TempDir>,
}

/// The CLI on anvil, acting as account `who`, in `dir`.
pub(crate) fn insitu(world: &World, dir: &Path, who: u32) -> Command {
    let mut c = insitu_integration_tests::provider::cli_on(world, dir, who).expect("binary");
    c.env_remove("INSITU_CONFIG");
    c
}

/// Runs the CLI to success and returns its stdout, trimmed.
pub(crate) async fn run(cmd: &mut Command) -> String {
    let out = cmd.output().await.expect("run insitu");
    assert!(
        out.status.success(),
        "insitu failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

/// A port for a provider to listen on later. It is taken below the kernel's ephemeral
/// range (32768 and up), which the outgoing connections of concurrent tests draw their
/// source ports from: a port picked there could be taken by one of them before the
/// provider binds it. A counter keeps this process's picks apart.
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = (std::process::id() % 1_000) * 12;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = u16::try_from(20_000 + (start + n) % 12_000).expect("a port below 32768");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Federation {
    /// Starts one provider per shard (a CSV file), allowing `module_hash` to run, with
    /// `extra_config` appended to each `serve.toml`.
    pub(crate) async fn start(
        world: &World,
        shards: &[PathBuf],
        module_hash: &str,
        extra_config: &str,
    ) -> Federation {
        let mut sites = Vec::new();
        let mut dirs = Vec::new();
        for (i, shard) in shards.iter().enumerate() {
            let who = FIRST_PROVIDER + i as u32;
            let tmp = tempfile::tempdir().expect("dir");
            let dir = tmp.path().to_path_buf();
            std::fs::copy(shard, dir.join("shard.csv")).expect("copy shard");
            let port = free_port();
            let endpoint = format!("http://127.0.0.1:{port}");
            std::fs::write(
                dir.join("serve.toml"),
                format!(
                    "[compute]\nallow = [\"{module_hash}\"]\ndeadline_secs = 120\n\n{extra_config}"
                ),
            )
            .expect("config");
            let did = run(insitu(world, &dir, who).args([
                "publish",
                "shard.csv",
                "--name",
                &format!("shard-{i}"),
                "--service",
                "train",
                "--endpoint",
                &endpoint,
            ]))
            .await;
            let server = insitu(world, &dir, who)
                .args([
                    "serve",
                    "--config",
                    "serve.toml",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--admin-listen",
                    "127.0.0.1:0",
                ])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("serve.log")).expect("log"))
                .kill_on_drop(true)
                .spawn()
                .expect("start serve");
            let up = insitu_integration_tests::provider::wait_for_port(port).await;
            assert!(
                up,
                "provider {i} did not listen: {}",
                std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
            );
            sites.push(Site {
                did,
                address: account(who).address(),
                endpoint,
                dir,
                server,
            });
            dirs.push(tmp);
        }
        Federation {
            sites,
            consumer_dir: tempfile::tempdir().expect("dir"),
            _dirs: dirs,
        }
    }

    pub(crate) fn dids(&self) -> String {
        self.sites
            .iter()
            .map(|s| s.did.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The consumer's CLI.
    pub(crate) fn consumer(&self, world: &World) -> Command {
        insitu(world, self.consumer_dir.path(), CONSUMER)
    }

    /// The consumer's record of `job`, if written yet.
    pub(crate) fn record(&self, job: &str) -> Option<serde_json::Value> {
        let path = self
            .consumer_dir
            .path()
            .join("train")
            .join(format!("{job}.json"));
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// Every provider's log, for a failing assertion.
    pub(crate) fn logs(&self) -> String {
        self.sites
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "--- provider {i}\n{}",
                    std::fs::read_to_string(s.dir.join("serve.log")).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
