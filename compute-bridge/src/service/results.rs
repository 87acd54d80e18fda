//! Publishing a job's outputs: each `.parquet` or `.csv` file under `/out` becomes one
//! asset owned by the consumer, registered on chain by this provider, served to its
//! owner only through the ordinary download path.
//!
//! This is the provider's output gate: anything else under `/out` (another format, a
//! directory, a link) fails the job instead of being dropped quietly, every file is
//! parsed before it is published, and the sizes were already bounded by the quota.

use std::path::Path;

use insitu_flight::publish::{PublishRequest, publish_result};
use insitu_ledger::{Did, ServiceOffer, ServiceType};

use super::ComputeService;
use crate::error::{ComputeError, Result};
use crate::job::JobRecord;

/// Result assets per job, at most.
const MAX_RESULTS: usize = 16;

/// One published output.
#[derive(Debug, Clone)]
pub(crate) struct PublishedResult {
    pub(crate) did: Did,
    /// Its location, for lineage (never shown to consumers).
    pub(crate) url: String,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
}

/// Publishes the outputs in `out`.
pub(crate) async fn publish(
    service: &ComputeService,
    job: &JobRecord,
    out: &Path,
) -> Result<Vec<PublishedResult>> {
    let inner = &service.inner;
    let files = outputs(out)?;
    let target = inner.work_dir.join("results").join(job.id.to_string());
    tokio::fs::create_dir_all(&target)
        .await
        .map_err(|e| ComputeError::Internal(format!("creating the results directory: {e}")))?;
    let input_name = inner
        .catalog
        .get(job.did)
        .await
        .ok()
        .flatten()
        .map(|a| a.ddo.name)
        .unwrap_or_else(|| job.did.to_string());
    let short = &job.id.to_string()[..8];
    let mut published = Vec::with_capacity(files.len());
    for name in files {
        let kept = target.join(&name);
        tokio::fs::rename(out.join(&name), &kept)
            .await
            .map_err(|e| ComputeError::Internal(format!("keeping output {name}: {e}")))?;
        let request = PublishRequest {
            file: kept.clone(),
            name: format!("{name} (job {short})"),
            description: format!(
                "Output {name} of compute job {} ({}) on {input_name}",
                job.id, job.algorithm
            ),
            tags: vec!["compute-result".into()],
            services: vec![ServiceOffer {
                service_type: ServiceType::Download,
                token: None,
                price: alloy::primitives::U256::ZERO,
                access_duration: inner.result_access_secs,
                fulfill_timeout: 3600,
            }],
            providers: vec![],
            metadata_url: inner.metadata_url.clone(),
            constraints: None,
        };
        let done = publish_result(inner.ledger.as_ref(), &inner.catalog, request, job.consumer)
            .await
            .map_err(|e| match e {
                // The message names the file by its place on the provider's disk; the
                // consumer sees the name its algorithm wrote.
                insitu_flight::FlightError::InvalidRequest(m) => ComputeError::Invalid(format!(
                    "output {name} could not be published: {}",
                    m.replace(&kept.display().to_string(), &format!("/out/{name}"))
                )),
                other => ComputeError::Internal(format!("publishing output {name}: {other}")),
            })?;
        let url = url::Url::from_file_path(&kept)
            .map(|u| u.to_string())
            .unwrap_or_default();
        tracing::info!(job = %job.id, did = %done.did, owner = %job.consumer, "compute result published");
        published.push(PublishedResult {
            did: done.did,
            url,
            rows: done.ddo.row_count.unwrap_or(0),
            bytes: done.ddo.byte_size.unwrap_or(0),
        });
    }
    Ok(published)
}

/// The names of the files to publish, after checking that `out` holds nothing else.
fn outputs(out: &Path) -> Result<Vec<String>> {
    let refuse = |m: String| Err(ComputeError::Invalid(m));
    let mut names = Vec::new();
    let entries = std::fs::read_dir(out)
        .map_err(|e| ComputeError::Internal(format!("reading the outputs: {e}")))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| ComputeError::Internal(format!("reading the outputs: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry
            .file_type()
            .map_err(|e| ComputeError::Internal(format!("reading the outputs: {e}")))?;
        if !kind.is_file() {
            return refuse(format!(
                "/out/{name} is not a regular file; results are single .parquet or .csv files"
            ));
        }
        let lower = name.to_ascii_lowercase();
        if !(lower.ends_with(".parquet") || lower.ends_with(".csv")) {
            return refuse(format!(
                "/out/{name} is neither .parquet nor .csv; only tabular results are published"
            ));
        }
        names.push(name);
    }
    if names.is_empty() {
        return refuse("the algorithm wrote no output under /out".into());
    }
    if names.len() > MAX_RESULTS {
        return refuse(format!(
            "the algorithm wrote {} files; at most {MAX_RESULTS} results are published",
            names.len()
        ));
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_gate_takes_tabular_files_only() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(outputs(dir.path()).is_err(), "no output is an error");
        std::fs::write(dir.path().join("b.csv"), "x\n1\n").expect("write");
        std::fs::write(dir.path().join("a.parquet"), b"PAR1").expect("write");
        assert_eq!(
            outputs(dir.path()).expect("tabular"),
            vec!["a.parquet".to_string(), "b.csv".to_string()]
        );
        std::fs::write(dir.path().join("model.bin"), b"\0").expect("write");
        let refused = outputs(dir.path()).expect_err("a binary file");
        assert!(refused.to_string().contains("model.bin"), "{refused}");
        std::fs::remove_file(dir.path().join("model.bin")).expect("rm");
        std::fs::create_dir(dir.path().join("nested")).expect("mkdir");
        assert!(outputs(dir.path()).is_err(), "directories are refused");
        std::fs::remove_dir(dir.path().join("nested")).expect("rmdir");
        for i in 0..=MAX_RESULTS {
            std::fs::write(dir.path().join(format!("r{i}.csv")), "x\n").expect("write");
        }
        assert!(outputs(dir.path()).is_err(), "too many results");
    }
}
