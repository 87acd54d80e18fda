//! Where lineage goes: an HTTP receiver (with profiles for Marquez, DataHub and
//! OpenMetadata), a JSON-lines file, or the console; and the dispatcher that drains the
//! outbox into them with exponential backoff.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;

use super::outbox::Outbox;
use crate::error::Result;

/// A receiver of events, identified by a name that keys its rows in the outbox.
#[async_trait::async_trait]
pub trait LineageTransport: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &str;
    /// Sends one event (JSON); `Err` with a reason that is safe to log.
    async fn send(&self, body: &str) -> std::result::Result<(), String>;
}

/// The lineage endpoint of each catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `POST /api/v1/lineage`
    Marquez,
    /// `POST /openapi/openlineage/api/v1/lineage` (needs `processing_engine`, which
    /// every insitu run carries).
    DataHub,
    /// `POST /api/v1/openlineage/lineage` with a JWT (needs an output dataset).
    OpenMetadata,
}

impl Profile {
    pub fn path(self) -> &'static str {
        match self {
            Profile::Marquez => "/api/v1/lineage",
            Profile::DataHub => "/openapi/openlineage/api/v1/lineage",
            Profile::OpenMetadata => "/api/v1/openlineage/lineage",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "marquez" => Some(Profile::Marquez),
            "datahub" => Some(Profile::DataHub),
            "openmetadata" => Some(Profile::OpenMetadata),
            _ => None,
        }
    }
}

/// An OpenLineage HTTP endpoint.
pub struct HttpTransport {
    name: String,
    url: String,
    bearer: Option<String>,
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("bearer", &self.bearer.as_ref().map(|_| "***"))
            .finish()
    }
}

impl HttpTransport {
    /// `base` is the catalog's address (`http://marquez:5000`); `bearer` is a token
    /// (read by the caller from an environment variable, never from configuration text).
    pub fn new(
        name: impl Into<String>,
        base: &str,
        profile: Profile,
        bearer: Option<String>,
    ) -> Self {
        HttpTransport {
            name: name.into(),
            url: format!("{}{}", base.trim_end_matches('/'), profile.path()),
            bearer,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }
}

#[async_trait::async_trait]
impl LineageTransport for HttpTransport {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, body: &str) -> std::result::Result<(), String> {
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = &self.bearer {
            req = req.bearer_auth(token);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.name))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("{}: HTTP {}", self.name, resp.status()))
        }
    }
}

/// JSON lines appended to a file.
#[derive(Debug)]
pub struct FileTransport {
    name: String,
    path: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl FileTransport {
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        FileTransport {
            name: name.into(),
            path: path.into(),
            lock: tokio::sync::Mutex::new(()),
        }
    }
}

#[async_trait::async_trait]
impl LineageTransport for FileTransport {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, body: &str) -> std::result::Result<(), String> {
        let _guard = self.lock.lock().await;
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let mut line = body.to_string();
        line.push('\n');
        f.write_all(line.as_bytes())
            .await
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        f.flush().await.map_err(|e| e.to_string())
    }
}

/// One line per event on standard output.
#[derive(Debug)]
pub struct ConsoleTransport;

#[async_trait::async_trait]
impl LineageTransport for ConsoleTransport {
    fn name(&self) -> &str {
        "console"
    }

    async fn send(&self, body: &str) -> std::result::Result<(), String> {
        println!("{body}");
        Ok(())
    }
}

/// Drains the outbox into the transports.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    outbox: Outbox,
    transports: Vec<Arc<dyn LineageTransport>>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How long a dispatcher holds the events it claimed: longer than sending a batch
/// takes (HTTP requests time out after 10 s each, and a failure ends the batch).
const LEASE: Duration = Duration::from_secs(60);

/// How long to wait after `attempts` failures: 0.5 s doubling, at most 5 minutes.
pub fn backoff(attempts: i64) -> Duration {
    let exp = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    Duration::from_millis(500u64.saturating_mul(1u64 << exp)).min(Duration::from_secs(300))
}

impl Dispatcher {
    pub fn new(outbox: Outbox, transports: Vec<Arc<dyn LineageTransport>>) -> Self {
        Dispatcher { outbox, transports }
    }

    /// The receivers' names, for [`Outbox::enqueue`].
    pub fn receivers(&self) -> Vec<String> {
        self.transports
            .iter()
            .map(|t| t.name().to_string())
            .collect()
    }

    /// One pass: hands events recorded for every receiver to each, then sends what is
    /// due at `now` (up to `batch` per receiver). A receiver
    /// that fails is left alone for the rest of the pass. Returns how many were sent.
    pub async fn run_once(&self, now: u64, batch: u32) -> Result<usize> {
        self.outbox.fan_out(&self.receivers()).await?;
        let mut sent = 0;
        for t in &self.transports {
            let lease = now + LEASE.as_millis() as u64;
            let claimed = self.outbox.claim(t.name(), now, lease, batch).await?;
            for (i, p) in claimed.iter().enumerate() {
                match t.send(&p.body).await {
                    Ok(()) => {
                        self.outbox.delivered(p).await?;
                        sent += 1;
                    }
                    Err(e) => {
                        let next = now + backoff(p.attempts).as_millis() as u64;
                        self.outbox.retry_at(p, next, &e).await?;
                        // The receiver is failing: the rest wait with the failed one.
                        self.outbox.release(&claimed[i + 1..], next).await?;
                        tracing::warn!(receiver = t.name(), error = %e, "lineage delivery failed; will retry");
                        break;
                    }
                }
            }
        }
        Ok(sent)
    }

    /// Delivers in the background, every `every`, until the task is dropped.
    pub fn spawn(self, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                loop {
                    match self.run_once(now_ms(), 500).await {
                        Ok(n) if n > 0 => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::error!(error = %e, "the lineage outbox is unreadable");
                            break;
                        }
                    }
                }
            }
        })
    }
}
