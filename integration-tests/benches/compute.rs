//! Compute overhead: the example algorithm (`examples/algorithms/summary`) in the WASI
//! sandbox against a native build of the same source on the same staged input, in the
//! same run.
//!
//! - **Run time**: the median of `_start` in the sandbox (the whole run, with the
//!   sandbox's limits and checks on) against the median wall time of the native binary
//!   as a process. Target ≤ 1.5×.
//! - **Start-up**: from the call into the sandbox to the entry of `_start` (WASI
//!   context, preopens, linker, instantiation) with the module compiled and cached, as
//!   a provider runs a known algorithm. Target ≤ 50 ms. Printed beside the native
//!   process's own start (the binary on an empty input) and the one-time Cranelift
//!   compilation of the module.
//!
//! Run: `cargo bench -p insitu-integration-tests --bench compute`. It builds both
//! versions of the example (release) if they are missing. `INSITU_COMPUTE_ROWS` sets the
//! input size (default 4,000,000 rows of 5 columns).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use arrow::array::{Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use insitu_compute::{RunOutcome, SandboxLimits, WasmBackend, algorithm_hash};
use insitu_integration_tests::tpch::median;
use insitu_integration_tests::workspace_root;

const RUNS: usize = 7;

fn main() -> Result<()> {
    let rows: usize = std::env::var("INSITU_COMPUTE_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000_000);
    let (wasm, native) = build_example()?;
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    let empty = work.path().join("empty");
    std::fs::create_dir_all(&data)?;
    std::fs::create_dir_all(&empty)?;
    let bytes = stage(&data, rows)?;
    stage(&empty, 0)?;
    println!(
        "input: {rows} rows × 5 columns, {:.1} MiB of Arrow IPC",
        bytes as f64 / (1 << 20) as f64
    );

    // Native: the same source, as a process.
    let native_runs = time_native(&native, &data, work.path())?;
    let native_start = time_native(&native, &empty, work.path())?;

    // WASI: compile once (as the first job of an algorithm does), then run.
    let backend = WasmBackend::new()?;
    let module_bytes = std::fs::read(&wasm)?;
    let hash = algorithm_hash(&module_bytes).1;
    let t = Instant::now();
    let module = backend.compile(&hash, &module_bytes)?;
    let compile = t.elapsed();
    let limits = SandboxLimits::default().with_deadline(Duration::from_secs(600));
    let mut run_times = Vec::new();
    let mut startups = Vec::new();
    let mut walls = Vec::new();
    let mut reference: Option<String> = None;
    for _ in 0..RUNS {
        let out = tempfile::tempdir()?;
        let t = Instant::now();
        let (outcome, timings, logs) =
            backend.run_blocking(&module, &[], &data, out.path(), &limits);
        walls.push(t.elapsed());
        ensure!(
            outcome == RunOutcome::Succeeded,
            "{outcome:?}: {}",
            String::from_utf8_lossy(&logs)
        );
        let summary = std::fs::read_to_string(out.path().join("summary.csv"))?;
        match &reference {
            None => reference = Some(summary),
            Some(r) => ensure!(r == &summary, "the sandbox's output changed between runs"),
        }
        run_times.push(timings.run);
        startups.push(timings.startup);
    }
    // Same answer as native.
    let native_out = tempfile::tempdir()?;
    run_native(&native, &data, native_out.path())?;
    let native_summary = std::fs::read_to_string(native_out.path().join("summary.csv"))?;
    ensure!(
        reference.as_deref() == Some(native_summary.as_str()),
        "native and WASI summaries differ"
    );

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let native_ms = median(native_runs.iter().map(|d| ms(*d)).collect());
    let wasi_ms = median(run_times.iter().map(|d| ms(*d)).collect());
    let wall_ms = median(walls.iter().map(|d| ms(*d)).collect());
    let startup_ms = median(startups.iter().map(|d| ms(*d)).collect());
    let native_start_ms = median(native_start.iter().map(|d| ms(*d)).collect());
    println!("runs: {RUNS} each, medians");
    println!(
        "run time:  WASI {wasi_ms:.1} ms (whole sandboxed job {wall_ms:.1} ms) vs native {native_ms:.1} ms  → {:.2}× (target ≤ 1.5×)",
        wasi_ms / native_ms
    );
    println!(
        "start-up:  WASI {startup_ms:.2} ms (module cached) vs native process on an empty input {native_start_ms:.2} ms  → {:.2}× (target ≤ 50 ms)",
        startup_ms / native_start_ms
    );
    println!(
        "compile:   {:.0} ms once per algorithm ({:.1} MiB module, Cranelift)",
        ms(compile),
        module_bytes.len() as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// Builds the example for wasm32-wasip1 and natively, in release, next to the cargo
/// target directory. Returns (module, native binary).
fn build_example() -> Result<(PathBuf, PathBuf)> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("../wasm-target");
    let manifest = workspace_root().join("examples/algorithms/summary/Cargo.toml");
    for extra in [&["--target", "wasm32-wasip1"][..], &[][..]] {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target)
            .args(extra)
            .status()
            .context("running cargo to build the example")?;
        ensure!(status.success(), "building the example algorithm failed");
    }
    Ok((
        target.join("wasm32-wasip1/release/insitu-example-summary.wasm"),
        target.join("release/insitu-example-summary"),
    ))
}

fn run_native(bin: &Path, data: &Path, out: &Path) -> Result<()> {
    let status = Command::new(bin)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()?;
    ensure!(status.success(), "the native example failed");
    Ok(())
}

fn time_native(bin: &Path, data: &Path, scratch: &Path) -> Result<Vec<Duration>> {
    let mut times = Vec::new();
    for i in 0..RUNS {
        let out = scratch.join(format!("native-{i}-{}", data.display().to_string().len()));
        std::fs::create_dir_all(&out)?;
        let t = Instant::now();
        run_native(bin, data, &out)?;
        times.push(t.elapsed());
    }
    Ok(times)
}

/// Writes `rows` synthetic rows as `input.arrow` with a manifest, as staging does.
fn stage(dir: &Path, rows: usize) -> Result<u64> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("qty", DataType::Int32, false),
        Field::new("price", DataType::Float64, false),
        Field::new("discount", DataType::Float64, true),
        Field::new("region", DataType::Utf8, false),
    ]));
    let path = dir.join("input.arrow");
    let file = std::fs::File::create(&path)?;
    let mut w = arrow::ipc::writer::FileWriter::try_new(std::io::BufWriter::new(file), &schema)?;
    let regions = ["north", "south", "east", "west"];
    let mut start = 0;
    while start < rows {
        let end = (start + 65_536).min(rows);
        let ids: Vec<i64> = (start as i64..end as i64).collect();
        w.write(&RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(Int32Array::from_iter_values(
                    ids.iter().map(|i| (i % 50) as i32),
                )),
                Arc::new(Float64Array::from_iter_values(
                    ids.iter().map(|i| ((i * 7919) % 100_000) as f64 / 100.0),
                )),
                Arc::new(Float64Array::from_iter(
                    ids.iter()
                        .map(|i| (i % 10 != 0).then(|| (i % 11) as f64 / 100.0)),
                )),
                Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| regions[(*i % 4) as usize]),
                )),
            ],
        )?)?;
        start = end;
    }
    w.finish()?;
    let manifest = serde_json::json!({
        "job": "bench",
        "inputs": [{"did": "bench", "name": "synthetic", "path": "/data/input.arrow",
                    "format": "arrow-ipc-file", "rows": rows, "bytes": 0, "columns": []}],
        "args": [],
        "output_dir": "/out",
    });
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&manifest)?)?;
    Ok(std::fs::metadata(&path)?.len())
}
