//! One run of a WASI module, synchronously, on a thread of its own.
//!
//! The module sees exactly: its arguments, `/data` (read-only), `/out` (read-write),
//! stdout and stderr (one bounded log), clocks and randomness. No environment, no
//! stdin, no sockets, no other files. Time is bounded by epoch interruption (a global
//! ticker), memory by a resource limiter, output and logs by the watch.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{Caller, Linker, Module, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use super::log::BoundedLog;
use super::watch::{Stop, Watch};
use crate::backend::RunOutcome;

/// Guest-visible program name (argv[0]).
const PROGRAM: &str = "algorithm";

/// Caps linear memory; records that the cap was hit so the failure can say so.
#[derive(Debug)]
struct MemoryCap {
    max: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit = true;
            return Err(wasmtime::Error::msg("memory limit exceeded"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Function tables of real programs hold thousands of entries, not millions.
        Ok(desired <= 1 << 20)
    }
}

struct State {
    wasi: WasiP1Ctx,
    memory: MemoryCap,
}

/// The WASI preview 1 socket calls. Preview 1 has no way to open a socket, only to use
/// one handed in; none is. They are replaced by a trap that says why, so an algorithm
/// that tries the network fails with a clear error instead of a bare errno.
const SOCKET_CALLS: &[(&str, usize)] = &[
    ("sock_accept", 3),
    ("sock_recv", 6),
    ("sock_send", 5),
    ("sock_shutdown", 2),
];

fn deny_network(linker: &mut Linker<State>, flag: Arc<AtomicBool>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    for (name, params) in SOCKET_CALLS {
        let ty = wasmtime::FuncType::new(
            linker.engine(),
            std::iter::repeat_n(wasmtime::ValType::I32, *params),
            [wasmtime::ValType::I32],
        );
        let flag = flag.clone();
        linker.func_new(
            "wasi_snapshot_preview1",
            name,
            ty,
            move |_: Caller<'_, State>, _, _| {
                flag.store(true, Ordering::Relaxed);
                Err(wasmtime::Error::msg("network access denied"))
            },
        )?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// How long a run took to start and to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTimings {
    /// From the call to the entry of `_start`: WASI context, linker, instantiation.
    pub startup: Duration,
    /// `_start` itself.
    pub run: Duration,
}

/// Runs `module` to its end under `watch`, logging into `log`.
pub(crate) fn run(
    module: &Module,
    args: &[String],
    data_dir: &Path,
    watch: &Watch,
    log: &BoundedLog,
) -> (RunOutcome, RunTimings) {
    let mut timings = RunTimings::default();
    match try_run(module, args, data_dir, watch, log, &mut timings) {
        Ok(outcome) => (outcome, timings),
        Err(message) => (RunOutcome::Failed(message), timings),
    }
}

fn try_run(
    module: &Module,
    args: &[String],
    data_dir: &Path,
    watch: &Watch,
    log: &BoundedLog,
    timings: &mut RunTimings,
) -> Result<RunOutcome, String> {
    let began = Instant::now();
    let setup = |e: wasmtime::Error| format!("the sandbox could not be prepared: {e}");
    let mut wasi = WasiCtxBuilder::new();
    wasi.arg(PROGRAM)
        .args(args)
        .stdout(log.clone())
        .stderr(log.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .allow_blocking_current_thread(true);
    wasi.preopened_dir(data_dir, "/data", FsPerms::ReadOnly)
        .map_err(setup)?;
    wasi.preopened_dir(&watch.out_dir, "/out", FsPerms::ReadWrite)
        .map_err(setup)?;
    let engine = module.engine();
    let mut store = Store::new(
        engine,
        State {
            wasi: wasi.build_p1(),
            memory: MemoryCap {
                max: usize::try_from(watch.limits.memory_bytes).unwrap_or(usize::MAX),
                hit: false,
            },
        },
    );
    store.limiter(|s| &mut s.memory);
    let stopped: Arc<Mutex<Option<Stop>>> = Arc::default();
    {
        let watch = watch.clone();
        let log = log.clone();
        let stopped = stopped.clone();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| match watch.check(&log) {
            None => Ok(UpdateDeadline::Continue(1)),
            Some(stop) => {
                if let Ok(mut s) = stopped.lock() {
                    *s = Some(stop);
                }
                Err(wasmtime::Error::msg("stopped by the sandbox"))
            }
        });
    }
    let network = Arc::new(AtomicBool::new(false));
    let mut linker: Linker<State> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi)
        .map_err(setup)?;
    deny_network(&mut linker, network.clone()).map_err(setup)?;
    let result = linker
        .instantiate(&mut store, module)
        .and_then(|instance| {
            instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .map_err(|_| {
                    wasmtime::Error::msg(
                        "the module exports no `_start`; build it as a WASI command \
                         (for Rust: a binary crate for wasm32-wasip1)",
                    )
                })
        })
        .and_then(|start| {
            timings.startup = began.elapsed();
            let entered = Instant::now();
            let r = start.call(&mut store, ());
            timings.run = entered.elapsed();
            r
        });
    let stop = stopped.lock().ok().and_then(|s| *s);
    if let Some(stop) = stop {
        return Ok(match stop {
            Stop::Cancelled => RunOutcome::Cancelled,
            other => RunOutcome::Failed(watch.explain(other)),
        });
    }
    if store.data().memory.hit {
        return Ok(RunOutcome::Failed(format!(
            "memory limit exceeded: the algorithm asked for more than {} bytes of memory",
            watch.limits.memory_bytes
        )));
    }
    if network.load(Ordering::Relaxed) {
        return Ok(RunOutcome::Failed(
            "network access denied: the sandbox has no network, and the algorithm tried to use a socket"
                .into(),
        ));
    }
    if log.overflowed() {
        return Ok(RunOutcome::Failed(watch.explain(Stop::Log)));
    }
    match result {
        Ok(()) => {}
        Err(e) if e.downcast_ref::<I32Exit>().is_some_and(|x| x.0 == 0) => {}
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<I32Exit>() {
                return Ok(RunOutcome::Failed(format!(
                    "the algorithm exited with status {} (see its logs)",
                    exit.0
                )));
            }
            return Ok(RunOutcome::Failed(
                match e.downcast_ref::<wasmtime::Trap>() {
                    Some(trap) => format!("the algorithm trapped: {trap}"),
                    None if e.to_string().contains("unknown import") => format!(
                        "the module needs an import the sandbox does not provide ({}); \
                     only WASI preview 1 is available",
                        e.root_cause()
                    ),
                    None => format!("the algorithm failed: {}", e.root_cause()),
                },
            ));
        }
    }
    // The last writes happened after the last tick: check the output once more.
    if let Some(stop) = watch.check_output() {
        return Ok(RunOutcome::Failed(watch.explain(stop)));
    }
    Ok(RunOutcome::Succeeded)
}
