//! Every event type the code can emit validates against the OpenLineage core schema
//! and each facet map against its facet schemas, offline: schemas are loaded from
//! `../shared/openlineage-spec` (and `docs/openlineage` for our own facet) and resolved
//! by their `$id`, never fetched.

use std::collections::HashMap;
use std::path::PathBuf;

use alloy::primitives::{Address, B256};
use serde_json::{Value, json};

use super::*;
use crate::ddo::sample_ddo as ddo;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// All schemas by `$id`.
fn schemas() -> HashMap<String, Value> {
    let mut files = vec![root().join("../shared/openlineage-spec/spec/OpenLineage.json")];
    let facets = root().join("../shared/openlineage-spec/spec/facets");
    for e in std::fs::read_dir(&facets).expect("the OpenLineage spec beside the repository") {
        files.push(e.expect("entry").path());
    }
    files.push(root().join("docs/openlineage/InsituAgreementRunFacet.json"));
    files
        .into_iter()
        .map(|p| {
            let v: Value =
                serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
            (v["$id"].as_str().expect("$id").to_string(), v)
        })
        .collect()
}

/// Resolves schema URIs from the local files; anything else fails (no network).
struct Local(HashMap<String, Value>);

impl jsonschema::Retrieve for Local {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let key = uri
            .as_str()
            .split('#')
            .next()
            .unwrap_or_default()
            .to_string();
        self.0
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("schema {key} is not available offline").into())
    }
}

struct Schemas {
    all: HashMap<String, Value>,
    core: jsonschema::Validator,
    /// Facet validators by (entity kind, facet key).
    facets: HashMap<(String, String), jsonschema::Validator>,
}

fn validator(all: &HashMap<String, Value>, schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .with_retriever(Local(all.clone()))
        .should_validate_formats(true)
        .build(schema)
        .expect("schema compiles")
}

fn load() -> Schemas {
    let all = schemas();
    let core = validator(
        &all,
        &all["https://openlineage.io/spec/2-0-2/OpenLineage.json"],
    );
    let mut facets = HashMap::new();
    for (id, schema) in &all {
        let file = id
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".json");
        let kind = [
            "InputDatasetFacet",
            "OutputDatasetFacet",
            "DatasetFacet",
            "RunFacet",
            "JobFacet",
        ]
        .into_iter()
        .find(|k| file.ends_with(k));
        let (Some(kind), Some(props)) = (kind, schema["properties"].as_object()) else {
            continue;
        };
        for key in props.keys() {
            facets.insert((kind.to_string(), key.clone()), validator(&all, schema));
        }
    }
    Schemas { all, core, facets }
}

impl Schemas {
    /// Errors of one event: the envelope, then every facet map against the facet files
    /// of its entity kind. A facet without a schema is an error too.
    fn errors(&self, event: &Value) -> Vec<String> {
        let mut out: Vec<String> = self
            .core
            .iter_errors(event)
            .map(|e| format!("core: {e}"))
            .collect();
        let mut check = |kind: &str, facets: &Value| {
            for (key, value) in facets.as_object().into_iter().flatten() {
                match self.facets.get(&(kind.to_string(), key.clone())) {
                    None => out.push(format!("{kind} facet `{key}` has no schema")),
                    Some(v) => out.extend(
                        v.iter_errors(&json!({ key: value }))
                            .map(|e| format!("{kind} `{key}`: {e}")),
                    ),
                }
            }
        };
        let datasets = |v: &Value| -> Vec<Value> { v.as_array().cloned().unwrap_or_default() };
        check("RunFacet", &event["run"]["facets"]);
        check("JobFacet", &event["job"]["facets"]);
        check("DatasetFacet", &event["dataset"]["facets"]);
        for d in datasets(&event["inputs"]) {
            check("DatasetFacet", &d["facets"]);
            check("InputDatasetFacet", &d["inputFacets"]);
        }
        for d in datasets(&event["outputs"]) {
            check("DatasetFacet", &d["facets"]);
            check("OutputDatasetFacet", &d["outputFacets"]);
        }
        out
    }
}

