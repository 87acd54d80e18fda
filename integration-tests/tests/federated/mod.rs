//! Federated training across separate `insitu serve` processes on anvil: real train
//! agreements, the WASI training module on every provider, secure aggregation over
//! Flight `DoExchange`, a provider killed mid-training, and the model published on
//! chain. Accuracy is compared with the same module trained centrally in the same run.

mod federation;
mod refusals;
mod training;

use std::path::{Path, PathBuf};

pub(crate) use federation::Federation;

/// The training module: `examples/algorithms/train` built for wasm32-wasip1 by
/// scripts/test.sh (path in `INSITU_TRAIN_WASM`).
pub(crate) fn train_module() -> (PathBuf, Vec<u8>) {
    let path = std::env::var_os("INSITU_TRAIN_WASM")
        .map(PathBuf::from)
        .expect(
            "INSITU_TRAIN_WASM is not set: run scripts/test.sh, which builds \
         examples/algorithms/train for wasm32-wasip1",
        );
    let bytes = std::fs::read(&path).expect("read the training module");
    (path, bytes)
}

/// Rows of features and a label.
pub(crate) type Rows = Vec<(Vec<f64>, i64)>;

/// `digits.csv.gz`: 64 pixel columns, then the digit.
pub(crate) fn digits() -> Rows {
    use std::io::Read;
    let file = insitu_integration_tests::workspace_root()
        .join("../shared")
        .join("data/sklearn/digits.csv.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&file).expect("digits"))
        .read_to_string(&mut text)
        .expect("gunzip digits");
    parse(&text, 0)
}

/// `breast_cancer.csv`: a header line (counts and class names), 30 features, the class.
pub(crate) fn breast_cancer() -> Rows {
    let file = insitu_integration_tests::workspace_root()
        .join("../shared")
        .join("data/sklearn/breast_cancer.csv");
    parse(&std::fs::read_to_string(file).expect("breast cancer"), 1)
}

fn parse(text: &str, skip: usize) -> Rows {
    text.lines()
        .skip(skip)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut v: Vec<f64> = l
                .split(',')
                .map(|x| x.trim().parse().expect("a number"))
                .collect();
            let label = v.pop().expect("a label") as i64;
            (v, label)
        })
        .collect()
}

/// A deterministic shuffle, then `test_share` of the rows held out.
pub(crate) fn split(mut rows: Rows, seed: u64, test_share: f64) -> (Rows, Rows) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in (1..rows.len()).rev() {
        let j = rng.random_range(0..=i);
        rows.swap(i, j);
    }
    let test = (rows.len() as f64 * test_share).round() as usize;
    let train = rows.split_off(test);
    (train, rows)
}

/// Rows as CSV with a header `f0,…,target`.
pub(crate) fn write_csv(rows: &[(Vec<f64>, i64)], path: &Path) {
    let n = rows.first().map_or(0, |r| r.0.len());
    let mut out = (0..n)
        .map(|i| format!("f{i}"))
        .collect::<Vec<_>>()
        .join(",");
    out.push_str(",target\n");
    for (x, y) in rows {
        for v in x {
            out.push_str(&v.to_string());
            out.push(',');
        }
        out.push_str(&y.to_string());
        out.push('\n');
    }
    std::fs::write(path, out).expect("write csv");
}

