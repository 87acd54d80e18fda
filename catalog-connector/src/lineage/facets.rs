//! The OpenLineage facets insitu emits, typed. Each carries `_producer` and a
//! `_schemaURL` that points at the exact facet version it conforms to, so a receiver
//! (and our schema tests) can check it.

use serde::{Deserialize, Serialize};

use super::PRODUCER;

/// `_producer` and `_schemaURL`, common to every facet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FacetBase {
    #[serde(rename = "_producer")]
    pub producer: String,
    #[serde(rename = "_schemaURL")]
    pub schema_url: String,
}

impl FacetBase {
    /// A base for the facet `name` defined in the spec file at `version`.
    fn spec(version: &str, name: &str) -> Self {
        FacetBase {
            producer: PRODUCER.to_string(),
            schema_url: format!(
                "https://openlineage.io/spec/facets/{version}/{name}.json#/$defs/{name}"
            ),
        }
    }
}

macro_rules! facet {
    ($(#[$m:meta])* $name:ident, $version:literal { $($(#[$fm:meta])* pub $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            #[serde(flatten)]
            pub base: FacetBase,
            $($(#[$fm])* pub $field: $ty),*
        }

        impl $name {
            /// The spec version of this facet's schema.
            pub const VERSION: &'static str = $version;

            fn base() -> FacetBase {
                FacetBase::spec($version, stringify!($name))
            }
        }
    };
}

/// One column of a dataset's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaField {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub ordinal_position: u32,
}

facet!(
    /// `schema`: the columns, with Arrow types.
    SchemaDatasetFacet, "1-2-0" { pub fields: Vec<SchemaField> }
);
facet!(
    /// `dataSource`: where the data physically lives (its namespace and URI).
    DatasourceDatasetFacet, "1-0-1" { pub name: String, pub uri: String }
);
facet!(
    /// `documentation`: the asset's description.
    DocumentationDatasetFacet, "1-1-0" {
        pub description: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub content_type: Option<String>,
    }
);

/// An owner, as a URN (`ethereum:0x…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

facet!(
    /// `ownership`: the asset's on-chain owner.
    OwnershipDatasetFacet, "1-0-1" { pub owners: Vec<Owner> }
);

/// Another name of the same dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifier {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

facet!(
    /// `symlinks`: the gated name (the DID on its chain) of a physically named dataset.
    SymlinksDatasetFacet, "1-0-1" { pub identifiers: Vec<Identifier> }
);

/// What happened to a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LifecycleChange {
    Create,
    Alter,
    Drop,
    Overwrite,
}

facet!(
    /// `lifecycleStateChange`: published (CREATE) or updated (ALTER).
    LifecycleStateChangeDatasetFacet, "1-0-1" { pub lifecycle_state_change: LifecycleChange }
);
facet!(
    /// `processing_engine`: insitu and its version (DataHub requires it).
    ProcessingEngineRunFacet, "1-1-1" {
        pub version: String,
        pub name: String,
        pub openlineage_adapter_version: String,
    }
);
facet!(
    /// `errorMessage`: why a run failed.
    ErrorMessageRunFacet, "1-0-1" { pub message: String, pub programming_language: String }
);
facet!(
    /// `sql`: the statement a query run executed.
    SqlJobFacet, "1-1-0" { pub query: String, pub dialect: String }
);
facet!(
    /// `jobType`: BATCH, from insitu, of type QUERY / COMPUTE / TRAIN.
    JobTypeJobFacet, "2-0-4" {
        pub processing_type: String,
        pub integration: String,
        pub job_type: String,
    }
);
facet!(
    /// `inputStatistics`: rows and bytes read.
    InputStatisticsInputDatasetFacet, "1-0-0" {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub row_count: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub size: Option<u64>,
    }
);
facet!(
    /// `outputStatistics`: rows and bytes produced.
    OutputStatisticsOutputDatasetFacet, "1-0-2" {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub row_count: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub size: Option<u64>,
    }
);

