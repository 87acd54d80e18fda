//! `WasmBackend`: the default backend. Algorithms are WASI preview 1 modules run by
//! wasmtime in-process, each on a thread of its own, under the limits of
//! [`crate::SandboxLimits`].
//!
//! Modules are compiled once per content hash and kept (a bounded in-memory cache), so
//! a second run of the same algorithm starts in about a millisecond rather than paying
//! Cranelift again.

mod log;
mod sandbox;
mod watch;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, Module};

pub use sandbox::RunTimings;

use crate::backend::{ComputeBackend, RunOutcome, RunSpec};
use crate::error::{ComputeError, Result};
use crate::job::JobId;
use crate::limits::SandboxLimits;
use log::BoundedLog;
use watch::Watch;

/// How often the epoch advances: the granularity of deadlines, cancellation and the
/// output quota.
const TICK: Duration = Duration::from_millis(10);
/// Compiled modules kept.
const MODULE_CACHE: usize = 32;

struct Run {
    cancel: Arc<AtomicBool>,
    log: BoundedLog,
    done: tokio::sync::watch::Receiver<Option<RunOutcome>>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("log_bytes", &self.log.len())
            .finish()
    }
}

/// The WASI sandbox backend.
#[derive(Debug, Clone)]
pub struct WasmBackend {
    engine: Engine,
    modules: Arc<Mutex<HashMap<String, Module>>>,
    runs: Arc<Mutex<HashMap<JobId, Arc<Run>>>>,
}

fn internal(e: impl std::fmt::Display) -> ComputeError {
    ComputeError::Internal(e.to_string())
}

impl WasmBackend {
    /// A backend with its own engine and epoch ticker (the ticker ends with the engine).
    pub fn new() -> Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(internal)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("insitu-wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(internal)?;
        Ok(WasmBackend {
            engine,
            modules: Arc::default(),
            runs: Arc::default(),
        })
    }

    /// The compiled module for `bytes` (binary WebAssembly, or text in tests), from the
    /// cache when this hash was compiled before. Blocking: call it off the runtime.
    pub fn compile(&self, hash: &str, bytes: &[u8]) -> Result<Module> {
        if let Some(m) = self.modules.lock().ok().and_then(|c| c.get(hash).cloned()) {
            return Ok(m);
        }
        let module = Module::new(&self.engine, bytes).map_err(|e| {
            ComputeError::Invalid(format!(
                "the algorithm is not a valid WebAssembly module: {}",
                e.root_cause()
            ))
        })?;
        if let Ok(mut cache) = self.modules.lock() {
            if cache.len() >= MODULE_CACHE
                && let Some(evict) = cache.keys().next().cloned()
            {
                cache.remove(&evict);
            }
            cache.insert(hash.to_string(), module.clone());
        }
        Ok(module)
    }

    /// Runs a compiled module to its end on the calling thread: the synchronous core of
    /// the backend, used directly by benchmarks.
    pub fn run_blocking(
        &self,
        module: &Module,
        args: &[String],
        data_dir: &Path,
        out_dir: &Path,
        limits: &SandboxLimits,
    ) -> (RunOutcome, RunTimings, Vec<u8>) {
        let log = BoundedLog::new(limits.log_bytes);
        let watch = Watch {
            cancel: Arc::new(AtomicBool::new(false)),
            out_dir: out_dir.to_path_buf(),
            limits: limits.clone(),
            started: Instant::now(),
        };
        let (outcome, timings) = sandbox::run(module, args, data_dir, &watch, &log);
        (outcome, timings, log.contents())
    }

    fn run(&self, id: JobId) -> Result<Arc<Run>> {
        self.runs
            .lock()
            .map_err(internal)?
            .get(&id)
            .cloned()
            .ok_or_else(|| ComputeError::NotFound(id.to_string()))
    }
}

