//! The provider's side of a pod's staging and publishing: a small HTTP service that
//! hands a run its staged inputs and module, and takes its outputs back.
//!
//! Why a gateway rather than object storage: the pod's NetworkPolicy allows egress to
//! this service only, so nothing in the pod can reach a bucket, and no storage URL or
//! credential ever enters the cluster. Each run has its own random token, delivered in
//! a Secret that only the stage and publish containers mount; the algorithm container
//! can reach the gateway but has nothing to show it. Unknown runs and wrong tokens get
//! the same answer, so the gateway is no oracle for job ids.
//!
//! Outputs are checked as they stream in: a flat name, at most the run's file count and
//! byte quota together. A pod cannot write outside the run's `/out` directory.
//!
//! - `GET  /v1/runs/{job}/inputs`          names and sizes of the staged files (JSON)
//! - `GET  /v1/runs/{job}/inputs/{name}`   one staged file
//! - `GET  /v1/runs/{job}/algorithms/{i}`  the module of algorithm step `i`
//! - `PUT  /v1/runs/{job}/outputs/{name}`  one output file
//! - `POST /v1/runs/{job}/published`       the publish step is done

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;

use crate::error::{ComputeError, Result};
use crate::job::JobId;
use crate::limits::SandboxLimits;

/// What `GET …/inputs` answers: the staged files and how many modules the run has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    pub files: Vec<InputFile>,
    pub modules: usize,
}

/// One staged file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    pub name: String,
    pub bytes: u64,
}

/// What the gateway holds for one run.
struct GatewayRun {
    token_sha256: [u8; 32],
    data_dir: PathBuf,
    out_dir: PathBuf,
    modules: Vec<Arc<[u8]>>,
    limits: SandboxLimits,
    written_bytes: u64,
    written_files: u64,
    published: bool,
}

/// The runs the gateway serves. Cheap to clone; clones share the registry.
#[derive(Clone, Default)]
pub struct PodGateway {
    runs: Arc<Mutex<HashMap<JobId, GatewayRun>>>,
}

impl std::fmt::Debug for PodGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let runs = self.runs.lock().map(|r| r.len()).unwrap_or(0);
        f.debug_struct("PodGateway").field("runs", &runs).finish()
    }
}

/// A run's opening in the gateway: its token, which goes into the run's Secret.
#[derive(Clone)]
pub struct RunToken(String);

impl RunToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RunToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunToken(<redacted>)")
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn internal(e: impl std::fmt::Display) -> ComputeError {
    ComputeError::Internal(format!("pod gateway: {e}"))
}

impl PodGateway {
    pub fn new() -> Self {
        PodGateway::default()
    }

    /// Opens `id` to the pod that will present the returned token.
    pub fn open(
        &self,
        id: JobId,
        data_dir: PathBuf,
        out_dir: PathBuf,
        modules: Vec<Arc<[u8]>>,
        limits: SandboxLimits,
    ) -> Result<RunToken> {
        let mut raw = [0u8; 32];
        rand::fill(&mut raw);
        let token = hex::encode(raw);
        self.runs.lock().map_err(internal)?.insert(
            id,
            GatewayRun {
                token_sha256: digest(&token),
                data_dir,
                out_dir,
                modules,
                limits,
                written_bytes: 0,
                written_files: 0,
                published: false,
            },
        );
        Ok(RunToken(token))
    }

    /// Closes `id`: its token stops working. Idempotent.
    pub fn close(&self, id: JobId) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.remove(&id);
        }
    }

    /// Whether the run's publish step reported that every output is in.
    pub fn published(&self, id: JobId) -> bool {
        self.runs
            .lock()
            .ok()
            .and_then(|r| r.get(&id).map(|r| r.published))
            .unwrap_or(false)
    }

    /// The HTTP routes, to serve on the address the pods' NetworkPolicy allows.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/runs/{job}/inputs", get(list_inputs))
            .route("/v1/runs/{job}/inputs/{name}", get(get_input))
            .route("/v1/runs/{job}/algorithms/{index}", get(get_algorithm))
            .route("/v1/runs/{job}/outputs/{name}", put(put_output))
            .route("/v1/runs/{job}/published", post(mark_published))
            // Output size is enforced while streaming, against the run's own quota.
            .layer(DefaultBodyLimit::disable())
            .with_state(self.clone())
    }

    /// Serves the gateway on `listener` until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> Result<()> {
        axum::serve(listener, self.router())
            .await
            .map_err(|e| ComputeError::Unavailable(format!("the pod gateway stopped: {e}")))
    }

    /// Checks the bearer token for `job`; `None` for an unknown job or a wrong token.
    fn authorise(&self, job: &str, headers: &HeaderMap) -> Option<JobId> {
        let id: JobId = job.parse().ok()?;
        let presented = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        let runs = self.runs.lock().ok()?;
        let run = runs.get(&id)?;
        bool::from(run.token_sha256.ct_eq(&digest(presented))).then_some(id)
    }
}

/// The one answer for unknown runs and wrong tokens.
fn unknown() -> Response {
    (StatusCode::NOT_FOUND, "no such run").into_response()
}

fn refuse(status: StatusCode, why: String) -> Response {
    (status, why).into_response()
}

/// A name a run may use for a file: one path component of safe characters.
pub(crate) fn flat_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