/// `insitu_agreement`: the on-chain agreement behind a run. Its schema is
/// `docs/openlineage/InsituAgreementRunFacet.json`, versioned by its `$id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InsituAgreementRunFacet {
    #[serde(flatten)]
    pub base: FacetBase,
    pub chain_id: u64,
    pub contract: String,
    pub agreement_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_hash: Option<String>,
    pub consumer: String,
}

/// Where the `insitu_agreement` schema is published.
pub const INSITU_AGREEMENT_SCHEMA: &str =
    "https://example.invalid/insitu/spec/facets/1-0-0/InsituAgreementRunFacet.json";

impl SchemaDatasetFacet {
    pub fn new(fields: Vec<SchemaField>) -> Self {
        SchemaDatasetFacet {
            base: Self::base(),
            fields,
        }
    }
}

impl DatasourceDatasetFacet {
    pub fn new(name: impl Into<String>, uri: impl Into<String>) -> Self {
        DatasourceDatasetFacet {
            base: Self::base(),
            name: name.into(),
            uri: uri.into(),
        }
    }
}

impl DocumentationDatasetFacet {
    pub fn new(description: impl Into<String>) -> Self {
        DocumentationDatasetFacet {
            base: Self::base(),
            description: description.into(),
            content_type: Some("text/plain".into()),
        }
    }
}

impl OwnershipDatasetFacet {
    pub fn new(owners: Vec<Owner>) -> Self {
        OwnershipDatasetFacet {
            base: Self::base(),
            owners,
        }
    }
}

impl SymlinksDatasetFacet {
    pub fn new(identifiers: Vec<Identifier>) -> Self {
        SymlinksDatasetFacet {
            base: Self::base(),
            identifiers,
        }
    }
}

impl LifecycleStateChangeDatasetFacet {
    pub fn new(change: LifecycleChange) -> Self {
        LifecycleStateChangeDatasetFacet {
            base: Self::base(),
            lifecycle_state_change: change,
        }
    }
}

impl ProcessingEngineRunFacet {
    pub fn insitu() -> Self {
        ProcessingEngineRunFacet {
            base: Self::base(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            name: "insitu".into(),
            openlineage_adapter_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

impl ErrorMessageRunFacet {
    pub fn new(message: impl Into<String>) -> Self {
        ErrorMessageRunFacet {
            base: Self::base(),
            message: message.into(),
            programming_language: "rust".into(),
        }
    }
}

impl SqlJobFacet {
    pub fn new(query: impl Into<String>) -> Self {
        SqlJobFacet {
            base: Self::base(),
            query: query.into(),
            dialect: "datafusion".into(),
        }
    }
}

impl JobTypeJobFacet {
    pub fn new(job_type: impl Into<String>) -> Self {
        JobTypeJobFacet {
            base: Self::base(),
            processing_type: "BATCH".into(),
            integration: "INSITU".into(),
            job_type: job_type.into(),
        }
    }
}

impl InputStatisticsInputDatasetFacet {
    pub fn new(row_count: Option<u64>, size: Option<u64>) -> Self {
        InputStatisticsInputDatasetFacet {
            base: Self::base(),
            row_count,
            size,
        }
    }
}

impl OutputStatisticsOutputDatasetFacet {
    pub fn new(row_count: Option<u64>, size: Option<u64>) -> Self {
        OutputStatisticsOutputDatasetFacet {
            base: Self::base(),
            row_count,
            size,
        }
    }
}

impl InsituAgreementRunFacet {
    pub fn new(
        chain_id: u64,
        contract: impl Into<String>,
        agreement_id: impl Into<String>,
        transaction_hash: Option<String>,
        consumer: impl Into<String>,
    ) -> Self {
        InsituAgreementRunFacet {
            base: FacetBase {
                producer: PRODUCER.to_string(),
                schema_url: format!("{INSITU_AGREEMENT_SCHEMA}#/$defs/InsituAgreementRunFacet"),
            },
            chain_id,
            contract: contract.into(),
            agreement_id: agreement_id.into(),
            transaction_hash,
            consumer: consumer.into(),
        }
    }
}