#[async_trait::async_trait]
impl ComputeBackend for WasmBackend {
    fn name(&self) -> &'static str {
        "wasm"
    }

    async fn start(&self, spec: RunSpec) -> Result<()> {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let log = BoundedLog::new(spec.limits.log_bytes);
        let cancel = Arc::new(AtomicBool::new(false));
        self.runs.lock().map_err(internal)?.insert(
            spec.id,
            Arc::new(Run {
                cancel: cancel.clone(),
                log: log.clone(),
                done: rx,
            }),
        );
        let backend = self.clone();
        std::thread::Builder::new()
            .name(format!("insitu-wasm-{}", &spec.id.to_string()[..8]))
            .spawn(move || {
                let outcome = match backend.compile(&spec.algorithm, &spec.module) {
                    Err(e) => RunOutcome::Failed(e.to_string().replace("invalid request: ", "")),
                    Ok(module) => {
                        let watch = Watch {
                            cancel,
                            out_dir: spec.out_dir.clone(),
                            limits: spec.limits.clone(),
                            started: Instant::now(),
                        };
                        let (outcome, timings) =
                            sandbox::run(&module, &spec.args, &spec.data_dir, &watch, &log);
                        tracing::info!(
                            job = %spec.id,
                            startup_ms = timings.startup.as_secs_f64() * 1e3,
                            run_ms = timings.run.as_secs_f64() * 1e3,
                            ?outcome,
                            "wasm run ended"
                        );
                        outcome
                    }
                };
                let _ = tx.send(Some(outcome));
            })
            .map_err(internal)?;
        Ok(())
    }

    async fn wait(&self, id: JobId) -> Result<RunOutcome> {
        let mut rx = self.run(id)?.done.clone();
        let outcome = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ComputeError::Internal("the sandbox thread vanished".into()))?
            .clone();
        outcome.ok_or_else(|| ComputeError::Internal("no outcome".into()))
    }

    async fn logs(&self, id: JobId) -> Result<Vec<u8>> {
        Ok(self.run(id)?.log.contents())
    }

    async fn cancel(&self, id: JobId) -> Result<()> {
        self.run(id)?
            .cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn cleanup(&self, id: JobId) -> Result<()> {
        self.runs.lock().map_err(internal)?.remove(&id);
        Ok(())
    }

    async fn active(&self) -> Result<Vec<JobId>> {
        Ok(self
            .runs
            .lock()
            .map_err(internal)?
            .iter()
            .filter(|(_, r)| r.done.borrow().is_none())
            .map(|(id, _)| *id)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_wat(wat: &str, limits: &SandboxLimits) -> (RunOutcome, Vec<u8>) {
        let backend = WasmBackend::new().expect("backend");
        let module = backend.compile("test", wat.as_bytes()).expect("compile");
        let data = tempfile::tempdir().expect("data");
        let out = tempfile::tempdir().expect("out");
        let (outcome, _, logs) =
            backend.run_blocking(&module, &[], data.path(), out.path(), limits);
        (outcome, logs)
    }

    #[test]
    fn sockets_trap_with_a_reason() {
        let wat = r#"(module
          (import "wasi_snapshot_preview1" "sock_accept" (func $a (param i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "_start") (drop (call $a (i32.const 3) (i32.const 0) (i32.const 0)))))"#;
        let (outcome, _) = run_wat(wat, &SandboxLimits::default());
        assert!(
            matches!(&outcome, RunOutcome::Failed(m) if m.contains("network access denied")),
            "{outcome:?}"
        );
    }

    #[test]
    fn exit_codes_and_stdout_are_reported() {
        let wat = r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (data (i32.const 16) "hello")
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 16))
            (i32.store (i32.const 4) (i32.const 5))
            (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
            (call $exit (i32.const 7))))"#;
        let (outcome, logs) = run_wat(wat, &SandboxLimits::default());
        assert_eq!(
            outcome,
            RunOutcome::Failed("the algorithm exited with status 7 (see its logs)".into())
        );
        assert_eq!(logs, b"hello");
    }
}
