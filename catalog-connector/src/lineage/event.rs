//! OpenLineage events (spec 2-0-2), typed: a `DatasetEvent` when an asset is published
//! or updated, and `RunEvent`s (START, then COMPLETE or FAIL) for every use.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::PRODUCER;
use super::facets::*;
use crate::ddo::Ddo;

const CORE: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json";

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The state a run event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    Start,
    Running,
    Complete,
    Abort,
    Fail,
    Other,
}

/// Facets of a dataset as insitu describes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetFacets {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaDatasetFacet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_source: Option<DatasourceDatasetFacet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub documentation: Option<DocumentationDatasetFacet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ownership: Option<OwnershipDatasetFacet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlinks: Option<SymlinksDatasetFacet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifecycle_state_change: Option<LifecycleStateChangeDatasetFacet>,
}

/// A dataset, named by its physical location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub namespace: String,
    pub name: String,
    pub facets: DatasetFacets,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputFacets {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_statistics: Option<InputStatisticsInputDatasetFacet>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputFacets {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_statistics: Option<OutputStatisticsOutputDatasetFacet>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputDataset {
    #[serde(flatten)]
    pub dataset: Dataset,
    pub input_facets: InputFacets,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputDataset {
    #[serde(flatten)]
    pub dataset: Dataset,
    pub output_facets: OutputFacets,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFacets {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processing_engine: Option<ProcessingEngineRunFacet>,
    #[serde(rename = "errorMessage", skip_serializing_if = "Option::is_none")]
    pub error_message: Option<ErrorMessageRunFacet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insitu_agreement: Option<InsituAgreementRunFacet>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub run_id: uuid::Uuid,
    pub facets: RunFacets,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobFacets {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<SqlJobFacet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_type: Option<JobTypeJobFacet>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub namespace: String,
    pub name: String,
    pub facets: JobFacets,
}

/// A state change of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunEvent {
    pub event_time: String,
    pub producer: String,
    #[serde(rename = "schemaURL")]
    pub schema_url: String,
    pub event_type: EventType,
    pub run: Run,
    pub job: Job,
    pub inputs: Vec<InputDataset>,
    pub outputs: Vec<OutputDataset>,
}

/// Static metadata of a dataset (publish, update).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetEvent {
    pub event_time: String,
    pub producer: String,
    #[serde(rename = "schemaURL")]
    pub schema_url: String,
    pub dataset: Dataset,
}

/// A physical location as an OpenLineage (namespace, name): `scheme://authority` and
/// the path, per the spec's naming conventions (`file` has an empty authority).
pub fn physical_name(location_url: &str) -> (String, String) {
    match url::Url::parse(location_url) {
        Ok(u) => {
            let authority = u.host_str().unwrap_or("");
            let namespace = format!("{}://{authority}", u.scheme());
            (namespace, u.path().to_string())
        }
        Err(_) => ("insitu://unknown".into(), location_url.to_string()),
    }
}

/// The gated name of an asset: the DID in the namespace of its chain.
pub fn gated_name(ddo: &Ddo) -> Identifier {
    gated_name_of(ddo.chain_id, ddo.did)
}

/// The gated name of asset `did` on chain `chain_id`.
pub fn gated_name_of(chain_id: u64, did: insitu_ledger::Did) -> Identifier {
    Identifier {
        namespace: format!("insitu://chain/{chain_id}"),
        name: did.to_string(),
        kind: "asset".into(),
    }
}

impl DatasetEvent {
    /// The event for a published (CREATE) or updated (ALTER) asset, named by its
    /// physical location, with the DID as a symlink.
    pub fn for_asset(ddo: &Ddo, location_url: &str, change: LifecycleChange) -> Self {
        let (namespace, name) = physical_name(location_url);
        let fields = ddo
            .schema
            .iter()
            .enumerate()
            .map(|(i, c)| SchemaField {
                name: c.name.clone(),
                data_type: c.data_type.clone(),
                ordinal_position: i as u32 + 1,
            })
            .collect();
        DatasetEvent {
            event_time: now(),
            producer: PRODUCER.into(),
            schema_url: format!("{CORE}#/$defs/DatasetEvent"),
            dataset: Dataset {
                namespace: namespace.clone(),
                name,
                facets: DatasetFacets {
                    schema: Some(SchemaDatasetFacet::new(fields)),
                    data_source: Some(DatasourceDatasetFacet::new(namespace.clone(), namespace)),
                    documentation: Some(DocumentationDatasetFacet::new(
                        if ddo.description.is_empty() {
                            ddo.name.clone()
                        } else {
                            ddo.description.clone()
                        },
                    )),
                    ownership: Some(OwnershipDatasetFacet::new(vec![Owner {
                        name: format!("ethereum:{:#x}", ddo.owner),
                        kind: "OWNER".into(),
                    }])),
                    symlinks: Some(SymlinksDatasetFacet::new(vec![gated_name(ddo)])),
                    lifecycle_state_change: Some(LifecycleStateChangeDatasetFacet::new(change)),
                },
            },
        }
    }
}

/// One run (a query, a compute job, a training job), from START to its end.
#[derive(Debug, Clone)]
pub struct RunLifecycle {
    run_id: uuid::Uuid,
    job: Job,
    agreement: Option<InsituAgreementRunFacet>,
    inputs: Vec<Dataset>,
}

impl RunLifecycle {
    /// A query run over `inputs` (physically named datasets) under `agreement`. The
    /// run id is derived from `run_key` (the query id the ticket carries), so the
    /// process that plans and the one that streams name the same run.
    pub fn query(
        namespace: impl Into<String>,
        run_key: &str,
        sql: &str,
        inputs: Vec<Dataset>,
        agreement: Option<InsituAgreementRunFacet>,
    ) -> Self {
        RunLifecycle {
            run_id: derived_run_id(run_key.as_bytes()),
            job: Job {
                namespace: namespace.into(),
                name: format!("query.{}", &hex_digest(sql)[..16]),
                facets: JobFacets {
                    sql: Some(SqlJobFacet::new(sql)),
                    job_type: Some(JobTypeJobFacet::new("QUERY")),
                },
            },
            agreement,
            inputs,
        }
    }

    /// A compute job: `algorithm` (its content hash) run over `inputs` under
    /// `agreement`. The run id is the job id, so the events of a job resumed by a
    /// restarted provider still belong to one run.
    pub fn compute(
        namespace: impl Into<String>,
        job_id: uuid::Uuid,
        algorithm: &str,
        inputs: Vec<Dataset>,
        agreement: Option<InsituAgreementRunFacet>,
    ) -> Self {
        RunLifecycle {
            run_id: job_id,
            job: Job {
                namespace: namespace.into(),
                name: format!("compute.{}", algorithm_prefix(algorithm)),
                facets: JobFacets {
                    sql: None,
                    job_type: Some(JobTypeJobFacet::new("COMPUTE")),
                },
            },
            agreement,
            inputs,
        }
    }

    /// This provider's part in a federated training job: `algorithm` (the training
    /// module's hash) run over `inputs` for job `job`. Every provider of a job records
    /// its own run (its own outbox, its own data), so the run id is derived from the
    /// job and the provider: stable across a restart, distinct between providers. The
    /// job name is the training job's, so a catalog groups the providers' runs.
    pub fn training(
        namespace: impl Into<String>,
        job: [u8; 32],
        provider: [u8; 20],
        algorithm: &str,
        inputs: Vec<Dataset>,
        agreement: Option<InsituAgreementRunFacet>,
    ) -> Self {
        let mut key = b"insitu/train-run".to_vec();
        key.extend_from_slice(&job);
        key.extend_from_slice(&provider);
        RunLifecycle {
            run_id: derived_run_id(&key),
            job: Job {
                namespace: namespace.into(),
                name: format!(
                    "train.{}.{}",
                    &hex::encode(job)[..16],
                    algorithm_prefix(algorithm)
                ),
                facets: JobFacets {
                    sql: None,
                    job_type: Some(JobTypeJobFacet::new("TRAINING")),
                },
            },
            agreement,
            inputs,
        }
    }

    pub fn run_id(&self) -> uuid::Uuid {
        self.run_id
    }

    fn event(&self, kind: EventType, facets: RunFacets, stats: Option<(u64, u64)>) -> RunEvent {
        let output = stats.map(|(rows, bytes)| OutputDataset {
            dataset: Dataset {
                namespace: self.job.namespace.clone(),
                name: format!("{}.result", self.job.name),
                facets: DatasetFacets::default(),
            },
            output_facets: OutputFacets {
                output_statistics: Some(OutputStatisticsOutputDatasetFacet::new(
                    Some(rows),
                    Some(bytes),
                )),
            },
        });
        RunEvent {
            event_time: now(),
            producer: PRODUCER.into(),
            schema_url: format!("{CORE}#/$defs/RunEvent"),
            event_type: kind,
            run: Run {
                run_id: self.run_id,
                facets,
            },
            job: self.job.clone(),
            inputs: self
                .inputs
                .iter()
                .map(|d| InputDataset {
                    dataset: d.clone(),
                    input_facets: InputFacets::default(),
                })
                .collect(),
            outputs: output.into_iter().collect(),
        }
    }

    fn facets(&self) -> RunFacets {
        RunFacets {
            processing_engine: Some(ProcessingEngineRunFacet::insitu()),
            error_message: None,
            insitu_agreement: self.agreement.clone(),
        }
    }

    pub fn start(&self) -> RunEvent {
        self.event(EventType::Start, self.facets(), None)
    }

    /// The run ended; `rows` and `bytes` were returned to the consumer.
    pub fn complete(&self, rows: u64, bytes: u64) -> RunEvent {
        self.event(EventType::Complete, self.facets(), Some((rows, bytes)))
    }

    /// The consumer abandoned the run after `rows` and `bytes` were sent.
    pub fn abort(&self, rows: u64, bytes: u64) -> RunEvent {
        self.event(EventType::Abort, self.facets(), Some((rows, bytes)))
    }

    /// The run ended and published `outputs` (a compute job's result assets, each
    /// with its row count and size).
    pub fn complete_with_outputs(&self, outputs: Vec<(Dataset, u64, u64)>) -> RunEvent {
        let mut event = self.event(EventType::Complete, self.facets(), None);
        event.outputs = outputs
            .into_iter()
            .map(|(dataset, rows, bytes)| OutputDataset {
                dataset,
                output_facets: OutputFacets {
                    output_statistics: Some(OutputStatisticsOutputDatasetFacet::new(
                        Some(rows),
                        Some(bytes),
                    )),
                },
            })
            .collect();
        event
    }

    /// The run was cancelled before it produced anything.
    pub fn cancelled(&self) -> RunEvent {
        self.event(EventType::Abort, self.facets(), None)
    }

    pub fn fail(&self, message: &str) -> RunEvent {
        let mut facets = self.facets();
        facets.error_message = Some(ErrorMessageRunFacet::new(message));
        self.event(EventType::Fail, facets, None)
    }
}

/// A run id that every process deriving it from `key` agrees on.
fn derived_run_id(key: &[u8]) -> uuid::Uuid {
    let digest = alloy::primitives::keccak256(key);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The first 16 hex digits of a module's `sha256:` hash, for job names.
fn algorithm_prefix(algorithm: &str) -> String {
    algorithm
        .trim_start_matches("sha256:")
        .chars()
        .take(16)
        .collect()
}

/// A stable short name for a statement (so reruns of one query are one job).
fn hex_digest(text: &str) -> String {
    hex::encode(alloy::primitives::keccak256(text.as_bytes()))
}
