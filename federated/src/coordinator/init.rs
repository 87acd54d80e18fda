//! The initial global model, made by the consumer's own run of the training module on
//! the assets' public schema with no rows (`--mode init`). No provider is asked for it,
//! so no provider's data can shape it.

use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use insitu_compute::staging::{INPUT_FILE, MANIFEST_FILE, Manifest, StagedColumn, StagedInput};
use insitu_compute::{ComputeBackend, JobId, RunOutcome, RunSpec, SandboxLimits, WasmBackend};

use crate::error::{FederatedError, Result};
use crate::model::Model;
use crate::provider::MODEL_FILE_NAME;

fn internal(what: &str) -> impl Fn(std::io::Error) -> FederatedError + '_ {
    move |e| FederatedError::Internal(format!("{what}: {e}"))
}

/// Runs `module` with `args` plus `--mode init` in a local WASI sandbox.
pub async fn initial_model(
    module: Arc<[u8]>,
    args: &[String],
    columns: &[StagedColumn],
) -> Result<Model> {
    let dir = tempfile::tempdir().map_err(internal("creating a scratch directory"))?;
    let (data, out) = (dir.path().join("data"), dir.path().join("out"));
    for d in [&data, &out] {
        std::fs::create_dir_all(d).map_err(internal("creating a scratch directory"))?;
    }
    let fields = columns
        .iter()
        .map(|c| {
            DataType::from_str(&c.data_type)
                .map(|t| Field::new(&c.name, t, c.nullable))
                .map_err(|e| {
                    FederatedError::Invalid(format!(
                        "column {} has type {}: {e}",
                        c.name, c.data_type
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let schema = Arc::new(Schema::new(fields));
    {
        let file = std::fs::File::create(data.join(INPUT_FILE))
            .map_err(internal("writing the empty input"))?;
        let mut w = arrow::ipc::writer::FileWriter::try_new(file, &schema)
            .map_err(|e| FederatedError::Internal(e.to_string()))?;
        w.finish()
            .map_err(|e| FederatedError::Internal(e.to_string()))?;
    }
    let manifest = Manifest {
        job: "init".into(),
        inputs: vec![StagedInput {
            did: String::new(),
            name: "schema".into(),
            path: format!("/data/{INPUT_FILE}"),
            format: "arrow-ipc-file".into(),
            rows: 0,
            bytes: 0,
            columns: columns.to_vec(),
        }],
        args: args.to_vec(),
        output_dir: "/out".into(),
    };
    std::fs::write(
        data.join(MANIFEST_FILE),
        serde_json::to_vec(&manifest).map_err(|e| FederatedError::Internal(e.to_string()))?,
    )
    .map_err(internal("writing the manifest"))?;
    let backend = WasmBackend::new().map_err(|e| FederatedError::Internal(e.to_string()))?;
    let id = JobId::random();
    let mut run_args = args.to_vec();
    run_args.extend(["--mode".to_string(), "init".to_string()]);
    backend
        .start(RunSpec {
            id,
            module: module.clone(),
            algorithm: insitu_compute::algorithm_hash(&module).1,
            args: run_args,
            data_dir: data,
            out_dir: out.clone(),
            limits: SandboxLimits::default(),
        })
        .await
        .map_err(|e| FederatedError::Internal(format!("starting the init run: {e}")))?;
    let outcome = backend
        .wait(id)
        .await
        .map_err(|e| FederatedError::Internal(format!("the init run: {e}")))?;
    let logs = backend.logs(id).await.unwrap_or_default();
    let _ = backend.cleanup(id).await;
    if outcome != RunOutcome::Succeeded {
        return Err(FederatedError::Invalid(format!(
            "the module's init run did not succeed ({outcome:?}): {}",
            String::from_utf8_lossy(&logs).trim()
        )));
    }
    let bytes = std::fs::read(out.join(MODEL_FILE_NAME)).map_err(|_| {
        FederatedError::Invalid(format!(
            "the module's init run wrote no /out/{MODEL_FILE_NAME}"
        ))
    })?;
    let model = Model::from_ipc(&bytes)?;
    if model.parameters() == 0 || !model.is_finite() {
        return Err(FederatedError::Invalid(
            "the initial model is empty or not finite".into(),
        ));
    }
    Ok(model)
}
