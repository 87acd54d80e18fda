//! One round of local training on this provider's shard, through its compute bridge.
//!
//! The round directory gets the staged shard (`input.arrow`, `manifest.json`) and the
//! global model (`model.arrow`); the module runs with the job's arguments plus
//! `--mode train --round N` and must leave `model.arrow` (the trained model) and
//! `metrics.json` (`{"samples": n}`) in `/out`. The provider, not the module, bounds the
//! sample count by the rows it staged, so a module cannot inflate its weight.

use std::path::Path;
use std::sync::Arc;

use insitu_compute::{ComputeService, RunOutcome};
use serde::Deserialize;

use crate::error::{FederatedError, Result};
use crate::model::Model;

/// The global model's file name in `/data`, and the trained model's in `/out`.
pub const MODEL_FILE: &str = "model.arrow";
/// What the module reports beside the model.
pub const METRICS_FILE: &str = "metrics.json";

#[derive(Debug, Deserialize)]
struct Metrics {
    samples: u64,
}

/// A trained model and the samples it saw.
#[derive(Debug)]
pub(crate) struct Trained {
    pub(crate) model: Model,
    pub(crate) samples: u32,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> FederatedError + '_ {
    move |e| FederatedError::Internal(format!("{what}: {e}"))
}

/// One round's local run: the module and its arguments, and where the shard is.
pub(crate) struct LocalRound<'a> {
    pub(crate) compute: &'a ComputeService,
    pub(crate) module: Arc<[u8]>,
    pub(crate) args: Vec<String>,
    pub(crate) round: u32,
    pub(crate) shard: &'a Path,
    pub(crate) staged_rows: u64,
    pub(crate) round_dir: &'a Path,
}

/// Trains from `global` on the staged shard, in the round's directory.
pub(crate) async fn train(r: LocalRound<'_>, global: &Model) -> Result<Trained> {
    let LocalRound {
        compute,
        module,
        mut args,
        round,
        shard,
        staged_rows,
        round_dir,
    } = r;
    let (data, out) = (round_dir.join("data"), round_dir.join("out"));
    for d in [&data, &out] {
        tokio::fs::create_dir_all(d)
            .await
            .map_err(io("creating the round directory"))?;
    }
    for f in [
        insitu_compute::staging::INPUT_FILE,
        insitu_compute::staging::MANIFEST_FILE,
    ] {
        let to = data.join(f);
        if std::fs::hard_link(shard.join(f), &to).is_err() {
            tokio::fs::copy(shard.join(f), &to)
                .await
                .map_err(io("copying the staged shard"))?;
        }
    }
    tokio::fs::write(data.join(MODEL_FILE), global.to_ipc()?)
        .await
        .map_err(io("writing the global model"))?;
    args.extend([
        "--mode".into(),
        "train".into(),
        "--round".into(),
        round.to_string(),
    ]);
    let run = compute
        .run_module(module, args, &data, &out)
        .await
        .map_err(|e| FederatedError::Unavailable(format!("local training: {e}")))?;
    match run.outcome {
        RunOutcome::Succeeded => {}
        RunOutcome::Failed(why) => {
            return Err(FederatedError::Internal(format!(
                "local training failed: {why}"
            )));
        }
        RunOutcome::Cancelled => {
            return Err(FederatedError::Internal(
                "local training was cancelled".into(),
            ));
        }
    }
    let bytes = tokio::fs::read(out.join(MODEL_FILE))
        .await
        .map_err(|_| FederatedError::Invalid(format!("the module wrote no /out/{MODEL_FILE}")))?;
    let model = Model::from_ipc(&bytes)?;
    if model.layout() != global.layout() {
        return Err(FederatedError::Invalid(
            "the trained model's tensors differ from the global model's".into(),
        ));
    }
    if !model.is_finite() {
        return Err(FederatedError::Invalid(
            "local training diverged (the model holds NaN or infinity)".into(),
        ));
    }
    let metrics: Metrics = tokio::fs::read(out.join(METRICS_FILE))
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            FederatedError::Invalid(format!(
                "the module wrote no readable /out/{METRICS_FILE} with a sample count"
            ))
        })?;
    let samples = metrics.samples.clamp(1, staged_rows.max(1));
    Ok(Trained {
        model,
        samples: u32::try_from(samples).unwrap_or(u32::MAX),
    })
}