async fn list_inputs(
    State(gw): State<PodGateway>,
    Path(job): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(id) = gw.authorise(&job, &headers) else {
        return unknown();
    };
    let Some((dir, modules)) = gw.with_run(id, |r| (r.data_dir.clone(), r.modules.len())) else {
        return unknown();
    };
    let mut files = Vec::new();
    let mut entries = match tokio::fs::read_dir(&dir).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(job = %id, error = %e, "pod gateway cannot list the staged inputs");
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "inputs unavailable".into(),
            );
        }
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(meta) = entry.metadata().await
            && meta.is_file()
            && flat_name(&name)
        {
            files.push(InputFile {
                name,
                bytes: meta.len(),
            });
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    match serde_json::to_vec(&Inputs { files, modules }) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn get_input(
    State(gw): State<PodGateway>,
    Path((job, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(id) = gw.authorise(&job, &headers) else {
        return unknown();
    };
    if !flat_name(&name) {
        return refuse(StatusCode::BAD_REQUEST, "not an input name".into());
    }
    let Some(dir) = gw.with_run(id, |r| r.data_dir.clone()) else {
        return unknown();
    };
    match tokio::fs::File::open(dir.join(&name)).await {
        Ok(file) => Response::new(Body::from_stream(file_stream(file))),
        Err(_) => refuse(StatusCode::NOT_FOUND, format!("no input named {name}")),
    }
}

/// A file as a stream of chunks, so a large input never sits in memory whole.
fn file_stream(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    use tokio::io::AsyncReadExt;
    futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 256 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

async fn get_algorithm(
    State(gw): State<PodGateway>,
    Path((job, index)): Path<(String, usize)>,
    headers: HeaderMap,
) -> Response {
    let Some(id) = gw.authorise(&job, &headers) else {
        return unknown();
    };
    match gw.with_run(id, |r| r.modules.get(index).cloned()) {
        Some(Some(module)) => Response::new(Body::from(bytes::Bytes::from(module.to_vec()))),
        Some(None) => refuse(StatusCode::NOT_FOUND, format!("no algorithm step {index}")),
        None => unknown(),
    }
}

async fn put_output(
    State(gw): State<PodGateway>,
    Path((job, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(id) = gw.authorise(&job, &headers) else {
        return unknown();
    };
    if !flat_name(&name) {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("/out/{name}: outputs are flat files with plain names"),
        );
    }
    // Reserve the file first, so parallel uploads cannot pass the count together.
    let reserved = gw.with_run_mut(id, |r| {
        if r.published {
            return Err("the run's outputs are already published".to_string());
        }
        if r.written_files >= r.limits.output_files {
            return Err(format!(
                "/out/{name}: more than {} output files",
                r.limits.output_files
            ));
        }
        r.written_files += 1;
        Ok(r.out_dir.join(&name))
    });
    let path = match reserved {
        None => return unknown(),
        Some(Err(why)) => return refuse(StatusCode::CONFLICT, why),
        Some(Ok(p)) => p,
    };
    let file = match tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .await
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return refuse(
                StatusCode::CONFLICT,
                format!("/out/{name} was already sent"),
            );
        }
        Err(e) => {
            tracing::error!(job = %id, error = %e, "pod gateway cannot store an output");
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "output not stored".into(),
            );
        }
    };
    match receive(&gw, id, file, body).await {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(refusal) => {
            // Nothing half-written or over quota stays under /out.
            let _ = tokio::fs::remove_file(&path).await;
            refusal
        }
    }
}

/// Streams one upload into `file`, charging every chunk to the run's byte quota.
async fn receive(
    gw: &PodGateway,
    id: JobId,
    mut file: tokio::fs::File,
    body: Body,
) -> std::result::Result<(), Response> {
    let not_stored = |e: std::io::Error| {
        tracing::error!(job = %id, error = %e, "pod gateway cannot store an output");
        refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "output not stored".into(),
        )
    };
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("upload broken: {e}")))?;
        let over = gw.with_run_mut(id, |r| {
            r.written_bytes += chunk.len() as u64;
            (r.written_bytes > r.limits.output_bytes).then_some(r.limits.output_bytes)
        });
        match over {
            None => return Err(unknown()),
            Some(Some(quota)) => {
                return Err(refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the outputs exceed the {quota}-byte output quota"),
                ));
            }
            Some(None) => {}
        }
        file.write_all(&chunk).await.map_err(not_stored)?;
    }
    file.sync_all().await.map_err(not_stored)
}

async fn mark_published(
    State(gw): State<PodGateway>,
    Path(job): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(id) = gw.authorise(&job, &headers) else {
        return unknown();
    };
    match gw.with_run_mut(id, |r| r.published = true) {
        Some(()) => StatusCode::NO_CONTENT.into_response(),
        None => unknown(),
    }
}

impl PodGateway {
    fn with_run<T>(&self, id: JobId, f: impl FnOnce(&GatewayRun) -> T) -> Option<T> {
        self.runs.lock().ok()?.get(&id).map(f)
    }

    fn with_run_mut<T>(&self, id: JobId, f: impl FnOnce(&mut GatewayRun) -> T) -> Option<T> {
        self.runs.lock().ok()?.get_mut(&id).map(f)
    }
}
