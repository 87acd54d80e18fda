//! Staging: the job's input asset, copied next to the sandbox as an Arrow IPC file, with
//! a `manifest.json` that tells the algorithm what it got.
//!
//! The algorithm sees `/data/manifest.json` and `/data/<name>.arrow`, nothing else: not
//! the asset's storage location, not its format at rest, not the provider's paths.
//! Staged files are written read-only and the directory is mounted read-only.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use insitu_catalog::{Ddo, StorageLocation};
use insitu_flight::StorageOptions;
use serde::{Deserialize, Serialize};

use crate::error::{ComputeError, Result};
use crate::job::JobId;

/// The name of the staged input file (one input per job).
pub const INPUT_FILE: &str = "input.arrow";
/// The manifest's file name.
pub const MANIFEST_FILE: &str = "manifest.json";

/// What the algorithm reads first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub job: String,
    pub inputs: Vec<StagedInput>,
    pub args: Vec<String>,
    /// Where outputs go; each `.parquet` or `.csv` file becomes one result asset.
    pub output_dir: String,
}

/// One staged input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedInput {
    pub did: String,
    pub name: String,
    /// Guest path of the Arrow IPC file.
    pub path: String,
    pub format: String,
    pub rows: u64,
    pub bytes: u64,
    pub columns: Vec<StagedColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedColumn {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
}

/// Copies the asset into `data_dir` and writes the manifest. Returns the manifest.
pub async fn stage(
    job: JobId,
    ddo: &Ddo,
    location: &StorageLocation,
    options: &StorageOptions,
    args: &[String],
    data_dir: &Path,
) -> Result<Manifest> {
    let did = ddo.did.to_string();
    let (schema, mut batches) = insitu_flight::open_batches(&did, location, options)
        .await
        .map_err(|e| ComputeError::Unavailable(format!("reading the input asset: {e}")))?;
    let path = data_dir.join(INPUT_FILE);
    let (tx, rx) = std::sync::mpsc::sync_channel::<arrow::array::RecordBatch>(4);
    let writer = {
        let path = path.clone();
        let schema = schema.clone();
        tokio::task::spawn_blocking(move || write_ipc(&path, &schema, rx))
    };
    let mut rows = 0u64;
    let mut failure = None;
    while let Some(batch) = batches.next().await {
        match batch {
            Ok(b) => {
                rows += b.num_rows() as u64;
                if tx.send(b).is_err() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(ComputeError::Unavailable(format!(
                    "reading the input asset: {e}"
                )));
                break;
            }
        }
    }
    drop(tx);
    let bytes = writer
        .await
        .map_err(|e| ComputeError::Internal(e.to_string()))??;
    if let Some(e) = failure {
        return Err(e);
    }
    let manifest = Manifest {
        job: job.to_string(),
        inputs: vec![StagedInput {
            did,
            name: ddo.name.clone(),
            path: format!("/data/{INPUT_FILE}"),
            format: "arrow-ipc-file".into(),
            rows,
            bytes,
            columns: schema
                .fields()
                .iter()
                .map(|f| StagedColumn {
                    name: f.name().clone(),
                    data_type: f.data_type().to_string(),
                    nullable: f.is_nullable(),
                })
                .collect(),
        }],
        args: args.to_vec(),
        output_dir: "/out".into(),
    };
    let json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| ComputeError::Internal(e.to_string()))?;
    let manifest_path = data_dir.join(MANIFEST_FILE);
    tokio::fs::write(&manifest_path, json)
        .await
        .map_err(|e| ComputeError::Internal(format!("writing the manifest: {e}")))?;
    for p in [&path, &manifest_path] {
        read_only(p)?;
    }
    Ok(manifest)
}

fn write_ipc(
    path: &PathBuf,
    schema: &arrow::datatypes::SchemaRef,
    rx: std::sync::mpsc::Receiver<arrow::array::RecordBatch>,
) -> Result<u64> {
    let fail =
        |e: &dyn std::fmt::Display| ComputeError::Internal(format!("staging the input: {e}"));
    let file = std::fs::File::create(path).map_err(|e| fail(&e))?;
    let mut writer = arrow::ipc::writer::FileWriter::try_new(std::io::BufWriter::new(file), schema)
        .map_err(|e| fail(&e))?;
    for batch in rx {
        writer.write(&batch).map_err(|e| fail(&e))?;
    }
    writer.finish().map_err(|e| fail(&e))?;
    drop(writer);
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| fail(&e))
}

fn read_only(path: &Path) -> Result<()> {
    let mut perms = std::fs::metadata(path)
        .map_err(|e| ComputeError::Internal(e.to_string()))?
        .permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(path, perms).map_err(|e| ComputeError::Internal(e.to_string()))
}
