//! The three steps inside a run's pod, as the runner image executes them
//! (`insitu compute pod stage|exec|publish`):
//!
//! 1. **stage** (init container, mounts the run's Secret): fetches the staged inputs
//!    and the module from the provider's [`super::PodGateway`] into `/data` and `/work`;
//! 2. **exec** (init container, no Secret, no egress but the gateway): runs the module
//!    in the same WASI sandbox as [`crate::WasmBackend`], under the run's limits, so a
//!    container adds isolation rather than replacing it;
//! 3. **publish** (main container, mounts the Secret): sends every file of `/out` back.
//!
//! Init containers run in order and a failing one fails the pod, so nothing is
//! published unless the algorithm succeeded.

use std::path::Path;

use tokio::io::AsyncWriteExt;
use url::Url;

use super::gateway::{Inputs, flat_name};
use crate::backend::RunOutcome;
use crate::error::{ComputeError, Result};
use crate::job::JobId;
use crate::limits::SandboxLimits;

/// The file of algorithm step `i`'s module under `/work`.
pub fn module_file(i: usize) -> String {
    format!("algorithm-{i}.wasm")
}

/// A pod's way to its run in the gateway.
#[derive(Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    base: Url,
    job: JobId,
    token: String,
}

impl std::fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayClient")
            .field("base", &self.base.as_str())
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

fn unavailable(what: &str) -> impl FnOnce(reqwest::Error) -> ComputeError + '_ {
    move |e| ComputeError::Unavailable(format!("{what}: {e}"))
}

impl GatewayClient {
    /// `base` is the gateway's in-cluster URL; the token is read from the run's Secret.
    pub fn new(base: Url, job: JobId, token: String) -> Self {
        GatewayClient {
            http: reqwest::Client::new(),
            base,
            job,
            token: token.trim().to_string(),
        }
    }

    fn url(&self, tail: &str) -> Result<Url> {
        self.base
            .join(&format!("v1/runs/{}/{tail}", self.job))
            .map_err(|e| ComputeError::Invalid(format!("gateway URL: {e}")))
    }

    async fn get(&self, tail: &str) -> Result<reqwest::Response> {
        let resp = self
            .http
            .get(self.url(tail)?)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(unavailable("reaching the provider's gateway"))?;
        answer(resp).await
    }

    /// Stage step: the inputs into `data_dir`, the module into `work_dir`.
    pub async fn stage(&self, data_dir: &Path, work_dir: &Path) -> Result<u64> {
        let list = self
            .get("inputs")
            .await?
            .bytes()
            .await
            .map_err(unavailable("listing inputs"))?;
        let inputs: Inputs = serde_json::from_slice(&list)
            .map_err(|e| ComputeError::Internal(format!("the gateway's input list: {e}")))?;
        let mut total = 0;
        for f in &inputs.files {
            if !flat_name(&f.name) {
                return Err(ComputeError::Internal(format!(
                    "unexpected input name {}",
                    f.name
                )));
            }
            let resp = self.get(&format!("inputs/{}", f.name)).await?;
            total += save(resp, &data_dir.join(&f.name)).await?;
        }
        for i in 0..inputs.modules {
            let resp = self.get(&format!("algorithms/{i}")).await?;
            save(resp, &work_dir.join(module_file(i))).await?;
        }
        Ok(total)
    }

    /// Publish step: every file of `out_dir`, then the end mark. Anything but a plain
    /// file with a flat name fails the step, naming it: nothing is dropped silently.
    pub async fn publish(&self, out_dir: &Path) -> Result<u64> {
        let mut names = Vec::new();
        let mut entries = tokio::fs::read_dir(out_dir)
            .await
            .map_err(|e| ComputeError::Internal(format!("reading /out: {e}")))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| ComputeError::Internal(format!("reading /out: {e}")))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry
                .file_type()
                .await
                .map_err(|e| ComputeError::Internal(format!("reading /out/{name}: {e}")))?;
            if !kind.is_file() || !flat_name(&name) {
                return Err(ComputeError::Invalid(format!(
                    "/out/{name}: outputs are plain files with plain names"
                )));
            }
            names.push(name);
        }
        names.sort();
        for name in &names {
            let body = tokio::fs::read(out_dir.join(name))
                .await
                .map_err(|e| ComputeError::Internal(format!("reading /out/{name}: {e}")))?;
            let resp = self
                .http
                .put(self.url(&format!("outputs/{name}"))?)
                .bearer_auth(&self.token)
                .body(body)
                .send()
                .await
                .map_err(unavailable("sending an output"))?;
            answer(resp).await?;
        }
        let resp = self
            .http
            .post(self.url("published")?)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(unavailable("closing the publish step"))?;
        answer(resp).await?;
        Ok(names.len() as u64)
    }
}

/// A gateway answer, or its refusal as an error with the gateway's words.
async fn answer(resp: reqwest::Response) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let why = resp.text().await.unwrap_or_default();
    let why = why.chars().take(300).collect::<String>();
    Err(match status.as_u16() {
        404 => ComputeError::NotFound(format!("the gateway does not know this run ({why})")),
        400 | 409 | 413 => ComputeError::Invalid(why),
        _ => ComputeError::Unavailable(format!("the gateway answered {status}: {why}")),
    })
}

async fn save(mut resp: reqwest::Response, path: &Path) -> Result<u64> {
    let io = |e: std::io::Error| ComputeError::Internal(format!("writing {}: {e}", path.display()));
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut n = 0u64;
    while let Some(chunk) = resp.chunk().await.map_err(unavailable("downloading"))? {
        n += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.sync_all().await.map_err(io)?;
    Ok(n)
}

/// Exec step: runs the module at `module` on `data_dir` in the WASI sandbox, writing
/// its log to stdout (where the cluster keeps container logs). Returns the outcome;
/// the caller turns a failure into the container's exit status and termination
/// message, which the backend reads back as the job's error.
pub fn exec(
    module: &Path,
    args: &[String],
    data_dir: &Path,
    out_dir: &Path,
    limits: &SandboxLimits,
) -> Result<(RunOutcome, Vec<u8>)> {
    let bytes = std::fs::read(module)
        .map_err(|e| ComputeError::Internal(format!("reading the module: {e}")))?;
    let (_, hash) = crate::algorithm::algorithm_hash(&bytes);
    let backend = crate::WasmBackend::new()?;
    let compiled = backend.compile(&hash, &bytes)?;
    let (outcome, _timings, log) = backend.run_blocking(&compiled, args, data_dir, out_dir, limits);
    Ok((outcome, log))
}