/// Rows as the sandbox sees a staged input: `input.arrow` (Float64 features, Int64
/// target) and `manifest.json`, in `dir`.
pub(crate) fn stage(rows: &[(Vec<f64>, i64)], dir: &Path) {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    std::fs::create_dir_all(dir).expect("dir");
    let n = rows.first().map_or(0, |r| r.0.len());
    let mut fields: Vec<Field> = (0..n)
        .map(|i| Field::new(format!("f{i}"), DataType::Float64, false))
        .collect();
    fields.push(Field::new("target", DataType::Int64, false));
    let mut columns: Vec<ArrayRef> = (0..n)
        .map(|i| Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.0[i]))) as ArrayRef)
        .collect();
    columns.push(Arc::new(Int64Array::from_iter_values(
        rows.iter().map(|r| r.1),
    )));
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
    let file = std::fs::File::create(dir.join("input.arrow")).expect("input");
    let mut w = arrow::ipc::writer::FileWriter::try_new(file, &schema).expect("writer");
    w.write(&batch).expect("write");
    w.finish().expect("finish");
    let manifest = serde_json::json!({
        "job": "test",
        "inputs": [{
            "did": "", "name": "test", "path": "/data/input.arrow", "format": "arrow-ipc-file",
            "rows": rows.len(), "bytes": 0,
            "columns": schema.fields().iter().map(|f| serde_json::json!({
                "name": f.name(), "data_type": f.data_type().to_string(), "nullable": false
            })).collect::<Vec<_>>()
        }],
        "args": [], "output_dir": "/out"
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).expect("manifest");
}

/// Runs the training module once in the WASI sandbox and returns `/out/metrics.json`
/// (or `null` when it wrote none).
pub(crate) async fn run_module(
    module: &[u8],
    data: &Path,
    out: &Path,
    args: &[String],
) -> serde_json::Value {
    use insitu_compute::{ComputeBackend, JobId, RunOutcome, RunSpec, SandboxLimits, WasmBackend};
    // One sandbox for the whole test process: it caches compiled modules.
    static BACKEND: std::sync::OnceLock<WasmBackend> = std::sync::OnceLock::new();
    std::fs::create_dir_all(out).expect("out dir");
    let backend = BACKEND.get_or_init(|| WasmBackend::new().expect("wasm backend"));
    let id = JobId::random();
    backend
        .start(RunSpec {
            id,
            module: module.to_vec().into(),
            algorithm: insitu_compute::algorithm_hash(module).1,
            args: args.to_vec(),
            data_dir: data.to_path_buf(),
            out_dir: out.to_path_buf(),
            limits: SandboxLimits::default(),
        })
        .await
        .expect("start");
    let outcome = backend.wait(id).await.expect("wait");
    let logs = backend.logs(id).await.unwrap_or_default();
    assert_eq!(
        outcome,
        RunOutcome::Succeeded,
        "the module failed: {}",
        String::from_utf8_lossy(&logs)
    );
    std::fs::read(out.join("metrics.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Accuracy of `model` (Arrow IPC bytes) on `rows`, by the module's `evaluate` mode.
pub(crate) async fn accuracy(module: &[u8], model: &[u8], rows: &Rows, args: &[String]) -> f64 {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    stage(rows, &data);
    std::fs::write(data.join("model.arrow"), model).expect("model");
    let mut a = args.to_vec();
    a.extend(["--mode".into(), "evaluate".into()]);
    let m = run_module(module, &data, &dir.path().join("out"), &a).await;
    m["accuracy"].as_f64().expect("an accuracy")
}

/// The same module trained on all of `rows` for `epochs` epochs, from its own initial
/// model: the central baseline.
pub(crate) async fn train_centrally(
    module: &[u8],
    rows: &Rows,
    args: &[String],
    epochs: u32,
) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    stage(rows, &data);
    let mut init = args.to_vec();
    init.extend(["--mode".into(), "init".into()]);
    run_module(module, &data, &dir.path().join("init"), &init).await;
    std::fs::copy(
        dir.path().join("init/model.arrow"),
        data.join("model.arrow"),
    )
    .expect("init model");
    let mut train: Vec<String> = args.to_vec();
    if let Some(i) = train.iter().position(|a| a == "--epochs") {
        train[i + 1] = epochs.to_string();
    } else {
        train.extend(["--epochs".into(), epochs.to_string()]);
    }
    train.extend(["--mode".into(), "train".into()]);
    run_module(module, &data, &dir.path().join("out"), &train).await;
    std::fs::read(dir.path().join("out/model.arrow")).expect("trained model")
}