/// Every event the module can emit.
fn every_event() -> Vec<(&'static str, Value)> {
    let d = ddo();
    let publish = DatasetEvent::for_asset(
        &d,
        "file:///srv/data/lineitem.parquet",
        LifecycleChange::Create,
    );
    let update =
        DatasetEvent::for_asset(&d, "s3://bucket/lineitem.parquet", LifecycleChange::Alter);
    let agreement = InsituAgreementRunFacet::new(
        31337,
        format!("{:#x}", Address::repeat_byte(0xaa)),
        format!("{:#x}", B256::repeat_byte(0xbb)),
        Some(format!("{:#x}", B256::repeat_byte(0xcc))),
        format!("{:#x}", Address::repeat_byte(0xdd)),
    );
    let input = publish.dataset.clone();
    let compute = RunLifecycle::compute(
        "insitu://provider/0x0101010101010101010101010101010101010101",
        uuid::Uuid::new_v4(),
        "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        vec![input.clone()],
        Some(agreement.clone()),
    );
    let training = RunLifecycle::training(
        "insitu://provider/0x0101010101010101010101010101010101010101",
        [0x42; 32],
        [0x01; 20],
        "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        vec![input.clone()],
        Some(agreement.clone()),
    );
    let result = DatasetEvent::for_asset(
        &d,
        "file:///srv/insitu/compute/results/job/summary.csv",
        LifecycleChange::Create,
    )
    .dataset;
    let run = RunLifecycle::query(
        "insitu://provider/0x0101010101010101010101010101010101010101",
        "query-1",
        "SELECT l_returnflag, count(*) FROM lineitem GROUP BY 1",
        vec![input],
        Some(agreement),
    );
    let as_json = |v: &dyn erased::Ser| v.json();
    vec![
        ("publish", as_json(&publish)),
        ("update", as_json(&update)),
        ("start", as_json(&run.start())),
        ("complete", as_json(&run.complete(3, 1024))),
        ("abort", as_json(&run.abort(1, 512))),
        (
            "fail",
            as_json(&run.fail("rule `aggregate_only` refused the query")),
        ),
        ("compute start", as_json(&compute.start())),
        (
            "compute complete",
            as_json(&compute.complete_with_outputs(vec![(result, 31, 4096)])),
        ),
        ("training start", as_json(&training.start())),
        (
            "training complete",
            as_json(&training.complete(10, 1_048_576)),
        ),
        ("training abort", as_json(&training.abort(3, 300_000))),
        (
            "training fail",
            as_json(&training.fail("local training failed on this provider")),
        ),
        ("compute cancelled", as_json(&compute.cancelled())),
        (
            "compute fail",
            as_json(&compute.fail("deadline exceeded: the algorithm ran longer than 2 s")),
        ),
    ]
}

mod erased {
    pub trait Ser {
        fn json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("serialise")
        }
    }
}

#[test]
fn every_emitted_event_validates_against_core_and_facet_schemas() {
    let s = load();
    for (what, event) in every_event() {
        let errors = s.errors(&event);
        assert!(errors.is_empty(), "{what}: {errors:#?}\n{event:#}");
    }
}

/// A way to break a valid event.
type Break = Box<dyn Fn(&mut Value)>;

#[test]
fn the_validator_catches_broken_facets_and_envelopes() {
    let s = load();
    let events: HashMap<&str, Value> = every_event().into_iter().collect();
    let breaks: Vec<(&str, Break)> = vec![
        (
            "errorMessage without programmingLanguage",
            Box::new(|e: &mut Value| {
                e["run"]["facets"]["errorMessage"]
                    .as_object_mut()
                    .map(|o| o.remove("programmingLanguage"));
            }),
        ),
        (
            "a schema field without a name",
            Box::new(|e: &mut Value| {
                e["dataset"]["facets"]["schema"]["fields"][0]
                    .as_object_mut()
                    .map(|o| o.remove("name"));
            }),
        ),
        (
            "jobType without integration",
            Box::new(|e: &mut Value| {
                e["job"]["facets"]["jobType"]
                    .as_object_mut()
                    .map(|o| o.remove("integration"));
            }),
        ),
        (
            "an unknown lifecycle state",
            Box::new(|e: &mut Value| {
                e["dataset"]["facets"]["lifecycleStateChange"]["lifecycleStateChange"] =
                    json!("EXPLODE");
            }),
        ),
        (
            "insitu_agreement with a short agreement id",
            Box::new(|e: &mut Value| {
                e["run"]["facets"]["insitu_agreement"]["agreementId"] = json!("0x12");
            }),
        ),
        (
            "a facet without _producer",
            Box::new(|e: &mut Value| {
                e["run"]["facets"]["processing_engine"]
                    .as_object_mut()
                    .map(|o| o.remove("_producer"));
            }),
        ),
        (
            "a run id that is not a UUID",
            Box::new(|e: &mut Value| {
                e["run"]["runId"] = json!("run-1");
            }),
        ),
        (
            "a row count that is not a number",
            Box::new(|e: &mut Value| {
                e["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] = json!("three");
            }),
        ),
    ];
    let base_for = |what: &str| match what {
        w if w.contains("schema field") || w.contains("lifecycle") => "publish",
        w if w.contains("errorMessage") => "fail",
        w if w.contains("row count") => "complete",
        _ => "start",
    };
    for (what, broke) in breaks {
        let mut event = events[base_for(what)].clone();
        broke(&mut event);
        assert!(!s.errors(&event).is_empty(), "the validator missed: {what}");
    }
    assert!(s.all.len() > 30, "the facet schemas were loaded");
}
