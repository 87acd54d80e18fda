//! Feast's OpenLineage lineage server (`feast serve_lineage`) as a real receiver: it
//! accepts events at `POST /api/v1/lineage` (the Marquez path) and shows what it
//! stored at `GET /api/v1/lineage/openlineage/{datasets,runs}`. It runs from the
//! `.venv-lineage` venv `scripts/test.sh` makes, on a free loopback port, with its own
//! SQLite database in a scratch directory, and is stopped when dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

/// A running Feast lineage server.
#[derive(Debug)]
pub struct FeastLineage {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

fn feast_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("INSITU_FEAST") {
        return Ok(PathBuf::from(p));
    }
    let p = crate::workspace_root().join(".venv-lineage/bin/feast");
    if p.exists() {
        Ok(p)
    } else {
        bail!(
            "Feast is not installed at {}: run scripts/test.sh (it makes .venv-lineage) or set INSITU_FEAST",
            p.display()
        )
    }
}

impl FeastLineage {
    /// Starts the server; it accepts only events that carry `api_key` as a bearer token.
    pub async fn start(api_key: &str) -> Result<Self> {
        let bin = feast_bin()?;
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        // A file registry Feast never touches here, and the lineage store in SQLite.
        let config = format!(
            "project: insitu_lineage\n\
             provider: local\n\
             registry: data/registry.db\n\
             online_store:\n  type: sqlite\n  path: data/online.db\n\
             entity_key_serialization_version: 3\n\
             openlineage:\n  consumer:\n    enabled: true\n    api_key: {api_key}\n    \
             connection_string: sqlite:///{}\n    retention_days: 0\n",
            data.join("lineage.db").display()
        );
        std::fs::write(dir.path().join("feature_store.yaml"), config)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(dir.path())
            .args(["serve_lineage", "-h", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut feast = FeastLineage {
            child,
            port,
            _dir: dir,
        };
        feast.wait_ready(Duration::from_secs(120)).await?;
        Ok(feast)
    }

    /// Where insitu sends events: the base URL (the Marquez profile adds the path).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("feast serve_lineage exited early with {status}");
            }
            if self.get("/openapi.json").await.is_ok() {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!("feast serve_lineage did not answer within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET path` on the server, as JSON.
    pub async fn get(&self, path: &str) -> Result<serde_json::Value> {
        let resp = reqwest::get(format!("{}{path}", self.url())).await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("GET {path}: HTTP {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// The datasets Feast stored.
    pub async fn datasets(&self) -> Result<Vec<serde_json::Value>> {
        let v = self.get("/api/v1/lineage/openlineage/datasets").await?;
        Ok(v["datasets"].as_array().cloned().unwrap_or_default())
    }

    /// The runs Feast stored.
    pub async fn runs(&self) -> Result<Vec<serde_json::Value>> {
        let v = self.get("/api/v1/lineage/openlineage/runs").await?;
        Ok(v["runs"].as_array().cloned().unwrap_or_default())
    }
}
